"""Channels run in sending processes of their own (`processes = N`): the real clients in children,
against the fakes, and the daemon's whole path through them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import decimal
import http
import json
import marshal
import os
import pathlib
import signal
import sys
import urllib.parse

import pytest
from aiohttp import test_utils
from twilio import request_validator

from alertd import app as app_mod, channels, config, demo, errors, model, testing
from alertd.channels import remote
from tests import helpers, test_channel_fcm

ACCOUNT_SID = "AC" + "0" * 32
TOKEN = "remote-test-auth-token-7f3c"  # distinctive, so a leak into /proc is unmistakable
SLOW, FAST = "+33612009999", "+33612000001"


def twilio_settings(fakes_url: str) -> dict:
    return {"account_sid": ACCOUNT_SID, "auth_token": TOKEN, "from": "+33700000000",
            "base_url": fakes_url, "status_callback": False}


def fcm_settings(fakes_url: str) -> dict:
    return {"project_id": "alertd-test", "base_url": fakes_url, "timeout": 5}


def context(name: str) -> channels.Context:
    return channels.Context(public_url="http://127.0.0.1:9", name=name)


def callback(form: dict[str, str], url: str = "http://127.0.0.1:9/v1/receipts/sms") -> channels.Callback:
    """A status callback as Twilio would sign it with `TOKEN`."""
    signature = request_validator.RequestValidator(TOKEN).compute_signature(url, form)
    body = urllib.parse.urlencode(form).encode()
    return channels.Callback.of(url, {"X-Twilio-Signature": signature}, body, "application/x-www-form-urlencoded")


@contextlib.asynccontextmanager
async def running(plugin: str, settings: dict, name: str, processes: int = 1):
    chan = remote.Remote(plugin, settings, context(name), processes)
    await chan.start()
    try:
        yield chan
    finally:
        await chan.close()


def sms(to: str, i: int = 1, alert_id: str = "a-remote") -> model.Message:
    return model.Message(delivery_id=i, alert_id=alert_id, kind=model.Kind.SMS, to=to, body="Mise à l'abri")


def push(to: str) -> model.Message:
    return model.Message(delivery_id=1, alert_id="a-remote", kind=model.Kind.PUSH, to=to, body="Abri", title="Alerte")


@pytest.fixture
async def twilio(fakes_url):
    control = testing.FakeControl(fakes_url, "twilio")
    await control.reset()
    return control


# -- the channel contract, through a child ---------------------------------------------------------


class TestTwilioContract(testing.ChannelContract):
    @pytest.fixture
    async def channel(self, fakes_url):
        async with running("twilio", twilio_settings(fakes_url) | {"timeout": 1}, "sms") as chan:
            yield chan

    @pytest.fixture
    def secrets(self):
        return [TOKEN]

    @pytest.fixture
    def delivered_callback(self):
        return lambda sid: callback({"MessageSid": sid, "MessageStatus": "delivered"})

    @pytest.fixture
    def fake(self, fakes_url):
        return testing.FakeControl(fakes_url, "twilio")

    @pytest.fixture
    def permanent_failure(self):
        return {"status": 400, "code": 21211}

    def address(self, i: int) -> str:
        return f"+3361200{i:04d}"


class TestFCMContract(testing.ChannelContract):
    @pytest.fixture
    async def channel(self, fakes_url):
        async with running("fcm", fcm_settings(fakes_url) | {"timeout": 1}, "push") as chan:
            yield chan

    @pytest.fixture
    def dead_address_failure(self):
        return {"status": 404, "code": "UNREGISTERED"}

    @pytest.fixture
    def fake(self, fakes_url):
        return testing.FakeControl(fakes_url, "fcm")

    @pytest.fixture
    def permanent_failure(self):
        return {"code": "INVALID_ARGUMENT", "status": 400}

    def address(self, i: int) -> str:
        return f"fid-{i:04d}-cHVzaA"

    async def test_unregistered_token_is_permanent_and_dead(self, channel, fake):
        await fake.fail(status=404, code="UNREGISTERED", to="tok-gone", times=None)
        for to in ("dead-abc123", "tok-gone"):
            with pytest.raises(errors.Permanent) as caught:
                await channel.send(push(to))
            assert (caught.value.code, caught.value.dead_address) == ("UNREGISTERED", True)
        assert await fake.received() == []


# -- the children's lives --------------------------------------------------------------------------


async def test_a_killed_child_fails_its_calls_as_transient_and_is_replaced(fakes_url, twilio):
    await twilio.fail(status=503, delay=3, to=SLOW, times=None)  # answers long after the kill, and records nothing
    async with running("twilio", twilio_settings(fakes_url), "sms") as chan:
        first = chan.children[0].proc.pid
        slow = [asyncio.create_task(chan.send(sms(SLOW, i))) for i in range(3)]
        await chan.send(sms(FAST))  # answered after the child took the slow calls: they are on the wire
        os.kill(first, signal.SIGKILL)
        results = await asyncio.wait_for(asyncio.gather(*slow, return_exceptions=True), 10)
        assert all(isinstance(r, errors.Transient) and r.code == "sender_died" for r in results), results
        assert isinstance(await chan.send(sms("+33612000002")), model.Receipt)
        assert chan.children[0].proc.pid != first
    assert [r["to"] for r in await twilio.received()] == [FAST, "+33612000002"]


async def test_close_lets_the_calls_on_the_wire_finish_then_the_child_exits(fakes_url, twilio):
    await twilio.fail(delay=0.5, to=SLOW, times=None)  # slow, then accepted
    chan = remote.Remote("twilio", twilio_settings(fakes_url), context("sms"), 1)
    await chan.start()
    proc = chan.children[0].proc
    slow = [asyncio.create_task(chan.send(sms(SLOW, i))) for i in range(4)]
    await chan.send(sms(FAST))  # the slow calls are in the child now
    *receipts, _ = await asyncio.wait_for(asyncio.gather(*slow, chan.close()), 10)
    assert all(isinstance(r, model.Receipt) for r in receipts)
    assert len({r.provider_id for r in receipts}) == 4
    assert proc.returncode == 0
    assert sorted(r["to"] for r in await twilio.received()) == [FAST] + [SLOW] * 4


async def test_the_settings_travel_over_the_pipe_not_argv_nor_environment(fakes_url, twilio, monkeypatch):
    # The daemon's own environment may hold the secret too (ALERTD_* overrides): not passed on.
    monkeypatch.setenv("ALERTD_CHANNELS__SMS__AUTH_TOKEN", TOKEN)
    async with running("twilio", twilio_settings(fakes_url), "sms") as chan:
        pid = chan.children[0].proc.pid
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
        assert b"alertd.channels.remote" in cmdline  # the child it claims to be
        assert TOKEN.encode() not in cmdline and TOKEN.encode() not in environ
        assert b"ALERTD_" not in environ
        assert await chan.send(sms(FAST))  # and it got its token all the same


async def test_a_child_that_cannot_start_its_channel_refuses_the_start(fakes_url, tmp_path):
    # The plugin's constructor accepts it in the daemon; only the child's start() opens the file.
    settings = fcm_settings(fakes_url) | {"service_account_file": str(tmp_path / "missing-sa.json")}
    chan = remote.Remote("fcm", settings, context("push"), 1)
    try:
        with pytest.raises(errors.ChannelMisconfigured) as caught:
            await chan.start()
        assert "push" in str(caught.value) and "service_account_file" in str(caught.value)
        assert chan.children[0].proc is None
        with pytest.raises(errors.Transient) as caught:  # and a send cannot bring it up either
            await asyncio.wait_for(chan.send(push("fid-1")), 10)
        assert (caught.value.code, caught.value.retry_after) == ("sender_start", remote.RESTART_PAUSE)
        assert "service_account_file" in str(caught.value)
    finally:
        await chan.close()


async def test_a_halt_drops_the_alerts_messages_handed_over_and_not_begun(fakes_url, twilio):
    async with running("twilio", twilio_settings(fakes_url), "sms") as chan:
        frames = written_frames(chan.children[0])
        stop = [asyncio.create_task(chan.send(sms(f"+3361201{i:04d}", i, "a-stop"))) for i in range(5)]
        go = [asyncio.create_task(chan.send(sms(f"+3361202{i:04d}", i, "a-go"))) for i in range(2)]
        await asyncio.ensure_future(chan.halt("a-stop"))  # the tasks hand over their messages first
        # One frame, the halt last: the child had begun none of the calls when it read the halt.
        alerts = [[p if isinstance(p, str) else p[1] for _, p in f] for f in frames]  # a message's alert, a halt's
        assert alerts == [["a-stop"] * 5 + ["a-go"] * 2 + ["a-stop"]]
        stopped = await asyncio.gather(*stop, return_exceptions=True)
        assert all(isinstance(r, errors.Halted) for r in stopped), stopped
        assert all(isinstance(r, model.Receipt) for r in await asyncio.gather(*go))
        with pytest.raises(errors.Halted):  # the alert stays halted
            await chan.send(sms("+33612019999", 9, "a-stop"))
        assert isinstance(await chan.send(sms("+33612029999", 9, "a-go")), model.Receipt)
    assert sorted(r["to"] for r in await twilio.received()) == ["+33612020000", "+33612020001", "+33612029999"]


def written_frames(child: remote.Child) -> list[list]:
    """The frames the daemon writes to `child` from now on, decoded."""
    frames: list[list] = []
    write = child.out._write

    def recording(data: bytes) -> None:
        frames.append(marshal.loads(data[remote.FRAME.size:]))
        write(data)

    child.out._write = recording
    return frames


async def test_one_stuck_call_gets_the_child_killed_while_the_others_are_answered(fakes_url, twilio):
    await twilio.fail(status=503, delay=5, to=SLOW, times=None)  # answers long after the kill, and records nothing
    async with running("twilio", twilio_settings(fakes_url), "sms") as chan:
        child = chan.children[0]
        child.patience = 1.0
        loop = asyncio.get_running_loop()
        began = loop.time()
        stuck = asyncio.create_task(chan.send(sms(SLOW)))
        ended: list[float] = []
        stuck.add_done_callback(lambda _: ended.append(loop.time()))
        # Quick calls flow all along (three at a time) until the stuck one comes back; the kill ends them too.
        quick = await asyncio.gather(*(keep_sending(chan, stuck, k, began + 5) for k in range(3)))
        with pytest.raises(errors.Transient) as caught:
            await stuck
        assert caught.value.code == "sender_died"
        assert child.patience < ended[0] - began <= child.patience * 1.5 + 1
        receipts = [r for worker in quick for r in worker[:-1]]
        assert len(receipts) > 10  # answers were flowing while the stuck call waited
        assert all(isinstance(r, model.Receipt) for r in receipts)
        # Each worker's last call may have been on the wire at the kill.
        last = [worker[-1] for worker in quick]
        assert all(isinstance(r, model.Receipt) or r.code == "sender_died" for r in last), last
    received = [r["to"] for r in await twilio.received()]
    assert SLOW not in received and len(receipts) <= len(received) <= sum(map(len, quick))


async def keep_sending(chan: remote.Remote, stuck: asyncio.Task, k: int, deadline: float) -> list:
    """Quick sends one after the other until `stuck` is done, or `deadline` (loop time)."""
    results: list = []
    loop = asyncio.get_running_loop()
    while not stuck.done() and loop.time() < deadline:
        try:
            results.append(await chan.send(sms(f"+336121{k}{len(results):04d}")))
        except errors.Transient as exc:
            results.append(exc)
    return results


def senders() -> set[int]:
    """The sending processes of this test process that are running, as /proc lists them."""
    me, found = str(os.getpid()), set()
    for proc in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError):  # a process may end while we look
            ppid = (proc / "stat").read_text().rpartition(")")[2].split()[1]
            if ppid == me and b"alertd.channels.remote" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
    return found


@pytest.fixture
def spawned(monkeypatch) -> list[str]:
    """The names of the children each start of a sending process was for, failed or not."""
    starts: list[str] = []
    spawn = remote.Child._spawn

    async def counted(child: remote.Child) -> None:
        starts.append(child.name)
        await spawn(child)

    monkeypatch.setattr(remote.Child, "_spawn", counted)
    return starts


def starting(result: object) -> bool:
    """The failure of a child that cannot start again: transient, for `RESTART_PAUSE`."""
    return isinstance(result, errors.Transient) and result.code == "sender_start"


async def test_a_child_that_cannot_start_again_fails_the_sends_at_once(fakes_url, tmp_path, monkeypatch, spawned):
    account = tmp_path / "sa.json"
    account.write_text(json.dumps(test_channel_fcm.service_account(fakes_url + "/token")))
    settings = fcm_settings(fakes_url) | {"service_account_file": str(account)}
    async with running("fcm", settings, "push") as chan:
        child = chan.children[0]
        assert isinstance(await chan.send(push("fid-1")), model.Receipt)  # the key works at start
        account.unlink()  # the operator moved it away: the next child cannot start
        os.kill(child.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(child._reader, 10)  # the daemon has seen it die
        with pytest.raises(errors.Transient) as caught:  # the messages wait and go again, as for a hiccup
            await asyncio.wait_for(chan.send(push("fid-2")), 10)
        assert (caught.value.code, caught.value.retry_after) == ("sender_start", remote.RESTART_PAUSE)
        assert "push" in str(caught.value) and "service_account_file" in str(caught.value)
        assert spawned == ["push-0", "push-0"]

        loop = asyncio.get_running_loop()
        began = loop.time()
        results = await asyncio.gather(*(chan.send(push(f"fid-{i}")) for i in range(20)), return_exceptions=True)
        assert loop.time() - began < 0.5  # not 20 starts in turn, each waiting for a child's answer
        assert all(starting(r) and "push" in str(r) for r in results), results
        assert len(spawned) == 2  # they all got the last failure: no child started during the pause
        assert senders() == set()

        monkeypatch.setattr(remote, "RESTART_PAUSE", 0.0)  # the pause is over: a start is tried again
        with pytest.raises(errors.Transient) as caught:
            await asyncio.wait_for(chan.send(push("fid-3")), 10)
        assert starting(caught.value)
        assert len(spawned) == 3
        account.write_text(json.dumps(test_channel_fcm.service_account(fakes_url + "/token")))  # put back
        assert isinstance(await asyncio.wait_for(chan.send(push("fid-4")), 10), model.Receipt)
        assert len(spawned) == 4 and senders() == {chan.children[0].proc.pid}


async def test_a_send_goes_to_a_live_child_rather_than_start_a_dead_one(fakes_url, twilio, spawned):
    async with running("twilio", twilio_settings(fakes_url), "sms", processes=2) as chan:
        dead, live = chan.children
        os.kill(dead.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(dead._reader, 10)  # the daemon has seen it die
        # Even five at once, all to the busier live child: none waits for a start.
        results = await asyncio.gather(*(chan.send(sms(f"+3361203{i:04d}", i)) for i in range(5)))
        assert all(isinstance(r, model.Receipt) for r in results)
        assert (dead.alive, live.alive) == (False, True)
        assert spawned == ["sms-0", "sms-1"]  # the two at start, no other
        assert senders() == {live.proc.pid}
    assert len(await twilio.received()) == 5


async def test_sending_processes_share_the_push_quota_not_multiply_it(fakes_url):
    fake = testing.FakeControl(fakes_url, "fcm")
    await fake.reset()
    settings = fcm_settings(fakes_url) | {"quota_per_minute": 600}  # 10 a second for the channel
    async with running("fcm", settings, "push", processes=2) as chan:
        messages = [dataclasses.replace(push(f"fid-{i}"), delivery_id=i) for i in range(25)]
        results = await asyncio.wait_for(asyncio.gather(*(chan.send(m) for m in messages)), 20)
    assert all(isinstance(r, model.Receipt) for r in results), results
    arrived = sorted(r["at"] for r in await fake.received())
    assert arrived[-1] - arrived[0] >= 1.4  # 10 at once, then 10 a second between both processes
    assert sum(a - arrived[0] < 0.5 for a in arrived) <= 16


def test_a_remote_channel_declares_its_plugins_abilities_not_its_other_attributes(fakes_url):
    chan = remote.Remote("fcm", fcm_settings(fakes_url) | {"max_concurrency": 7}, context("push"), 2)
    assert (chan.kind, chan.concurrency) == (model.Kind.PUSH, 7)
    assert isinstance(chan, channels.Topics) and isinstance(chan, channels.DeadAddresses)  # FCMPush's
    assert isinstance(chan, channels.Halts) and not isinstance(chan, channels.Receipts)
    assert not hasattr(chan, "project_id") and not hasattr(chan, "send_batch")  # nothing looked up by name
    assert [c.proc for c in chan.children] == [None, None]  # none of this started a process


async def test_a_remote_channel_verifies_its_receipts_in_the_daemon(fakes_url):
    """Twilio's callbacks reach the daemon: the plugin built there checks them, with no process."""
    chan = remote.Remote("twilio", twilio_settings(fakes_url), context("sms"), 1)
    assert isinstance(chan, channels.Receipts) and chan.receipt_alias == "twilio"
    good = callback({"MessageSid": "SM1", "MessageStatus": "delivered"})
    assert await chan.receipt(good) == [channels.Status("SM1", model.State.DELIVERED)]
    with pytest.raises(errors.Forbidden):
        await chan.receipt(dataclasses.replace(good, headers={"x-twilio-signature": "forged"}))
    assert [c.proc for c in chan.children] == [None]


