"""Alert orders: send, read, follow the deliveries, cancel, preview."""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import ctypes
import dataclasses
import functools
import json
import multiprocessing
import os
import pickle
import signal
import sys
import uuid
from collections.abc import Callable, Collection
from typing import Any, ClassVar, TypeVar, cast

import structlog
from aiohttp import web

from alertd import (
    approval,
    auth,
    cap,
    errors,
    identity,
    lifecycle,
    model,
    orders,
    people,
    planner,
    render,
    web as web_mod,
)
from alertd.cap import alert as cap_alert
from alertd.web import approvals, forecast, quota as web_quota, views

log = structlog.get_logger("alertd.web.alerts")
routes = web.RouteTableDef()

MAX_PAGE = 1000
MAX_ALERTS = 500  # a page of alerts: each carries its whole order
MAX_KEY = 200  # characters of an Idempotency-Key


CAP_TYPES = frozenset({"application/cap+xml", "application/xml", "text/xml"})
JSON = "application/json"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Checked:
    """An order that passed every check, with every message it needs rendered; nothing stored yet."""

    alert: model.Alert
    rendered: list[render.Rendered]
    cap: str | None = None  # the CAP document it came as (JSON), kept to give it back as sent


# Reading a body is CPU-bound: up to a second for a worst-case megabyte of CAP (expat's callbacks,
# the CAP rules, GEOS on each polygon) or for 10,000 subscribers (phone numbers). A big body is read
# in one of alertd's reader processes, never on the event loop's thread; a small one (nearly every
# order) where it is, at once: big bodies queue for the readers, small ones never wait behind them.
# Processes, not threads: that reading is mostly pure Python and holds the GIL, which a thread hands
# back to the loop only every 5 ms, and only while the OS runs that thread. On two busy cores (load 5)
# /healthz waited up to 160 ms behind reader threads, 5 to 50 ms behind reader processes
# (tests/test_event_loop.py). A reader costs a process (~100 MB), started at the first big body.
READERS = 2
READER_NICENESS = 10  # the OS runs the event loop (answers, sending) first when the cores are busy
INLINE_BYTES = 64 * 1024
# The checks after the store was asked (an area against a jurisdiction: GEOS, which releases the GIL;
# the rendering of each message) need the renderer, which stays in this process: threads.
CHECKERS = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="alertd-check")


class _Readers:
    """The reader processes, started by `start_readers` or at the first big body; started again if
    one died (OOM)."""

    pool: concurrent.futures.ProcessPoolExecutor | None = None

    @classmethod
    def get(cls) -> concurrent.futures.ProcessPoolExecutor:
        if cls.pool is None:  # spawned, not forked: this process has threads (the store's, the checkers')
            cls.pool = concurrent.futures.ProcessPoolExecutor(
                READERS, mp_context=multiprocessing.get_context("spawn"),
                initializer=_reader_started, initargs=(READER_NICENESS, os.getpid()),
            )
        return cls.pool

    @classmethod
    async def run(cls, read: Callable[..., T], *args: Any) -> T:
        for attempt in (1, 2):
            cls.get()
            try:
                answer = await asyncio.get_running_loop().run_in_executor(
                    cls.pool, functools.partial(_in_reader, read, *args)
                )
                # A `_Pickled` holds the list `read` returned, the T asked for.
                return cast(T, await answer.items()) if isinstance(answer, _Pickled) else answer
            except concurrent.futures.process.BrokenProcessPool:
                log.error("a reader process died; starting them again", attempt=attempt)
                cls.pool = None
        raise errors.ProblemError("the body could not be read: try again", status=503)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _reader_started(niceness: int, daemon: int) -> None:
    """A reader runs behind the event loop, and dies with the daemon: after a SIGKILL nothing else
    would stop it (Linux's parent-death signal; the daemon spawns it from its main thread)."""
    os.nice(niceness)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon:  # it died before the line above
        os._exit(0)


@dataclasses.dataclass(frozen=True)
class _Pickled:
    """A long list as it comes back from a reader: in pickled chunks, which this process unpickles one
    at a time between other work (10,000 subscribers at once hold its GIL for 20 ms or more)."""

    chunks: tuple[bytes, ...]

    SIZE: ClassVar[int] = 500

    async def items(self) -> list:
        items = []
        for chunk in self.chunks:
            items += pickle.loads(chunk)
            await asyncio.sleep(0)
        return items


