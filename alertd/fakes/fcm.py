"""Fake FCM HTTP v1 endpoint and OAuth2 token endpoint, for the real `firebase-admin` client.

- ``POST /v1/projects/{project}/messages:send``  one message (``token``, ``fid`` or ``topic``)
- ``POST /token``                                a service-account JWT-bearer grant
- ``GET  /_fake/fcm/tokens``                     ``{"count": tokens issued, "used": sends that
  carried one}``

Errors follow Google's format, with the FCM error code in an ``FcmError`` detail, which is what
firebase-admin parses into `UnregisteredError`, `QuotaExceededError`, ...  A request without an
Authorization header is served as anonymous (as a local emulator would), so
``AnonymousCredentials`` work; a present header must be ``Bearer <token>`` and not ``bad``.
Tokens starting with ``dead-`` are unregistered; tokens starting with ``malformed-`` are not
registration tokens at all, answered as FCM answers one it cannot parse (400 INVALID_ARGUMENT, the
message naming the registration token). A payload over the limit is INVALID_ARGUMENT too, with
FCM's own words and details ("Android message is too big").
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

from aiohttp import web

from alertd.fakes import common

TOKEN_LIMIT = 4096  # bytes of payload for a message to one app instance
TOPIC_LIMIT = 2048  # for a topic message
TARGETS = ("token", "fid", "topic", "condition")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
BAD_TOKEN = "The registration token is not a valid FCM registration token"
TOO_BIG = "Android message is too big"

# FCM error code -> (HTTP status, Google status); codes without an FcmError detail are plain
# Google statuses.
FCM_CODES = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}
GOOGLE_CODES = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404}
CODE_FOR_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclasses.dataclass
class Tokens:
    """The OAuth side: access tokens issued and how many sends presented one."""

    issued: set[str] = dataclasses.field(default_factory=set)
    used: int = 0


TOKENS: web.AppKey[Tokens] = web.AppKey("fcm_tokens", Tokens)
IDS: web.AppKey[itertools.count[int]] = web.AppKey("fcm_ids", itertools.count)


def setup(app: web.Application) -> None:
    app[TOKENS] = Tokens()
    app[IDS] = itertools.count(1)
    app.router.add_post("/v1/projects/{project}/messages:send", _send)
    app.router.add_post("/token", _token)
    app.router.add_get("/_fake/fcm/tokens", _tokens)


def error(
    code: str, message: str, status: int | None = None, retry_after: float | None = None,
    before: tuple[dict[str, Any], ...] = (),
) -> web.Response:
    """An error answer in Google's format for an FCM error code or a Google status; `before`: the
    details FCM puts ahead of its FcmError."""
    if code in FCM_CODES:
        http, google = FCM_CODES[code]
        details = [*before, {"@type": FCM_ERROR, "errorCode": code}]
    else:
        http, google, details = GOOGLE_CODES.get(code, 500), code, []
    http = status or http
    body = {"error": {"code": http, "message": message, "status": google, "details": details}}
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return web.json_response(body, status=http, headers=headers)


def payload_size(message: dict[str, Any]) -> int:
    """What FCM counts against its limit: the message without its target."""
    rest = {k: v for k, v in message.items() if k not in TARGETS}
    return len(json.dumps(rest, separators=(",", ":"), ensure_ascii=False).encode())


def problem(message: Any) -> str | None:
    """Why FCM would refuse this message's shape as INVALID_ARGUMENT, if it would (its size:
    `too_big`)."""
    if not isinstance(message, dict):
        return "Request contains an invalid argument: message"
    if sum(k in message for k in TARGETS) != 1:
        return "Exactly one of token, fid, topic or condition must be set"
    data = message.get("data") or {}
    if not all(isinstance(v, str) for v in data.values()):
        return "Invalid value in data: values must be strings"
    return None


def too_big(message: dict[str, Any]) -> bool:
    return payload_size(message) > (TOPIC_LIMIT if "topic" in message else TOKEN_LIMIT)


def address(message: dict[str, Any]) -> str:
    if "topic" in message:
        return "/topics/" + message["topic"]
    return message.get("fid") or message.get("token") or message.get("condition", "")


def rule_key(prov: common.Provider, message: dict[str, Any], to: str) -> str:
    """Rules may name a topic with or without its /topics/ prefix."""
    topic = message.get("topic")
    if topic and any(rule.to == topic for rule in prov.rules):
        return topic
    return to


def unauthorized(request: web.Request) -> web.Response | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None  # anonymous, as against an emulator
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or token == "bad":
        return error("UNAUTHENTICATED", "Request had invalid authentication credentials.")
    tokens = request.app[TOKENS]
    if token in tokens.issued:
        tokens.used += 1
    return None


async def _send(request: web.Request) -> web.Response:
    # The benchmark's hot path (bench/fcm_ceiling.py measures its ceiling): no work a plain
    # message does not need.
    denied = unauthorized(request)
    if denied is not None:
        return denied
    raw = await request.read()
    try:
        body = json.loads(raw)
        message = body["message"]
    except (ValueError, KeyError, TypeError):
        return error("INVALID_ARGUMENT", "Invalid JSON payload received.")
    why = problem(message)
    if why:
        return error("INVALID_ARGUMENT", why)
    # The payload is never much longer than the body that carries it (only a client's shorter
    # spelling of a number could make it so): a body under half the smaller limit needs no measuring.
    if len(raw) > TOPIC_LIMIT // 2 and too_big(message):  # FCM's words and details, whatever the platform
        return error("INVALID_ARGUMENT", TOO_BIG, before=({"@type": BAD_REQUEST},))
    return await _deliver(request, body, message)


async def _deliver(
    request: web.Request, body: dict[str, Any], message: dict[str, Any]
) -> web.Response:
    prov = common.provider(request.app, "fcm")
    to = address(message)
    rule = await prov.rule_for(rule_key(prov, message, to)) if prov.rules else None
    if rule is not None:
        code = rule.code or CODE_FOR_STATUS.get(rule.status, "INTERNAL")
        return error(code, f"Fake failure {code}", rule.status, rule.retry_after)
    if to.startswith("dead-"):
        return error("UNREGISTERED", "Requested entity was not found.")
    if to.startswith("malformed-"):
        return error("INVALID_ARGUMENT", BAD_TOKEN)
    project = request.match_info["project"]
    if body.get("validate_only"):
        return _named(f"projects/{project}/messages/fake_message_id")
    notification = message.get("notification") or {}
    item = {"to": to, "title": notification.get("title", ""), "body": notification.get("body", "")}
    item["data"] = message.get("data") or {}
    item.update({k: message[k] for k in ("android", "apns") if k in message})
    prov.record(**item)
    ids = request.app[IDS]  # not inline: mypy would infer the key's type from next()
    return _named(f"projects/{project}/messages/{next(ids)}")


def _named(name: str) -> web.Response:
    # A project id needs no escaping: json's cost is skipped for it.
    plain = name.isprintable() and '"' not in name and "\\" not in name
    body = b'{"name":"%s"}' % name.encode() if plain else json.dumps({"name": name}).encode()
    return web.Response(body=body, content_type="application/json")


async def _token(request: web.Request) -> web.Response:
    form = await request.post()
    assertion = str(form.get("assertion", ""))
    if form.get("grant_type") != JWT_BEARER or assertion.count(".") != 2:
        return web.json_response(
            {"error": "invalid_grant", "error_description": "Invalid JWT bearer grant."}, status=400
        )
    tokens = request.app[TOKENS]
    token = f"fake-{len(tokens.issued) + 1}"
    tokens.issued.add(token)
    return web.json_response({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})


async def _tokens(request: web.Request) -> web.Response:
    tokens = request.app[TOKENS]
    return web.json_response({"count": len(tokens.issued), "used": tokens.used})