# -- results crossing the pipe ---------------------------------------------------------------------


class PluginBusy(errors.Transient):
    """A plugin's own kind of transient failure."""


def across(result: model.Receipt | errors.DeliveryError) -> model.Receipt | errors.DeliveryError:
    """The result as the daemon gets it from a child."""
    return remote.load_result(marshal.loads(marshal.dumps(remote.dump_result(result))))


def test_a_transient_failure_with_a_status_code_and_a_decimal_delay_crosses():
    back = across(errors.Transient("x", code=http.HTTPStatus(503), retry_after=decimal.Decimal("2.5")))
    assert type(back) is errors.Transient
    assert (back.message, back.code, back.retry_after) == ("x", "503", 2.5)


def test_a_permanent_failure_with_a_numeric_code_and_a_truthy_dead_address_crosses():
    back = across(errors.Permanent("y", code=21211, dead_address=1))
    assert type(back) is errors.Permanent
    assert (back.message, back.code) == ("y", "21211")
    assert back.dead_address is True


def test_a_plugin_subclass_crosses_as_the_alertd_class_it_derives_from():
    back = across(PluginBusy("z", code="busy", retry_after=3))
    assert type(back) is errors.Transient
    assert (back.message, back.code, back.retry_after) == ("z", "busy", 3.0)
    misconfigured = across(errors.ChannelMisconfigured("key refused", code=http.HTTPStatus.UNAUTHORIZED))
    assert (type(misconfigured), misconfigured.code) == (errors.ChannelMisconfigured, "401")
    assert across(model.Receipt(provider_id=12345)) == model.Receipt("12345", "sent")


