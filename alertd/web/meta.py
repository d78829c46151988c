"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from alertd import errors, openapi, web as web_mod

routes = web.RouteTableDef()


@routes.get("/v1/openapi.json")
async def document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(request.app[web_mod.SETTINGS].public_url))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    problems, queue = [], None
    try:
        await request.app[web_mod.STORE].ping()
        queue = await request.app[web_mod.STORE].unsettled()  # deliveries pending or on the wire
    except errors.StoreError as exc:
        problems.append(f"store: {exc.message}")
    channels = request.app[web_mod.DISPATCHER].kinds()
    if not channels:
        problems.append("channels: none configured")
    status = 503 if problems else 200
    return web.json_response(
        {
            "ready": not problems, "problems": problems, "queue": queue,
            "channels": {n: str(k) for n, k in channels.items()},
        },
        status=status,
    )
