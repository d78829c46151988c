"""Receipts endpoints, posted to by anyone on the network: whatever bytes arrive, the answer is a 4xx
problem naming what is wrong, one warning line at most is logged, no traceback, nothing changes.
On both stores (PostgreSQL refuses what SQLite stores: a NUL character)."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import pytest
import structlog
from twilio import request_validator

from alertd import demo, logs

FORM = "application/x-www-form-urlencoded"
SIREN = "siren-paris-1"
BEAT = {"type": "heartbeat", "siren_id": SIREN, "at": "2026-11-26T10:00:00+01:00"}


@pytest.fixture
def siren_settings() -> str:
    return demo.DEMO_SIREN  # the siren channel takes receipts


class Log(io.StringIO):
    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines()]

    def forget(self) -> None:
        self.seek(0)
        self.truncate()


@pytest.fixture
def logged():
    """The daemon's log lines, as JSON documents; the process's logging put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, sys.unraisablehook, threading.excepthook)
    out = Log()
    logs.configure("info", "json", out)
    yield out
    structlog.reset_defaults()
    root.handlers[:], root.level = saved[0], saved[1]
    sys.excepthook, sys.unraisablehook, threading.excepthook = saved[2:]


def signed(daemon, form: dict[str, str]) -> dict[str, str]:
    url = str(daemon.client.make_url("/v1/receipts/twilio"))
    return {"X-Twilio-Signature": request_validator.RequestValidator(demo.AUTH_TOKEN).compute_signature(url, form)}


async def sms_delivery(daemon) -> dict:
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries")).json()
    return page["deliveries"][0]


async def siren_delivery(daemon) -> dict:
    alert = await daemon.send(channels=["siren"])
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?channel=siren")).json()
    return next(d for d in page["deliveries"] if d["target"] == SIREN)


def ack(delivery: dict, **fields) -> dict:
    return {"type": "ack", "command_id": delivery["provider_id"], "siren_id": SIREN,
            "request_id": str(delivery["id"]), "result": "activated", "at": "2026-11-26T11:00:05+01:00"} | fields


