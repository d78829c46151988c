"""Planning: turn a committed alert into its deliveries, in chunks, resumably.

The order is committed (state `planning`) before the HTTP answer; planning runs right after, in the
background, chunk by chunk, each chunk committed with its cursor. A restart resumes from the cursor,
and the store's uniqueness on (alert, channel, target, command) makes a replayed chunk harmless.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy
import structlog

from alertd import (
    approval,
    audience as audience_mod,
    audit,
    errors,
    geo,
    model,
    priority,
    render,
    store as store_mod,
    zones,
)

log = structlog.get_logger("alertd.planner")


def routes(alert: model.Alert, kinds: Mapping[str, str]) -> dict[str, str]:
    """Which configured channel carries each kind the alert asks for: the one the order named
    (`via`), else the first one configured.

    `kinds` maps configured channel names to their kind. Raises `errors.Invalid` on `channels`
    when the alert asks for a kind that no configured channel provides."""
    chosen: dict[str, str] = {kinds[name]: name for name in reversed(alert.via) if name in kinds}
    for name, kind in kinds.items():
        chosen.setdefault(kind, name)
    missing = [str(k) for k in alert.channels if k not in chosen]
    if missing:
        raise errors.Invalid(
            f"no channel configured for {', '.join(missing)}", field="channels", missing=missing
        )
    return {k: chosen[k] for k in alert.channels}


def audience(alert: model.Alert, tests: Sequence[str]) -> model.Audience:
    """Whom the alert's planning walks. Anything but a plain list of zones is written as the
    alert's own targets first (`targets`); an exercise is narrowed to participants in every case."""
    exercise = alert.status is model.Status.EXERCISE
    if alert.msg_type is model.MsgType.CANCEL:
        return model.Audience("nobody")  # it goes to whom the cancelled alerts reached: `plan_reached`
    if alert.status in TO_TESTERS:
        return model.Audience("targets" if tests else "nobody")
    if zones.NATIONAL in alert.area.zones:
        return model.Audience("everyone", exercise_only=exercise)
    if alert.area.shaped or alert.msg_type is model.MsgType.UPDATE:
        return model.Audience("targets", exercise_only=exercise)
    return model.Audience("zones", alert.area.zones, exercise_only=exercise)


# CAP `test` and `system` messages are not for the public: only the configured test recipients.
TO_TESTERS = frozenset({model.Status.TEST, model.Status.SYSTEM})


# Siren commands by alert status: a test or an exercise must never sound the alert signal.
SIREN_COMMAND = {
    model.Status.ACTUAL: "activate",
    model.Status.SYSTEM: "test",
    model.Status.TEST: "test",
    model.Status.EXERCISE: "silent_test",
}


NO_BROADCASTS: Mapping[str, Sequence[str]] = types.MappingProxyType({})
# An area broadcast's command: what a cancel or an update stops (`store.plan_siren_cancel`). A
# cancel broadcasts nothing new: the stopped alerts' broadcasts are withdrawn.
BROADCAST = "broadcast"


def siren_command(alert: model.Alert) -> str | None:
    """What the alert's sirens are told, or None when they are not to hear of it."""
    if alert.msg_type is model.MsgType.CANCEL:
        return None  # the stopped alerts' sirens get their `cancel`
    return SIREN_COMMAND.get(alert.status, "test")


def check_broadcasts(alert: model.Alert, routes: Mapping[str, str], broadcasts: Mapping[str, Sequence[str]]) -> None:
    """Refuse (`errors.Invalid` on `channels`) an area broadcast that would reach beyond the
    alert's area: one broadcast reaches every phone of its channel's `zones`."""
    wide = [name for name in routes.values() if name in broadcasts and not covers(alert.area, broadcasts[name])]
    if wide:
        zones = " ".join(z for name in wide for z in broadcasts[name])
        raise errors.Invalid(
            f"channel {wide[0]} broadcasts to all of {zones}: the alert's area covers less", field="channels",
            channels=wide,
        )


def covers(area: model.Area, codes: Sequence[str]) -> bool:
    """Whether every one of `codes` lies inside the area's zones (its shapes do not count: a
    broadcast reaches whole zones)."""
    return bool(codes) and all(any(zones.within(z, a) for a in area.zones) for z in codes)


