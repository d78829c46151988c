"""Dispatcher behaviour that the HTTP API does not show directly."""

from __future__ import annotations

import asyncio
import time

import structlog

from alertd import dispatcher as dispatcher_mod, metrics as metrics_mod, model
from tests import helpers, test_channel_twilio


async def test_a_planning_that_keeps_failing_backs_off_instead_of_flooding_the_log(daemon):
    # A dispatcher left with only its SMS channel (say, after a configuration change) cannot route
    # a push alert committed earlier: its planning fails every time it is resumed.
    sms_only = dispatcher_mod.Dispatcher(
        daemon.store, {"sms": daemon.dispatcher.channels["sms"]}, daemon.dispatcher.renderer, clock=daemon.clock
    )
    await daemon.store.create_alert(helpers.alert("a-unroutable", model.Kind.PUSH), "unroutable")
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):  # housekeeping runs every second
            await sms_only.resume()
            await sms_only.planned()
    assert [e["event"] for e in logs].count("planning failed") == 1
    assert (await daemon.store.get_alert("a-unroutable")).state is model.AlertState.PLANNING  # kept


async def test_a_delivery_whose_lease_ran_out_is_not_sent(daemon):
    await daemon.send(channels=["sms"])
    await daemon.dispatcher.planned()
    [held] = await daemon.store.claim("sms", daemon.dispatcher.owner, daemon.clock(), 1,
                                      daemon.dispatcher.settings.lease)
    daemon.clock.advance(daemon.dispatcher.settings.lease.total_seconds())  # a stalled instance
    assert await daemon.dispatcher.deliver(daemon.dispatcher.channels["sms"], held) is None
    assert await daemon.sms.received() == []  # another claimer owns it now: it sends it, once
    await daemon.drain()
    assert [r["to"] for r in await daemon.sms.received()].count(held.address) == 1


class FirstSend(metrics_mod.Observer):
    def __init__(self) -> None:
        self.seen = asyncio.Event()
        self.ended = 0  # provider calls that came back

    def sent(self, *_) -> None:
        self.ended += 1
        self.seen.set()


async def test_a_graceful_stop_begins_nothing_more_and_records_every_call_on_the_wire(daemon):
    # A slow provider and few calls in flight: most of the fan-out is still queued in the lane at the stop.
    more = [{"id": f"p-more-{i}", "phone": f"+336990000{i:02d}", "locale": "fr", "zones": [helpers.PARIS]}
            for i in range(30)]
    assert (await daemon.post("/v1/subscribers", who="admin", json=more)).status == 200
    await daemon.sms.fail(delay=0.3, times=None)
    sms = test_channel_twilio.make_channel(daemon.fakes_url, max_concurrency=3)
    stopping = dispatcher_mod.Dispatcher(daemon.store, {"sms": sms}, daemon.dispatcher.renderer, clock=daemon.clock)
    accepted = await daemon.send(channels=["sms"])
    await daemon.dispatcher.planned()
    stopping.metrics = FirstSend()
    await stopping.start()
    await stopping.metrics.seen.wait()  # a first round of calls came back: the next is on the wire
    # Counted by the lane, with no await before the stop: asking the fake takes long enough, on a
    # loaded machine, for the senders to begin more calls before the stop.
    at_stop, started = stopping.metrics.ended, time.monotonic()
    await stopping.stop()
    assert time.monotonic() - started < stopping.settings.grace  # the calls on the wire, not the queue
    received = len(await daemon.sms.received())
    assert received - at_stop <= 3  # those on the wire at the stop (each call the fake got came back)
    counts = (await daemon.status(accepted["id"]))["counts"]["sms"]
    assert counts["sending"] == 0
    assert counts["sent"] == received  # every call made is recorded: none will be made again
    assert counts["pending"] == 3 + 30 - received > 0  # the rest waits for the next start, not lost
