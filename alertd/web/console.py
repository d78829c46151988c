"""The operators' console: a static single page under `/console`, and the one read it needs besides
the alerts API (who the caller is).

Every asset is served from here: the crisis cell's network may be cut off from the internet. The
page's Content-Security-Policy allows nothing from elsewhere.
"""

from __future__ import annotations

import pathlib

from aiohttp import web

from alertd import web as web_mod
from alertd.web import views

routes = web.RouteTableDef()

STATIC = pathlib.Path(__file__).parent / "static" / "console"
# The page is hash-routed, so every view is /console itself; assets live beside it.
# Every answer under /console, assets and /console/index.html included, gets the page's
# Content-Security-Policy from `web.edges`; this is the page's own.
HEADERS = {"Content-Security-Policy": web_mod.CONSOLE_CSP, "Cache-Control": "no-cache", **web_mod.EDGE_HEADERS}


@routes.get("/console")
@routes.get("/console/")
async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=HEADERS)


routes.static("/console", STATIC)


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    """Who the caller is, as the console shows it (the roles decide which buttons it offers)."""
    caller = await web_mod.caller(request)
    return views.answer(views.Me.of(caller, token_id=caller.id, expires_at=caller.token.expires_at))