def _in_reader(read: Callable[..., T], *args: Any) -> T | _Pickled:
    answer = read(*args)
    if not isinstance(answer, list) or len(answer) <= _Pickled.SIZE:
        return answer
    return _Pickled(tuple(pickle.dumps(answer[at:at + _Pickled.SIZE]) for at in range(0, len(answer), _Pickled.SIZE)))


async def start_readers(app: web.Application | None = None) -> None:
    """Start the reader processes now (an `on_startup` hook), not at the first big body: each imports
    alertd, a second of CPU that would otherwise come just when big bodies arrive."""
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(_Readers.get(), os.getpid) for _ in range(READERS)))


async def read_off_loop(size: int, read: Callable[..., T], *args: Any) -> T:
    """`read(*args)`, the reading of a body of `size` bytes: in a reader process if it is big.
    `read` and its arguments and answer (or exception) must pickle."""
    return read(*args) if size <= INLINE_BYTES else await _Readers.run(read, *args)


async def off_loop(size: int, check: Callable[..., T], *args: Any) -> T:
    """`check(*args)`, the checking of `size` bytes (or the like): on the check threads if that is big."""
    if size <= INLINE_BYTES:
        return check(*args)
    return await asyncio.get_running_loop().run_in_executor(CHECKERS, functools.partial(check, *args))


def json_body(request: web.Request) -> None:
    """Refuse a body that is not declared JSON: a JSON reader must not guess what a client meant."""
    if request.content_type != JSON:
        raise errors.UnsupportedMediaType(f"send {JSON}, not {request.content_type}", field="Content-Type")


async def _order(request: web.Request, token: people.Caller) -> Checked:
    """Parse (JSON or CAP 1.2), authorise and check an order, rendering every message it needs."""
    if request.content_type not in CAP_TYPES and request.content_type != JSON:
        raise errors.UnsupportedMediaType(
            f"send {JSON} (an order) or application/cap+xml (CAP 1.2), not {request.content_type}",
            field="Content-Type",
        )
    body = await request.read()
    new: dict[str, Any] = {
        "alert_id": uuid.uuid4().hex, "cell": token.cell, "token_id": token.id, "now": web_mod.now(request),
    }
    kinds = request.app[web_mod.DISPATCHER].kinds()
    broadcast = {kinds[name] for name in request.app[web_mod.DISPATCHER].broadcasts()}
    alert, kept = await read_off_loop(len(body), _read, body, request.content_type in CAP_TYPES, kinds, new, broadcast)
    alert = identity.signed(token, alert, kept is not None, new["now"], request.app[web_mod.SETTINGS].cap_sent_skew)
    # Before rendering: the messages name the cell as people know it (and what is approved is what is sent).
    alert = dataclasses.replace(alert, cell_name=token.cell_name, created_by=token.user)
    try:
        alert = await _chain(request, token, alert)
    except errors.Invalid as exc:
        if not kept:
            raise
        raise cap_alert.located(exc) from exc
    if request.app[web_mod.DISPATCHER].refuses_topics(alert):
        raise errors.Invalid("the channel carrying pushes sends to no topics", field="topics")
    rendered = await off_loop(len(body), _check, token, alert, kinds, request.app[web_mod.RENDERER],
                              request.app[web_mod.DISPATCHER].broadcasts())
    return Checked(alert, rendered, kept)


def _read(
    body: bytes, is_cap: bool, kinds: dict[str, str], new: dict[str, Any], broadcast: Collection[str] = (),
) -> tuple[model.Alert, str | None]:
    """The alert a body orders, and the CAP document it came as (JSON) if it is CAP (in a reader).
    A CAP document that names no channels goes over every configured kind but the `broadcast`
    ones: one message to every phone of a network is asked for by name."""
    if not is_cap:
        return orders.to_alert(orders.parse(body, new["now"]), kinds=kinds, **new), None
    doc = cap.parse(body, cap_alert.LIMITS)
    configured = dict.fromkeys(kinds.values())  # the built-ins first, in their order
    ordered = [k for k in model.Kind if k in configured] + [k for k in configured if k not in list(model.Kind)]
    alert = cap_alert.to_alert(doc, kinds=ordered, defaults=[k for k in ordered if k not in broadcast], **new)
    return alert, json.dumps(doc.to_json())


