"""A fake siren gateway, speaking alertd's siren-gateway protocol (v1).

The protocol is small on purpose: the verbs of real siren control systems (activate a signal
pattern, cancel, full test, silent test, status), JSON over HTTP, a bearer token; and, back from the
gateway, acknowledgements of commands and heartbeats. A real gateway that speaks it can be driven by
the `siren-http` channel as is. This docstring is the protocol's reference.

Commands (alertd → gateway)
---------------------------

``POST {base}/v1/sirens/{siren_id}/commands`` with ``Authorization: Bearer <token>`` and::

    {"command": "activate" | "cancel" | "test" | "silent_test",
     "pattern": "saip_alert" | "saip_end" | "saip_test" | <any pattern the siren knows>,
     "alert_id": "...", "text": "voice text (optional)", "request_id": "<idempotency key>"}

answers ``202 {"command_id": "...", "siren_id": "...", "state": "accepted"}``. ``request_id`` is
the idempotency key (alertd sends the delivery id): the same ``request_id`` for the same siren
answers the same ``command_id`` (with ``"duplicate": true``) and does not sound the siren again,
since delivery is at least once. A command acknowledged ``busy`` never ran: the gateway forgets it,
and the same ``request_id`` sent again is a new command.

``GET {base}/v1/sirens/{siren_id}`` answers ``200 {"siren_id", "state", "last_command"}``, where
``state`` is ``ready`` (never commanded, or cancelled), ``activated``, ``testing`` or ``fault``.

Errors are ``{"error": code}`` with the HTTP status saying who should act:

- ``400 invalid_json | invalid_command | invalid_pattern | invalid_request_id`` malformed request;
- ``401 unauthorized`` missing or rejected token (this fake rejects only the token ``bad``);
- ``404 unknown_siren`` the gateway has no such siren (here: ids starting with ``unknown-``);
- ``409 busy`` the siren is executing another command, try again (ids starting with ``busy-``);
- ``422 fault`` the siren reports a fault and cannot sound (ids starting with ``fault-``; a gateway
  that acknowledges commands accepts them instead, and acknowledges ``failed``);
- ``422 request_id_reused`` the same ``request_id`` came with another command or pattern;
- ``429`` / ``5xx`` overload or outage, with ``Retry-After`` (seconds) when known.

Receipts (gateway → alertd)
---------------------------

``POST {alertd}/v1/receipts/siren`` with ``Authorization: Bearer <receipt token>`` (the
``receipt_token`` of alertd's `siren-http` channel for this gateway) and JSON: one receipt object,
or a list of them (heartbeats for many sirens, acks, or both). An acknowledgement of a command::

    {"type": "ack", "command_id": "<the gateway's command_id>", "siren_id": "...",
     "request_id": "<the request_id alertd sent>", "result": "activated" | "failed" | "busy",
     "reason": "why (optional)", "at": "2026-11-26T10:00:03+01:00"}

``activated``: the siren carried the command out (sounded its pattern; for ``cancel``, fell
silent); ``failed``: it could not (``reason`` says why); ``busy``: it was executing another command
and did not run this one, so alertd sends it again later under its retry policy. A heartbeat::

    {"type": "heartbeat", "siren_id": "...", "at": "2026-11-26T10:00:00Z", "mains": true,
     "battery": 0.93, "fault": false, "sabotage": false}

``mains``: on mains power; ``battery``: charge from 0.0 to 1.0; ``mains`` and ``battery`` may be
left out when unknown. ``at`` is the gateway's time, with its UTC offset. alertd answers:

- ``204`` taken;
- ``400`` the body is no JSON, or not an object or a list of them;
- ``401`` no bearer token; ``403`` not this gateway's receipt token (nothing is changed);
- ``422`` problem details naming each field at fault (``3.siren_id``: an unknown siren, or a
  heartbeat for a siren this gateway does not serve; ``request_id``: no command of this gateway to
  that siren; a value of the wrong type). Nothing in a refused body is taken;
- ``409`` with ``Retry-After``: a ``busy`` ack for a command alertd has not recorded yet (it came
  back faster than alertd's own bookkeeping): post it again. The rest of the body was taken.

A gateway posts a receipt again after a 409, 429, 5xx or network error. Receipts may repeat and
arrive out of order: alertd never moves a delivery backwards, and keeps a siren's latest heartbeat
by ``at``; a receipt dated after alertd received it counts as dated when received, so a gateway
clock running ahead never makes an old report outrank a later one. A gateway reports only for its
own sirens: acks for the commands it was sent, heartbeats for the sirens of its channel's
``zones`` (every siren, for a siren channel that names none and is alone in doing so). Acks and
heartbeats are opt-in on alertd's side (``acks = true``, ``heartbeats = true`` on the channel): only
then does a missing ack fail an activation, a missing heartbeat flag a siren.

The fake
--------

It obeys the failure rules of `alertd.fakes.common` (keyed by siren id) and records every accepted
command for ``GET /_fake/siren/received``. A rule with ``status`` 202 accepts the command and sets
its ack: ``code`` ``busy``, ``failed``, or ``none`` (no ack at all). Receipts, off until configured:

- ``POST /_fake/siren/receipts`` ``{"url": ..., "token": ..., "enabled": true, "retry_delay": 1.0,
  "attempts": 5}``: post an ack after each new accepted command (``activated``; ``fault-`` sirens
  ``failed``), in the background, retrying as a gateway does (waiting at most ``retry_delay`` s);
- ``GET /_fake/siren/receipts``: those settings and every receipt posted, with alertd's answer;
- ``POST /_fake/siren/receipts/flush``: answers once every ack queued so far has been posted;
- ``POST /_fake/siren/heartbeats`` ``{"sirens": [...], "mains": true, "battery": 1.0, "fault":
  false, "sabotage": false, "at": "..."}`` (all optional): post one heartbeat for each of ``sirens``
  (default: every siren the gateway knows: commanded or named before) now, as one list, and answer
  ``{"posted": n, "status": alertd's status}``, so tests drive time without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from alertd.fakes import common

log = logging.getLogger("alertd.fakes.siren")

# The commands a siren knows, and the state each one leaves it in.
STATE_AFTER = {
    "activate": "activated",
    "cancel": "ready",
    "test": "testing",
    "silent_test": "ready",
}
REJECTED_TOKEN = "bad"
# Siren-id prefixes that make the fake answer like a gateway with a troubled siren.
MAGIC = {"unknown-": (404, "unknown_siren"), "busy-": (409, "busy"), "fault-": (422, "fault")}
# What a rule with status 202 makes the ack say: (result, reason), or no ack.
ACK_RULES = {"busy": ("busy", "executing another command"), "failed": ("failed", "did not sound"), "none": None}
RETRY_STATUSES = frozenset({409, 429})  # and 5xx: alertd asks for the receipt again
ACK_WORKERS = 4
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("siren_receipts_session")


@dataclasses.dataclass
class Receipts:
    """Where and how the gateway posts its receipts."""

    url: str | None = None
    token: str | None = None
    enabled: bool = False
    retry_delay: float = 1.0  # at most this long between two tries of one receipt
    attempts: int = 5

    @property
    def on(self) -> bool:
        return self.enabled and bool(self.url) and bool(self.token)


@dataclasses.dataclass
class Gateway(common.Provider):
    """The siren provider's record, plus what a gateway remembers: commands, siren states, the
    sirens it knows, and the receipts it owes and posted."""

    commands: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    last: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    known: dict[str, None] = dataclasses.field(default_factory=dict)  # an ordered set
    receipts: Receipts = dataclasses.field(default_factory=Receipts)
    acks: asyncio.Queue[tuple[Receipts, dict[str, Any]]] = dataclasses.field(default_factory=asyncio.Queue)
    posted: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def reset(self) -> None:
        super().reset()
        self.commands.clear()
        self.last.clear()
        self.known.clear()
        self.receipts = Receipts()
        self.posted.clear()
        while not self.acks.empty():  # the acks owed belong to what was forgotten
            self.acks.get_nowait()
            self.acks.task_done()


GATEWAY: web.AppKey[Gateway] = web.AppKey("siren_gateway", Gateway)  # also in common.PROVIDERS


def setup(app: web.Application) -> None:
    """Mount the gateway under ``/siren``; must run after `common.add_control_routes`."""
    app[common.PROVIDERS]["siren"] = app[GATEWAY] = Gateway("siren")
    app.router.add_post("/siren/v1/sirens/{siren_id}/commands", _command)
    app.router.add_get("/siren/v1/sirens/{siren_id}", _state)
    app.router.add_post("/_fake/siren/receipts", _set_receipts)
    app.router.add_get("/_fake/siren/receipts", _show_receipts)
    app.router.add_post("/_fake/siren/receipts/flush", _flush)
    app.router.add_post("/_fake/siren/heartbeats", _heartbeats)
    app.cleanup_ctx.append(_ack_workers)


def _error(status: int, code: Any, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None
    return web.json_response({"error": code}, status=status, headers=headers)


def authorized(header: str | None) -> bool:
    scheme, _, token = (header or "").partition(" ")
    return scheme == "Bearer" and token.strip() not in ("", REJECTED_TOKEN)


def invalid(body: Any) -> str | None:
    """The error code for a malformed command body, or None."""
    if not isinstance(body, dict):
        return "invalid_json"
    if body.get("command") not in STATE_AFTER:
        return "invalid_command"
    if not isinstance(body.get("pattern"), str) or not body["pattern"]:
        return "invalid_pattern"
    if not isinstance(body.get("request_id"), str) or not body["request_id"]:
        return "invalid_request_id"
    return None


def refusal(siren_id: str, acking: bool = False) -> tuple[int, str] | None:
    """What the gateway says about a siren it cannot command, by the fake's naming convention. A
    gateway that acknowledges takes a faulty siren's command and acknowledges it failed."""
    answer = next((answer for prefix, answer in MAGIC.items() if siren_id.startswith(prefix)), None)
    return None if acking and answer == MAGIC["fault-"] else answer


