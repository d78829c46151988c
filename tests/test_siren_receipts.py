"""Siren gateways' receipts reach the daemon: acks settle siren deliveries, heartbeats say how
each siren is, and silence is noticed. On both stores, with the fake gateway posting the receipts."""

from __future__ import annotations

import datetime as dt

import pytest
import structlog

from alertd import demo, housekeeping, model, sirenstate
from alertd.web import views
from tests import helpers

RECEIPT_TOKEN = demo.RECEIPT_TOKEN
PARIS_SIREN = "siren-paris-1"
STALE = dt.timedelta(seconds=300)


@pytest.fixture
def siren_settings() -> str:
    """The daemon's siren channel expects acks and heartbeats here (the demo's too)."""
    return demo.DEMO_SIREN


def bearer(token: str = RECEIPT_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def receipts_on(daemon) -> None:
    url = str(daemon.client.make_url("/v1/receipts/siren"))
    await daemon.siren._call(
        "POST", "/_fake/siren/receipts", {"url": url, "token": RECEIPT_TOKEN, "enabled": True, "retry_delay": 0.02}
    )


async def acked(daemon) -> list[dict]:
    """Let the fake gateway post every ack it owes; what it posted, with the daemon's answers."""
    return (await daemon.siren._call("POST", "/_fake/siren/receipts/flush"))["posted"]


async def heartbeat(daemon, **health) -> dict:
    return await daemon.siren._call("POST", "/_fake/siren/heartbeats", health)


async def siren_deliveries(daemon, alert_id: str) -> dict[str, dict]:
    page = await (await daemon.get(f"/v1/alerts/{alert_id}/deliveries?channel=siren")).json()
    return {d["target"]: d for d in page["deliveries"]}


async def states(daemon, stale_after: dt.timedelta | None = STALE) -> dict[str, sirenstate.SirenState]:
    return {s.siren_id: s for s in await daemon.store.siren_states(daemon.clock(), stale_after)}


async def post_receipt(daemon, body, headers=None):
    return await daemon.client.post("/v1/receipts/siren", json=body, headers=bearer() if headers is None else headers)


def ack(delivery: dict, result: str = "activated", siren: str = PARIS_SIREN, **fields) -> dict:
    return {"type": "ack", "command_id": delivery["provider_id"], "siren_id": siren,
            "request_id": str(delivery["id"]), "result": result, "at": "2026-11-26T11:00:05+01:00"} | fields


async def sounded(daemon) -> tuple[str, dict]:
    """An alert sent to the Paris siren without acks from the fake: its id and siren delivery (`sent`)."""
    alert = await daemon.send(channels=["siren"])
    await daemon.drain()
    delivery = (await siren_deliveries(daemon, alert["id"]))[PARIS_SIREN]
    assert delivery["state"] == "sent"
    return alert["id"], delivery


# -- acknowledgements ----------------------------------------------------------------------------


async def test_an_activated_ack_marks_the_siren_delivered(daemon):
    await receipts_on(daemon)
    alert = await daemon.send(channels=["siren"])
    await daemon.drain()
    [posted] = await acked(daemon)
    delivery = (await siren_deliveries(daemon, alert["id"]))[PARIS_SIREN]
    assert posted["status"] == 204 and posted["body"]["command_id"] == delivery["provider_id"]
    assert delivery["state"] == "delivered"
    paris = (await states(daemon))[PARIS_SIREN]
    assert (paris.last_ack, paris.state) == ("activated", "no_heartbeat")  # acked, but never beat
    assert (await states(daemon, None))[PARIS_SIREN].state == "activated"


async def test_a_failed_ack_fails_the_delivery_with_the_reason(daemon):
    await daemon.store.upsert_sirens([model.Siren("fault-paris-2", helpers.PARIS, "Gare de Lyon")])
    await receipts_on(daemon)
    await daemon.siren.fail(status=202, code="failed", to=PARIS_SIREN)  # accepted, then did not sound
    alert = await daemon.send(channels=["siren"])
    await daemon.drain()
    assert sorted(p["status"] for p in await acked(daemon)) == [204, 204]
    deliveries = await siren_deliveries(daemon, alert["id"])
    assert {t: d["state"] for t, d in deliveries.items()} == {PARIS_SIREN: "failed", "fault-paris-2": "failed"}
    assert "did not sound" in deliveries[PARIS_SIREN]["last_error"]
    assert "fault" in deliveries["fault-paris-2"]["last_error"]
    assert (await states(daemon, None))[PARIS_SIREN].state == "failed"


async def test_a_busy_siren_is_commanded_again_then_delivered(daemon):
    await receipts_on(daemon)
    await daemon.siren.fail(status=202, code="busy", to=PARIS_SIREN)
    alert = await daemon.send(channels=["siren"])
    for _ in range(2):  # the busy ack may come back while the drain runs, or after it ended
        await daemon.drain()  # a retry falls due: the clock moves to it
        await acked(daemon)
    delivery = (await siren_deliveries(daemon, alert["id"]))[PARIS_SIREN]
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 2)
    assert "busy" in delivery["last_error"]  # why it took two
    commands = [c for c in await daemon.siren.received() if c["to"] == PARIS_SIREN]
    assert len(commands) == 2 and commands[0]["request_id"] == commands[1]["request_id"]
    assert delivery["provider_id"] == commands[1]["command_id"] != commands[0]["command_id"]


