"""A fake siren gateway, speaking alertd's siren-gateway protocol (v1).

The protocol is small on purpose: the verbs of real siren control systems (activate a signal
pattern, cancel, full test, silent test, status), JSON over HTTP, a bearer token. A real gateway
that speaks it can be driven by the `siren-http` channel as is.

``POST {base}/v1/sirens/{siren_id}/commands`` with ``Authorization: Bearer <token>`` and::

    {"command": "activate" | "cancel" | "test" | "silent_test",
     "pattern": "saip_alert" | "saip_end" | "saip_test" | <any pattern the siren knows>,
     "alert_id": "...", "text": "voice text (optional)", "request_id": "<idempotency key>"}

answers ``202 {"command_id": "...", "siren_id": "...", "state": "accepted"}``. ``request_id`` is
the idempotency key: the same ``request_id`` for the same siren answers the same ``command_id``
(with ``"duplicate": true``) and does not sound the siren again, since delivery is at least once.

``GET {base}/v1/sirens/{siren_id}`` answers ``200 {"siren_id", "state", "last_command"}``, where
``state`` is ``ready`` (never commanded, or cancelled), ``activated``, ``testing`` or ``fault``.

Errors are ``{"error": code}`` with the HTTP status saying who should act:

- ``400 invalid_json | invalid_command | invalid_pattern | invalid_request_id`` malformed request;
- ``401 unauthorized`` missing or rejected token (this fake rejects only the token ``bad``);
- ``404 unknown_siren`` the gateway has no such siren (here: ids starting with ``unknown-``);
- ``409 busy`` the siren is executing another command, try again (ids starting with ``busy-``);
- ``422 fault`` the siren reports a fault and cannot sound (ids starting with ``fault-``);
- ``422 request_id_reused`` the same ``request_id`` came with another command or pattern;
- ``429`` / ``5xx`` overload or outage, with ``Retry-After`` (seconds) when known.

The fake also obeys the failure rules of `alertd.fakes.common` (keyed by siren id) and records
every accepted command for ``GET /_fake/siren/received``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from typing import Any

from aiohttp import web

from alertd.fakes import common

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


@dataclasses.dataclass
class Gateway(common.Provider):
    """The siren provider's record, plus what a gateway remembers: commands and siren states."""

    commands: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    last: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def reset(self) -> None:
        super().reset()
        self.commands.clear()
        self.last.clear()


def setup(app: web.Application) -> None:
    """Mount the gateway under ``/siren``; must run after `common.add_control_routes`."""
    app[common.PROVIDERS]["siren"] = Gateway("siren")
    app.router.add_post("/siren/v1/sirens/{siren_id}/commands", _command)
    app.router.add_get("/siren/v1/sirens/{siren_id}", _state)


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


def refusal(siren_id: str) -> tuple[int, str] | None:
    """What the gateway says about a siren it cannot command, by the fake's naming convention."""
    return next((answer for prefix, answer in MAGIC.items() if siren_id.startswith(prefix)), None)


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
    gateway: Gateway = common.provider(request.app, "siren")
    if rule := await gateway.rule_for(siren_id):
        return _error(rule.status, rule.code or "unavailable", rule.retry_after)
    if refused := refusal(siren_id):
        return _error(*refused)
    return _accept(gateway, siren_id, body)


def _accept(gateway: Gateway, siren_id: str, body: dict[str, Any]) -> web.Response:
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
    gateway.commands[key] = gateway.last[siren_id] = command
    text = body.get("text") or ""
    gateway.record(to=siren_id, body=text or body["pattern"], text=text, at=time.time(), **command)
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
    last = common.provider(request.app, "siren").last.get(siren_id)
    state = STATE_AFTER[last["command"]] if last else "ready"
    if siren_id.startswith("fault-"):
        state = "fault"
    return web.json_response({"siren_id": siren_id, "state": state, "last_command": last})
