"""The audit log, for admins: who did what, when, from where. Read only: no API edits an entry."""

from __future__ import annotations

from aiohttp import web

from alertd import auth, model, web as web_mod
from alertd.web import alerts

routes = web.RouteTableDef()


@routes.get("/v1/audit")
async def index(request: web.Request) -> web.Response:
    caller = await web_mod.caller(request)
    auth.require_role(caller, model.Role.ADMIN)
    limit = alerts._int(request, "limit", 100, 1, alerts.MAX_PAGE)
    before = alerts._int(request, "before", 2**62, 1, 2**62)
    entries = await request.app[web_mod.STORE].audit(
        limit, before, request.query.get("cell"), request.query.get("action"), request.query.get("subject")
    )
    nxt = entries[-1].id if len(entries) == limit else None
    return web.json_response({"entries": [e.to_json() for e in entries], "next": nxt})
