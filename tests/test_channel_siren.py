"""The siren-http channel against the fake siren gateway, over loopback."""

from __future__ import annotations

import datetime as dt

import aiohttp
import pytest

from alertd import channels, errors, model, testing
from alertd.channels import siren_http

TOKEN = "gw-token"


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
    now = dt.datetime(2025, 3, 5, 12, 0, tzinfo=dt.timezone.utc)
    assert channels.retry_after("7", now) == 7.0
    assert channels.retry_after("Wed, 05 Mar 2025 12:01:00 GMT", now) == 60.0
    assert channels.retry_after("soon", now) is None
    assert channels.retry_after(None, now) is None
