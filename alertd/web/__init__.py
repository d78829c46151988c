"""The HTTP edge: typed application state, authentication, problem details, security headers,
and the connections' limits (what idle and slow clients may hold).

Handlers live in the submodules; `routes()` gathers them. Every error that reaches the client is an
RFC 9457 problem-details document with a stable `type` and the field at fault, never a stack trace.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import http
import itertools
import json
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import http_exceptions, web, web_protocol

from alertd import (
    audit as audit_mod,
    auth,
    dispatcher as dispatcher_mod,
    errors,
    metrics as metrics_mod,
    people,
    progress,
    render,
    store as store_mod,
)
from alertd.web import views

log = structlog.get_logger("alertd.web")


@dataclasses.dataclass(frozen=True)
class Settings:
    public_url: str
    max_streams_per_token: int = 20  # live event streams one token may hold open
    cap_sent_skew: dt.timedelta = dt.timedelta(hours=24)  # how far from now a CAP document's `sent` may be


STORE: web.AppKey[store_mod.Store] = web.AppKey("store")
DISPATCHER: web.AppKey[dispatcher_mod.Dispatcher] = web.AppKey("dispatcher")
RENDERER: web.AppKey[render.Renderer] = web.AppKey("renderer")
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
CLOCK: web.AppKey[Callable[[], dt.datetime]] = web.AppKey("clock")
RECORDER: web.AppKey[progress.Recorder] = web.AppKey("recorder")
METRICS: web.AppKey[metrics_mod.Metrics] = web.AppKey("metrics")
AUTH_FAILURES: web.AppKey[metrics_mod.Tally] = web.AppKey("auth_failures")
RECEIPTS_REFUSED: web.AppKey[metrics_mod.Tally] = web.AppKey("receipts_refused")
STREAMS: web.AppKey[collections.Counter] = web.AppKey("streams")  # live event streams, by token id

PROBLEM_JSON = "application/problem+json"
_BODY_HEADERS = frozenset({"content-type", "content-length"})  # the problem document's own
AUTH_LOG_SECONDS = 10.0  # at most one line per interval about failed authentications, with their count
ACCEPT_LOG_SECONDS = 10.0  # the same for accepts refused for want of file descriptors
BAD_REQUEST_LOG_SECONDS = 10.0  # the same for requests aiohttp cannot parse (a scanner's garbage)
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
    shown = views.Problem.model_validate(body).model_dump(mode="json", exclude_unset=True)  # what is known
    return web.Response(status=status, text=json.dumps(shown), content_type=PROBLEM_JSON)


@web.middleware
async def problems(request: web.Request, handler):
    try:
        return await handler(request)
    except errors.ProblemError as exc:
        title = (type(exc).__doc__ or "").strip().splitlines()[0]
        answer = problem(
            exc.status, exc.type, title, exc.message if exc.message != title else None,
            field=exc.field, errors=exc.errors, more_errors=exc.more_errors,
            outside=getattr(exc, "outside", None), outside_area=getattr(exc, "outside_area", None),
        )
        if exc.status == 401:  # RFC 9110: a 401 names the way to authenticate
            answer.headers["WWW-Authenticate"] = 'Bearer realm="alertd"'
        if (retry_after := getattr(exc, "retry_after", None)) is not None:  # RFC 9110: when to try again
            answer.headers["Retry-After"] = str(retry_after)
        return answer
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


async def caller(request: web.Request) -> people.Caller:
    """Who makes the request (token, user, cell), or `errors.Unauthenticated` (counted and logged):
    a revoked or expired token, or a disabled user's, is refused from that very moment."""
    header = request.headers.get("Authorization")
    try:
        token_id, secret_hash = auth.parse_bearer(header)
        found = await request.app[STORE].caller_by_hash(secret_hash)
        return auth.check(found, secret_hash, token_id, now(request))
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