def fixed(
    alert: model.Alert, routes: Mapping[str, str], sirens: Iterable[model.Siren], tests: Sequence[str],
    broadcasts: Mapping[str, Sequence[str]] = NO_BROADCASTS,
) -> list[model.NewDelivery]:
    """What an alert sends once, whoever subscribed: its sirens' command, its zone topics and its
    area broadcasts (`broadcasts`: the zones each area channel reaches, by channel name)."""
    planned = [
        model.NewDelivery(alert.id, name, kind, model.AREA_TARGET, "", alert.locale or "", BROADCAST)
        for kind, name in routes.items()
        if name in broadcasts and covers(alert.area, broadcasts[name]) and alert.msg_type is not model.MsgType.CANCEL
    ]
    command = siren_command(alert)
    if model.Kind.SIREN in routes and command:
        chosen = audience_mod.test_sirens(alert.area, list(sirens), tests) if alert.status in TO_TESTERS \
            else _sirens_in(alert.area, sirens)
        planned += [
            model.NewDelivery(alert.id, routes[model.Kind.SIREN], model.Kind.SIREN, s.id, s.id, "", command)
            for s in chosen
        ]
    # A topic reaches every app subscribed to it: never for an exercise, a test or a cancel.
    if alert.topics and model.Kind.PUSH in routes and alert.status is model.Status.ACTUAL:
        planned += [
            model.NewDelivery(
                alert.id, routes[model.Kind.PUSH], model.Kind.PUSH, zones.topic(z), zones.topic(z),
                alert.locale or "", "topic",
            )
            for z in alert.area.zones
        ]
    return planned


def _sirens_in(area: model.Area, sirens: Iterable[model.Siren]) -> list[model.Siren]:
    shapes = geo.Shapes.of(area.polygons, area.circles) if area.shaped else None
    return [
        s for s in sirens
        if any(zones.within(s.zone, zone) for zone in area.zones)
        or (shapes is not None and s.lat is not None and s.lon is not None and shapes.contains_point(s.lat, s.lon))
    ]


async def target(store: store_mod.Store, alert: model.Alert, tests: Sequence[str]) -> None:
    """Write the alert's own targets (for a `targets` audience): idempotent, so a planning that
    resumes before its first chunk simply writes them again."""
    if alert.status in TO_TESTERS:  # those of the test recipients inside its area, and no one else
        await store.add_targets(alert.id, ids=audience_mod.testers(alert.area, await store.recipients(list(tests))))
        return
    earlier = [r.alert_id for r in alert.references if r.alert_id] if alert.msg_type is model.MsgType.UPDATE else []
    await store.add_targets(alert.id, ids=await _inside(store, alert.area), zones=alert.area.zones, reached_by=earlier)


async def _inside(store: store_mod.Store, area: model.Area) -> list[str]:
    """The located recipients inside the area's shapes."""
    if not area.shaped:
        return []
    shapes = geo.Shapes.of(area.polygons, area.circles)
    box = shapes.bounds()
    rows = await store.located(box) if box is not None else []
    if not rows:
        return []
    mask = shapes.contains(
        numpy.fromiter((r["lat"] for r in rows), float, len(rows)),
        numpy.fromiter((r["lon"] for r in rows), float, len(rows)),
    )
    return [r["id"] for r, hit in zip(rows, mask, strict=True) if hit]


async def reach(
    store: store_mod.Store, alert: model.Alert, route: Mapping[str, str], tests: Sequence[str] = (),
    broadcasts: Mapping[str, Sequence[str]] = NO_BROADCASTS,
) -> dict[str, int]:
    """How many messages of each of the alert's kinds its planning would write now: what an
    approver is shown (the audience moves as people subscribe; the counts say it as of now)."""
    by_locale = await reach_by_locale(store, alert, route, tests, broadcasts)
    return {kind: sum(counts.values()) for kind, counts in by_locale.items()}


