"""A claim's lease outlives a slow provider: the lane renews what it holds, so a call on the wire for
longer than a lease is not claimed and sent again; a lease that did lapse (its holder stalled or
died) is logged when it is claimed again."""

from __future__ import annotations

import collections

import pytest
import structlog
from aiohttp import test_utils

from alertd import app as app_mod, demo, model
from tests import helpers

N = 30
# A lane holds three rounds: the last is claimed 1.6 s before its call starts, after its lease ran out.
CONCURRENCY = 5
PEOPLE = [
    {"id": f"ls{i:04d}", "phone": f"+3366{i:07d}", "push_token": f"tok-ls-{i:06d}", "locale": "fr",
     "zones": [helpers.PARIS]}
    for i in range(N)
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def short_lease(request, tmp_path, fakes_url, pg_schema_url):
    """The daemon on each store and the real clock, with a 1.5 s lease, providers answering in 0.8 s,
    SMS from a sending process and push from the daemon's."""
    port = demo.free_port()
    store = pg_schema_url if request.param == "postgresql" else None
    limit = f"max_concurrency = {CONCURRENCY}"
    cfg = helpers.load_config(
        tmp_path, fakes_url, port, store=store, dispatcher="lease_seconds = 1.5\nbatch_size = 100",
        sms=f"{limit}\nprocesses = 1", push=limit,
    )
    server = test_utils.TestServer(app_mod.build(cfg, run_workers=False), host="127.0.0.1", port=port)
    async with test_utils.TestClient(server) as client:
        d = helpers.Daemon(client, model.utcnow, fakes_url)
        await d.populate()
        assert (await d.post("/v1/subscribers", who="admin", json=PEOPLE)).status == 200
        yield d


async def test_calls_slower_than_the_lease_go_once(short_lease):
    await short_lease.sms.fail(delay=0.8, times=None)
    await short_lease.push.fail(delay=0.8, times=None)
    with structlog.testing.capture_logs() as logs:
        sent = await short_lease.send(channels=["sms", "push"], expires=None)
        await short_lease.dispatcher.run_until_idle()
    for fake in (short_lease.sms, short_lease.push):
        got = collections.Counter(r["to"] for r in await fake.received())
        twice = {to: n for to, n in got.items() if n > 1}
        assert not twice, f"{len(twice)} sent twice"
        assert {p["phone"] if fake is short_lease.sms else p["push_token"] for p in PEOPLE} <= set(got)
    deliveries = await short_lease.store.deliveries(sent["id"], limit=500)
    assert {d.attempts for d in deliveries} == {1}
    assert not [e for e in logs if "lease" in e["event"]]


async def test_a_lease_that_lapsed_is_logged_when_claimed_again(daemon):
    sent = await daemon.send(channels=["sms"])
    await daemon.dispatcher.planned()
    lease = daemon.dispatcher.settings.lease
    stalled = await daemon.store.claim("sms", "stalled-instance", daemon.clock(), 2, lease)
    daemon.clock.advance(lease.total_seconds())
    with structlog.testing.capture_logs() as logs:
        await daemon.drain()
    [line] = [e for e in logs if e["event"].startswith("leases lapsed")]
    assert line["log_level"] == "warning" and line["count"] == 2 and line["alert_ids"] == [sent["id"]]
    assert sorted(line["delivery_ids"]) == sorted(d.id for d in stalled)
    assert "+33" not in repr(line)  # no phone number
    again = [d for d in await daemon.store.deliveries(sent["id"]) if d.id in line["delivery_ids"]]
    assert {(d.state, d.attempts) for d in again} == {(model.State.SENT, 2)}
    assert all(d.last_error and "lease lapsed" in d.last_error for d in again)  # why it went twice, if it did
    assert not [e for e in logs if e["event"].startswith("leases lost")]