# -- through the daemon ----------------------------------------------------------------------------


def children(d: helpers.Daemon) -> list:
    chans = [c for c in d.dispatcher.channels.values() if isinstance(c, remote.Remote)]
    return [child.proc for c in chans for child in c.children if child.proc is not None]


@contextlib.asynccontextmanager
async def serving(tmp_path, fakes_url, sms: str = ""):
    """The daemon on SQLite with SMS and push in a sending process each, no background work;
    `sms` is more TOML lines for the SMS channel."""
    port = demo.free_port()
    cfg = helpers.load_config(tmp_path, fakes_url, port, sms=f"processes = 1\n{sms}", push="processes = 1")
    clock = helpers.ManualClock()
    server = test_utils.TestServer(app_mod.build(cfg, clock=clock, run_workers=False), host="127.0.0.1", port=port)
    async with test_utils.TestClient(server) as client:
        d = helpers.Daemon(client, clock, fakes_url)
        started = children(d)
        assert len(started) == 2
        await d.populate()
        yield d
        started += children(d)  # restarted ones too
    assert [p.returncode for p in started] == [0] * len(started)  # the app's close ended them all


@pytest.fixture
async def daemon(tmp_path, fakes_url):
    async with serving(tmp_path, fakes_url) as d:
        yield d


