"""Sending at the provider's pace: the channel's rate, and each sender's, measured at the fake."""

from __future__ import annotations

import collections
import datetime as dt
import time

import pytest

from alertd import config, dispatcher as dispatcher_mod, estimate, pacing
from tests import helpers, test_channel_twilio, test_dispatcher

RATE = 50
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PEOPLE = [{"id": f"p-paced-{i}", "phone": f"+33699{i:06d}", "locale": "fr", "zones": [helpers.PARIS]}
          for i in range(200)]


@pytest.fixture
def sms_settings() -> str:
    return f"rate = {RATE}\n"


def busiest_second(times: list[float]) -> int:
    """The most arrivals in any one-second window (opened at an arrival)."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


async def test_the_channel_sends_at_its_rate_and_never_faster(daemon):
    assert (await daemon.post("/v1/subscribers", who="admin", json=PEOPLE)).status == 200
    alert_id = (await daemon.send(channels=["sms"]))["id"]
    await daemon.drain()
    received = await daemon.sms.received()
    assert len({r["to"] for r in received}) == len(received) == 203  # the 200 and Paris's 3, each once
    times = [r["at"] for r in received]
    span = max(times) - min(times)
    assert span >= 3.0  # 202 intervals of 1/50 s: 4 s; unpaced, well under one
    assert busiest_second(times) <= RATE
    page = await (await daemon.get(f"/v1/alerts/{alert_id}/deliveries?channel=sms&limit=300")).json()
    assert {(d["state"], d["attempts"]) for d in page["deliveries"]} == {("sent", 1)}  # nothing refused
    helpers.REPORT.append(f"pacing: {len(received)} SMS at rate {RATE}/s took {span:.2f} s "
                          f"({(len(received) - 1) / span:.1f}/s), busiest second {busiest_second(times)}")


async def test_sms_are_spread_over_the_senders_each_at_its_own_rate(daemon):
    await daemon.sms.reset()
    senders = ["+33700000001", {"from": "ALERTE", "rate": 4}]  # a number at sender_rate, a name at 4/s
    sms = test_channel_twilio.make_channel(daemon.fakes_url, senders=senders, sender_rate=2)
    await sms.start()
    paced = dispatcher_mod.Dispatcher(daemon.store, {"sms": sms}, daemon.dispatcher.renderer, clock=daemon.clock)
    try:
        assert (await daemon.post("/v1/subscribers", who="admin", json=PEOPLE[:15])).status == 200
        await daemon.send(channels=["sms"])  # 18 messages: 2/s and 4/s, 6/s together, about 3 s
        await daemon.dispatcher.planned()
        await paced.run_until_idle()
    finally:
        await sms.close()
    received = await daemon.sms.received()
    by_sender = collections.Counter(r["from"] for r in received)
    assert sum(by_sender.values()) == 18 and abs(by_sender["ALERTE"] - 2 * by_sender["+33700000001"]) <= 3
    for sender, rate in (("+33700000001", 2), ("ALERTE", 4)):
        times = sorted(r["at"] for r in received if r["from"] == sender)
        # Each at its own rate: what one arrival's jitter on the way (a fresh client's first call is
        # slow) may shift, the span of them all cannot.
        assert 0.6 * rate <= (len(times) - 1) / (times[-1] - times[0]) <= 1.2 * rate
    assert max(r["at"] for r in received) - min(r["at"] for r in received) >= 2.0


def test_a_turn_goes_to_the_sender_whose_turn_comes_first():
    pacer = pacing.Pacer.of(None, [pacing.Sender("a", 1.0), pacing.Sender("b", 1.0)])
    turns = []
    for _ in range(4):
        pacer, wait, sender = pacing.turn(pacer, 100.0)
        turns.append((sender, wait))
    assert turns == [("a", 0.0), ("b", 0.0), ("a", 1.0), ("b", 1.0)]


def test_a_send_that_began_late_pushes_the_next_back_and_no_rate_means_no_pacing():
    pacer, _, _ = pacing.turn(pacing.Pacer.of(10.0), 0.0)
    late = pacing.began(pacer, "", 0.5)  # the loop was busy: it began half a second late
    assert pacing.turn(late, 0.5)[1] == pytest.approx(0.1)
    assert pacing.turn(pacing.Pacer.of(None), 0.0)[1:] == (0.0, "")


async def test_a_stop_gives_back_what_waits_for_its_turn_at_once(daemon):
    assert (await daemon.post("/v1/subscribers", who="admin", json=PEOPLE[:20])).status == 200
    sms = test_channel_twilio.make_channel(daemon.fakes_url, max_concurrency=10)
    settings = dispatcher_mod.Settings(paces={"sms": config.Pace(rate=1)})  # 23 messages: 22 s
    slow = dispatcher_mod.Dispatcher(daemon.store, {"sms": sms}, daemon.dispatcher.renderer, settings=settings,
                                     clock=daemon.clock)
    accepted = await daemon.send(channels=["sms"])
    await daemon.dispatcher.planned()
    slow.metrics = test_dispatcher.FirstSend()
    await slow.start()
    await slow.metrics.seen.wait()  # the first went; ten senders wait for their turns
    started = time.monotonic()
    await slow.stop()
    assert time.monotonic() - started < 2.0  # not the turns' 10 s, nor the grace
    counts = (await daemon.status(accepted["id"]))["counts"]["sms"]
    assert counts["sending"] == 0 and counts["sent"] == len(await daemon.sms.received()) < 5
    assert counts["pending"] == 23 - counts["sent"]  # given back for the next start, none lost


def test_the_forecast_of_a_channel_with_senders_is_at_their_rates_together(fakes_url):
    sms = test_channel_twilio.make_channel(fakes_url, senders=["+33700000001", {"from": "ALERTE", "rate": 4}])
    paced = dispatcher_mod.Dispatcher(None, {"sms": sms}, None)  # type: ignore[arg-type]  # built, never run
    pace = paced.settings.paces["sms"]
    assert (pace.rate, pace.rate_is_default) == (5.0, False)  # 1/s (sender_rate) + 4/s, not Twilio's 10
    forecast = estimate.estimate([estimate.Planned("sms", pace, (estimate.Group(100, 1),))], NOW, None)
    assert forecast.lines[0].seconds_to_last == pytest.approx(20.0) and not forecast.warnings
