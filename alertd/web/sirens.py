"""Sirens as operators see them: each one's last known state, overall or in one alert.

For now a siren's state is what its last command's delivery says; the gateway's heartbeats will
say more (mains, battery, sabotage, silence).
"""

from __future__ import annotations

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


def siren_json(siren: model.Siren, delivery: model.Delivery | None) -> dict:
    last = None
    if delivery is not None:
        last = {
            "alert_id": delivery.alert_id, "command": delivery.command, "state": delivery.state.value,
            "error": delivery.last_error, "at": delivery.updated_at.isoformat() if delivery.updated_at else None,
        }
    return siren.to_json() | {"status": status(delivery), "last": last}


@routes.get("/v1/sirens")
async def index(request: web.Request) -> web.Response:
    token = await web_mod.caller(request)
    auth.require_role(token, model.Role.OPERATOR, model.Role.ADMIN)
    store = request.app[web_mod.STORE]
    last = await store.last_siren_deliveries()
    mine = [s for s in await store.list_sirens() if not auth.outside(token, [s.zone])]
    return web.json_response({"sirens": [siren_json(s, last.get(s.id)) for s in mine]})


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
