"""Two daemons sharing one PostgreSQL store share the work: each delivery is claimed by one of them,
every recipient gets the alert once, and a cancel on one stops the other."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import test_utils

from alertd import app as app_mod, demo, model, web as web_mod
from tests import helpers

PEOPLE = [
    {"id": f"c{i:04d}", "phone": f"+336{i:08d}", "locale": "fr", "zones": [helpers.PARIS]} for i in range(300)
]


@contextlib.asynccontextmanager
async def instance(tmp_path, fakes_url, store_url, clock, name):
    folder = tmp_path / name
    folder.mkdir()
    port = demo.free_port()
    cfg = helpers.load_config(folder, fakes_url, port, store=store_url, dispatcher="batch_size = 20")
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
