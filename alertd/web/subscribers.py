"""The audience: subscribers registered over the API (the CLI imports CSV files)."""

from __future__ import annotations

import structlog
from aiohttp import web

from alertd import audience, auth, model, web as web_mod
from alertd.web import alerts, views

log = structlog.get_logger("alertd.web.subscribers")
routes = web.RouteTableDef()


@routes.post("/v1/subscribers")
async def upsert(request: web.Request) -> web.Response:
    caller = await web_mod.caller(request)
    auth.require_role(caller, model.Role.ISSUER, model.Role.ADMIN)
    alerts.json_body(request)
    body = await request.read()
    recipients = await alerts.read_off_loop(len(body), audience.parse_subscribers, body)
    store = request.app[web_mod.STORE]
    # The zones they move to, and the zones they are in now: an issuer may neither register people
    # outside its jurisdiction nor take over (re-route) a subscriber of another cell.
    existing = await store.recipients([r.id for r in recipients])
    zones = {z for r in [*recipients, *existing] for z in r.zones}
    auth.check_jurisdiction(caller, sorted(zones), field="zones")
    count = await store.upsert_recipients(recipients)
    await store.add_audit(web_mod.audit_entry(request, caller, "subscribers_imported", count=count))
    log.info("subscribers imported", count=count, cell=caller.cell, user=caller.user)
    return views.answer(views.Imported(imported=count))