def ack_result(siren_id: str, rule: common.Rule | None) -> tuple[str, str] | None:
    """What the ack of a new command says (result, reason), or None for no ack."""
    if rule is not None:
        return ACK_RULES.get(str(rule.code), ("activated", ""))
    if siren_id.startswith("fault-"):
        return ("failed", "fault")
    return ("activated", "")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


async def _command(request: web.Request) -> web.Response:
    if not authorized(request.headers.get("Authorization")):
        return _error(401, "unauthorized")
    siren_id = request.match_info["siren_id"]
    body = await _json(request)
    if code := invalid(body):
        return _error(400, code)
    gateway = request.app[GATEWAY]
    rule = await gateway.rule_for(siren_id)
    if rule is not None and rule.status != 202:
        return _error(rule.status, rule.code or "unavailable", rule.retry_after)
    if refused := refusal(siren_id, gateway.receipts.on):
        return _error(*refused)
    return _accept(gateway, siren_id, body, ack_result(siren_id, rule))


def _accept(gateway: Gateway, siren_id: str, body: dict[str, Any], ack: tuple[str, str] | None) -> web.Response:
    key = (siren_id, body["request_id"])
    if previous := gateway.commands.get(key):
        if (previous["command"], previous["pattern"]) != (body["command"], body["pattern"]):
            return _error(422, "request_id_reused")
        return _accepted(siren_id, previous["command_id"], duplicate=True)
    command = {
        "command_id": "cmd-" + uuid.uuid4().hex,
        "command": body["command"],
        "pattern": body["pattern"],
        "alert_id": body.get("alert_id"),
        "request_id": body["request_id"],
    }
    gateway.known[siren_id] = None
    if ack is None or ack[0] != "busy":  # a busy siren never ran it: the same request_id is new again
        gateway.commands[key] = gateway.last[siren_id] = command
    text = body.get("text") or ""
    gateway.record(to=siren_id, body=text or body["pattern"], text=text, at=time.time(), **command)
    if gateway.receipts.on and ack is not None:
        result, reason = ack
        receipt = {"type": "ack", "command_id": command["command_id"], "siren_id": siren_id,
                   "request_id": body["request_id"], "result": result, "reason": reason, "at": now_iso()}
        gateway.acks.put_nowait((dataclasses.replace(gateway.receipts), receipt))
    return _accepted(siren_id, command["command_id"])


