"""The webhook gateway's fake, on 127.0.0.1, for the plugin's tests: ``POST /webhook/messages``
(bearer token, JSON), alertd's shared control routes (`alertd.fakes.common`), and
``POST /_fake/webhook/report``: it then posts each message's report, signed, to its callback URL
(``{"failed": [to, ...]}``: those failed), and answers the statuses alertd gave."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import test_utils, web

import alertd_webhook
from alertd.fakes import common

SECRET: web.AppKey[str] = web.AppKey("secret", str)


@contextlib.asynccontextmanager
async def serve(secret: str) -> AsyncIterator[str]:
    """The gateway on 127.0.0.1, in the running loop, for as long as the block: its base URL."""
    server = test_utils.TestServer(fake_app(secret), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def fake_app(secret: str) -> web.Application:
    """The gateway: ``POST /webhook/messages`` (bearer token, JSON), the shared control routes, and
    ``POST /_fake/webhook/report`` — it then posts each message's report, signed, to its callback
    URL (``{"failed": [to, ...]}``: those failed), and answers the statuses alertd gave."""
    app = web.Application()
    app[SECRET] = secret
    common.add_control_routes(app, ["webhook"])
    app.router.add_post("/webhook/messages", _message)
    app.router.add_post("/_fake/webhook/report", _report)
    return app


async def _message(request: web.Request) -> web.Response:
    body = await request.json()
    prov = common.provider(request.app, "webhook")
    rule = await prov.rule_for(body.get("to"))
    if rule is not None:
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after else {}
        return web.json_response({"error": rule.code}, status=rule.status, headers=headers)
    sent = "wh" + uuid.uuid4().hex
    prov.record(id=sent, to=body["to"], body=body["text"], callback_url=body["callback_url"],
                authorization=request.headers.get("Authorization", ""))
    return web.json_response({"id": sent}, status=201)


async def _report(request: web.Request) -> web.Response:
    failed = set((await request.json()).get("failed", []))
    answers = []
    async with aiohttp.ClientSession() as session:
        for item in common.provider(request.app, "webhook").received:
            report = {"id": item["id"], "status": "failed" if item["to"] in failed else "delivered"}
            body = json.dumps(report).encode()
            signature = alertd_webhook.sign(request.app[SECRET], body)
            headers = {alertd_webhook.SIGNATURE: signature, "Content-Type": "application/json"}
            async with session.post(item["callback_url"], data=body, headers=headers) as resp:
                answers.append(resp.status)
    return web.json_response({"answers": answers})