async def refused(resp, status: int, field: str, logged) -> None:
    """A problem document with `status`, naming `field`; at most one warning line, no traceback."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == status and problem.get("field") == field, problem
    lines = logged.lines()
    assert all(line["level"] in ("debug", "info", "warning") for line in lines), lines
    assert len([line for line in lines if line["level"] == "warning"]) <= 1, lines
    assert not any("exception" in line for line in lines), lines


TWILIO_BODIES = {
    "not UTF-8": (FORM, b"MessageSid=SM\xff\xfe&MessageStatus=delivered", 400, "body"),
    "an unknown charset": (FORM + "; charset=klingon", b"MessageSid=SM1&MessageStatus=delivered", 400, "body"),
    "a charset its bytes are not": (FORM + "; charset=utf-16", b"MessageSid=SM12", 400, "body"),
    "multipart": ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: nonsense\r\n\r\n", 415,
                  "Content-Type"),
    "JSON": ("application/json", b'{"MessageSid": "SM1"}', 415, "Content-Type"),
    "no content type": ("", b"MessageSid=SM1", 415, "Content-Type"),
    "a form, unsigned": (FORM, b"MessageSid=SM1", 403, "X-Twilio-Signature"),
    "too large": (FORM, b"MessageSid=" + b"S" * (5 * 1024 * 1024), 413, None),
}


@pytest.mark.parametrize("case", TWILIO_BODIES, ids=list(TWILIO_BODIES))
async def test_a_twilio_callback_no_one_could_parse_is_a_4xx(daemon, logged, case):
    content_type, body, status, field = TWILIO_BODIES[case]
    logged.forget()
    resp = await daemon.client.post("/v1/receipts/twilio", data=body, headers={"Content-Type": content_type})
    await refused(resp, status, field, logged)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"MessageStatus": "delivered"}, "MessageSid"),
        ({"MessageSid": "SM\x00" + "0" * 31, "MessageStatus": "delivered"}, "MessageSid"),
        ({"MessageSid": "SM" + "0" * 5000, "MessageStatus": "delivered"}, "MessageSid"),
    ],
    ids=["no MessageSid", "a NUL in MessageSid", "a MessageSid of 5,000 characters"],
)
async def test_a_signed_callback_with_a_bad_field_is_a_400_naming_it(daemon, logged, fields, field):
    delivery = await sms_delivery(daemon)
    logged.forget()
    resp = await daemon.client.post("/v1/receipts/twilio", data=fields, headers=signed(daemon, fields))
    await refused(resp, 400, field, logged)
    assert await sms_delivery_now(daemon, delivery) == delivery


@pytest.mark.parametrize("code", ["²", "3" * 400, "30003\x00"], ids=["superscript", "400 digits", "a NUL"])
async def test_an_error_code_no_one_sends_still_fails_the_delivery_for_good(daemon, logged, code):
    delivery = await sms_delivery(daemon)
    fields = {"MessageSid": delivery["provider_id"], "MessageStatus": "undelivered", "ErrorCode": code}
    logged.forget()
    resp = await daemon.client.post("/v1/receipts/twilio", data=fields, headers=signed(daemon, fields))
    assert resp.status == 204, await resp.text()
    assert not any(line["level"] in ("error", "critical") for line in logged.lines())
    failed = await sms_delivery_now(daemon, delivery)
    assert failed["state"] == "failed" and "Twilio reported the message undelivered" in failed["last_error"]


async def sms_delivery_now(daemon, delivery: dict) -> dict:
    page = await (await daemon.get(f"/v1/alerts/{await alert_of(daemon, delivery)}/deliveries")).json()
    return next(d for d in page["deliveries"] if d["id"] == delivery["id"])


async def alert_of(daemon, delivery: dict) -> str:
    return (await daemon.store.get_delivery(delivery["id"])).alert_id


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {demo.RECEIPT_TOKEN}"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"\xff\xfe{", 400, "body"),
        (b"[" * 100_000, 400, "body"),
        (b"[]", 400, "body"),
        (json.dumps([BEAT] * 10_001).encode(), 400, "body"),
        (b"[" + b"1," * (3 * 1024 * 1024) + b"1]", 413, None),
        (json.dumps(BEAT | {"at": "0001-01-01T00:00:00+14:00"}).encode(), 422, "at"),
        (json.dumps(BEAT | {"at": "9999-12-31T23:59:59-14:00"}).encode(), 422, "at"),
        (json.dumps(BEAT | {"siren_id": "siren\x00paris"}).encode(), 422, "siren_id"),
    ],
    ids=["not UTF-8", "nested too deep", "an empty list", "too many receipts", "too large", "before year 1 in UTC",
         "after year 9999 in UTC", "a NUL in siren_id"],
)
async def test_a_siren_receipt_no_one_could_parse_is_a_4xx(daemon, logged, body, status, field):
    logged.forget()
    resp = await daemon.client.post("/v1/receipts/siren", data=body, headers=bearer())
    await refused(resp, status, field, logged)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"request_id": "²"}, "request_id"),  # a digit, to str.isdigit, that int() refuses
        ({"request_id": "9" * 30}, "request_id"),
        ({"command_id": "cmd\x00"}, "command_id"),
        ({"result": "failed", "reason": "no\x00power"}, "reason"),
    ],
    ids=["a superscript request_id", "a huge request_id", "a NUL in command_id", "a NUL in reason"],
)
async def test_an_ack_with_a_bad_field_is_a_4xx_naming_it(daemon, logged, fields, field):
    delivery = await siren_delivery(daemon)
    logged.forget()
    resp = await daemon.client.post("/v1/receipts/siren", json=ack(delivery, **fields), headers=bearer())
    assert resp.status in (400, 422), await resp.text()
    await refused(resp, resp.status, field, logged)
    assert (await daemon.store.get_delivery(delivery["id"])).state.value == delivery["state"]


async def test_a_flood_of_refused_receipts_leaves_a_trace_without_flooding_the_log(daemon, logged):
    for i in range(100):
        await daemon.client.post("/v1/receipts/twilio", data=b"{}", headers={"Content-Type": "application/json"})
        await daemon.client.post("/v1/receipts/twilio", data=f"MessageSid=SM{i}".encode(),
                                 headers={"Content-Type": FORM, "X-Twilio-Signature": "forged"})
        await daemon.client.post("/v1/receipts/siren", json=BEAT, headers={"Authorization": f"Bearer nope{i}"})
    warnings = [line for line in logged.lines() if line["level"] == "warning"]
    assert 1 <= len(warnings) <= 3, warnings  # the first at once, the rest summed when the interval ends
    assert warnings[0]["event"] == "receipts refused" and warnings[0]["count"] == 1
