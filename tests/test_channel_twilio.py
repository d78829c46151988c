"""The Twilio SMS channel: the real twilio client against the fake Twilio over 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
import urllib.parse

import aiohttp
import pytest
from aiohttp import web
from twilio import request_validator

from alertd import channels, errors, model, testing
from alertd.channels import twilio_sms

ACCOUNT_SID = "AC" + "0" * 32
TOKEN = "test-auth-token"


def make_channel(fakes_url: str, public_url: str = "http://127.0.0.1:9", **config) -> twilio_sms.TwilioSMS:
    base = {"account_sid": ACCOUNT_SID, "auth_token": TOKEN, "from": "+33700000000",
            "base_url": fakes_url, "status_callback": False}
    return twilio_sms.TwilioSMS(base | config, channels.Context(public_url=public_url, name="sms"))


@pytest.fixture
async def fake(fakes_url):
    control = testing.FakeControl(fakes_url, "twilio")
    await control.reset()
    return control


@pytest.fixture
async def channel(fakes_url):
    chan = make_channel(fakes_url)
    await chan.start()
    yield chan
    await chan.close()


def sms(to: str, body: str = "Mise à l'abri immédiate") -> model.Message:
    return model.Message(delivery_id=1, alert_id="a-1", kind=model.Kind.SMS, to=to, body=body)


def signed_callback(form: dict[str, str], url: str = "http://127.0.0.1:9/v1/receipts/sms") -> channels.Callback:
    signature = request_validator.RequestValidator(TOKEN).compute_signature(url, form)
    body = urllib.parse.urlencode(form).encode()
    return channels.Callback.of(url, {"X-Twilio-Signature": signature}, body, twilio_sms.FORM)


class TestContract(testing.ChannelContract):
    @pytest.fixture
    async def channel(self, fakes_url):
        chan = make_channel(fakes_url, timeout=1)
        await chan.start()
        yield chan
        await chan.close()

    @pytest.fixture
    def permanent_failure(self):
        return {"status": 400, "code": 21211}

    @pytest.fixture
    def delivered_callback(self):
        return lambda sid: signed_callback({"MessageSid": sid, "MessageStatus": "delivered"})

    def address(self, i: int) -> str:
        return f"+3361200{i:04d}"


class TestContractWithSenders(TestContract):
    @pytest.fixture
    async def channel(self, fakes_url):
        chan = make_channel(fakes_url, timeout=1, senders=["+33700000001", {"from": "ALERTE", "rate": 10}])
        await chan.start()
        yield chan
        await chan.close()


async def test_a_message_no_sender_was_named_for_goes_from_the_first(fakes_url):
    chan = make_channel(fakes_url, senders=["+33700000001", "ALERTE"], **{"from": None})
    fake = testing.FakeControl(fakes_url, "twilio")
    await fake.reset()
    await chan.start()
    try:
        await chan.send(sms("+33612000001"))
    finally:
        await chan.close()
    assert [r["from"] for r in await fake.received()] == ["+33700000001"]
    assert [(s.name, s.rate) for s in chan.senders] == [("+33700000001", 1.0), ("ALERTE", 1.0)]


# -- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, 20429, errors.Transient),
        (400, 21611, errors.Transient),
        (400, 30001, errors.Transient),
        (400, 30003, errors.Transient),
        (503, None, errors.Transient),
        (500, 20500, errors.Transient),
        (429, None, errors.Transient),
        (400, 21211, errors.Permanent),
        (400, 21610, errors.Permanent),
        (400, 21614, errors.Permanent),
        (400, 21635, errors.Permanent),
        (400, 30006, errors.Permanent),
        (400, 21999, errors.Permanent),
        (404, None, errors.Permanent),
        (401, 20003, errors.ChannelMisconfigured),
        (401, None, errors.ChannelMisconfigured),
    ],
)
def test_classify(status, code, expected):
    error = twilio_sms.classify(status, code, 12.0)
    assert type(error) is expected
    assert error.code == str(code or (20003 if status == 401 else status))
    if expected is errors.Transient:
        assert error.retry_after == 12.0


@pytest.mark.parametrize(
    ("status", "state"),
    [("queued", None), ("accepted", None), ("sending", None), ("sent", model.State.SENT),
     ("delivered", model.State.DELIVERED), ("read", model.State.DELIVERED),
     ("undelivered", model.State.FAILED), ("failed", model.State.FAILED)],
)
def test_callback_status_maps_to_delivery_state(status, state):
    assert twilio_sms.twilio_status_to_state(status) is state


# -- against the fake ----------------------------------------------------------------------------


async def test_magic_invalid_number_is_permanent(channel, fake):
    with pytest.raises(errors.Permanent) as caught:
        await channel.send(sms("+15005550001"))
    assert caught.value.code == "21211"
    assert await fake.received() == []


async def test_rejected_credentials_mean_misconfigured_channel(fakes_url, fake):
    chan = make_channel(fakes_url, auth_token="bad")
    await chan.start()
    try:
        with pytest.raises(errors.ChannelMisconfigured) as caught:
            await chan.send(sms("+33612000001"))
    finally:
        await chan.close()
    assert caught.value.code == "20003"
    assert "bad" not in str(caught.value)


async def test_rate_limited_is_transient_with_retry_after(channel, fake):
    await fake.fail(status=429, code=20429, retry_after=30, times=1)
    with pytest.raises(errors.Transient) as caught:
        await channel.send(sms("+33612000001"))
    assert (caught.value.code, caught.value.retry_after) == ("20429", 30)


async def test_slow_provider_times_out_as_transient(fakes_url, fake):
    chan = make_channel(fakes_url, timeout=0.3)
    await chan.start()
    await fake.fail(delay=3, times=1)
    started = time.monotonic()
    try:
        with pytest.raises(errors.Transient):
            await chan.send(sms("+33612000001"))
    finally:
        await chan.close()
    assert time.monotonic() - started < 2


async def test_messaging_service_sender(fakes_url, fake):
    chan = make_channel(fakes_url, **{"from": None, "messaging_service_sid": "MG" + "1" * 32})
    await chan.start()
    try:
        await chan.send(sms("+33612000001"))
    finally:
        await chan.close()
    [received] = await fake.received()
    assert received["messaging_service_sid"] == "MG" + "1" * 32


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("Évacuez: é è à ù, restez à l'abri", 1),  # French accents that fit GSM-7
        ("e" * 160, 1),
        ("e" * 161, 2),  # 153 septets per part once split
        ("Ç" + "e" * 159, 1),  # capital Ç is GSM-7
        ("â" + "e" * 69, 1),
        ("â" + "e" * 70, 2),  # UCS-2: 70 per message, 67 per part
        ("[" * 80, 1),  # extension characters count twice
        ("[" * 81, 2),
    ],
)
async def test_fake_counts_segments(channel, fake, body, segments):
    await channel.send(sms("+33612000001", body))
    [received] = await fake.received()
    assert received["num_segments"] == segments
    assert received["body"] == body


async def test_small_c_cedilla_is_ucs2(channel, fake):
    await channel.send(sms("+33612000001", "ç" + "e" * 70))
    await channel.send(sms("+33612000001", "é" + "e" * 70))
    assert [r["num_segments"] for r in await fake.received()] == [2, 1]


# -- status callbacks ----------------------------------------------------------------------------


@pytest.fixture
async def receiver():
    """A receipts endpoint on 127.0.0.1 that checks Twilio's signature on each callback."""
    calls: asyncio.Queue = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        form = dict(await request.post())
        url = str(request.url)
        valid = request_validator.RequestValidator(TOKEN).validate(
            url, form, request.headers.get("X-Twilio-Signature", "")
        )
        await calls.put((form, valid))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/receipts/sms", handle)  # the channel's own path: its name
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/", calls
    await runner.cleanup()