async def reach_by_locale(
    store: store_mod.Store, alert: model.Alert, route: Mapping[str, str], tests: Sequence[str] = (),
    broadcasts: Mapping[str, Sequence[str]] = NO_BROADCASTS,
) -> dict[str, dict[str, int]]:
    """`reach` by the locale each message is rendered for, as planning would write it: the
    recipient's ("" for a siren command, the alert's own for a zone topic)."""
    who = audience(alert, tests)
    counted: dict[str, dict[str, int]] = {}
    if alert.status in TO_TESTERS:
        ids = audience_mod.testers(alert.area, await store.recipients(list(tests)))
        counted = await store.count_audience_by_locale(ids=ids)
    elif alert.msg_type is model.MsgType.CANCEL:
        earlier = await incident(store, await _same_status(store, alert))
        counted = await store.count_audience_by_locale(
            reached_by=earlier, exercise_only=alert.status is model.Status.EXERCISE)
    elif who.walk != "nobody":
        earlier = [r.alert_id for r in alert.references if r.alert_id] if alert.msg_type is model.MsgType.UPDATE else []
        counted = await store.count_audience_by_locale(
            everyone=who.walk == "everyone", zones=alert.area.zones, ids=await _inside(store, alert.area),
            reached_by=earlier, exercise_only=who.exercise_only,
        )
    by_kind: dict[str, dict[str, int]] = {str(kind): {} for kind in alert.channels}
    for locale, counts in counted.items():
        for kind, n in counts.items():
            if kind in by_kind and n:
                by_kind[kind][locale] = n
    for once in fixed(alert, route, await store.list_sirens(), tests, broadcasts):
        if str(once.kind) in by_kind:
            by_kind[str(once.kind)][once.locale] = by_kind[str(once.kind)].get(once.locale, 0) + 1
    return by_kind


async def plan(
    store: store_mod.Store,
    alert: model.Alert,
    route: Mapping[str, str],
    *,
    chunk: int,
    clock: Callable[[], dt.datetime],
    tests: Sequence[str] = (),
    on_chunk: Callable[[], None] = lambda: None,
    nth: int = 1,
    renderer: render.Renderer | None = None,
    broadcasts: Mapping[str, Sequence[str]] = NO_BROADCASTS,
    addresses: Mapping[str, model.Address] = model.ADDRESSES,
) -> None:
    """Write every delivery of `alert`, resuming where an interrupted planning stopped, then mark
    the alert active. `on_chunk` is called after each committed chunk (to wake the senders); `nth`:
    the alert's place among its cell's recent ones (`priority.share`). With `renderer`, an alert
    a second person approved is planned only if its messages and area are still those approved.
    `broadcasts`: the zones each area channel reaches; `addresses`: what each kind sends to."""
    if renderer is not None and not await _as_approved(store, alert, renderer, clock()):
        return
    after = await store.plan_cursor(alert.id)
    if after is not None:
        log.info("planning resumed", alert_id=alert.id, after=after)
    once = fixed(alert, route, await store.list_sirens(), tests, broadcasts) if after is None else []
    ranks = priority.shared(await _ranks(store, alert), nth)
    if after is None:
        await _first(store, alert, once, tests, clock(), ranks)
        if once and await store.plan_fixed(alert, once, clock(), ranks):
            on_chunk()  # the sirens sound while the people are planned
    who = audience(alert, tests)
    while True:
        after = await store.plan_chunk(alert, route, who, after, chunk, clock(), ranks, addresses=addresses)
        on_chunk()
        if after is None:
            break
    # Only from `planning`: a cancel that landed meanwhile must stay a cancel.
    if await store.set_alert_state(alert.id, model.AlertState.ACTIVE, only_from=model.AlertState.PLANNING):
        log.info("planned", alert_id=alert.id)