def _check(token: people.Caller, alert: model.Alert, kinds: dict[str, str], renderer: render.Renderer,
           broadcasts: dict[str, tuple[str, ...]]) -> list[render.Rendered]:
    """Authorise the area (GEOS against the jurisdiction), route (no broadcast beyond the area)
    and render every message."""
    auth.check_area(token, alert.area)
    planner.check_broadcasts(alert, planner.routes(alert, kinds), broadcasts)
    return render.check_order(renderer, alert)


async def _chain(request: web.Request, token: people.Caller, alert: model.Alert) -> model.Alert:
    """Bind the alert's references to the stored alerts (only those the caller may see)."""
    if not alert.references:
        return alert
    store = request.app[web_mod.STORE]
    found = [await store.find_alert(r.sender, r.identifier) for r in alert.references]
    found = [a if a is not None and _visible(token, a) else None for a in found]
    alert = lifecycle.resolve(alert, found)
    return lifecycle.complete(alert, [a for a in found if a is not None])


async def _stop_earlier(request: web.Request, token: people.Caller, alert: model.Alert) -> None:
    """No delivery of the alerts an update replaces or a cancel stops starts after the answer; a
    cancel also stops them in the store and silences their sirens at once (its planning does it
    again, idempotently, should this process die first)."""
    dispatcher = request.app[web_mod.DISPATCHER]
    store = request.app[web_mod.STORE]
    now = web_mod.now(request)
    earlier = [r.alert_id for r in alert.references if r.alert_id is not None]  # all bound by `_chain`
    if alert.msg_type is model.MsgType.CANCEL:
        earlier = await planner.incident(store, earlier)  # the alerts its updates replaced, and theirs
    for earlier_id in earlier:
        await dispatcher.halt(earlier_id)
        if alert.msg_type is model.MsgType.CANCEL:
            entry = web_mod.audit_entry(request, token, "cancelled", earlier_id, by=alert.id)
            await store.cancel_alert(earlier_id, now, entry)
            await store.plan_siren_cancel(earlier_id, now)
        else:
            await store.add_audit(web_mod.audit_entry(request, token, "updated", earlier_id, by=alert.id))
    dispatcher.wake()


def _summary(request: web.Request, alert: model.Alert) -> views.Accepted:
    return views.Accepted.of(alert, request.app[web_mod.SETTINGS].public_url)


@routes.post("/v1/alerts")
async def create(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)
    auth.require_role(token, model.Role.ISSUER, model.Role.ADMIN)
    key = _idempotency_key(request)
    await web_quota.admit(request, token)
    try:
        return await _accept(request, token, key)
    except errors.ProblemError:
        web_quota.give_back(request, token)
        raise


