"""Alert orders: send, read, follow the deliveries, cancel, preview."""

from __future__ import annotations

import dataclasses
import uuid

import structlog
from aiohttp import web

from alertd import auth, errors, model, orders, planner, render, web as web_mod

log = structlog.get_logger("alertd.web.alerts")
routes = web.RouteTableDef()

MAX_PAGE = 1000


async def _order(request: web.Request, token: model.Token) -> tuple[model.Alert, list[render.Rendered]]:
    """Parse, authorise and check an order, rendering every message it needs; nothing is stored."""
    now = web_mod.now(request)
    order = orders.parse(await request.read(), now)
    alert = orders.to_alert(
        order, alert_id=uuid.uuid4().hex, sender=token.cell, token_id=token.id, now=now
    )
    auth.check_jurisdiction(token, list(alert.area.zones))
    planner.routes(alert, request.app[web_mod.DISPATCHER].kinds())
    return alert, render.check_order(request.app[web_mod.RENDERER], alert)


def _summary(request: web.Request, alert: model.Alert) -> dict:
    return {
        "id": alert.id,
        "identifier": alert.identifier,
        "state": alert.state.value,
        "status_url": f"{request.app[web_mod.SETTINGS].public_url.rstrip('/')}/v1/alerts/{alert.id}",
    }


@routes.post("/v1/alerts")
async def create(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)
    auth.require_role(token, model.Role.ISSUER, model.Role.ADMIN)
    alert, _ = await _order(request, token)
    if alert.status is model.Status.DRAFT:
        alert = dataclasses.replace(alert, state=model.AlertState.DRAFT)
    key = request.headers.get("Idempotency-Key") or alert.identifier
    stored, created = await request.app[web_mod.STORE].create_alert(alert, key)
    if not created and _order_of(stored) != _order_of(alert):
        # Replaying the first alert for a different order would silently drop the second one.
        raise errors.IdempotencyKeyReused(field="Idempotency-Key", alert_id=stored.id)
    if created and stored.state is model.AlertState.PLANNING:
        request.app[web_mod.DISPATCHER].submit(stored)
    log.info("alert accepted" if created else "alert replayed", alert_id=stored.id, cell=token.cell)
    headers = {"Location": f"/v1/alerts/{stored.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(_summary(request, stored), status=202, headers=headers)


def _order_of(alert: model.Alert) -> dict:
    """What the issuer asked for: the alert without what alertd gave it (id, time, state)."""
    mine = ("id", "identifier", "sent", "state", "cancelled_at")
    return {k: v for k, v in alert.to_json().items() if k not in mine}


def _visible(token: model.Token, alert: model.Alert) -> bool:
    """A cell sees the alerts of its jurisdiction (their recipients are its citizens), no others."""
    return not auth.outside(token, alert.area.zones)


async def _readable(request: web.Request) -> tuple[model.Token, model.Alert]:
    token = await web_mod.caller(request)
    alert = await request.app[web_mod.STORE].get_alert(request.match_info["id"])
    if not _visible(token, alert):
        raise errors.NotFound(f"no alert {alert.id!r} in your jurisdiction")  # not even its existence
    return token, alert


@routes.get("/v1/alerts")
async def index(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)
    limit = _int(request, "limit", 50, 1, 500)
    alerts = await request.app[web_mod.STORE].list_alerts(limit, request.query.get("before"))
    return web.json_response({"alerts": [a.to_json() for a in alerts if _visible(token, a)]})


@routes.get("/v1/alerts/{id}")
async def show(request: web.Request) -> web.Response:
    _, alert = await _readable(request)
    store = request.app[web_mod.STORE]
    counts = await store.counts(alert.id)
    totals: dict[str, int] = {}
    for states in counts.values():
        for state, n in states.items():
            totals[state] = totals.get(state, 0) + n
    return web.json_response(alert.to_json() | {"counts": counts, "totals": totals})


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
    return web.json_response({"deliveries": [d.to_json() for d in page], "next": nxt})


@routes.post("/v1/alerts/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    token, alert = await _readable(request)
    auth.require_role(token, model.Role.ISSUER, model.Role.ADMIN)
    store = request.app[web_mod.STORE]
    dispatcher = request.app[web_mod.DISPATCHER]
    dispatcher.cancel(alert.id)  # before the store: no worker of ours starts one after this line
    now = web_mod.now(request)
    stopped = await store.cancel_alert(alert.id, now)
    sirens = await store.plan_siren_cancel(alert.id, now)
    dispatcher.wake()
    log.info("alert cancelled", alert_id=alert.id, cell=token.cell, stopped=stopped, sirens=sirens)
    alert = await store.get_alert(alert.id)
    return web.json_response(alert.to_json() | {"stopped": stopped, "siren_cancels": sirens})


@routes.post("/v1/preview")
async def preview(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)
    _, rendered = await _order(request, token)
    return web.json_response({"messages": [_rendered(r) for r in rendered]})


def _rendered(r: render.Rendered) -> dict:
    return {
        "locale": r.locale, "channel": r.kind.value, "title": r.title, "body": r.body,
        "encoding": r.encoding, "segments": r.segments, "size": r.size,
    }


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