async def _as_approved(store: store_mod.Store, alert: model.Alert, renderer: render.Renderer, now: dt.datetime) -> bool:
    """Whether the alert may be planned: no approval asked, or the messages it would send now and
    its area are those the second person approved. Otherwise it is `refused`, and nothing is sent."""
    record = alert.approval
    if record is None or record.approved_by is None:
        return True
    problem: str | None
    try:
        messages = [approval.message(r) for r in render.check_order(renderer, alert)]
    except errors.ProblemError as exc:
        messages, problem = [], str(exc)
    else:
        problem = None
    if problem is None and approval.content_digest(messages, alert.area) == record.content_digest:
        return True
    log.error("alert refused: its content differs from what was approved", alert_id=alert.id,
              approved_by=record.approved_by, problem=problem)
    entry = audit.Entry(cell=alert.cell, action="refused", at=now, subject=alert.id, address="alertd",
                        detail={"reason": "content differs from what was approved", "approved_by": record.approved_by})
    refused = dataclasses.replace(alert, state=model.AlertState.REFUSED)
    await store.move_alert(alert.id, model.AlertState.PLANNING, refused, entry)
    return False


async def _ranks(store: store_mod.Store, alert: model.Alert) -> dict[str, int]:
    """The priority of each kind of the alert's deliveries: an update or a cancel ranks ahead of
    the alerts it replaces (`priority.rank`)."""
    replaced = []
    if alert.msg_type is not model.MsgType.ALERT:
        replaced = [await store.get_alert(i) for i in await _same_status(store, alert)]
    return priority.ranks(alert, replaced)


async def _first(
    store: store_mod.Store, alert: model.Alert, once: Sequence[model.NewDelivery], tests: Sequence[str],
    now: dt.datetime, ranks: Mapping[str, int],
) -> None:
    """What comes before the first chunk: the earlier alerts an update replaces or a cancel stops,
    and the alert's own targets. Each step is idempotent: a resumed planning does it again."""
    earlier = await _same_status(store, alert)
    if alert.msg_type is model.MsgType.UPDATE and earlier:
        replaced = await store.replace(earlier, alert.id, now)
        # Sirens the new area leaves out are silenced; those it keeps hear its own activation.
        kept = [d.target for d in once if d.kind is model.Kind.SIREN]
        for earlier_id in earlier:
            await store.plan_siren_cancel(earlier_id, now, keep=kept)
        log.info("earlier alerts replaced", alert_id=alert.id, earlier=earlier, deliveries=replaced)
    if alert.msg_type is model.MsgType.CANCEL and earlier:
        stopped = await incident(store, earlier)
        for earlier_id in stopped:
            await store.cancel_alert(earlier_id, now)
            await store.plan_siren_cancel(earlier_id, now)
        told = await store.plan_reached(
            alert.id, stopped, alert.channels, now, exercise_only=alert.status is model.Status.EXERCISE,
            rank=ranks[model.Kind.SMS],  # the same for every kind but sirens, which get no all-clear
        )
        log.info("earlier alerts cancelled", alert_id=alert.id, earlier=stopped, told=told)
    if audience(alert, tests).walk == "targets":
        await target(store, alert, tests)


async def _same_status(store: store_mod.Store, alert: model.Alert) -> list[str]:
    """The alerts this one replaces or stops. The order's checks refuse any of another status (no
    exercise stops an actual alert); this is the last gate should one slip through."""
    found = []
    for ref in alert.references:
        if ref.alert_id is None:
            continue
        if (await store.get_alert(ref.alert_id)).status is alert.status:
            found.append(ref.alert_id)
        else:
            log.error("reference of another status ignored", alert_id=alert.id, earlier=ref.alert_id)
    return found


async def incident(store: store_mod.Store, alert_ids: Sequence[str]) -> list[str]:
    """These alerts and every alert linked to them by updates, both ways: a cancel of any alert of
    an incident stops them all, and its all-clear reaches whoever any of them reached."""
    found: list[str] = []
    todo = list(alert_ids)
    while todo:
        alert_id = todo.pop()
        if alert_id in found:
            continue
        found.append(alert_id)
        alert = await store.get_alert(alert_id)
        if alert.msg_type is model.MsgType.UPDATE:
            todo += [r.alert_id for r in alert.references if r.alert_id]
        for later_id in await store.referenced_by(alert_id):
            later = await store.get_alert(later_id)
            if later.msg_type is model.MsgType.UPDATE and later.state is not model.AlertState.DRAFT:
                todo.append(later_id)
    return found
