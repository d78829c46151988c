"""Delivery receipts from providers, through the channel that sent: ``POST /v1/receipts/{channel}``.

A channel that declares `channels.Receipts` verifies its provider's request and maps it to reports
(`channels.Status` for a message, `model.Heartbeat` for a siren); this module acts on them. The
Twilio channel checks the signature with its own auth token over the public URL Twilio called; a
siren gateway presents its channel's ``receipt_token``. A request that is not the provider's gets
401/403 and changes nothing. The older paths, ``/v1/receipts/twilio`` and ``/v1/receipts/siren``,
are served by the channels declaring that `receipt_alias`: the first that recognises the request
as its provider's takes it (a siren gateway is found by its token).

A report is taken only about what the channel sent: a status naming alertd's delivery (a siren ack's
``request_id``) must name a delivery of that channel to that target, and a heartbeat must be for a
siren the channel serves (`channels.gateways_of`); anything else gets 422 and nothing of the body
is taken. Receipts repeat and arrive out of order: the store only ever moves a delivery forward.
Anyone can post here: a body that cannot be read gets a 4xx problem naming it and one warning line
(`_refused`), never a 500.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import structlog
from aiohttp import web

from alertd import channels as channels_mod, errors, model, store as store_mod, web as web_mod

log = structlog.get_logger("alertd.web.receipts")
routes = web.RouteTableDef()

RETRY_EARLY = 1  # seconds a gateway waits before posting again an ack that came too early


def _refused(request: web.Request, why: str) -> None:
    """Logged at most once per interval with the count: anyone may post here, a flood included."""
    request.app[web_mod.RECEIPTS_REFUSED].add(why, request.remote)


def callback(request: web.Request) -> channels_mod.Callback:
    """The request as a channel reads it (a body too large is aiohttp's 413; read once, kept)."""
    # Behind a proxy the URL the provider called is the public one, not the one we were reached at.
    url = request.app[web_mod.SETTINGS].public_url.rstrip("/") + request.rel_url.path_qs
    headers = {name.lower(): value for name, value in request.headers.items()}
    return channels_mod.Callback(url, headers, request.content_type, request.charset, request.read)


async def _verified(request: web.Request, name: str, channel: channels_mod.Receipts,
                    cb: channels_mod.Callback) -> list[channels_mod.Report]:
    try:
        return await channel.receipt(cb)
    except errors.ProblemError as exc:
        if not isinstance(exc, errors.Unauthenticated):
            _refused(request, f"{name}: {type(exc).__name__} {exc.field or ''}".rstrip())
        raise


@routes.post("/v1/receipts/twilio")
@routes.post("/v1/receipts/siren")
async def by_alias(request: web.Request) -> web.Response:
    """The older paths: each channel declaring the alias is asked in turn; the first whose provider
    the request is from takes it (a 401/403 from each: the first one's)."""
    alias = request.path.rsplit("/", 1)[1]
    takers = {n: ch for n, ch in _channels(request).items()
              if isinstance(ch, channels_mod.Receipts) and ch.receipt_alias == alias}
    if not takers:
        raise errors.NotFound(f"No configured channel takes receipts at {request.path}.", field="channel")
    cb, refusals = callback(request), []
    for name, channel in takers.items():
        try:
            reports = await _verified(request, name, channel, cb)
        except (errors.Unauthenticated, errors.Forbidden) as exc:  # not this one's provider
            refusals.append(exc)
            continue
        return await _take(request, name, reports)
    raise refusals[0]


@routes.post("/v1/receipts/{channel}")
async def by_name(request: web.Request) -> web.Response:
    """Receipts for the configured channel of that name, as its plugin reads them."""
    name = request.match_info["channel"]
    channel = _channels(request).get(name)
    if channel is None:
        raise errors.NotFound(f"No configured channel is named {name!r}.", field="channel")
    if not isinstance(channel, channels_mod.Receipts):
        raise errors.NotFound(f"The channel {name!r} takes no receipts.", field="channel")
    return await _take(request, name, await _verified(request, name, channel, callback(request)))


def _channels(request: web.Request) -> Mapping[str, channels_mod.Channel]:
    return request.app[web_mod.DISPATCHER].channels


async def _take(request: web.Request, name: str, reports: list[channels_mod.Report]) -> web.Response:
    """Check that every report is about what `name` sent or serves, then act on each."""
    now, store = web_mod.now(request), request.app[web_mod.STORE]
    reports = clamped(reports, now)
    beats = [r for r in reports if isinstance(r, model.Heartbeat)]
    # Who serves which siren, only for heartbeats: a protocol check costs some 15 µs a channel.
    deliveries = await commands(store, name, reports, served(_channels(request)) if beats else {})
    if beats:
        await store.record_heartbeats(beats, now)
    statuses = [s for s in reports if isinstance(s, channels_mod.Status)]
    early = [s for s in statuses
             if not await _apply(request, name, s, None if s.delivery_id is None else deliveries.get(s.delivery_id))]
    if early:
        detail = f"{early[0].provider_id!r} is not recorded yet: post its receipt again"
        title = (errors.Conflict.__doc__ or "").strip()
        resp = web_mod.problem(409, errors.Conflict.type, title, detail, field=early[0].field + "command_id")
        resp.headers["Retry-After"] = str(RETRY_EARLY)
        return resp
    return web.Response(status=204)


def clamped(reports: list[channels_mod.Report], now: dt.datetime) -> list[channels_mod.Report]:
    """Reports dated no later than alertd received them (`now`): one dated ahead would otherwise
    outrank every true report made before the provider's clock came back to it, a fault included.
    Reports dated in the past keep the provider's order."""
    return [dataclasses.replace(r, at=min(r.at, now)) if r.at else r for r in reports]


def served(channels: Mapping[str, channels_mod.Channel]) -> dict[str, tuple[str, ...] | None]:
    """Each `channels.Heartbeats` channel's zones (`channels.gateways_of`); None for one naming none."""
    return {name: ch.zones for name, ch in channels.items() if isinstance(ch, channels_mod.Heartbeats)}


async def commands(
    store: store_mod.Store, channel: str, reports: list[channels_mod.Report],
    served: Mapping[str, tuple[str, ...] | None],
) -> dict[str, model.Delivery]:
    """The deliveries the reports name, by delivery id; `errors.Invalid` when a siren is unknown, a
    heartbeat is for a siren this channel does not serve, or a status names no delivery of this
    channel to its target."""
    beats = any(isinstance(r, model.Heartbeat) for r in reports)
    sirens = {s.id: s for s in await store.list_sirens()} if beats else {}
    found, problems = {}, []
    for report in reports:
        if isinstance(report, model.Heartbeat):
            problems += _not_served(report, channel, sirens.get(report.siren_id), served)
        elif report.delivery_id is not None:
            delivery = await _command(store, report.delivery_id)
            if delivery is None or (delivery.channel, delivery.target) != (channel, report.target):
                message = f"no command {report.delivery_id!r} of this gateway to {report.target!r}"
                problems.append({"field": report.field + "request_id", "message": message})
            else:
                found[report.delivery_id] = delivery
    if problems:
        log.warning("receipts refused", channel=channel, count=len(problems), first=problems[0]["message"])
        raise invalid(problems)
    return found


def _not_served(beat: model.Heartbeat, channel: str, siren: model.Siren | None,
                served: Mapping[str, tuple[str, ...] | None]) -> list[dict[str, str]]:
    """The problem with a heartbeat of `channel` for `siren`, if any."""
    if siren is None:
        message = f"unknown siren {beat.siren_id!r}"
    else:
        gateways = channels_mod.gateways_of(siren, served)
        if gateways == [channel]:
            return []
        if channel in gateways:  # the configuration does not say which gateway serves it
            message = f"siren {siren.id!r} has no single gateway: give each siren channel its zones"
        else:
            message = f"siren {siren.id!r} is not one this gateway serves"
    return [{"field": beat.field + "siren_id", "message": message}]


def invalid(problems: list[dict[str, str]]) -> errors.Invalid:
    first = problems[0]
    return errors.Invalid(f"{first['field']}: {first['message']}", field=first["field"], errors=problems)


async def _command(store: store_mod.Store, delivery_id: str) -> model.Delivery | None:
    # ASCII digits only: "²" is a digit to str.isdigit, not to int().
    decimal = delivery_id.isascii() and delivery_id.isdigit() and len(delivery_id) < 19
    return await store.get_delivery(int(delivery_id)) if decimal else None


async def _apply(request: web.Request, name: str, status: channels_mod.Status, delivery: model.Delivery | None) -> bool:
    """Apply one status; False when a transient failure came before its send was recorded (its
    provider posts it again). `delivery`: the one the status names, when it names one."""
    store, now = request.app[web_mod.STORE], web_mod.now(request)
    if delivery is not None:
        if status.word and delivery.kind is model.Kind.SIREN:
            await store.record_siren_ack(delivery.target, status.word, status.at or now)
        recorded = delivery.provider_id == status.provider_id
        sending = delivery.state is model.State.SENDING
        if isinstance(status.error, errors.Transient) and not recorded:
            return not sending  # not sent yet: nothing to send again; or a copy for an earlier attempt
        if not (recorded or sending):  # a copy of a receipt for an earlier attempt
            return True
    if status.state is model.State.FAILED:
        error = status.error or errors.Permanent(f"{name} reported the message failed", code="failed")
        moved = await request.app[web_mod.DISPATCHER].undelivered(status.provider_id, error)
        log.info("receipt: undelivered", channel=name, provider_id=status.provider_id, code=error.code, moved_to=moved)
    else:
        changed = await store.apply_receipt(status.provider_id, status.state, None, now)
        log.debug("receipt", channel=name, provider_id=status.provider_id, state=status.state.value, changed=changed)
    return True
