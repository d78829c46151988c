"""The audit log, for admins: who did what, when, from where. Read only: no API edits an entry.

A national cell's admin reads every cell's entries; another cell's admin its own cell's only (who
another cell's users are, what they sent and from where is that cell's business)."""

from __future__ import annotations

from aiohttp import web

from alertd import auth, errors, model, people, web as web_mod, zones
from alertd.web import alerts, views

routes = web.RouteTableDef()


@routes.get("/v1/audit")
async def index(request: web.Request) -> web.Response:
    caller = await web_mod.caller(request)
    auth.require_role(caller, model.Role.ADMIN)
    limit = alerts._int(request, "limit", 100, 1, alerts.MAX_PAGE)
    before = alerts._int(request, "before", 2**62, 1, 2**62)
    entries = await request.app[web_mod.STORE].audit(
        limit, before, _cell(caller, request.query.get("cell")), request.query.get("action"),
        request.query.get("subject"),
    )
    nxt = entries[-1].id if len(entries) == limit else None
    return views.answer(views.AuditPage.of({"entries": entries, "next": nxt}))


def _cell(caller: people.Caller, asked: str | None) -> str | None:
    """The cell whose entries the caller reads: the one asked for, within what it may read."""
    if zones.NATIONAL in caller.zones:
        return asked
    if asked not in (None, caller.cell):
        raise errors.Forbidden(f"an admin of cell {caller.cell} reads its own cell's entries only", field="cell")
    return caller.cell