async def next_callback(calls: asyncio.Queue) -> tuple[dict, bool]:
    return await asyncio.wait_for(calls.get(), timeout=5)


async def callback_channel(fakes_url, public_url):
    chan = make_channel(fakes_url, public_url=public_url, status_callback=True)
    await chan.start()
    return chan


async def test_status_callbacks_are_signed_and_reach_the_receipts_url(fakes_url, fake, receiver):
    public_url, calls = receiver
    chan = await callback_channel(fakes_url, public_url)
    try:
        receipt = await chan.send(sms("+33612000001"))
    finally:
        await chan.close()
    [received] = await fake.received()
    assert received["status_callback"] == public_url + "v1/receipts/sms"
    first, second = await next_callback(calls), await next_callback(calls)
    assert [form["MessageStatus"] for form, _ in (first, second)] == ["sent", "delivered"]
    assert all(valid for _, valid in (first, second))
    assert first[0]["MessageSid"] == receipt.provider_id
    assert first[0]["To"] == "+33612000001"
    assert "ErrorCode" not in second[0]


async def test_failed_delivery_callback_carries_error_code(fakes_url, fake, receiver):
    public_url, calls = receiver
    async with aiohttp.ClientSession() as session, session.post(fakes_url + "/_fake/twilio/callbacks",
                            json={"final": "undelivered", "error_code": 30003}) as resp:
        assert resp.status == 200
    chan = await callback_channel(fakes_url, public_url)
    try:
        await chan.send(sms("+33612000001"))
    finally:
        await chan.close()
    await next_callback(calls)
    form, valid = await next_callback(calls)
    assert valid
    assert (form["MessageStatus"], form["ErrorCode"]) == ("undelivered", "30003")
    assert twilio_sms.twilio_status_to_state(form["MessageStatus"]) is model.State.FAILED


async def all_posted(fakes_url: str) -> list[dict]:
    """The fake's record of callbacks, once it has none left to post (another process: polled)."""
    deadline = time.monotonic() + 10
    fake = testing.FakeControl(fakes_url, "twilio")
    while (facts := await fake.callbacks())["pending"] and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert facts["pending"] == 0, "the fake still has callbacks to post"
    return facts["posted"]


async def test_the_fake_records_each_callback_and_whether_it_was_accepted(fakes_url, fake, receiver):
    public_url, calls = receiver
    chan = await callback_channel(fakes_url, public_url)
    refused = await callback_channel(fakes_url, "http://127.0.0.1:9/")  # nothing listens there
    try:
        heard = await chan.send(sms("+33612000001"))
        await next_callback(calls), await next_callback(calls)
        lost = await refused.send(sms("+33612000002"))
    finally:
        await chan.close()
        await refused.close()
    posted = await all_posted(fakes_url)
    assert [(p["sid"], p["status"], p["accepted"], p["answer"]) for p in posted] == [
        (heard.provider_id, "sent", True, 204), (heard.provider_id, "delivered", True, 204),
        (lost.provider_id, "sent", False, None), (lost.provider_id, "delivered", False, None),
    ]
    assert "Connect" in posted[-1]["error"]
    await fake.reset()
    assert await testing.FakeControl(fakes_url, "twilio").callbacks() == {"pending": 0, "posted": []}
