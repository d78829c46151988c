"""A fake Twilio Messages API that answers like the real one, for the real `twilio` client.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` takes Twilio's form body and answers 201
with a Message resource, or an error in Twilio's JSON format (the shared failure rules, missing
credentials, an auth token of "bad", the magic invalid number +15005550001 of Twilio's test
credentials). Accepted messages with a ``StatusCallback`` get signed callbacks ``sent`` then the
final status, posted by background workers so the send path stays fast.

``POST /_fake/twilio/callbacks`` with JSON ``{"enabled": bool, "final": "delivered" | "undelivered"
| "failed", "error_code": 30003}`` changes what later messages get; ``/_fake/reset`` restores the
defaults (enabled, delivered). ``GET /_fake/twilio/callbacks`` (``?since=N`` skips N) answers
``{"pending": n, "posted": [...]}``: how many callbacks are still to be posted, and each one posted,
oldest first, with what became of it (``accepted`` when the receiver answered 2xx; else its HTTP
``answer`` or the ``error``, e.g. connection refused). Twilio does not post a refused callback again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from twilio import request_validator

from alertd.fakes import common

log = logging.getLogger("alertd.fakes.twilio")

API_VERSION = "2010-04-01"
MAGIC_INVALID = "+15005550001"  # Twilio's test credentials answer 21211 for it
FINAL_STATES = ("delivered", "undelivered", "failed")
CALLBACK_WORKERS = 16  # few: under load the send path comes first, callbacks lag behind
CALLBACK_BACKLOG = 50_000  # beyond this, callbacks are dropped (logged) rather than hoarded

MESSAGES: dict[int | None, str] = {
    20003: "Authenticate",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
}

# GSM 03.38: the basic table (one septet each) and the extension table (escape + one septet).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")


def segments(body: str) -> int:
    """How many SMS segments Twilio bills for `body`: GSM-7 if every character fits, else UCS-2."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in body):
        units, single, part = len(body) + sum(c in GSM7_EXTENDED for c in body), 160, 153
    else:
        units, single, part = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)


def problem(form: Any) -> int | None:
    """The Twilio error code a well-formed request would still get, if any."""
    if not form.get("To"):
        return 21604
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603
    if not form.get("Body"):
        return 21602
    if form["To"] == MAGIC_INVALID:
        return 21211
    return None


def message_resource(account_sid: str, sid: str, form: Any) -> dict[str, Any]:
    now = email.utils.formatdate(usegmt=True)
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": form["Body"],
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": str(segments(form["Body"])),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"},
        "to": form["To"],
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json",
    }


