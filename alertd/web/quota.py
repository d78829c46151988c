"""The per-cell limit on orders at the HTTP edge: `POST /v1/alerts` calls `admit` first, and
`give_back` when it refuses the order after all: a cell's client posting bad orders does not use
up the orders its real alerts need.

The buckets (`alertd.quota`) are this instance's own, kept on the app: behind a load balancer of
several instances each counts the orders it serves.
"""

from __future__ import annotations

import math

from aiohttp import web

from alertd import errors, people, quota, web as web_mod

QUOTA: web.AppKey[quota.Quota] = web.AppKey("quota", quota.Quota)
LONGEST_WAIT = 3600  # seconds: what Retry-After says to a cell whose rate lets nothing through


async def admit(request: web.Request, caller: people.Caller) -> None:
    """Take one order from the caller's cell's bucket, or refuse it: `errors.TooManyRequests`
    (429) with the whole seconds until one is available (at least 1)."""
    rate = caller.unit.rate
    wait = request.app[QUOTA].take(caller.cell, rate, web_mod.now(request).timestamp())
    if wait is None:
        return
    seconds = min(LONGEST_WAIT, max(1, math.ceil(wait)))
    raise errors.TooManyRequests(
        f"Cell {caller.cell} may post {rate.burst} orders at once and {rate.per_minute:g} a minute:"
        f" try again in {seconds} s.",
        retry_after=seconds,
    )


def give_back(request: web.Request, caller: people.Caller) -> None:
    request.app[QUOTA].give_back(caller.cell, caller.unit.rate, web_mod.now(request).timestamp())