async def test_acks_that_repeat_or_come_late_never_move_a_delivery_back(daemon):
    alert_id, delivery = await sounded(daemon)
    assert (await post_receipt(daemon, ack(delivery))).status == 204
    for late in (ack(delivery, "busy"), ack(delivery, "failed", reason="x"), ack(delivery), [ack(delivery)] * 2):
        assert (await post_receipt(daemon, late)).status == 204
    after = (await siren_deliveries(daemon, alert_id))[PARIS_SIREN]
    assert (after["state"], after["attempts"], after["last_error"]) == ("delivered", 1, None)
    assert len(await daemon.siren.received()) == 1  # never commanded again


async def test_an_ack_faster_than_the_dispatcher_is_kept_or_asked_again(daemon):
    alert = await daemon.send(channels=["siren"])
    await daemon.dispatcher.planned()
    [claimed] = await daemon.store.claim("siren", "me", daemon.clock(), 10, dt.timedelta(seconds=60))
    early = {"id": claimed.id, "provider_id": "cmd-early"}
    busy = await post_receipt(daemon, ack(early, "busy"))  # not recorded yet: nothing to send again
    assert busy.status == 409 and busy.headers["Retry-After"] == "1"
    assert (await post_receipt(daemon, ack(early))).status == 204
    await daemon.store.record([model.Outcome(claimed.id, model.State.SENT, provider_id="cmd-early")], daemon.clock())
    assert (await siren_deliveries(daemon, alert["id"]))[PARIS_SIREN]["state"] == "delivered"


async def test_an_activation_never_acknowledged_failed_to_sound(daemon):
    _, delivery = await sounded(daemon)
    daemon.clock.advance(59)
    await housekeeping.run(daemon.dispatcher)
    assert (await daemon.store.get_delivery(delivery["id"])).state is model.State.SENT
    daemon.clock.advance(2)
    with structlog.testing.capture_logs() as logs:
        await housekeeping.run(daemon.dispatcher)
        await housekeeping.run(daemon.dispatcher)
    failed = await daemon.store.get_delivery(delivery["id"])
    assert (failed.state, failed.last_error) == (model.State.FAILED, "no acknowledgement within 60 s")
    warned = [e for e in logs if e["event"] == "siren failed to sound"]
    assert [(e["alert_id"], e["siren_id"]) for e in warned] == [(failed.alert_id, PARIS_SIREN)]
    assert (await post_receipt(daemon, ack(delivery))).status == 204  # too late: it stays failed
    assert (await daemon.store.get_delivery(delivery["id"])).state is model.State.FAILED