def error(status: int, code: int | None, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None
    body = {
        "code": code,
        "message": MESSAGES.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


# -- callbacks -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Callbacks:
    enabled: bool = True
    final: str = "delivered"
    error_code: int = 30003  # only sent when `final` is a failure


@dataclasses.dataclass(frozen=True)
class CallbackJob:
    url: str
    auth_token: str
    params: dict[str, str]  # the fields every callback of this message carries
    final: str
    error_code: int


@dataclasses.dataclass
class FailureLog:
    """Logs failed callbacks at most once per `every` seconds: an unreachable receiver under load
    would otherwise flood the log and slow the fake."""

    every: float = 10.0
    missed: int = 0
    last: float = -math.inf

    def failed(self, why: str) -> None:
        self.missed += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            log.warning("%d status callback(s) lost, the last one: %s", self.missed, why)
            self.missed, self.last = 0, now


@dataclasses.dataclass
class TwilioProvider(common.Provider):
    """The shared record and rules, plus callback settings that `/_fake/reset` restores too."""

    callbacks: Callbacks = dataclasses.field(default_factory=Callbacks)
    failures: FailureLog = dataclasses.field(default_factory=FailureLog)
    jobs: asyncio.Queue[CallbackJob] = dataclasses.field(
        default_factory=lambda: asyncio.Queue(CALLBACK_BACKLOG)
    )
    posted: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # each callback and its fate
    posting: int = 0  # jobs taken by a worker and not finished

    def reset(self) -> None:
        super().reset()
        self.callbacks = Callbacks()
        self.posted.clear()
        while not self.jobs.empty():  # pending callbacks belong to what was forgotten
            self.jobs.get_nowait()

    def pending(self) -> int:
        return self.jobs.qsize() + self.posting


PROVIDER: web.AppKey[TwilioProvider] = web.AppKey("twilio_provider", TwilioProvider)  # also in PROVIDERS


def callback_params(job: CallbackJob, status: str) -> dict[str, str]:
    params = dict(job.params, MessageStatus=status, SmsStatus=status)
    if status in ("undelivered", "failed"):
        params["ErrorCode"] = str(job.error_code)
    return params


async def deliver(session: aiohttp.ClientSession, job: CallbackJob, prov: TwilioProvider) -> None:
    """Post `sent` then the final status, signed as Twilio signs them, once each (as Twilio does):
    what became of each is recorded, failures are logged too."""
    validator = request_validator.RequestValidator(job.auth_token)
    for status in ("sent", job.final):
        params = callback_params(job, status)
        headers = {"X-Twilio-Signature": validator.compute_signature(job.url, params)}
        try:
            async with session.post(job.url, data=params, headers=headers) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a bad URL
            prov.posted.append(posted(job, status, error=repr(exc)))
            prov.failures.failed(f"{job.url}: {exc!r}")
        else:
            prov.posted.append(posted(job, status, answer=resp.status))
            if resp.status >= 300:
                prov.failures.failed(f"{job.url}: HTTP {resp.status}")


def posted(job: CallbackJob, status: str, answer: int | None = None, error: str | None = None) -> dict[str, Any]:
    """What the control API lists for a callback posted."""
    return {"sid": job.params["MessageSid"], "status": status, "url": job.url, "at": time.time(),
            "accepted": answer is not None and 200 <= answer < 300, "answer": answer, "error": error}


async def worker(session: aiohttp.ClientSession, prov: TwilioProvider) -> None:
    while True:
        job = await prov.jobs.get()
        prov.posting += 1
        try:
            await deliver(session, job, prov)
        except Exception:  # nothing a receiver does may kill the worker
            log.exception("status callback for %s failed", job.params["MessageSid"])
        finally:
            prov.posting -= 1


def enqueue(prov: TwilioProvider, form: Any, account_sid: str, sid: str, auth_token: str) -> None:
    settings = prov.callbacks
    if not settings.enabled or not form.get("StatusCallback"):
        return
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": account_sid, "To": form["To"],
              "From": form.get("From") or form["MessagingServiceSid"], "ApiVersion": API_VERSION}
    job = CallbackJob(form["StatusCallback"], auth_token, params, settings.final, settings.error_code)
    try:
        prov.jobs.put_nowait(job)
    except asyncio.QueueFull:
        prov.failures.failed(f"backlog of {CALLBACK_BACKLOG} full, dropped {sid}")


def record(resource: dict[str, Any], status_callback: str | None) -> dict[str, Any]:
    """What the control API lists for an accepted message."""
    keys = ("sid", "to", "from", "body", "messaging_service_sid")
    return {k: resource[k] for k in keys} | {
        "status_callback": status_callback, "num_segments": int(resource["num_segments"])
    }


# -- handlers ------------------------------------------------------------------------------------


def _text(form: Mapping[str, Any], name: str) -> str | None:
    """A form field's text (an urlencoded form holds no files)."""
    value = form.get(name)
    return value if isinstance(value, str) else None


def auth_token(request: web.Request) -> str | None:
    """The password of the request's HTTP Basic credentials, if any."""
    header = request.headers.get("Authorization", "")
    try:
        creds = aiohttp.BasicAuth.decode(header)
    except ValueError:
        return None
    return creds.password if creds.login and creds.password else None


async def create_message(request: web.Request) -> web.Response:
    prov = request.app[PROVIDER]
    token = auth_token(request)
    if token is None or token == "bad":
        return error(401, 20003)
    form = await request.post()
    rule = await prov.rule_for(_text(form, "To"))
    if rule is not None:
        return error(rule.status, rule.code, rule.retry_after)
    code = problem(form)
    if code is not None:
        return error(400, code)
    account_sid, sid = request.match_info["account_sid"], "SM" + uuid.uuid4().hex
    resource = message_resource(account_sid, sid, form)
    prov.record(**record(resource, _text(form, "StatusCallback")))
    enqueue(prov, form, account_sid, sid, token)
    return web.json_response(resource, status=201)


async def control_callbacks(request: web.Request) -> web.Response:
    prov = request.app[PROVIDER]
    try:
        settings = dataclasses.replace(prov.callbacks, **await request.json())
    except TypeError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if settings.final not in FINAL_STATES:
        raise web.HTTPBadRequest(text=f"final must be one of {FINAL_STATES}")
    prov.callbacks = settings
    return web.json_response(dataclasses.asdict(settings))


async def callbacks_posted(request: web.Request) -> web.Response:
    prov = request.app[PROVIDER]
    since = int(request.query.get("since", 0))
    return web.json_response({"pending": prov.pending(), "posted": prov.posted[since:]})


async def callback_workers(app: web.Application):
    prov = app[PROVIDER]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = [asyncio.create_task(worker(session, prov)) for _ in range(CALLBACK_WORKERS)]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def setup(app: web.Application) -> None:
    app[common.PROVIDERS]["twilio"] = app[PROVIDER] = TwilioProvider("twilio")
    app.router.add_post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", create_message)
    app.router.add_post("/_fake/twilio/callbacks", control_callbacks)
    app.router.add_get("/_fake/twilio/callbacks", callbacks_posted)
    app.cleanup_ctx.append(callback_workers)