@pytest.fixture
async def narrow_daemon(tmp_path, fakes_url):
    """As `daemon`, its SMS channel making at most three calls at a time."""
    async with serving(tmp_path, fakes_url, sms="max_concurrency = 3") as d:
        yield d


async def test_an_alert_reaches_everyone_once_through_the_sending_processes(daemon):
    accepted = await daemon.send()
    await daemon.drain()
    sms_to = sorted(r["to"] for r in await daemon.sms.received())
    assert sms_to == ["+33612345678", "+33622334455", "+33633445566"]  # each once; Lyon is outside
    push_to = sorted(r["to"] for r in await daemon.push.received())
    assert push_to == ["tok-es-000002", "tok-fr-000001"]  # the fake refuses dead-tok-ar: UNREGISTERED
    status = await daemon.status(accepted["id"])
    assert status["state"] == "completed"
    assert status["counts"]["sms"]["sent"] == 3
    assert status["counts"]["push"]["sent"] == 2 and status["counts"]["push"]["failed"] == 1
    assert (await daemon.store.get_recipient("p-ar")).push_token_dead  # dead_address crossed the pipe


async def test_a_cancelled_alert_sends_nothing_through_the_sending_processes(daemon):
    alert = await daemon.send(channels=["sms", "push"])
    await daemon.dispatcher.planned()
    resp = await daemon.post(f"/v1/alerts/{alert['id']}/cancel")
    assert resp.status == 200, await resp.text()
    await daemon.drain()
    status = await daemon.status(alert["id"])
    assert status["state"] == "cancelled"
    assert status["counts"]["sms"]["cancelled"] == 3 and status["counts"]["push"]["cancelled"] == 3
    assert await daemon.sms.received() == [] and await daemon.push.received() == []


