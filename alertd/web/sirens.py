"""Sirens as operators see them: each one's state, overall or among one alert's sirens.

A siren's state is one decision (`alertd.sirenstate.decide`, read through `store.siren_states`): its
last command, whatever the alert, then its gateway's heartbeats. Both routes show that same state,
so the sirens page and an alert's page agree; an alert's route adds that alert's latest command to
each of its sirens.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from alertd import auth, channels as channels_mod, model, sirenstate, web as web_mod
from alertd.web import alerts, views

routes = web.RouteTableDef()

PAGE = 1000


def stale_after(app: web.Application) -> dt.timedelta | None:
    """How long a siren may stay silent: the siren channels' heartbeat timeout (None: no heartbeats)."""
    channels = app[web_mod.DISPATCHER].channels.values()
    beating = [ch for ch in channels if isinstance(ch, channels_mod.Heartbeats)]
    known = [ch.heartbeat_timeout for ch in beating if ch.heartbeat_timeout]
    return dt.timedelta(seconds=min(known)) if known else None


async def states(request: web.Request) -> list[sirenstate.SirenState]:
    return await request.app[web_mod.STORE].siren_states(web_mod.now(request), stale_after(request.app))


@routes.get("/v1/sirens")
async def index(request: web.Request) -> web.Response:
    """Every siren of the caller's jurisdiction: its state, and its last command (any alert)."""
    caller = await web_mod.caller(request)  # any role: each sees the sirens of its jurisdiction
    mine = [s for s in await states(request) if not auth.outside(caller, [s.zone])]
    return views.answer(views.Sirens(sirens=[views.Siren.of(s, s.last_command) for s in mine]))


@routes.get("/v1/alerts/{id}/sirens")
async def of_alert(request: web.Request) -> web.Response:
    """The sirens the alert commanded: each one's state (as `GET /v1/sirens` says it), and the
    alert's latest command to it."""
    _, alert = await alerts._readable(request)
    store = request.app[web_mod.STORE]
    latest: dict[str, model.Delivery] = {}
    for channel, kind in request.app[web_mod.DISPATCHER].kinds().items():
        if kind is model.Kind.SIREN:
            for delivery in await _all(store, alert.id, channel):
                latest[delivery.target] = delivery  # in id order: a cancel follows its activate
    sirens = [s for s in await states(request) if s.siren_id in latest]
    return views.answer(views.Sirens(sirens=[views.Siren.of(s, latest[s.siren_id]) for s in sirens]))


async def _all(store, alert_id: str, channel: str) -> list[model.Delivery]:
    found, after = [], 0
    while page := await store.deliveries(alert_id, channel, None, after, PAGE):
        found += page
        after = page[-1].id
        if len(page) < PAGE:
            break
    return found