def receipts_refused() -> metrics_mod.Tally:
    """The refused receipts' log: the receipt routes take no bearer token, so anyone may post to them."""
    def say(count: int, reasons: dict[str, int], clients: list[str]) -> None:
        log.warning("receipts refused", count=count, reasons=reasons, clients=clients, per_seconds=AUTH_LOG_SECONDS)

    return metrics_mod.Tally(AUTH_LOG_SECONDS, say)


def audit_entry(request: web.Request, caller: people.Caller, action: str, subject: str | None = None,
                **detail: Any) -> audit_mod.Entry:
    """An audit entry for what `caller` (a user of a cell, by token) did through this request."""
    return audit_mod.Entry(
        cell=caller.cell, user=caller.user, token_id=caller.id, action=action, at=now(request), subject=subject,
        detail=detail, address=request.remote,
    )


def now(request: web.Request) -> dt.datetime:
    return request.app[CLOCK]()


def routes() -> list[web.AbstractRouteDef]:
    from alertd.web import alerts, approvals, audit, cap, console, events, meta, metrics, receipts, sirens, subscribers

    return [
        *audit.routes,
        *cap.routes,  # before alerts: `/v1/alerts/{id}.xml` would match `/v1/alerts/{id}`
        *alerts.routes, *approvals.routes, *subscribers.routes, *receipts.routes, *meta.routes, *events.routes,
        *sirens.routes, *console.routes, *metrics.routes,
    ]


# -- the connections: what idle and slow clients may hold ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Limits:
    keepalive_timeout: float = 15.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000


class Connections:
    """The server's client connections. Each must send a whole request head within `header_timeout`
    of its first byte (of its opening, for the first request), and its body within `body_timeout`.
    At `max_connections`, a new connection closes the one idle the longest (no request under way),
    so that a flood of idle clients cannot keep out the one that brings an alert; so does each
    accept that fails for want of file descriptors. Requests under way (event streams included) are
    never closed to make room."""

    def __init__(self, limits: Limits, metrics: metrics_mod.Metrics) -> None:
        self.limits, self.metrics = limits, metrics
        self.cap = limits.max_connections  # lowered by `fit` to what the file descriptors allow
        self.open: dict[object, Connection] = {}  # by transport
        self.idle: dict[Connection, None] = {}  # idle the longest first
        self.out_of_fds = metrics_mod.Tally(ACCEPT_LOG_SECONDS, self._say_out_of_fds)
        self.unparsable = metrics_mod.Tally(BAD_REQUEST_LOG_SECONDS, _say_unparsable)
        metrics.connections.set_function(lambda: len(self.open))

    def fit(self, descriptors: int) -> None:
        """At most `descriptors` connections: the process's own, less those it keeps for itself."""
        self.cap = max(1, min(self.limits.max_connections, descriptors))
        if self.cap < self.limits.max_connections:
            log.warning("fewer connections than server.max_connections: the file descriptors allow no more",
                        max_connections=self.limits.max_connections, allowed=self.cap)

    def opened(self, conn: Connection) -> None:
        if len(self.open) >= self.cap and not self.shed(1):
            self.drop(conn, "over_capacity")
            return
        self.open[conn.transport] = conn
        self.idle[conn] = None
        self.expect_head(conn)

    def expect_head(self, conn: Connection) -> None:
        conn.deadline = asyncio.get_running_loop().call_later(self.limits.header_timeout, self._head_late, conn)

    def _head_late(self, conn: Connection) -> None:
        conn.deadline = None
        if not conn.busy:
            self.drop(conn, "head_timeout")

    def shed(self, count: int) -> int:
        """Close the `count` connections idle the longest; how many there were."""
        victims = list(itertools.islice(self.idle, count))
        for conn in victims:
            self.drop(conn, "evicted")
        return len(victims)

    def drop(self, conn: Connection, reason: str) -> None:
        self.metrics.dropped.labels(reason).inc()
        self.closed(conn)
        conn.force_close()

    def closed(self, conn: Connection) -> None:
        self.open.pop(conn.transport, None)
        self.idle.pop(conn, None)
        conn.cancel_deadline()

    def begins(self, transport: object) -> Connection | None:
        """A request's head arrived on this connection (None: not one of ours, a test's)."""
        conn = self.open.get(transport)
        if conn is not None:
            conn.busy = True
            conn.cancel_deadline()
            self.idle.pop(conn, None)
        return conn

    def ends(self, conn: Connection) -> None:
        conn.busy = False
        if conn.transport in self.open:
            self.idle[conn] = None

    def body_late(self, request: web.Request) -> None:
        if not request.content.is_eof():
            self.metrics.dropped.labels("body_timeout").inc()
            request.content.set_exception(web.HTTPRequestTimeout(
                text=f"the request body did not arrive within {self.limits.body_timeout:g} s"))

    def accept_failed(self, error: str) -> None:
        """An accept failed for want of descriptors (or memory): `error` is its errno's name."""
        self.metrics.accept_errors.inc()
        self.out_of_fds.add(error)
        self.shed(1)  # the descriptor it frees lets the next accept through

    def _say_out_of_fds(self, count: int, kinds: dict[str, int], _sources: list[str]) -> None:
        log.error("out of file descriptors: connections refused", count=count, errors=kinds,
                  per_seconds=ACCEPT_LOG_SECONDS, connections=len(self.open), cap=self.cap)


