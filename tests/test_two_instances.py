"""Two daemons sharing one PostgreSQL store share the work: each delivery is claimed by one of them,
every recipient gets the alert once, and a cancel on one stops the other."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import test_utils

from alertd import app as app_mod, demo, model, web as web_mod
from tests import helpers, test_allclear

PEOPLE = [
    {"id": f"c{i:04d}", "phone": f"+336{i:08d}", "locale": "fr", "zones": [helpers.PARIS]} for i in range(300)
]


@contextlib.asynccontextmanager
async def instance(tmp_path, fakes_url, store_url, clock, name, sms=""):
    folder = tmp_path / name
    folder.mkdir()
    port = demo.free_port()
    cfg = helpers.load_config(folder, fakes_url, port, store=store_url, dispatcher="batch_size = 20", sms=sms)
    server = test_utils.TestServer(app_mod.build(cfg, clock=clock, run_workers=False), host="127.0.0.1", port=port)
    async with test_utils.TestClient(server) as client:
        yield helpers.Daemon(client, clock, fakes_url)


def sms_calls(daemon) -> int:
    registry = daemon.app[web_mod.METRICS].registry
    return int(registry.get_sample_value("alertd_send_duration_seconds_count", {"channel": "sms"}))


async def test_two_daemons_share_a_fan_out_and_send_each_message_once(tmp_path, fakes_url, pg_schema_url):
    clock = helpers.ManualClock()
    async with instance(tmp_path, fakes_url, pg_schema_url, clock, "one") as one, \
            instance(tmp_path, fakes_url, pg_schema_url, clock, "two") as two:
        await one.sms.reset()
        await one.sms._call("POST", "/_fake/twilio/callbacks", {"enabled": False})
        token = await helpers.add_token(one.store, model.Role.ADMIN, ["*"])
        one.headers["issuer"] = two.headers["operator"] = helpers.auth_header(token)
        assert (await one.post("/v1/subscribers", json=PEOPLE)).status == 200
        sent = await one.send(channels=["sms"])
        await one.dispatcher.planned()
        await asyncio.gather(one.drain(), two.drain())
        received = [r["to"] for r in await one.sms.received()]
        assert sorted(received) == sorted(p["phone"] for p in PEOPLE)  # each once
        calls = [sms_calls(d) for d in (one, two)]
        assert sum(calls) == len(PEOPLE) and min(calls) > 0, calls  # both took a share
        helpers.REPORT.append(f"two daemons on PostgreSQL: {calls[0]} + {calls[1]} SMS, none twice")
        status = await two.status(sent["id"])
        assert status["counts"]["sms"]["sent"] == len(PEOPLE) and status["state"] == "completed"


async def test_a_cancel_on_one_daemon_stops_the_other(tmp_path, fakes_url, pg_schema_url):
    clock = helpers.ManualClock()
    async with instance(tmp_path, fakes_url, pg_schema_url, clock, "one") as one, \
            instance(tmp_path, fakes_url, pg_schema_url, clock, "two") as two:
        await one.sms.reset()
        token = await helpers.add_token(one.store, model.Role.ADMIN, ["*"])
        one.headers["issuer"] = helpers.auth_header(token)
        assert (await one.post("/v1/subscribers", json=PEOPLE)).status == 200
        sent = await one.send(channels=["sms"])
        await one.dispatcher.planned()
        assert (await one.post(f"/v1/alerts/{sent['id']}/cancel")).status == 200
        await asyncio.gather(one.drain(), two.drain())
        assert await one.sms.received() == []
        assert (await two.app[web_mod.STORE].counts(sent["id"]))["sms"]["cancelled"] == len(PEOPLE)


async def test_the_all_clear_of_a_cancel_mid_fan_out_reaches_exactly_those_reached_by_either(
    tmp_path, fakes_url, pg_schema_url
):
    clock = helpers.ManualClock()
    slow = "max_concurrency = 10"  # fifteen rounds of calls: the cancel lands mid-fan-out
    async with instance(tmp_path, fakes_url, pg_schema_url, clock, "one", slow) as one, \
            instance(tmp_path, fakes_url, pg_schema_url, clock, "two", slow) as two:
        await one.sms.reset()
        await one.sms._call("POST", "/_fake/twilio/callbacks", {"enabled": False})
        token = await helpers.add_token(one.store, model.Role.ADMIN, ["*"])
        one.headers["issuer"] = one.headers["operator"] = helpers.auth_header(token)
        assert (await one.post("/v1/subscribers", json=PEOPLE)).status == 200
        await one.sms.fail(delay=0.3, times=None)
        first = await one.status((await one.send(channels=["sms"]))["id"])
        await one.dispatcher.planned()
        counters = [test_allclear.SendCounter(20) for _ in (one, two)]
        one.dispatcher.metrics, two.dispatcher.metrics = counters
        # Not `drain`: one instance moving the shared clock past the other's leases would take its
        # calls on the wire for those of a dead instance.
        both = [d.dispatcher for d in (one, two)]
        fan_out = asyncio.gather(*(d.run_until_idle() for d in both))
        await asyncio.wait_for(asyncio.gather(*(c.enough.wait() for c in counters)), 30)  # both are sending
        ref = {k: first[k] for k in ("sender", "identifier", "sent")}
        cancel = await one.send(msg_type="cancel", references=[ref], event=None, area=None, channels=None,
                                template=None, params={})
        await asyncio.wait_for(fan_out, 60)
        await asyncio.wait_for(asyncio.gather(*(d.run_until_idle() for d in both)), 60)
        received = await one.sms.received()
        messages = (await (await one.get(f"/v1/alerts/{cancel['id']}/messages")).json())["messages"]
        all_clear = {m["body"] for m in messages}
        told = sorted(r["to"] for r in received if r["body"] in all_clear)
        reached = sorted(r["to"] for r in received if r["body"] not in all_clear)
        assert 0 < len(reached) < len(PEOPLE) and told == reached