async def test_after_a_cancel_is_answered_only_the_calls_on_the_wire_reach_the_provider(narrow_daemon, monkeypatch):
    d = narrow_daemon
    many = [{"id": f"p-many-{i:02d}", "phone": f"+3361204{i:04d}", "locale": "fr", "zones": [helpers.PARIS]}
            for i in range(30)]
    assert (await d.post("/v1/subscribers", who="admin", json=many)).status == 200
    await d.sms.fail(delay=0.3, times=None)  # each SMS takes a while, then is accepted: 11 rounds of 3
    some_sent = asyncio.Event()
    sent = d.dispatcher.metrics.sent

    def noting(*args) -> None:
        sent(*args)
        some_sent.set()

    monkeypatch.setattr(d.dispatcher.metrics, "sent", noting)
    alert = await d.send(channels=["sms"])
    fan_out = asyncio.create_task(d.drain())  # the lanes run while the API answers
    await asyncio.wait_for(some_sent.wait(), 10)
    resp = await d.post(f"/v1/alerts/{alert['id']}/cancel")
    assert resp.status == 200, await resp.text()
    at_answer = len(await d.sms.received())
    await asyncio.wait_for(fan_out, 10)
    received = len(await d.sms.received())
    assert at_answer >= 1
    assert received - at_answer <= 3  # the calls on the wire at the answer (max_concurrency), no more
    status = await d.status(alert["id"])
    assert status["state"] == "cancelled"
    counts = {state: n for state, n in status["counts"]["sms"].items() if n}
    assert set(counts) == {"sent", "cancelled"}, counts  # nothing left pending, sending or failed
    assert counts["sent"] == received and counts["sent"] + counts["cancelled"] == 33


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", '"two"', "65", "[2]", "{a = 1}"])
def test_bad_process_counts_are_reported_with_their_field(tmp_path, value):
    path = helpers.write_config(tmp_path, "http://127.0.0.1:9", demo.free_port(), sms=f"processes = {value}")
    problems = config.check(str(path), env={})
    assert [p for p in problems if p.startswith("channels.sms.processes")], problems


