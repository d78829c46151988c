"""The HTTP edge: typed application state, authentication, problem details.

Handlers live in the submodules; `routes()` gathers them. Every error that reaches the client is an
RFC 9457 problem-details document with a stable `type` and the field at fault, never a stack trace.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from alertd import auth, dispatcher as dispatcher_mod, errors, metrics as metrics_mod, model, progress, render, store as store_mod

log = structlog.get_logger("alertd.web")


@dataclasses.dataclass(frozen=True)
class Settings:
    public_url: str
    twilio_auth_tokens: tuple[str, ...] = ()  # to check the signature of Twilio's callbacks
    max_streams_per_token: int = 20  # live event streams one token may hold open


STORE: web.AppKey[store_mod.Store] = web.AppKey("store")
DISPATCHER: web.AppKey[dispatcher_mod.Dispatcher] = web.AppKey("dispatcher")
RENDERER: web.AppKey[render.Renderer] = web.AppKey("renderer")
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
CLOCK: web.AppKey[Callable[[], dt.datetime]] = web.AppKey("clock")
RECORDER: web.AppKey[progress.Recorder] = web.AppKey("recorder")
METRICS: web.AppKey[metrics_mod.Metrics] = web.AppKey("metrics")
AUTH_FAILURES: web.AppKey[metrics_mod.Tally] = web.AppKey("auth_failures")
STREAMS: web.AppKey[collections.Counter] = web.AppKey("streams")  # live event streams, by token id

PROBLEM_JSON = "application/problem+json"
_BODY_HEADERS = frozenset({"content-type", "content-length"})  # the problem document's own
AUTH_LOG_SECONDS = 10.0  # at most one line per interval about failed authentications, with their count
# The console page loads its own assets and nothing else; an API answer loads nothing. Neither may
# be framed (clickjacking an operator into sending an alert).
CONSOLE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; "
               "base-uri 'none'; form-action 'self'")
API_CSP = "default-src 'none'; frame-ancestors 'none'"
EDGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
SERVER = "alertd"  # no version: it would only tell an attacker which advisories to try


def is_console(path: str) -> bool:
    return path == "/console" or path.startswith("/console/")


def tighten(path: str, headers) -> None:
    """The security headers of every answer, and the plain `Server` banner."""
    headers["Server"] = SERVER
    headers.setdefault("Content-Security-Policy", CONSOLE_CSP if is_console(path) else API_CSP)
    for name, value in EDGE_HEADERS.items():
        headers.setdefault(name, value)


async def edges(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer, error or stream, leaves with the security headers."""
    tighten(request.path, response.headers)


def problem(status: int, type_: str, title: str, detail: str | None = None, **extra: Any) -> web.Response:
    body = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return web.Response(status=status, text=json.dumps(body, default=str), content_type=PROBLEM_JSON)


@web.middleware
async def problems(request: web.Request, handler):
    try:
        return await handler(request)
    except errors.ProblemError as exc:
        title = (type(exc).__doc__ or "").strip().splitlines()[0]
        return problem(
            exc.status, exc.type, title, exc.message if exc.message != title else None,
            field=getattr(exc, "field", None), errors=getattr(exc, "errors", None),
            outside=getattr(exc, "outside", None), outside_area=getattr(exc, "outside_area", None),
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text != f"{exc.status}: {exc.reason}" else None
        answer = problem(exc.status, "about:blank", exc.reason, detail)
        # aiohttp's own headers stay: a 405 names the methods the path has in `Allow` (RFC 9110).
        answer.headers.extend((k, v) for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS)
        return answer
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return problem(500, "about:blank", "Internal Server Error", "the error was logged")


async def caller(request: web.Request) -> model.Token:
    """The authenticated token of the request, or `errors.Unauthenticated` (counted and logged)."""
    header = request.headers.get("Authorization")
    try:
        token_id, secret_hash = auth.parse_bearer(header)
        token = await request.app[STORE].token_by_hash(secret_hash)
        return auth.check(token, secret_hash, token_id)
    except errors.Unauthenticated as exc:
        reason = failure_reason(header, exc)
        request.app[METRICS].auth_failures.labels(reason).inc()
        request.app[AUTH_FAILURES].add(reason, request.remote)
        raise


def failure_reason(header: str | None, exc: errors.Unauthenticated) -> str:
    """Why a bearer token was refused, as `metrics.AUTH_FAILURES` names it."""
    reason = getattr(exc, "reason", None)
    if reason in metrics_mod.AUTH_FAILURES:
        return reason
    if not (header or "").strip():
        return "missing"
    try:
        auth.parse_bearer(header)
    except errors.Unauthenticated:
        return "malformed"
    return "unknown"


def auth_failures() -> metrics_mod.Tally:
    """The failed authentications' log: a brute force leaves a trace without flooding the log."""
    def say(count: int, reasons: dict[str, int], clients: list[str]) -> None:
        log.warning("authentication failed", count=count, reasons=reasons, clients=clients,
                    per_seconds=AUTH_LOG_SECONDS)

    return metrics_mod.Tally(AUTH_LOG_SECONDS, say)


def audit_entry(request: web.Request, token: model.Token, action: str, subject: str | None = None,
                **detail: Any) -> store_mod.audit.Entry:
    """An audit entry for what `token`'s holder did through this request."""
    return store_mod.audit.Entry(cell=token.cell, token_id=token.id, action=action, at=now(request), subject=subject,
                       detail=detail, address=request.remote)


def now(request: web.Request) -> dt.datetime:
    return request.app[CLOCK]()


def routes() -> list[web.AbstractRouteDef]:
    from alertd.web import alerts, audit, cap, console, events, meta, metrics, receipts, sirens, subscribers

    return [
        *audit.routes,
        *cap.routes,  # before alerts: `/v1/alerts/{id}.xml` would match `/v1/alerts/{id}`
        *alerts.routes, *subscribers.routes, *receipts.routes, *meta.routes, *events.routes, *sirens.routes,
        *console.routes, *metrics.routes,
    ]
