"""Planning: turn a committed alert into its deliveries, in chunks, resumably.

The order is committed (state `planning`) before the HTTP answer; planning runs right after, in the
background, chunk by chunk, each chunk committed with its cursor. A restart resumes from the cursor,
and the store's uniqueness on (alert, channel, target, command) makes a replayed chunk harmless.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import structlog

from alertd import errors, model, store as store_mod

log = structlog.get_logger("alertd.planner")


def routes(alert: model.Alert, kinds: Mapping[str, model.Kind]) -> dict[model.Kind, str]:
    """Which configured channel carries each kind the alert asks for (the first one configured).

    `kinds` maps configured channel names to their kind. Raises `errors.Invalid` on `channels`
    when the alert asks for a kind that no configured channel provides."""
    chosen: dict[model.Kind, str] = {}
    for name, kind in kinds.items():
        chosen.setdefault(kind, name)
    missing = [k.value for k in alert.channels if k not in chosen]
    if missing:
        raise errors.Invalid(
            f"no channel configured for {', '.join(missing)}", field="channels", missing=missing
        )
    return {k: chosen[k] for k in alert.channels}


async def plan(
    store: store_mod.Store,
    alert: model.Alert,
    route: Mapping[model.Kind, str],
    *,
    chunk: int,
    clock: Callable[[], dt.datetime],
    on_chunk: Callable[[], None] = lambda: None,
) -> None:
    """Write every delivery of `alert`, resuming where an interrupted planning stopped, then mark
    the alert active. `on_chunk` is called after each committed chunk (to wake the senders)."""
    after = await store.plan_cursor(alert.id)
    if after is not None:
        log.info("planning resumed", alert_id=alert.id, after=after)
    while True:
        after = await store.plan_chunk(alert, route, after, chunk, clock())
        on_chunk()
        if after is None:
            break
    # Only from `planning`: a cancel that landed meanwhile must stay a cancel.
    if await store.set_alert_state(alert.id, model.AlertState.ACTIVE, only_from=model.AlertState.PLANNING):
        log.info("planned", alert_id=alert.id)