def test_process_count_from_the_environment_is_not_a_plugin_setting(tmp_path):
    path = helpers.write_config(tmp_path, "http://127.0.0.1:9", demo.free_port())
    cfg = config.load(str(path), env={"ALERTD_CHANNELS__SMS__PROCESSES": "2"})
    assert cfg.channels["sms"].processes == 2
    assert "processes" not in cfg.channels["sms"].table
    assert cfg.channels["push"].processes == 0  # the others stay in the daemon's process


def test_a_setting_that_cannot_travel_to_a_child_is_reported_by_check_config(tmp_path, fakes_url):
    path = helpers.write_config(tmp_path, fakes_url, demo.free_port(), sms="processes = 1\nsince = 2026-01-01")
    problems = config.check(str(path), env={})
    assert [p for p in problems if p.startswith("channels.sms.since:")], problems
    assert all("processes" in p for p in problems if p.startswith("channels.sms.since:"))
    # In the daemon's own process a date could travel, but twilio's settings model knows no `since`.
    in_process = helpers.write_config(tmp_path, fakes_url, demo.free_port(), sms="since = 2026-01-01")
    assert config.check(str(in_process), env={}) == ["channels.sms.since: unknown key"]




async def test_a_halt_during_a_restart_stops_the_message_waiting_for_it(fakes_url, twilio):
    async with running("twilio", twilio_settings(fakes_url), "sms") as chan:
        child = chan.children[0]
        child.proc.kill()
        await child._reader  # the daemon saw it die
        send = asyncio.create_task(chan.send(sms(FAST, 1, "a-late")))  # starts a new child (a few 100 ms)
        await asyncio.sleep(0)  # the send is now waiting for the start
        await chan.halt("a-late")  # answered while the child starts: the waiting message must not go
        with pytest.raises(errors.Halted):
            await send
        assert child.alive and await twilio.received() == []