# -- the state both pages show ------------------------------------------------------------------


async def shown(daemon, alert_id: str, siren: str = PARIS_SIREN) -> tuple[str, str]:
    """The siren's status on the sirens page's route and on the alert page's route."""
    overall = {s["id"]: s for s in (await (await daemon.get("/v1/sirens")).json())["sirens"]}
    of_alert = {s["id"]: s for s in (await (await daemon.get(f"/v1/alerts/{alert_id}/sirens")).json())["sirens"]}
    assert of_alert[siren]["last"]["alert_id"] == alert_id
    return overall[siren]["status"], of_alert[siren]["status"]


async def test_a_command_retried_after_http_500_then_not_sounding_is_never_ready(daemon):
    await receipts_on(daemon)
    await heartbeat(daemon, sirens=[PARIS_SIREN, "siren-lyon-1"])  # healthy, and heard from
    await daemon.siren.fail(status=500, to=PARIS_SIREN)  # the gateway fails once
    alert = await daemon.send(channels=["siren"])
    await daemon.dispatcher.run_until_idle()  # only what is due now: the retry waits
    waiting = (await siren_deliveries(daemon, alert["id"]))[PARIS_SIREN]
    assert (waiting["state"], waiting["attempts"]) == ("pending", 1) and "HTTP 500" in waiting["last_error"]
    assert await shown(daemon, alert["id"]) == ("retrying", "retrying")

    await daemon.siren.fail(status=202, code="failed", to=PARIS_SIREN)  # accepted, then did not sound
    await daemon.drain()
    await acked(daemon)
    assert (await siren_deliveries(daemon, alert["id"]))[PARIS_SIREN]["state"] == "failed"
    assert await shown(daemon, alert["id"]) == ("failed", "failed")
    await heartbeat(daemon, sirens=[PARIS_SIREN])  # healthy again: it still did not sound
    assert await shown(daemon, alert["id"]) == ("failed", "failed")
    sirens = {s["id"]: s for s in (await (await daemon.get("/v1/sirens")).json())["sirens"]}
    assert sirens[PARIS_SIREN]["last"]["error"] and sirens["siren-lyon-1"]["status"] == "ready"


async def test_both_pages_show_the_sirens_state_now_beside_each_alerts_command(daemon):
    await receipts_on(daemon)
    await heartbeat(daemon, sirens=[PARIS_SIREN, "siren-lyon-1"])
    first = await daemon.send(channels=["siren"], identifier="first")
    await daemon.drain()
    await acked(daemon)
    assert await shown(daemon, first["id"]) == ("activated", "activated")
    await daemon.siren.fail(status=202, code="failed", to=PARIS_SIREN)
    second = await daemon.send(channels=["siren"], identifier="second")
    await daemon.drain()
    await acked(daemon)
    assert await shown(daemon, first["id"]) == await shown(daemon, second["id"]) == ("failed", "failed")
    of_first = (await (await daemon.get(f"/v1/alerts/{first['id']}/sirens")).json())["sirens"]
    assert [(s["last"]["command"], s["last"]["state"]) for s in of_first] == [("activate", "delivered")]


# -- who may post --------------------------------------------------------------------------------


