"""The siren-http channel against the fake siren gateway, over loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import aiohttp
import pytest
from aiohttp import web

from alertd import channels, errors, model, testing
from alertd.channels import siren_http

TOKEN = "gw-token"
RECEIPT_TOKEN = "gw-receipt-token-5e1d"


def make_channel(fakes_url: str, **config) -> siren_http.SirenHTTP:
    settings = {"base_url": fakes_url + "/siren", "token": TOKEN} | config
    context = channels.Context(public_url="http://127.0.0.1", name="siren")
    return siren_http.SirenHTTP(settings, context)


@pytest.fixture
async def channel(fakes_url):
    chan = make_channel(fakes_url)
    await chan.start()
    yield chan
    await chan.close()


@pytest.fixture
def fake(fakes_url):
    return testing.FakeControl(fakes_url, "siren")


@pytest.fixture
def permanent_failure():
    return {"status": 422, "code": "fault"}


def command(delivery_id: int, to: str, verb: str, body: str = "") -> model.Message:
    return model.Message(
        delivery_id=delivery_id, alert_id="a-1", kind=model.Kind.SIREN, to=to, body=body,
        command=verb,
    )


class TestSirenContract(testing.ChannelContract):
    @pytest.fixture
    async def channel(self, fakes_url):
        chan = make_channel(fakes_url, timeout=1, receipt_token=RECEIPT_TOKEN, acks=True, heartbeats=True)
        await chan.start()
        yield chan
        await chan.close()

    @pytest.fixture
    def delivered_callback(self):
        def ack(command_id: str) -> channels.Callback:
            body = {"type": "ack", "command_id": command_id, "siren_id": "siren-75056-1", "request_id": "1",
                    "result": "activated", "at": "2026-11-26T10:00:00Z"}
            headers = {"authorization": f"Bearer {RECEIPT_TOKEN}"}
            return channels.Callback.of("http://127.0.0.1/v1/receipts/siren", headers, json.dumps(body).encode(),
                                        "application/json")
        return ack

    def address(self, i: int) -> str:
        return f"siren-75056-{i}"


class TestSirenHTTP:
    @pytest.fixture(autouse=True)
    async def _reset(self, fake):
        await fake.reset()

    def test_registered_as_the_siren_http_entry_point(self):
        assert channels.load("siren-http") is siren_http.SirenHTTP

    @pytest.mark.parametrize(
        "verb, pattern",
        [
            ("activate", "saip_alert"),
            ("cancel", "saip_end"),
            ("test", "saip_test"),
            ("silent_test", "saip_test"),
        ],
    )
    async def test_each_command_carries_its_pattern(self, channel, fake, verb, pattern):
        await channel.send(command(1, "s-1", verb))
        [received] = await fake.received()
        assert (received["command"], received["pattern"], received["to"]) == (verb, pattern, "s-1")
        assert (received["alert_id"], received["request_id"]) == ("a-1", "1")

    async def test_patterns_are_configurable(self, fakes_url, fake):
        chan = make_channel(fakes_url, pattern_activate="long_wail")
        await chan.start()
        try:
            await chan.send(command(1, "s-1", "activate", body="Mise à l'abri"))
        finally:
            await chan.close()
        [received] = await fake.received()
        assert (received["pattern"], received["body"]) == ("long_wail", "Mise à l'abri")

    async def test_a_delivery_sent_twice_sounds_the_siren_once(self, channel, fake):
        first = await channel.send(command(42, "s-1", "activate"))
        again = await channel.send(command(42, "s-1", "activate"))
        other = await channel.send(command(43, "s-1", "activate"))
        assert first.provider_id == again.provider_id != other.provider_id
        assert [r["request_id"] for r in await fake.received()] == ["42", "43"]

    async def test_the_gateway_reports_the_state_the_commands_left(self, channel):
        assert await channel.siren_state("s-2") == "ready"
        await channel.send(command(1, "s-2", "activate"))
        assert await channel.siren_state("s-2") == "activated"
        await channel.send(command(2, "s-2", "cancel"))
        assert await channel.siren_state("s-2") == "ready"
        assert await channel.siren_state("fault-7") == "fault"

    async def test_a_rejected_token_is_a_misconfigured_channel(self, fakes_url, fake):
        chan = make_channel(fakes_url, token="bad")
        await chan.start()
        try:
            with pytest.raises(errors.ChannelMisconfigured) as caught:
                await chan.send(command(1, "s-1", "activate"))
        finally:
            await chan.close()
        assert caught.value.code == "unauthorized"
        assert await fake.received() == []

    def test_the_token_stays_out_of_the_channels_repr(self, channel):
        assert TOKEN not in repr(channel)

    async def test_a_busy_siren_is_transient(self, channel, fake):
        with pytest.raises(errors.Transient) as caught:
            await channel.send(command(1, "busy-1", "activate"))
        assert caught.value.code == "busy"
        assert await fake.received() == []

    @pytest.mark.parametrize("siren, code", [("fault-1", "fault"), ("unknown-1", "unknown_siren")])
    async def test_a_faulty_or_unknown_siren_is_permanent(self, channel, siren, code):
        with pytest.raises(errors.Permanent) as caught:
            await channel.send(command(1, siren, "activate"))
        assert caught.value.code == code
        assert not isinstance(caught.value, errors.ChannelMisconfigured)

    async def test_a_command_sirens_do_not_know_is_permanent_and_not_sent(self, channel, fake):
        with pytest.raises(errors.Permanent):
            await channel.send(command(1, "s-1", "send"))
        assert await fake.received() == []

    async def test_a_slow_gateway_is_a_transient_timeout(self, fakes_url, fake):
        await fake.fail(status=503, delay=0.5, to="s-slow")  # answers, too late, without recording
        chan = make_channel(fakes_url, timeout=0.1)
        await chan.start()
        try:
            with pytest.raises(errors.Transient) as caught:
                await chan.send(command(1, "s-slow", "activate"))
        finally:
            await chan.close()
        assert caught.value.code == "timeout"

    async def test_an_unreachable_gateway_is_transient(self):
        chan = make_channel("http://127.0.0.1:9")  # discard port: nothing listens
        await chan.start()
        try:
            with pytest.raises(errors.Transient) as caught:
                await chan.send(command(1, "s-1", "activate"))
        finally:
            await chan.close()
        assert caught.value.code == "network"

    def test_base_url_and_token_are_required(self):
        with pytest.raises(errors.ConfigError) as caught:
            siren_http.SirenHTTP({}, channels.Context(public_url="", name="siren"))
        assert len(caught.value.problems) == 2

    async def test_a_request_id_reused_for_another_command_is_refused(self, channel, fakes_url):
        await channel.send(command(5, "s-1", "activate"))
        with pytest.raises(errors.Permanent) as caught:
            await channel.send(command(5, "s-1", "cancel"))
        assert caught.value.code == "request_id_reused"

    async def test_a_missing_token_is_refused(self, fakes_url):
        async with aiohttp.ClientSession() as session:
            url = fakes_url + "/siren/v1/sirens/s-1/commands"
            body = {"command": "activate", "pattern": "saip_alert", "request_id": "1"}
            async with session.post(url, json=body) as resp:
                assert resp.status == 401


@pytest.mark.parametrize(
    "status, error, expected",
    [
        (409, "busy", errors.Transient),
        (429, None, errors.Transient),
        (500, "internal", errors.Transient),
        (503, None, errors.Transient),
        (408, None, errors.Transient),
        (404, "unknown_siren", errors.Permanent),
        (422, "fault", errors.Permanent),
        (400, "invalid_pattern", errors.Permanent),
        (401, "unauthorized", errors.ChannelMisconfigured),
        (403, None, errors.ChannelMisconfigured),
    ],
)
def test_classification_table(status, error, expected):
    outcome = siren_http.classify(status, error, retry_after=3.0)
    assert type(outcome) is expected
    assert outcome.code == (error or f"http_{status}")


def test_transient_answers_keep_the_providers_retry_after():
    assert siren_http.classify(429, None, 30.0).retry_after == 30.0
    assert siren_http.classify(503, None, None).retry_after is None


def test_retry_after_as_seconds_or_http_date():
    now = dt.datetime(2025, 3, 5, 12, 0, tzinfo=dt.UTC)
    assert channels.retry_after("7", now) == 7.0
    assert channels.retry_after("Wed, 05 Mar 2025 12:01:00 GMT", now) == 60.0
    assert channels.retry_after("soon", now) is None
    assert channels.retry_after(None, now) is None


# -- receipts: the channel's settings ------------------------------------------------------------


def test_acks_and_heartbeats_are_off_unless_asked_for(fakes_url):
    chan = make_channel(fakes_url, receipt_token="rt")
    assert (chan.ack_timeout, chan.heartbeat_timeout) == (None, None)
    chan = make_channel(fakes_url, receipt_token="rt", acks=True, heartbeats=True)
    assert (chan.ack_timeout, chan.heartbeat_timeout) == (60.0, 300.0)
    chan = make_channel(fakes_url, receipt_token="rt", acks=True, ack_timeout="90")  # from $ALERTD_…
    assert chan.ack_timeout == 90.0


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"acks": True}, "acks = true needs receipt_token"),
        ({"heartbeats": True}, "heartbeats = true needs receipt_token"),
        ({"receipt_token": "rt", "acks": "maybe"}, "channels.siren.acks: expected true or false, got 'maybe'"),
        ({"receipt_token": "rt", "acks": True, "ack_timeout": 0}, "channels.siren.ack_timeout: must be positive"),
        ({"receipt_token": "rt", "receipt_token_file": "/x"}, "not both"),
        ({"receipt_token_file": "/nonexistent/token"}, "receipt_token_file: cannot read secret file"),
    ],
)
def test_receipt_settings_that_cannot_work_are_refused(fakes_url, config, problem):
    with pytest.raises(errors.ConfigError) as caught:
        make_channel(fakes_url, **config)
    assert problem in caught.value.message


def test_the_receipt_token_is_checked_and_never_shown(fakes_url, tmp_path):
    (tmp_path / "receipt-token").write_text("gateway-receipt-secret\n")
    chan = make_channel(fakes_url, receipt_token_file=str(tmp_path / "receipt-token"))
    assert chan.accepts_receipt("gateway-receipt-secret")
    assert not chan.accepts_receipt("gateway-receipt-secreT") and not chan.accepts_receipt("")
    assert not chan.accepts_receipt(TOKEN)  # the token alertd presents is not the gateway's
    assert "gateway-receipt-secret" not in repr(chan)
    assert not make_channel(fakes_url).accepts_receipt("anything")  # no receipt token: nothing is


def test_a_gateway_serves_the_sirens_of_its_zones(fakes_url):
    assert make_channel(fakes_url).zones is None  # not said: every siren no other gateway claims
    assert make_channel(fakes_url, zones=["75", "69123"]).zones == ("75", "69123")
    assert make_channel(fakes_url, zones="75, 69123").zones == ("75", "69123")  # from $ALERTD_…
    for bad in ([], ["75", "7"], "", [75], "75,,69"):
        with pytest.raises(errors.ConfigError) as caught:
            make_channel(fakes_url, zones=bad)
        assert "zones" in caught.value.message


PARIS, LYON = model.Siren("s-paris", "75056"), model.Siren("s-lyon", "69123")


@pytest.mark.parametrize(
    "served, paris, lyon",
    [
        ({"a": None}, ["a"], ["a"]),  # the only siren channel serves them all
        ({"a": ("75",), "b": ("69",)}, ["a"], ["b"]),
        ({"a": ("75",), "b": None}, ["a"], ["b"]),  # b: all the others
        ({"a": ("75",), "b": ("75056",)}, ["a", "b"], []),  # two claim Paris, none Lyon: neither has one
        ({"a": None, "b": None}, ["a", "b"], ["a", "b"]),  # who serves which is not said
        ({"a": ("*",), "b": ("69",)}, ["a"], ["a", "b"]),
    ],
)
def test_the_gateways_a_siren_may_have(served, paris, lyon):
    assert siren_http.gateways_of(PARIS, served) == paris
    assert siren_http.gateways_of(LYON, served) == lyon


# -- receipts: the fake gateway posts them -------------------------------------------------------


@pytest.fixture
async def receiver():
    """A receipts endpoint on 127.0.0.1: records each POST (auth header, body) and answers the
    statuses queued in `answers` (204 once they run out)."""
    posts: asyncio.Queue = asyncio.Queue()
    answers: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        await posts.put((request.headers.get("Authorization"), await request.json()))
        return web.Response(status=answers.pop(0) if answers else 204, headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_post("/v1/receipts/siren", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/v1/receipts/siren", posts, answers
    await runner.cleanup()


async def receipts_on(fake, url: str) -> None:
    await fake._call("POST", "/_fake/siren/receipts", {"url": url, "token": "rt", "enabled": True, "retry_delay": 0.01})


async def posted(fake, posts: asyncio.Queue) -> list:
    """Every receipt posted once the fake has sent all the acks it owes."""
    await fake._call("POST", "/_fake/siren/receipts/flush")
    return [posts.get_nowait() for _ in range(posts.qsize())]


class TestSirenReceipts:
    @pytest.fixture(autouse=True)
    async def _reset(self, fake):
        await fake.reset()

    async def test_each_new_command_is_acknowledged_at_the_receipts_url(self, channel, fake, receiver):
        url, posts, _ = receiver
        await receipts_on(fake, url)
        receipt = await channel.send(command(7, "s-1", "activate"))
        await channel.send(command(7, "s-1", "activate"))  # a duplicate runs nothing: no second ack
        [(auth, ack)] = await posted(fake, posts)
        assert auth == "Bearer rt"
        assert ack["type"] == "ack" and ack["result"] == "activated"
        assert (ack["command_id"], ack["request_id"], ack["siren_id"]) == (receipt.provider_id, "7", "s-1")
        assert dt.datetime.fromisoformat(ack["at"]).utcoffset() is not None

    async def test_no_ack_until_receipts_are_configured(self, channel, fake, receiver):
        _, posts, _ = receiver
        await channel.send(command(1, "s-1", "activate"))
        assert await posted(fake, posts) == []

    async def test_a_faulty_siren_is_accepted_and_acknowledged_failed(self, channel, fake, receiver):
        url, posts, _ = receiver
        await receipts_on(fake, url)
        await channel.send(command(1, "fault-3", "activate"))  # accepted: no Permanent raised
        [(_, ack)] = await posted(fake, posts)
        assert (ack["result"], ack["reason"]) == ("failed", "fault")

    async def test_a_busy_siren_forgets_the_command_so_it_can_come_again(self, channel, fake, receiver):
        url, posts, _ = receiver
        await receipts_on(fake, url)
        await fake.fail(status=202, code="busy", to="s-1")
        first = await channel.send(command(1, "s-1", "activate"))
        again = await channel.send(command(1, "s-1", "activate"))
        assert first.provider_id != again.provider_id  # a new command, not a duplicate
        acks = [body for _, body in await posted(fake, posts)]
        assert [(a["command_id"], a["result"]) for a in acks] == [
            (first.provider_id, "busy"), (again.provider_id, "activated"),
        ]

    async def test_a_rule_can_drop_the_ack(self, channel, fake, receiver):
        url, posts, _ = receiver
        await receipts_on(fake, url)
        await fake.fail(status=202, code="none", to="s-1")
        await channel.send(command(1, "s-1", "activate"))
        assert await posted(fake, posts) == []

    async def test_a_receipt_alertd_asks_for_again_is_posted_again(self, channel, fake, receiver):
        url, posts, answers = receiver
        answers += [409, 503]
        await receipts_on(fake, url)
        await channel.send(command(1, "s-1", "activate"))
        copies = await posted(fake, posts)
        assert len(copies) == 3 and copies[0] == copies[1] == copies[2]
        shown = await fake._call("GET", "/_fake/siren/receipts")
        assert [p["status"] for p in shown["posted"]] == [204] and shown["token"] == "***"

    async def test_heartbeats_for_the_sirens_it_knows_now(self, channel, fake, receiver):
        url, posts, _ = receiver
        await receipts_on(fake, url)
        await channel.send(command(1, "s-1", "activate"))
        named = await fake._call("POST", "/_fake/siren/heartbeats", {"sirens": ["s-2"], "battery": 0.4, "mains": False})
        every = await fake._call("POST", "/_fake/siren/heartbeats", {"sabotage": True})
        assert (named, every) == ({"posted": 1, "status": 204}, {"posted": 2, "status": 204})
        _, (_, one), (_, both) = await posted(fake, posts)
        assert [(b["siren_id"], b["battery"], b["mains"]) for b in one] == [("s-2", 0.4, False)]
        assert [(b["type"], b["siren_id"], b["sabotage"]) for b in both] == [
            ("heartbeat", "s-1", True), ("heartbeat", "s-2", True),
        ]