async def _accept(request: web.Request, token: people.Caller, key: str | None) -> web.Response:
    checked = await _order(request, token)
    alert = checked.alert
    asked: dict = {}
    if alert.status is model.Status.DRAFT:
        alert = dataclasses.replace(alert, state=model.AlertState.DRAFT)
    else:  # the two-person rule: it may wait for a second person (`approvals`)
        alert, asked = await approvals.ask(request, token, alert, checked.rendered)
    key = identity.key(alert, key, checked.cap is not None)
    references = [r.alert_id for r in alert.references]
    entry = web_mod.audit_entry(request, token, "created", alert.id, status=alert.status.value,
                                msg_type=alert.msg_type.value, references=references, **asked)
    stored, created = await request.app[web_mod.STORE].create_alert(alert, key, checked.cap, entry)
    request.app[web_mod.METRICS].accepted(stored, created)
    if not created:
        identity.check_replay(stored, alert, checked.cap is not None)
    if created and stored.state is model.AlertState.PLANNING:
        if stored.msg_type is not model.MsgType.ALERT:
            await _stop_earlier(request, token, stored)
        request.app[web_mod.DISPATCHER].submit(stored)
    log.info("alert accepted" if created else "alert replayed", alert_id=stored.id, cell=token.cell)
    headers = {"Location": f"/v1/alerts/{stored.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return views.answer(_summary(request, stored), status=202, headers=headers)


def _idempotency_key(request: web.Request) -> str | None:
    """The `Idempotency-Key` header, if given: 1 to `MAX_KEY` characters (stored with the alert)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise errors.BadRequest(f"an Idempotency-Key has 1 to {MAX_KEY} characters", field="Idempotency-Key")
    return key



def _visible(token: people.Caller, alert: model.Alert) -> bool:
    """A cell sees its own alerts and those of its jurisdiction (their recipients are its citizens)."""
    return alert.cell == token.cell or auth.covers(token, alert.area)


async def _readable(request: web.Request) -> tuple[people.Caller, model.Alert]:
    token = await web_mod.caller(request)
    alert = await request.app[web_mod.STORE].get_alert(request.match_info["id"])
    if not _visible(token, alert):
        raise errors.NotFound(f"no alert {alert.id!r} in your jurisdiction")  # not even its existence
    return token, alert


@routes.get("/v1/alerts")
async def index(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)
    limit = _int(request, "limit", 50, 1, MAX_ALERTS)
    alerts = await request.app[web_mod.STORE].list_alerts(limit, request.query.get("before"))
    return views.answer(views.AlertList.of({"alerts": [a for a in alerts if _visible(token, a)]}))


@routes.get("/v1/alerts/{id}")
async def show(request: web.Request) -> web.Response:
    _, alert = await _readable(request)
    store = request.app[web_mod.STORE]
    counts = await store.counts(alert.id)
    totals: dict[str, int] = {}
    for states in counts.values():
        for state, n in states.items():
            totals[state] = totals.get(state, 0) + n
    return views.answer(views.AlertStatus.of(
        alert, counts=counts, totals=totals, referenced_by=await store.referenced_by(alert.id),
        cancelled_by=await _cancelled_by(store, alert), estimate=await _estimate(request, alert),
    ))


async def _estimate(request: web.Request, alert: model.Alert) -> views.Estimate | None:
    """How long and how much, for an approver to see before releasing it; none once decided."""
    if alert.state is not model.AlertState.AWAITING_APPROVAL:
        return None
    try:
        return views.Estimate.of(await forecast.forecast(request, alert))
    except errors.ProblemError as exc:  # no longer renders or routes: approving it says why
        log.warning("no estimate for an alert awaiting approval", alert_id=alert.id, reason=exc.message)
        return None


async def _cancelled_by(store, alert: model.Alert) -> dict | None:
    """Who cancelled the alert (from the audit log), for the operators who see it cancelled."""
    if alert.state is not model.AlertState.CANCELLED:
        return None
    entries = await store.audit(limit=MAX_PAGE, subject=alert.id, action="cancelled")
    first = entries[-1] if entries else None  # a cancel pressed again later does not take the credit
    return {"cell": first.cell, "at": first.at} if first else None


@routes.get("/v1/alerts/{id}/messages")
async def messages(request: web.Request) -> web.Response:
    """The alert's text in each locale over each of its channels: those put before its approver if
    it needs a second person (what is approved is what is sent), else rendered now (drafts too)."""
    _, alert = await _readable(request)
    if alert.approval is not None:
        return views.answer(views.Messages.of({"messages": alert.approval.messages}))
    rendered = render.check_order(request.app[web_mod.RENDERER], alert)
    return views.answer(views.Messages.of({"messages": [approval.message(r) for r in rendered]}))


@routes.get("/v1/alerts/{id}/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    _, alert = await _readable(request)
    store = request.app[web_mod.STORE]
    state = request.query.get("state")
    if state is not None and state not in model.State.__members__.values():
        raise errors.BadRequest(f"unknown state {state!r}", field="state")
    limit = _int(request, "limit", 100, 1, MAX_PAGE)
    page = await store.deliveries(
        alert.id, request.query.get("channel"), model.State(state) if state else None,
        _int(request, "after", 0, 0, 2**63 - 1), limit,
    )
    nxt = page[-1].id if len(page) == limit else None
    return views.answer(views.DeliveryPage.of({"deliveries": page, "next": nxt}))


@routes.post("/v1/preview")
async def preview(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)
    # What a preview renders is what may be sent: only those who may send see it (and spend its CPU).
    auth.require_role(token, model.Role.ISSUER, model.Role.ADMIN)
    checked = await _order(request, token)
    estimate = views.Estimate.of(await forecast.forecast(request, checked.alert))
    messages = [approval.message(r) for r in checked.rendered]
    return views.answer(views.Previewed.of({"messages": messages, "estimate": estimate}))


def _int(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.BadRequest(f"{name} must be an integer", field=name) from None
    if value < low or (high is not None and value > high):
        raise errors.BadRequest(f"{name} must be between {low} and {high}", field=name)
    return value