async def test_receipts_without_the_gateways_token_change_nothing(daemon):
    alert_id, delivery = await sounded(daemon)
    before = (await siren_deliveries(daemon, alert_id), await states(daemon))
    body = [ack(delivery, "failed"), {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": "2026-11-26T10:00:00Z",
                                      "sabotage": True}]
    refused = {
        "none": await post_receipt(daemon, body, headers={}),
        "basic": await post_receipt(daemon, body, headers={"Authorization": f"Basic {RECEIPT_TOKEN}"}),
        "wrong": await post_receipt(daemon, body, headers=bearer("not-the-receipt-token")),
        "command token": await post_receipt(daemon, body, headers=bearer("demo-gateway-token")),
        "operator": await post_receipt(daemon, body, headers=daemon.headers["operator"]),
    }
    assert {who: r.status for who, r in refused.items()} == {
        "none": 401, "basic": 401, "wrong": 403, "command token": 403, "operator": 403,
    }
    problem = await refused["wrong"].json()
    assert problem["field"] == "Authorization" and RECEIPT_TOKEN not in str(problem)
    assert (await siren_deliveries(daemon, alert_id), await states(daemon)) == before


async def test_malformed_or_unknown_receipts_are_refused_whole(daemon):
    alert_id, delivery = await sounded(daemon)
    before = (await siren_deliveries(daemon, alert_id), await states(daemon))
    garbled = await daemon.client.post("/v1/receipts/siren", data=b"{not json", headers=bearer())
    assert garbled.status == 400
    beat = {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": "2026-11-26T10:00:00+01:00"}
    cases = {
        "0.siren_id": [beat | {"siren_id": "siren-nowhere"}],
        "1.siren_id": [ack(delivery), beat | {"siren_id": "siren-nowhere"}],
        "request_id": ack(delivery, siren="siren-lyon-1"),  # a command to another siren
        "at": beat | {"at": "2026-11-26T10:00:00"},  # no offset: which time is it?
        "battery": beat | {"battery": 1.5},
        "result": ack(delivery, "sounded"),
        "type": {"type": "status", "siren_id": PARIS_SIREN},
    }
    for field, body in cases.items():
        resp = await post_receipt(daemon, body)
        assert resp.status == 422, (field, await resp.text())
        assert (await resp.json())["field"] == field
    assert (await siren_deliveries(daemon, alert_id), await states(daemon)) == before


# -- heartbeats ----------------------------------------------------------------------------------


async def test_heartbeats_tell_each_sirens_health(daemon):
    await receipts_on(daemon)
    everyone = [PARIS_SIREN, "siren-lyon-1"]
    assert await heartbeat(daemon, sirens=everyone, battery=0.8, mains=True) == {"posted": 2, "status": 204}
    assert (await heartbeat(daemon, sirens=["siren-lyon-1"], fault=True, mains=False))["status"] == 204
    now = await states(daemon)
    assert (now[PARIS_SIREN].state, now[PARIS_SIREN].battery, now[PARIS_SIREN].mains) == ("ready", 0.8, True)
    assert (now["siren-lyon-1"].state, now["siren-lyon-1"].mains) == ("fault", False)
    assert now[PARIS_SIREN].last_heartbeat == daemon.clock()
    health = views.SirenHealth.of(now[PARIS_SIREN]).model_dump(mode="json")
    assert health["last_heartbeat"] == daemon.clock().isoformat()

    older = {"type": "heartbeat", "siren_id": "siren-lyon-1", "at": "2020-01-01T00:00:00Z", "sabotage": True}
    assert (await post_receipt(daemon, older)).status == 204  # out of order: the newer one stands
    assert (await states(daemon))["siren-lyon-1"].state == "fault"
    await heartbeat(daemon, sirens=[PARIS_SIREN], sabotage=True)
    assert (await states(daemon))[PARIS_SIREN].state == "sabotage"


async def test_a_silent_siren_is_flagged_and_warned_about_once(daemon):
    with structlog.testing.capture_logs() as logs:
        await housekeeping.run(daemon.dispatcher)
        await housekeeping.run(daemon.dispatcher)
    assert sorted(e["siren_id"] for e in logs if e["event"] == "siren silent") == ["siren-lyon-1", PARIS_SIREN]
    never = (await states(daemon))[PARIS_SIREN]
    assert (never.state, never.last_heartbeat) == ("no_heartbeat", None)  # never heard of: silent from the start

    await receipts_on(daemon)
    await heartbeat(daemon, sirens=[PARIS_SIREN, "siren-lyon-1"])
    daemon.clock.advance(299)
    assert {s.state for s in (await states(daemon)).values()} == {"ready"}
    daemon.clock.advance(2)
    await heartbeat(daemon, sirens=["siren-lyon-1"])
    with structlog.testing.capture_logs() as logs:
        await housekeeping.run(daemon.dispatcher)
        await housekeeping.run(daemon.dispatcher)
    silent = await states(daemon)
    assert (silent[PARIS_SIREN].state, silent["siren-lyon-1"].state) == ("no_heartbeat", "ready")
    assert silent[PARIS_SIREN].last_heartbeat == helpers.START
    assert [e["siren_id"] for e in logs if e["event"] == "siren silent"] == [PARIS_SIREN]
    assert (await states(daemon, stale_after=None))[PARIS_SIREN].state == "ready"  # heartbeats off

    await heartbeat(daemon, sirens=[PARIS_SIREN])  # back: ready, and warned again if it goes silent
    assert (await states(daemon))[PARIS_SIREN].state == "ready"
    daemon.clock.advance(301)
    with structlog.testing.capture_logs() as logs:
        await housekeeping.run(daemon.dispatcher)
    assert sorted(e["siren_id"] for e in logs if e["event"] == "siren silent") == ["siren-lyon-1", PARIS_SIREN]


# -- push ----------------------------------------------------------------------------------------


async def test_push_deliveries_keep_fcms_message_id_and_error_code(daemon):
    alert = await daemon.send(channels=["push"])
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?channel=push")).json()
    by_target = {d["target"]: d for d in page["deliveries"]}
    fcm_name = f"projects/{demo.PROJECT_ID}/messages/"
    assert all(by_target[t]["provider_id"].startswith(fcm_name) for t in ("p-fr", "p-es"))
    assert by_target["p-ar"]["state"] == "failed" and by_target["p-ar"]["last_error"].startswith("UNREGISTERED")


async def test_a_heartbeat_from_the_future_does_not_freeze_a_sirens_health(daemon):
    ahead = (daemon.clock() + dt.timedelta(days=30)).isoformat()
    assert (await post_receipt(daemon, {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": ahead})).status == 204
    daemon.clock.advance(400)
    now = daemon.clock().isoformat()
    resp = await post_receipt(daemon, {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": now, "sabotage": True})
    assert resp.status == 204
    paris = (await states(daemon))[PARIS_SIREN]
    assert paris.last_heartbeat == daemon.clock() and paris.sabotage
    old = {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": "2020-01-01T00:00:00+00:00", "sabotage": False}
    daemon.clock.advance(10)
    assert (await post_receipt(daemon, old)).status == 204
    paris = (await states(daemon))[PARIS_SIREN]
    assert paris.last_heartbeat == daemon.clock() and paris.sabotage  # heard now; the old news ignored


async def test_a_heartbeat_from_the_future_never_hides_a_later_fault(daemon):
    ahead = (daemon.clock() + dt.timedelta(hours=1)).isoformat()  # the gateway's clock ran ahead
    assert (await post_receipt(daemon, {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": ahead})).status == 204
    daemon.clock.advance(60)  # within the 5 minutes' drift once allowed
    fault = {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": daemon.clock().isoformat(), "fault": True}
    assert (await post_receipt(daemon, fault)).status == 204
    assert (await states(daemon))[PARIS_SIREN].state == "fault"
    daemon.clock.advance(60)
    healed = fault | {"at": daemon.clock().isoformat(), "fault": False}
    assert (await post_receipt(daemon, healed)).status == 204
    assert (await states(daemon))[PARIS_SIREN].state == "ready"  # nor freezes the fault


# -- two gateways --------------------------------------------------------------------------------

LYON_SIREN = "siren-lyon-1"
LYON_TOKEN = "lyon-receipt-token"


class TestTwoGateways:
    """The Paris gateway (the `siren` channel, zone 75) and the Lyon one (`siren-lyon`, zone 69),
    each with its own receipt token: each reports for its own sirens only."""

    @pytest.fixture
    def siren_settings(self, fakes_url) -> str:
        return f"""{demo.DEMO_SIREN}
zones = ["75"]

[channels.siren-lyon]
plugin = "siren-http"
base_url = "{fakes_url}/siren"
token = "lyon-gateway-token"
receipt_token = "{LYON_TOKEN}"
zones = ["69"]
{demo.DEMO_SIREN}
"""

    async def test_a_gateway_reports_for_its_own_sirens_only(self, daemon):
        alert_id, delivery = await sounded(daemon)  # the Paris gateway's command to its siren
        before = (await siren_deliveries(daemon, alert_id), await states(daemon))
        at = daemon.clock().isoformat()
        cases = {  # (token, body): the field named
            "siren_id": (RECEIPT_TOKEN, {"type": "heartbeat", "siren_id": LYON_SIREN, "at": at, "fault": True}),
            "1.siren_id": (LYON_TOKEN, [{"type": "heartbeat", "siren_id": LYON_SIREN, "at": at},
                                        {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": at, "sabotage": True}]),
            "request_id": (LYON_TOKEN, ack(delivery, "failed")),
        }
        for field, (token, body) in cases.items():
            resp = await post_receipt(daemon, body, headers=bearer(token))
            assert resp.status == 422, (field, await resp.text())
            problem = await resp.json()
            assert problem["field"] == field and "gateway" in problem["detail"]
        assert (await siren_deliveries(daemon, alert_id), await states(daemon)) == before

        own_paris = [ack(delivery), {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": at, "battery": 0.5}]
        assert (await post_receipt(daemon, own_paris, headers=bearer(RECEIPT_TOKEN))).status == 204
        own_lyon = {"type": "heartbeat", "siren_id": LYON_SIREN, "at": at, "fault": True}
        assert (await post_receipt(daemon, own_lyon, headers=bearer(LYON_TOKEN))).status == 204
        now = await states(daemon)
        assert (now[PARIS_SIREN].state, now[PARIS_SIREN].battery, now[LYON_SIREN].state) == ("activated", 0.5, "fault")
        assert (await siren_deliveries(daemon, alert_id))[PARIS_SIREN]["state"] == "delivered"


class TestTwoGatewaysOfUnsaidSirens:
    """Two siren channels, neither naming its zones: which siren is whose is not known."""

    @pytest.fixture
    def siren_settings(self, fakes_url) -> str:
        return f"""{demo.DEMO_SIREN}

[channels.siren-lyon]
plugin = "siren-http"
base_url = "{fakes_url}/siren"
token = "lyon-gateway-token"
receipt_token = "{LYON_TOKEN}"
{demo.DEMO_SIREN}
"""

    async def test_no_gateways_heartbeat_is_taken_and_the_problem_says_why(self, daemon):
        alert_id, delivery = await sounded(daemon)
        before = await states(daemon)
        beat = {"type": "heartbeat", "siren_id": PARIS_SIREN, "at": daemon.clock().isoformat(), "fault": True}
        for token in (RECEIPT_TOKEN, LYON_TOKEN):
            resp = await post_receipt(daemon, beat, headers=bearer(token))
            assert resp.status == 422
            problem = await resp.json()
            assert problem["field"] == "siren_id" and "give each siren channel its zones" in problem["detail"]
        assert await states(daemon) == before
        assert (await post_receipt(daemon, ack(delivery), headers=bearer(RECEIPT_TOKEN))).status == 204  # it sent it
        assert (await siren_deliveries(daemon, alert_id))[PARIS_SIREN]["state"] == "delivered"
