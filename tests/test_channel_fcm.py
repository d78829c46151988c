"""The FCM push channel: the real firebase-admin client against the fake FCM server."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.utils
import json
import time

import aiohttp
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from firebase_admin import exceptions, messaging

from alertd import channels, errors, model, pacing, testing
from alertd.channels import fcm_client, fcm_push

# What FCM answers, word for word, for a registration token it cannot parse, and for a payload over
# its limit (both INVALID_ARGUMENT; only the first one blames the token).
BAD_TOKEN_ANSWER = {"error": {
    "code": 400, "message": "The registration token is not a valid FCM registration token",
    "status": "INVALID_ARGUMENT",
    "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}],
}}
TOO_BIG_ANSWER = {"error": {
    "code": 400, "message": "Android message is too big", "status": "INVALID_ARGUMENT",
    "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest"},
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}],
}}


async def started(fakes_url: str, name: str = "push", **config) -> fcm_push.FCMPush:
    config = {"project_id": "alertd-test", "base_url": fakes_url, "timeout": 5} | config
    channel = fcm_push.FCMPush(config, channels.Context(public_url="http://127.0.0.1", name=name))
    await channel.start()
    return channel


def push(to: str, body: str = "Mise à l'abri immédiate", **data: str) -> model.Message:
    topic = to.startswith(("zone-", "/topics/"))  # as the planner marks them
    return model.Message(
        delivery_id=1, alert_id="a1", kind=model.Kind.PUSH, to=to, body=body, title="Alerte",
        data=data, command="topic" if topic else "send",
    )


async def fake_get(fakes_url: str, path: str):
    async with aiohttp.ClientSession() as session, session.get(fakes_url + path) as resp:
        return await resp.json()


@pytest.fixture
async def channel(fakes_url):
    channel = await started(fakes_url)
    yield channel
    await channel.close()


@pytest.fixture
def fake(fakes_url):
    return testing.FakeControl(fakes_url, "fcm")


@pytest.fixture
def permanent_failure():
    return {"code": "INVALID_ARGUMENT", "status": 400}


class TestContract(testing.ChannelContract):
    @pytest.fixture
    async def channel(self, fakes_url):
        channel = await started(fakes_url, timeout=1)
        yield channel
        await channel.close()

    @pytest.fixture
    def dead_address_failure(self):
        return {"status": 404, "code": "UNREGISTERED"}

    def address(self, i: int) -> str:
        return f"fid-{i:04d}-cHVzaA"


class TestFCM:
    @pytest.fixture(autouse=True)
    async def _reset(self, fake):
        await fake.reset()

    def test_is_registered_as_the_fcm_plugin(self):
        assert channels.load("fcm") is fcm_push.FCMPush

    async def test_unregistered_token_is_permanent_and_dead(self, channel, fake):
        await fake.fail(status=404, code="UNREGISTERED", to="tok-gone", times=None)
        for to in ("dead-abc123", "tok-gone"):
            with pytest.raises(errors.Permanent) as caught:
                await channel.send(push(to))
            assert caught.value.code == "UNREGISTERED"
            assert caught.value.dead_address is True
        assert await fake.received() == []

    async def test_a_token_shaped_like_a_topic_is_still_a_token(self, channel, fake):
        message = dataclasses.replace(push("zone-FR"), command="send")
        await channel.send(message)
        [got] = await fake.received()
        assert got["to"] == "zone-FR"  # a token send, not the national topic

    async def test_zone_topic_send_is_recorded_as_topic(self, channel, fake):
        receipt = await channel.send(push("zone-75056", severity="Extreme"))
        assert receipt.provider_id.startswith("projects/alertd-test/messages/")
        [got] = await fake.received()
        assert got["to"] == "/topics/zone-75056"
        assert got["title"] == "Alerte" and got["body"] == "Mise à l'abri immédiate"
        assert got["data"] == {"alert_id": "a1", "severity": "Extreme"}
        assert got["android"]["priority"] == "high"
        assert got["apns"]["headers"]["apns-priority"] == "10"
        assert got["apns"]["payload"]["aps"]["sound"]["critical"] == 1

    async def test_the_fake_answers_a_malformed_token_and_a_big_payload_as_fcm_does(self, channel):
        big, malformed = push("fid-big", body="é" * 2100), push("malformed-tok")
        batch = await messaging.send_each_async([fcm_client.build(m) for m in (malformed, big)], app=channel.app)
        for response, answer in zip(batch.responses, (BAD_TOKEN_ANSWER, TOO_BIG_ANSWER), strict=True):
            assert type(response.exception) is exceptions.InvalidArgumentError  # what firebase-admin makes of it
            assert response.exception.http_response.json() == answer
            assert str(response.exception) == answer["error"]["message"]

    async def test_a_malformed_token_is_permanent_and_dead(self, channel, fake):
        with pytest.raises(errors.Permanent) as caught:
            await channel.send(push("malformed-tok"))
        assert (caught.value.code, caught.value.dead_address) == ("INVALID_ARGUMENT", True)
        assert "registration token" in caught.value.message
        assert await fake.received() == []

    async def test_other_invalid_arguments_fail_the_message_not_the_token(self, channel, fake):
        await fake.fail(status=400, code="INVALID_ARGUMENT", to="fid-1")
        with pytest.raises(errors.Permanent) as caught:
            await channel.send(push("fid-1"))
        assert (caught.value.code, caught.value.dead_address) == ("INVALID_ARGUMENT", False)

    async def test_payload_over_4kb_is_refused_as_permanent(self, channel, fake):
        with pytest.raises(errors.Permanent) as caught:
            await channel.send(push("fid-big", body="é" * 2100))
        assert (caught.value.code, caught.value.dead_address) == ("INVALID_ARGUMENT", False)  # the token is fine
        assert await channel.send(push("fid-small", body="é" * 1500))
        assert [r["to"] for r in await fake.received()] == ["fid-small"]

    async def test_topic_payload_limit_is_2kb(self, channel):
        with pytest.raises(errors.Permanent):
            await channel.send(push("/topics/zone-75", body="x" * 2100))

    async def test_quota_exceeded_backs_off_at_least_a_minute(self, channel, fake):
        await fake.fail(status=429, code="QUOTA_EXCEEDED", times=1)
        with pytest.raises(errors.Transient) as caught:
            await channel.send(push("fid-1"))
        assert caught.value.code == "QUOTA_EXCEEDED"
        assert caught.value.retry_after >= 60

    async def test_unavailable_is_not_retried_by_the_library(self, channel, fake):
        await fake.fail(status=503, code="UNAVAILABLE", retry_after=3, times=1)
        await fake.fail(status=500, code="INTERNAL", times=1)
        first = await channel.send_batch([push("fid-1")])
        second = await channel.send_batch([push("fid-1")])
        assert isinstance(first[0], errors.Transient) and first[0].retry_after == 3
        assert isinstance(second[0], errors.Transient) and second[0].code == "INTERNAL"
        # Each failure consumed exactly one rule: the third request is the first to succeed.
        assert await channel.send(push("fid-1"))
        assert len(await fake.received()) == 1

    async def test_rejected_credentials_mean_misconfiguration(self, channel, fake):
        await fake.fail(status=401, code="UNAUTHENTICATED", times=None)
        with pytest.raises(errors.ChannelMisconfigured):
            await channel.send(push("fid-1"))

    async def test_malformed_topic_fails_alone(self, channel, fake):
        results = await channel.send_batch([push("fid-1"), push("zone-bad name"), push("fid-2")])
        assert isinstance(results[1], errors.Permanent)
        assert isinstance(results[0], model.Receipt) and isinstance(results[2], model.Receipt)
        assert sorted(r["to"] for r in await fake.received()) == ["fid-1", "fid-2"]

    async def test_two_channels_coexist(self, fakes_url, fake):
        first, second = await started(fakes_url, "a"), await started(fakes_url, "a")
        try:
            assert first.app.name != second.app.name
            assert await first.send(push("fid-1")) and await second.send(push("fid-2"))
        finally:
            await first.close()
            await second.close()
        assert len(await fake.received()) == 2

    async def test_service_account_does_the_oauth_flow_once(self, fakes_url, fake, tmp_path):
        before = await fake_get(fakes_url, "/_fake/fcm/tokens")
        path = tmp_path / "sa.json"
        path.write_text(json.dumps(service_account(fakes_url + "/token")))
        channel = await started(fakes_url, service_account_file=str(path))
        try:
            results = await channel.send_batch([push("fid-1"), push("fid-2")])
            assert await channel.send(push("fid-3"))
        finally:
            await channel.close()
        after = await fake_get(fakes_url, "/_fake/fcm/tokens")
        assert all(isinstance(r, model.Receipt) for r in results)
        assert after["count"] - before["count"] == 1
        assert after["used"] - before["used"] == 3  # every send carried the issued token


class TestQuota:
    """The project's quota (`quota_per_minute`) and FCM's QUOTA_EXCEEDED."""

    @pytest.fixture(autouse=True)
    async def _reset(self, fake):
        await fake.reset()

    async def test_a_burst_beyond_the_quota_is_paced(self, fakes_url, fake):
        channel = await started(fakes_url, quota_per_minute=600)  # 10 a second, 10 at once
        try:
            t = time.monotonic()
            results = await asyncio.wait_for(channel.send_batch([push(f"fid-{i}") for i in range(25)]), 10)
            elapsed = time.monotonic() - t
        finally:
            await channel.close()
        assert all(isinstance(r, model.Receipt) for r in results)
        arrived = sorted(r["at"] for r in await fake.received())
        assert len(arrived) == 25 and elapsed >= 1.4
        assert arrived[-1] - arrived[0] >= 1.4  # 10 at once, then 10 a second: the 25th at 1.5 s
        assert sum(a - arrived[0] < 0.5 for a in arrived) <= 16  # 10 + 5 in the first half second (+1 of slack)

    async def test_a_turn_too_far_off_is_answered_transient_without_a_call(self, fakes_url, fake):
        channel = await started(fakes_url, quota_per_minute=6)  # one every 10 s, past the timeout of 5
        try:
            first, second = await channel.send_batch([push("fid-1"), push("fid-2")])
        finally:
            await channel.close()
        assert isinstance(first, model.Receipt)
        assert isinstance(second, errors.Transient) and second.code == "quota_paced"
        assert second.retry_after == pytest.approx(10, abs=1)
        assert [r["to"] for r in await fake.received()] == ["fid-1"]

    async def test_quota_exceeded_pauses_the_whole_channel(self, channel, fake):
        now = [time.monotonic()]
        channel.clock = lambda: now[0]
        await fake.fail(status=429, code="QUOTA_EXCEEDED", retry_after=90, times=1)
        [refused] = await channel.send_batch([push("fid-1")])
        assert refused.code == "QUOTA_EXCEEDED" and refused.retry_after == 90
        held = await channel.send_batch([push(f"fid-{i}") for i in range(2, 5)])
        assert all(isinstance(r, errors.Transient) and r.code == "quota_paused" for r in held)
        assert all(r.retry_after == pytest.approx(90, abs=1) for r in held)
        assert await fake.received() == []  # nothing was sent during the pause
        now[0] += 91
        assert await channel.send(push("fid-5"))
        assert [r["to"] for r in await fake.received()] == ["fid-5"]

    async def test_a_short_retry_after_still_pauses_a_minute(self, channel, fake):
        await fake.fail(status=429, code="QUOTA_EXCEEDED", retry_after=2, times=1)
        await channel.send_batch([push("fid-1")])
        [held] = await channel.send_batch([push("fid-2")])
        assert held.code == "quota_paused" and held.retry_after == pytest.approx(60, abs=1)
        assert await fake.received() == []

    @pytest.mark.parametrize("quota", [0, -5, "many", True])
    def test_a_quota_must_be_a_positive_number(self, quota):
        with pytest.raises(errors.ConfigError, match="quota_per_minute"):
            fcm_push.FCMPush({"project_id": "p", "quota_per_minute": quota},
                             channels.Context(public_url="http://127.0.0.1", name="push"))


def test_the_bucket_lets_a_second_of_quota_go_at_once_then_the_rate():
    bucket = pacing.Bucket.per_minute(120)  # 2 a second
    waits = []
    for _ in range(5):
        bucket, wait = pacing.take(bucket, 100.0)
        waits.append(wait)
    assert waits == pytest.approx([0, 0, 0.5, 1.0, 1.5])
    _, later = pacing.take(bucket, 110.0)  # a quiet spell refills it
    assert later == 0
    paused = pacing.pause(bucket, 110.0, 60)
    assert pacing.take(paused, 110.0)[1] == pytest.approx(60)


async def test_an_unreachable_fcm_is_transient(fakes_url):
    channel = await started(fakes_url, base_url="http://127.0.0.1:9")  # the discard port: nobody listens
    try:
        [result] = await channel.send_batch([push("fid-1")])
    finally:
        await channel.close()
    assert isinstance(result, errors.Transient) and result.code == "UNAVAILABLE"


async def test_the_proxy_of_the_environment_is_used(fakes_url, fake, monkeypatch):
    # As for the token refresh (google-auth over requests): the fake stands in for the proxy, and
    # FCM's host is never looked up.
    await fake.reset()
    monkeypatch.setenv("HTTP_PROXY", fakes_url)
    monkeypatch.setenv("NO_PROXY", "")
    channel = await started(fakes_url, base_url="http://fcm.invalid")
    try:
        assert await channel.send(push("fid-1"))
    finally:
        await channel.close()
    assert [r["to"] for r in await fake.received()] == ["fid-1"]


async def test_a_refused_token_is_refreshed_once_and_the_message_goes(fakes_url, fake, tmp_path):
    await fake.reset()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(service_account(fakes_url + "/token")))
    channel = await started(fakes_url, service_account_file=str(path))
    try:
        before = await fake_get(fakes_url, "/_fake/fcm/tokens")
        await fake.fail(status=401, code="UNAUTHENTICATED", times=1)
        assert await channel.send(push("fid-1"))
        after = await fake_get(fakes_url, "/_fake/fcm/tokens")
    finally:
        await channel.close()
    assert after["count"] - before["count"] == 1  # a new token, fetched through firebase-admin's credential
    assert [r["to"] for r in await fake.received()] == ["fid-1"]


async def test_a_token_fcm_called_malformed_is_not_targeted_again(daemon):
    bad = {"id": "p-bad", "push_token": "malformed-tok-1", "locale": "fr", "zones": ["75056"]}
    assert (await daemon.post("/v1/subscribers", who="admin", json=[bad])).status == 200
    await daemon.push.reset()
    targets = []
    for identifier in ("first", "second"):
        alert = await daemon.send(channels=["push"], identifier=identifier)
        await daemon.drain()
        page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?channel=push")).json()
        targets.append({d["target"]: d["state"] for d in page["deliveries"]})
    assert targets[0]["p-bad"] == "failed" and targets[0]["p-fr"] == "sent"
    assert "p-bad" not in targets[1] and targets[1]["p-fr"] == "sent"  # the dead token is left out
    assert "malformed-tok-1" not in [r["to"] for r in await daemon.push.received()]


def invalid_argument(message: str, *violations: str) -> exceptions.InvalidArgumentError:
    detail = {"@type": "type.googleapis.com/google.rpc.BadRequest",
              "fieldViolations": [{"field": f, "description": "Invalid value"} for f in violations]}
    body = BAD_TOKEN_ANSWER["error"] | {"message": message}
    body["details"] = body["details"] + ([detail] if violations else [])
    return exceptions.InvalidArgumentError(message, http_response=httpx.Response(400, json={"error": body}))


@pytest.mark.parametrize("message, violations, dead", [
    ("The registration token is not a valid FCM registration token", (), True),
    ("Request contains an invalid argument.", ("message.token",), True),  # FCM's other way to say it
    ("Request contains an invalid argument.", ("message.android.priority",), False),
    ("Request contains an invalid argument.", ("message.token", "message.data"), False),
    ("Request contains an invalid argument.", (), False),
    ("Android message is too big", (), False),
    ("Invalid value at 'message.data[0].value' (TYPE_STRING)", (), False),
])
def test_only_an_invalid_argument_blaming_the_token_kills_it(message, violations, dead):
    failure = fcm_client.classify(invalid_argument(message, *violations))
    assert isinstance(failure, errors.Permanent) and failure.code == "INVALID_ARGUMENT"
    assert failure.dead_address is dead


def test_goaway_and_dated_retry_after_are_transient():
    lost = exceptions.UnknownError("lost", cause=httpx.RemoteProtocolError("GOAWAY"))
    goaway = fcm_client.classify(lost)
    assert isinstance(goaway, errors.Transient)
    later = email.utils.format_datetime(model.utcnow() + dt.timedelta(seconds=120), usegmt=True)
    busy = httpx.Response(503, headers={"Retry-After": later})
    unavailable = fcm_client.classify(exceptions.UnavailableError("busy", http_response=busy))
    assert unavailable.retry_after == pytest.approx(120, abs=5)


def test_missing_project_id_is_a_config_error():
    with pytest.raises(errors.ConfigError):
        fcm_push.FCMPush({}, channels.Context(public_url="http://127.0.0.1", name="push"))


def service_account(token_uri: str) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "type": "service_account",
        "project_id": "alertd-test",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "alertd@alertd-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
