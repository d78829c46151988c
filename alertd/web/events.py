"""Live progress of one alert as Server-Sent Events: `GET /v1/alerts/{id}/events`.

A fresh stream starts with a `snapshot` (the alert, its counts, and as `id` the seq of the alert's
latest progress row), then sends one `progress` event per row after it (`id` = its seq), and ends
with an `end` event once the alert's final row went out (a final state, and every delivery
settled: a cancel's siren stops included). A client that reconnects with
`Last-Event-ID` (or `?after=`) gets every row after that seq, in order, and no snapshot; `after=0`
replays the alert's whole history. A comment every `HEARTBEAT` seconds keeps proxies from closing
an idle stream. Rows written by this instance's recorder wake the stream at once; the store is
polled every `POLL` seconds for other instances' rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from aiohttp import web

from alertd import errors, model, web as web_mod
from alertd.web import alerts, views

log = structlog.get_logger("alertd.web.events")
routes = web.RouteTableDef()

HEARTBEAT = 15.0  # seconds
POLL = 1.0  # seconds
PAGE = 500  # rows read at once when a client catches up
RETRY_MS = 2000  # what an EventSource waits before it reconnects
RETRY_AFTER = 5  # seconds a client refused a stream waits before it asks again
TOO_MANY = "https://alertd.example/problems/too-many-streams"


def event(name: str, data: Any, seq: int | None = None) -> bytes:
    """One SSE event; compact JSON never holds a newline, so `data` is one line."""
    lines = [f"event: {name}"] + ([f"id: {seq}"] if seq is not None else [])
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def resume_after(request: web.Request) -> int | None:
    """The seq the client saw last (`Last-Event-ID`, else `?after=`); None for a fresh stream."""
    for field, raw in (("Last-Event-ID", request.headers.get("Last-Event-ID")), ("after", request.query.get("after"))):
        if raw is not None and raw.strip():
            if not raw.strip().isdigit():
                raise errors.BadRequest(f"{field} must be a progress seq (a whole number)", field=field)
            return int(raw)
    return None


def refused(limit: int) -> web.Response:
    """The answer to a token that holds as many streams as it may: 429, and when to try again."""
    answer = web_mod.problem(
        429, TOO_MANY, "Too many event streams for this token",
        f"a token may hold {limit} event streams open at once; close one, or try again later",
    )
    answer.headers["Retry-After"] = str(RETRY_AFTER)
    return answer


@contextlib.contextmanager
def _held(request: web.Request, token_id: str):
    held = request.app[web_mod.STREAMS]
    held[token_id] += 1
    try:
        yield
    finally:
        held[token_id] -= 1
        if held[token_id] <= 0:
            del held[token_id]


@routes.get("/v1/alerts/{id}/events")
async def stream(request: web.Request) -> web.StreamResponse:
    caller, alert = await alerts._readable(request)
    after = resume_after(request)
    limit = request.app[web_mod.SETTINGS].max_streams_per_token
    if request.app[web_mod.STREAMS][caller.id] >= limit:
        request.app[web_mod.METRICS].streams_refused.inc()
        return refused(limit)
    with _held(request, caller.id):
        return await _stream(request, alert, after)


async def _stream(request: web.Request, alert: model.Alert, after: int | None) -> web.StreamResponse:
    recorder = request.app[web_mod.RECORDER]
    recorder.touch(alert.id)  # its final row gets written even if no pass saw it live
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        await _follow(request, response, alert, after)
    except ConnectionResetError:  # the client went away
        pass
    return response


async def _follow(
    request: web.Request, response: web.StreamResponse, alert: model.Alert, after: int | None
) -> None:
    store, recorder = request.app[web_mod.STORE], request.app[web_mod.RECORDER]
    alert_id = alert.id
    last = await store.last_progress(alert_id)
    if after is None:  # the latest seq first: a row written while we read the counts still comes next
        after = last.seq if last else 0
        counts = await store.counts(alert_id)
        snapshot = views.Alert.of(alert).model_dump(mode="json") | {"counts": counts, "seq": after}
        await response.write(event("snapshot", snapshot, after))
    # Over, unless the alert moved on since (a completed alert cancelled to stop its sirens): then
    # the recorder, touched above, writes its new rows.
    if last is not None and last.final and last.seq <= after and last.state == alert.state:
        await response.write(event("end", {"state": last.state}))
        return
    loop = asyncio.get_running_loop()
    beat = loop.time() + HEARTBEAT
    while not recorder.closing and _connected(request):
        rows = await store.progress(alert_id, after, PAGE)
        for row in rows:
            await response.write(event("progress", row.to_json(), row.seq))
            after = row.seq
        if rows and rows[-1].final and await _over(store, alert_id, rows[-1]):
            await response.write(event("end", {"state": rows[-1].state}))
            return
        if len(rows) == PAGE:
            continue
        if loop.time() >= beat:
            await response.write(b": keep-alive\n\n")
            beat = loop.time() + HEARTBEAT
        await recorder.wait(min(POLL, max(0.0, beat - loop.time())))


async def _over(store, alert_id: str, row) -> bool:
    """Whether this final row is the alert's last word: its latest row, and its state still the
    alert's (a replay goes past a `completed` row to the cancel that followed it)."""
    latest = await store.last_progress(alert_id)
    return latest is not None and latest.seq == row.seq and (await store.get_alert(alert_id)).state.value == row.state


def _connected(request: web.Request) -> bool:
    """Whether the client is still there: an idle stream learns it without waiting for a write."""
    return request.transport is not None and not request.transport.is_closing()
