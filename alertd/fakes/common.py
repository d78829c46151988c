"""What every fake provider shares: a record of what it received, and failure rules it obeys.

Control endpoints, identical for every provider (see `alertd.testing.FakeControl`):

- ``GET  /_fake/{provider}/received``  what was received, oldest first (``?since=N`` skips N)
- ``GET  /_fake/{provider}/count``     ``{"count": n}``, cheap for benchmarks
- ``POST /_fake/{provider}/failures``  queue a rule: ``status`` (HTTP), ``code`` (provider error
  code), ``retry_after`` (seconds, sent as Retry-After), ``times`` (how many requests it applies
  to; null = forever), ``to`` (only requests to that address), ``delay`` (seconds to wait before
  answering; with no ``status`` the request then succeeds)
- ``POST /_fake/reset``                forget everything, every provider
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from aiohttp import web


@dataclasses.dataclass
class Rule:
    status: int = 0  # 0: no answer of its own (a delay only)
    code: Any = None
    retry_after: float | None = None
    times: int | None = 1
    to: str | None = None
    delay: float = 0.0

    def matches(self, to: str | None) -> bool:
        return self.to is None or self.to == to


@dataclasses.dataclass
class Provider:
    """The recorded traffic and the failure rules of one fake provider."""

    name: str
    received: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rules: list[Rule] = dataclasses.field(default_factory=list)

    def reset(self) -> None:
        self.received.clear()
        self.rules.clear()

    async def rule_for(self, to: str | None) -> Rule | None:
        """The first rule for this request (consuming one of its `times`), after its delay."""
        for rule in self.rules:
            if rule.matches(to):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                if rule.delay:
                    await asyncio.sleep(rule.delay)  # a slow provider is the behaviour under test
                return rule if rule.status else None
        return None

    def record(self, **item: Any) -> None:
        item.setdefault("at", time.time())  # when it arrived: benchmarks measure latency with it
        self.received.append(item)


PROVIDERS: web.AppKey[dict[str, Provider]] = web.AppKey("providers", dict)


def provider(app: web.Application, name: str) -> Provider:
    return app[PROVIDERS][name]


async def _received(request: web.Request) -> web.Response:
    prov = _lookup(request)
    since = int(request.query.get("since", 0))
    return web.json_response(prov.received[since:])


async def _count(request: web.Request) -> web.Response:
    return web.json_response({"count": len(_lookup(request).received)})


async def _failures(request: web.Request) -> web.Response:
    body = await request.json()
    _lookup(request).rules.append(Rule(**body))
    return web.json_response({"ok": True})


async def _reset(request: web.Request) -> web.Response:
    for prov in request.app[PROVIDERS].values():
        prov.reset()
    return web.json_response({"ok": True})


async def _health(request: web.Request) -> web.Response:
    providers = request.app[PROVIDERS]  # not inline: mypy would infer the key's type from sorted()
    return web.json_response({"ok": True, "providers": sorted(providers)})


def _lookup(request: web.Request) -> Provider:
    try:
        return request.app[PROVIDERS][request.match_info["provider"]]
    except KeyError:
        raise web.HTTPNotFound(text="no such fake provider") from None


def add_control_routes(app: web.Application, names: list[str]) -> None:
    app[PROVIDERS] = {name: Provider(name) for name in names}
    app.router.add_get("/_fake/health", _health)
    app.router.add_post("/_fake/reset", _reset)
    app.router.add_get("/_fake/{provider}/received", _received)
    app.router.add_get("/_fake/{provider}/count", _count)
    app.router.add_post("/_fake/{provider}/failures", _failures)