def _say_unparsable(count: int, kinds: dict[str, int], clients: list[str]) -> None:
    log.warning("requests refused: not HTTP alertd can read (answered 400)", count=count, errors=kinds,
                clients=clients, per_seconds=BAD_REQUEST_LOG_SECONDS)


CONNECTIONS: web.AppKey[Connections] = web.AppKey("connections")


class Connection(web_protocol.RequestHandler):
    """aiohttp's handler of one connection, under the deadline of `Connections`. aiohttp bounds
    the wait for a first request and between two by `keepalive_timeout` alone, and a request
    head's arrival by nothing."""

    def __init__(self, connections: Connections, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connections = connections
        self.busy = False
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.connections.opened(self)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.deadline is None and self.transport is not None:
            self.connections.expect_head(self)  # the first byte of the next request head
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connections.closed(self)
        super().connection_lost(exc)

    def cancel_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def log_exception(self, *args, **kwargs) -> None:
        """aiohttp logs each request it cannot parse, traceback and all: counted instead. A body
        past its deadline, answered 408, ends the lingering close at once: counted already."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, http_exceptions.HttpProcessingError) and args and len(args) > 1:
            self.connections.unparsable.add(type(exc).__name__, str(args[1]))
        elif not isinstance(exc, web.HTTPRequestTimeout):
            super().log_exception(*args, **kwargs)

    def handle_error(self, request, status: int = 500, exc=None, message=None) -> web.StreamResponse:
        """aiohttp's own answers (a request it cannot parse) are problems like every error, with the
        security headers, and never echo the bytes that came (aiohttp's own text quotes them)."""
        super().handle_error(request, status, exc, message)  # logs, and refuses a half-sent answer
        detail = "The request cannot be read as HTTP." if status < 500 else None
        answer = problem(status, "about:blank", http.HTTPStatus(status).phrase, detail)
        answer.force_close()
        tighten(request.path, answer.headers)
        return answer


@web.middleware
async def first(request: web.Request, handler):
    """A request's store calls go before the background work's (`store.TURN`): a 202 does not
    wait behind a big fan-out's claims and planning."""
    turn = store_mod.TURN.set(store_mod.REQUEST)
    try:
        return await handler(request)
    finally:
        store_mod.TURN.reset(turn)


@web.middleware
async def deadlines(request: web.Request, handler):
    connections = request.app[CONNECTIONS]
    conn = connections.begins(request.transport)
    late = None
    if request.body_exists and not request.content.is_eof():
        late = asyncio.get_running_loop().call_later(connections.limits.body_timeout, connections.body_late, request)
    try:
        return await handler(request)
    finally:
        if late is not None:
            late.cancel()
        if conn is not None:
            connections.ends(conn)
