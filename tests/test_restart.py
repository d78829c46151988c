"""A restarted daemon listens before it sends: every status callback for what it sends is heard.

Twilio posts a message's status callbacks once, seconds after the send; a daemon that sends before
its port accepts connections loses them, and those deliveries stay `sent` for ever.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import aiohttp

from alertd import demo, testing
from tests import helpers, test_crash

N = test_crash.N
CONCURRENCY = 10


def start_daemon(config_path, log) -> subprocess.Popen:
    """`test_crash.start_daemon`, its log (and its sending processes') appended to the file `log`."""
    env = os.environ | {"ALERTD_LOG__LEVEL": "warning"}
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "alertd.cli", "serve", "--config", str(config_path)], env=env, stderr=err
        )


async def callbacks(fakes_url: str) -> dict:
    """The fake Twilio's record of the status callbacks it posted, and how many it still has to."""
    return await testing.FakeControl(fakes_url, "twilio").callbacks()


async def all_posted(fakes_url: str) -> list[dict]:
    async def none_pending():
        facts = await callbacks(fakes_url)
        return None if facts["pending"] else facts["posted"]

    return await test_crash.wait_until(none_pending, 30, "the fake to post its status callbacks")


async def deliveries(http: aiohttp.ClientSession, base: str, alert_id: str) -> list[dict]:
    found, after = [], 0
    while after is not None:
        async with http.get(f"{base}/v1/alerts/{alert_id}/deliveries", params={"after": after, "limit": 500}) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        found += page["deliveries"]
        after = page["next"]
    return found


async def test_a_restarted_daemon_hears_every_callback_for_what_it_sends(tmp_path, fakes_url):
    port = demo.free_port()
    # Both channels in sending processes, as config/alertd.toml advises: a restart takes seconds to
    # start them, the time a daemon that sent first would have sent in without listening.
    path = helpers.write_config(
        tmp_path, fakes_url, port, dispatcher="lease_seconds = 2",
        sms=f"max_concurrency = {CONCURRENCY}\nprocesses = 1", push="processes = 1",
    )
    token = await test_crash.seed(f"sqlite:///{tmp_path / 'alertd.db'}")
    sms = testing.FakeControl(fakes_url, "twilio")
    await sms.reset()  # callbacks on, each message reported delivered
    await sms.fail(delay=0.1, times=None)  # a slow provider keeps the fan-out going long enough
    base = f"http://127.0.0.1:{port}"

    log = tmp_path / "daemon.log"
    daemon = start_daemon(path, log)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        await test_crash.wait_until(lambda: test_crash.up(base), 20, "the daemon to listen")
        async with http.post(base + "/v1/alerts", json=helpers.order(channels=["sms"], expires=None)) as r:
            assert r.status == 202, await r.text()
            alert_id = (await r.json())["id"]

        async def some_sent():
            return len(await sms.received()) >= N // 4

        await test_crash.wait_until(some_sent, 30, "a quarter of the fan-out")
        senders = test_crash.sending_processes(daemon.pid)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)

        async def orphans_gone():  # they answer the calls on the wire to no one, then exit
            return not any(test_crash.running(pid) for pid in senders)

        await test_crash.wait_until(orphans_gone, 10, "the sending processes of the killed daemon to exit")
        # What the killed daemon sent has had its callbacks, heard or refused, before the restart.
        before = len(await all_posted(fakes_url))
        sent_before = len(await sms.received())
        assert sent_before < N, "the fan-out finished before the kill; slow the fake down"

        daemon = start_daemon(path, log)
        try:
            await test_crash.wait_until(lambda: test_crash.up(base), 20, "the restarted daemon")

            async def completed():
                async with http.get(f"{base}/v1/alerts/{alert_id}") as r:
                    body = await r.json()
                return body if body["state"] == "completed" else None

            await test_crash.wait_until(completed, 60, "the alert to complete after the restart")
            posted = await all_posted(fakes_url)
            status = await completed()
            recorded = await deliveries(http, base, alert_id)
        finally:
            daemon.terminate()
            daemon.wait(10)

    # Every line of the log is JSON, the killed daemon's sending processes' too: one line each about it.
    records = [json.loads(line) for line in log.read_text().splitlines()]
    farewells = [r["pid"] for r in records if r["event"] == "the daemon is gone: its answers dropped"]
    assert sorted(farewells) == sorted(senders)
    after = posted[before:]
    refused = [p for p in after if not p["accepted"]]
    helpers.REPORT.append(
        f"restart mid-fan-out: {len(await sms.received()) - sent_before} SMS after the restart,"
        f" {len(after)} status callbacks, {len(refused)} refused"
    )
    assert after, "the restarted daemon sent nothing"
    assert refused == [], f"{len(refused)} of {len(after)} callbacks refused, the first: {refused[0]}"
    # alertd's counts are the fake's: delivered exactly where the fake reported it and was heard.
    heard = {p["sid"] for p in posted if p["status"] == "delivered" and p["accepted"]}
    delivered = [d for d in recorded if d["provider_id"] in heard]
    counts = status["counts"]["sms"]
    assert len(recorded) == N
    assert {d["state"] for d in delivered} <= {"delivered"}
    assert counts.get("delivered", 0) == len(delivered)
    assert counts.get("sent", 0) == N - len(delivered)
