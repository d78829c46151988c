"""Dispatcher behaviour that the HTTP API does not show directly."""

from __future__ import annotations

import structlog

from alertd import dispatcher as dispatcher_mod, model
from tests import helpers


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
    [held] = await daemon.store.claim("sms", daemon.dispatcher.owner, daemon.clock(), 1, daemon.dispatcher.settings.lease)
    daemon.clock.advance(daemon.dispatcher.settings.lease.total_seconds())  # a stalled instance
    assert await daemon.dispatcher.deliver(daemon.dispatcher.channels["sms"], held) is None
    assert await daemon.sms.received() == []  # another claimer owns it now: it sends it, once
    await daemon.drain()
    assert [r["to"] for r in await daemon.sms.received()].count(held.address) == 1
