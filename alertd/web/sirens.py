"""Sirens as operators see them: each one's last known state, overall or in one alert.

Overall, a siren's state is `store.siren_states`: its gateway's heartbeats (mains, battery, fault,
sabotage, silence) and its last command. In one alert, it is what that alert's last command to it
became.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from alertd import auth, model, web as web_mod
from alertd.web import alerts

routes = web.RouteTableDef()

PAGE = 1000
WAITING = frozenset({model.State.PENDING, model.State.SENDING})
DONE = frozenset({model.State.SENT, model.State.DELIVERED})


def status(delivery: model.Delivery | None) -> str:
    """unknown (never commanded), commanded (a command on its way), activated, ready, or fault."""
    if delivery is None:
        return "unknown"
    if delivery.state in WAITING:
        return "commanded"
    if delivery.state is model.State.FAILED:
        return "fault"
    if delivery.state in DONE and delivery.command != "cancel":
        return "activated"
    return "ready"  # stopped, or its command was never sent (cancelled, expired)


def _last(delivery: model.Delivery | None) -> dict | None:
    if delivery is None:
        return None
    return {
        "alert_id": delivery.alert_id, "command": delivery.command, "state": delivery.state.value,
        "error": delivery.last_error, "at": delivery.updated_at.isoformat() if delivery.updated_at else None,
    }


def siren_json(siren: model.Siren, delivery: model.Delivery | None) -> dict:
    return siren.to_json() | {"status": status(delivery), "last": _last(delivery)}


def stale_after(app: web.Application) -> dt.timedelta | None:
    """How long a siren may stay silent: the siren channels' heartbeat timeout (None: no heartbeats)."""
    timeouts = [getattr(ch, "heartbeat_timeout", None) for ch in app[web_mod.DISPATCHER].channels.values()]
    known = [t for t in timeouts if t]
    return dt.timedelta(seconds=min(known)) if known else None


@routes.get("/v1/sirens")
async def index(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)  # any role: each sees the sirens of its jurisdiction
    store = request.app[web_mod.STORE]
    last = await store.last_siren_deliveries()
    states = await store.siren_states(web_mod.now(request), stale_after(request.app))
    mine = [s for s in states if not auth.outside(token, [s.zone])]
    return web.json_response({"sirens": [
        {"id": s.siren_id, "zone": s.zone, "label": s.label, "lat": s.lat, "lon": s.lon, "status": s.state,
         "last": _last(last.get(s.siren_id)), "health": s.to_json()}
        for s in mine
    ]})


@routes.get("/v1/alerts/{id}/sirens")
async def of_alert(request: web.Request) -> web.Response:
    """The sirens the alert commanded, each with the state of its latest command in this alert."""
    _, alert = await alerts._readable(request)
    store = request.app[web_mod.STORE]
    latest: dict[str, model.Delivery] = {}
    for channel, kind in request.app[web_mod.DISPATCHER].kinds().items():
        if kind is model.Kind.SIREN:
            for delivery in await _all(store, alert.id, channel):
                latest[delivery.target] = delivery  # in id order: a cancel follows its activate
    sirens = [s for s in await store.list_sirens() if s.id in latest]
    return web.json_response({"sirens": [siren_json(s, latest[s.id]) for s in sirens]})


async def _all(store, alert_id: str, channel: str) -> list[model.Delivery]:
    found, after = [], 0
    while page := await store.deliveries(alert_id, channel, None, after, PAGE):
        found += page
        after = page[-1].id
        if len(page) < PAGE:
            break
    return found
