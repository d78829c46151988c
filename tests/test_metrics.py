"""`GET /metrics`: the figures follow the deliveries of an alert, on both stores."""

from __future__ import annotations

from prometheus_client import parser

from alertd import metrics, model
from tests import helpers

CHANNELS = ("sms", "push", "siren")


async def scrape(daemon) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one unauthenticated scrape."""
    resp = await daemon.client.get("/metrics")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    return parse(await resp.text())


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def series(figures: dict, name: str, **labels: str) -> float:
    return figures[(name, tuple(sorted(labels.items())))]


def by(figures: dict, name: str, label: str) -> dict[str, float]:
    """The samples of `name`, keyed by one label's value."""
    return {dict(key)[label]: v for (n, key), v in figures.items() if n == name}


async def test_before_any_alert_the_delivery_figures_are_zero(daemon):
    figures = await scrape(daemon)
    for channel in CHANNELS:
        assert series(figures, "alertd_queue_depth", channel=channel) == 0
        assert series(figures, "alertd_send_duration_seconds_count", channel=channel) == 0
        for state in model.State:
            assert series(figures, "alertd_deliveries", channel=channel, state=state.value) == 0
    assert series(figures, "alertd_orders_total", status="actual", msg_type="alert") == 0
    assert by(figures, "alertd_sirens", "state") == {
        "ready": 2, "activated": 0, "fault": 0, "sabotage": 0, "no_heartbeat": 0,
        "failed": 0, "retrying": 0, "commanded": 0,
    }
    assert series(figures, "alertd_store_up") == 1


async def test_the_figures_follow_an_alert_to_its_end(daemon):
    await daemon.sms.fail(status=503, times=1, to="+33612345678")  # p-fr: retried once
    await daemon.sms.fail(status=400, code=21211, times=None, to="+33622334455")  # p-en: never
    alert = await daemon.send()
    await daemon.dispatcher.planned()  # planned, nothing sent yet
    queued = await scrape(daemon)
    assert series(queued, "alertd_orders_total", status="actual", msg_type="alert") == 1
    assert by(queued, "alertd_queue_depth", "channel") == {"sms": 3, "push": 3, "siren": 1}
    daemon.clock.advance(7)  # the sends start 7 s after the order
    await daemon.drain()

    figures = await scrape(daemon)
    status = await daemon.status(alert["id"])
    assert status["state"] == "completed"
    for channel, counts in status["counts"].items():
        for state, n in counts.items():
            assert series(figures, "alertd_deliveries", channel=channel, state=state) == n
        assert series(figures, "alertd_queue_depth", channel=channel) == 0
        calls = sum(d.attempts for d in await daemon.store.deliveries(alert["id"], channel))
        assert series(figures, "alertd_send_duration_seconds_count", channel=channel) == calls
        assert series(figures, "alertd_order_to_first_send_seconds_count", channel=channel) == 1
        assert series(figures, "alertd_order_to_first_send_seconds_sum", channel=channel) == 7
        assert series(figures, "alertd_order_to_last_send_seconds_count", channel=channel) == 1
    assert series(figures, "alertd_send_duration_seconds_count", channel="sms") == 4  # 3 phones, one retry
    assert by(figures, "alertd_provider_errors_total", "code") == {"503": 1, "21211": 1, "UNREGISTERED": 1}
    assert series(figures, "alertd_provider_errors_total", channel="sms", code="21211") == 1
    assert series(figures, "alertd_provider_errors_total", channel="push", code="UNREGISTERED") == 1
    assert by(figures, "alertd_sirens", "state") == {
        "ready": 1, "activated": 1, "fault": 0, "sabotage": 0, "no_heartbeat": 0,
        "failed": 0, "retrying": 0, "commanded": 0,
    }


async def test_a_cancel_is_counted_by_its_message_type_and_stops_the_siren(daemon):
    alert = await daemon.send(channels=["siren"])
    await daemon.drain()
    resp = await daemon.post(f"/v1/alerts/{alert['id']}/cancel")
    assert resp.status == 200, await resp.text()
    await daemon.drain()
    figures = await scrape(daemon)
    assert series(figures, "alertd_orders_total", status="actual", msg_type="alert") == 1
    sirens = by(figures, "alertd_sirens", "state")
    assert (sirens["activated"], sirens["ready"]) == (0, 2)  # its `cancel` went through; Lyon was never told
    assert series(figures, "alertd_deliveries", channel="siren", state="sent") == 2


async def test_a_replayed_order_is_not_counted_again(daemon):
    for _ in range(2):
        order = helpers.order(status="exercise")
        resp = await daemon.post("/v1/alerts", json=order, headers={"Idempotency-Key": "once"})
        assert resp.status == 202
    figures = await scrape(daemon)
    assert series(figures, "alertd_orders_total", status="exercise", msg_type="alert") == 1


def test_each_app_has_its_own_registry():
    first, second = metrics.Metrics(["sms"]), metrics.Metrics(["sms"])  # the same names, no clash
    first.errors.labels("sms", "21211").inc()
    nothing = metrics.Figures({}, {}, 0.0)
    exposed = parse(first.exposition(nothing)[0].decode())
    assert series(exposed, "alertd_provider_errors_total", channel="sms", code="21211") == 1
    assert not by(parse(second.exposition(nothing)[0].decode()), "alertd_provider_errors_total", "code")


def test_a_store_that_cannot_be_read_leaves_the_other_figures():
    figures = parse(metrics.Metrics(["sms"]).exposition(metrics.Figures({}, {}, 0.2, up=False))[0].decode())
    assert series(figures, "alertd_store_up") == 0
    assert series(figures, "alertd_send_duration_seconds_count", channel="sms") == 0
    assert not by(figures, "alertd_deliveries", "state")
