"""`GET /metrics`: the Prometheus scrape.

Served without a token: the figures are operational (counts, durations, error codes), with no alert
text, id, address or phone number. Still, keep the endpoint to the monitoring network (firewall, or
a reverse proxy that serves only the API publicly).
"""

from __future__ import annotations

from aiohttp import web

from alertd import metrics, web as web_mod
from alertd.web import sirens

routes = web.RouteTableDef()


@routes.get("/metrics")
async def scrape(request: web.Request) -> web.Response:
    figures = await metrics.read(request.app[web_mod.STORE], web_mod.now(request), sirens.stale_after(request.app))
    body, content_type = request.app[web_mod.METRICS].exposition(figures, request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})
