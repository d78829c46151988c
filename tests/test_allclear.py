"""A cancel's all-clear goes to exactly those the cancelled alert reached: everyone the provider
accepted the original for, and no one whose original was only claimed, then dropped for the cancel."""

from __future__ import annotations

import asyncio
import collections

import pytest
from aiohttp import test_utils

from alertd import app as app_mod, demo, metrics, model
from tests import helpers

N = 200
CONCURRENCY = 20  # ten rounds of calls: the cancel lands with rounds claimed and not begun
PEOPLE = [
    {"id": f"ac{i:04d}", "phone": f"+3365{i:07d}", "push_token": f"tok-ac-{i:06d}", "locale": "fr",
     "zones": [helpers.PARIS]}
    for i in range(N)
]


class SendCounter(metrics.Observer):
    """Sets `enough` once `n` provider calls ended: the fan-out is under way."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.enough = asyncio.Event()

    def sent(self, channel, alert, seconds, result, now) -> None:
        self.n -= 1
        if self.n <= 0:
            self.enough.set()


@pytest.fixture(params=["sqlite", "postgresql"])
async def slow(request, tmp_path, fakes_url, pg_schema_url):
    """The daemon on each store, with SMS and push at CONCURRENCY and both providers answering in 0.3 s."""
    port = demo.free_port()
    store = pg_schema_url if request.param == "postgresql" else None
    limit = f"max_concurrency = {CONCURRENCY}"
    cfg = helpers.load_config(tmp_path, fakes_url, port, store=store, sms=limit, push=limit)
    clock = helpers.ManualClock()
    server = test_utils.TestServer(app_mod.build(cfg, clock=clock, run_workers=False), host="127.0.0.1", port=port)
    async with test_utils.TestClient(server) as client:
        d = helpers.Daemon(client, clock, fakes_url)
        await d.populate()
        assert (await d.post("/v1/subscribers", who="admin", json=PEOPLE)).status == 200
        await d.sms.fail(delay=0.3, times=None)
        await d.push.fail(delay=0.3, times=None)
        yield d


async def bodies(daemon, alert_id: str) -> set[str]:
    messages = (await (await daemon.get(f"/v1/alerts/{alert_id}/messages")).json())["messages"]
    return {m["body"] for m in messages}


def ref(alert: dict) -> dict:
    return {"sender": alert["sender"], "identifier": alert["identifier"], "sent": alert["sent"]}


async def test_the_all_clear_of_a_cancel_mid_fan_out_goes_to_exactly_those_reached(slow):
    counter = SendCounter(2 * CONCURRENCY)
    slow.dispatcher.metrics = counter
    first = await slow.status((await slow.send(channels=["sms", "push"]))["id"])
    fan_out = asyncio.create_task(slow.drain())
    await asyncio.wait_for(counter.enough.wait(), 30)
    cancel = await slow.send(msg_type="cancel", references=[ref(first)], event=None, area=None, channels=None,
                             template=None, params={})
    await asyncio.wait_for(fan_out, 60)
    await asyncio.wait_for(slow.drain(), 60)

    original, all_clear = await bodies(slow, first["id"]), await bodies(slow, cancel["id"])
    assert not original & all_clear
    later = await slow.status(cancel["id"])
    assert later["state"] == "completed"
    for fake, kind in ((slow.sms, "sms"), (slow.push, "push")):
        got = collections.defaultdict(list)
        for r in await fake.received():
            got["original" if r["body"] in original else "all-clear" if r["body"] in all_clear else "?"].append(r["to"])
        assert not got["?"]
        reached = set(got["original"])
        assert 0 < len(reached) < N, f"the cancel did not land mid-fan-out ({kind})"
        told = collections.Counter(got["all-clear"])
        assert set(told) - reached == set(), f"{kind}: an all-clear for someone the alert never reached"
        assert reached - set(told) == set(), f"{kind}: someone reached got no all-clear"
        assert max(told.values()) == 1
        assert later["counts"][kind]["sent"] == len(reached)
    counts = (await slow.status(first["id"]))["counts"]
    assert counts["sms"]["cancelled"] > 0 and counts["push"]["cancelled"] > 0


async def test_an_original_on_the_wire_when_its_daemon_died_counts_as_not_reached(daemon):
    """After a crash nobody knows whether the provider took what was on the wire: the all-clear goes
    to those whose original was recorded sent, and waits for the others' lapsed leases to settle."""
    first = await daemon.status((await daemon.send(channels=["sms"]))["id"])
    await daemon.dispatcher.planned()
    lease = daemon.dispatcher.settings.lease
    held = await daemon.store.claim("sms", "killed-instance", daemon.clock(), 10, lease)
    assert len(held) == 3  # p-fr, p-en and p-ar: every SMS of the alert
    recorded = held[0]  # the killed daemon recorded this one before it died
    await daemon.store.record([model.Outcome(recorded.id, model.State.SENT, provider_id="SM-before")], daemon.clock())
    cancel = await daemon.send(msg_type="cancel", references=[ref(first)], event=None, area=None, channels=None,
                               template=None, params={})
    await daemon.drain()  # moves the clock past the killed daemon's leases
    assert [r["to"] for r in await daemon.sms.received()] == [recorded.address]
    later = await daemon.status(cancel["id"])
    assert later["state"] == "completed"
    assert (later["counts"]["sms"]["sent"], later["counts"]["sms"]["cancelled"]) == (1, 2)