async def test_a_message_dropped_for_a_cancel_is_recorded_cancelled_not_failed(daemon):
    await daemon.send(channels=["sms"])
    await daemon.dispatcher.planned()
    [held, *_] = await daemon.store.claim("sms", daemon.dispatcher.owner, daemon.clock(), 3,
                                          daemon.dispatcher.settings.lease)
    sms_channel = daemon.dispatcher.channels["sms"]
    await sms_channel.halt(held.alert_id)  # in the children only: the dispatcher's own check would not see it
    outcome = await daemon.dispatcher.deliver(sms_channel, held)
    assert outcome.state is model.State.CANCELLED and outcome.last_error is None
    assert await daemon.sms.received() == []


# -- the log when the daemon is killed -------------------------------------------------------------

# A daemon in miniature: a channel in one sending process, slow calls handed over, then "handed".
KILLED_PARENT = """
import asyncio, json, sys
from alertd import logs, model
from alertd.channels import remote

async def main():
    logs.configure("info", "auto")
    settings = json.loads(sys.stdin.readline())
    chan = remote.Remote("twilio", settings, remote.channels.Context("http://127.0.0.1:9", "sms"), 1)
    await chan.start()
    message = lambda i, to: model.Message(i, "a-killed", model.Kind.SMS, to, "Mise à l'abri")
    slow = [asyncio.create_task(chan.send(message(i, sys.argv[1]))) for i in range(20)]
    await chan.send(message(99, sys.argv[2]))  # answered after the child took the slow calls
    print("handed", flush=True)
    await asyncio.sleep(60)  # killed meanwhile

asyncio.run(main())
"""


async def test_a_child_whose_daemon_is_killed_mid_send_writes_only_json(fakes_url, twilio):
    await twilio.fail(delay=1, to=SLOW, times=None)  # answered after the daemon is gone
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_PARENT, SLOW, FAST,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        parent.stdin.write(json.dumps(twilio_settings(fakes_url)).encode() + b"\n")
        assert await asyncio.wait_for(parent.stdout.readline(), 30) == b"handed\n"
        parent.kill()
        # The child shares the parent's stderr: it is at its end once the child has exited too.
        err = await asyncio.wait_for(parent.stderr.read(), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            parent.kill()
        await parent.wait()
    lines = err.decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line, or the test fails here
    gone = [r for r in records if r.get("logger") != "alertd.channels.remote" or "started" not in r["event"]]
    assert len(gone) <= 1, records  # the child ends quietly: one line at most
    assert len([r for r in await twilio.received() if r["to"] == SLOW]) == 20  # the calls on the wire went out


def test_a_message_crosses_to_a_sending_process_with_its_sender():
    message = model.Message(7, "a-1", model.Kind.SMS, "+33612000001", "Mise à l'abri", sender="ALERTE")
    assert remote.load_message(marshal.loads(marshal.dumps(remote.dump_message(message)))) == message