def _accepted(siren_id: str, command_id: str, duplicate: bool = False) -> web.Response:
    answer = {"command_id": command_id, "siren_id": siren_id, "state": "accepted"}
    return web.json_response(answer | ({"duplicate": True} if duplicate else {}), status=202)


async def _state(request: web.Request) -> web.Response:
    if not authorized(request.headers.get("Authorization")):
        return _error(401, "unauthorized")
    siren_id = request.match_info["siren_id"]
    if siren_id.startswith("unknown-"):
        return _error(404, "unknown_siren")
    last = request.app[GATEWAY].last.get(siren_id)
    state = STATE_AFTER[last["command"]] if last else "ready"
    if siren_id.startswith("fault-"):
        state = "fault"
    return web.json_response({"siren_id": siren_id, "state": state, "last_command": last})


# -- receipts ------------------------------------------------------------------------------------


async def post_receipt(session: aiohttp.ClientSession, receipts: Receipts, body: Any) -> int | None:
    """Post one receipt body as a gateway does, again after 409, 429, 5xx or a network error:
    alertd's last answer (None when it never answered)."""
    status = None
    if not receipts.url:  # posted only while receipts are on
        return status
    for attempt in range(receipts.attempts):
        wait = receipts.retry_delay
        try:
            headers = {"Authorization": f"Bearer {receipts.token}"}
            async with session.post(receipts.url, json=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
                if status not in RETRY_STATUSES and status < 500:
                    return status
                with contextlib.suppress(ValueError):
                    wait = min(wait, float(resp.headers.get("Retry-After", wait)))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a bad URL
            log.warning("siren receipt to %s failed: %r", receipts.url, exc)
        if attempt + 1 < receipts.attempts:
            await asyncio.sleep(wait)  # a gateway's own backoff, not a test waiting
    return status


async def _ack_worker(session: aiohttp.ClientSession, gateway: Gateway) -> None:
    while True:
        receipts, body = await gateway.acks.get()
        try:
            gateway.posted.append({"body": body, "status": await post_receipt(session, receipts, body)})
        except Exception:  # nothing a receiver does may kill the worker
            log.exception("siren ack %s failed", body["command_id"])
        finally:
            gateway.acks.task_done()


async def _ack_workers(app: web.Application):
    gateway = app[GATEWAY]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        app[SESSION] = session
        tasks = [asyncio.create_task(_ack_worker(session, gateway)) for _ in range(ACK_WORKERS)]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _receipts_json(gateway: Gateway) -> dict[str, Any]:
    shown = dataclasses.asdict(gateway.receipts) | {"token": "***" if gateway.receipts.token else None}
    return shown | {"posted": gateway.posted}


async def _set_receipts(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    try:
        gateway.receipts = dataclasses.replace(gateway.receipts, **await request.json())
    except TypeError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(_receipts_json(gateway))


async def _show_receipts(request: web.Request) -> web.Response:
    return web.json_response(_receipts_json(request.app[GATEWAY]))


async def _flush(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    await gateway.acks.join()
    return web.json_response(_receipts_json(gateway))


async def _heartbeats(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    if not gateway.receipts.on:
        raise web.HTTPConflict(text="receipts are off: POST /_fake/siren/receipts first")
    health: dict[str, Any] = {"mains": True, "battery": 1.0, "fault": False, "sabotage": False, "at": None}
    health |= await _json(request) or {}
    sirens = health.pop("sirens", None) or list(gateway.known)
    gateway.known.update(dict.fromkeys(sirens))
    at = health.pop("at") or now_iso()
    body = [{"type": "heartbeat", "siren_id": s, "at": at} | health for s in sirens]
    if not body:
        return web.json_response({"posted": 0, "status": None})
    status = await post_receipt(request.app[SESSION], gateway.receipts, body)
    gateway.posted.append({"body": body, "status": status})
    return web.json_response({"posted": len(body), "status": status})
