"""Delivery receipts from providers: Twilio status callbacks, siren gateways' acks and heartbeats.

Twilio signs each callback with the account's auth token over the public URL it called; a forged or
unsigned callback gets 403 and changes nothing. A siren gateway presents its channel's
``receipt_token`` (the protocol is in `alertd.fakes.siren`): none gets 401, another 403, and nothing
changes. It reports for its own sirens only: an ack for another channel's command, or a heartbeat for
a siren another gateway serves (`siren_http.gateways_of`), gets 422 and nothing of the body is taken.
Receipts repeat and arrive out of order: the store only ever moves a delivery forward.
Anyone can post here: a body that cannot be read (bytes of no charset, another content type, too
large, a field no provider would send) gets a 4xx problem naming it and one warning line, never a 500.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
import structlog
from aiohttp import web
from twilio import request_validator

from alertd import errors, model, store as store_mod, web as web_mod
from alertd.channels import siren_http, twilio_sms
from alertd.store import sirens

log = structlog.get_logger("alertd.web.receipts")
routes = web.RouteTableDef()

MAX_RECEIPTS = 10_000  # per POST: a gateway's heartbeats for all its sirens fit
RETRY_EARLY = 1  # seconds a gateway waits before posting again an ack that came too early
FORM = "application/x-www-form-urlencoded"  # what Twilio posts, and all it posts
SID = re.compile(r"[A-Za-z0-9]{1,64}")  # Twilio's are two letters and 32 hex digits


def _signed(settings: web_mod.Settings, request: web.Request, form: dict[str, str]) -> bool:
    # Behind a proxy the URL Twilio called is the public one, not the one we were reached at.
    url = settings.public_url.rstrip("/") + request.rel_url.path_qs
    signature = request.headers.get("X-Twilio-Signature", "")
    return bool(signature) and any(
        request_validator.RequestValidator(token).validate(url, form, signature)
        for token in settings.twilio_auth_tokens
    )


def _refused(request: web.Request, why: str) -> None:
    """Logged at most once per interval with the count: anyone may post here, a flood included."""
    request.app[web_mod.RECEIPTS_REFUSED].add(why, request.remote)


async def _form(request: web.Request) -> dict[str, str]:
    """The callback's form, or a 4xx naming what cannot be read (a body too large is aiohttp's 413)."""
    if request.content_type != FORM:
        _refused(request, "twilio: not a form")
        raise errors.UnsupportedMediaType(f"a Twilio callback is {FORM}", field="Content-Type")
    try:
        form = await request.post()
    except (ValueError, LookupError) as exc:  # bytes not of its charset, a charset unknown
        _refused(request, "twilio: unreadable body")
        raise errors.BadRequest(f"the body cannot be read as a form: {exc}", field="body") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


@routes.post("/v1/receipts/twilio")
async def twilio(request: web.Request) -> web.Response:
    form = await _form(request)
    if not _signed(request.app[web_mod.SETTINGS], request, form):
        _refused(request, "twilio: bad signature")
        raise errors.Forbidden("the X-Twilio-Signature does not match", field="X-Twilio-Signature")
    sid, status = form.get("MessageSid"), form.get("MessageStatus", "")
    if not sid:
        raise errors.BadRequest("MessageSid is required", field="MessageSid")
    if not SID.fullmatch(sid):
        _refused(request, "twilio: malformed MessageSid")
        raise errors.BadRequest("MessageSid must be 1 to 64 letters and digits", field="MessageSid")
    state = twilio_sms.twilio_status_to_state(status)
    if state is model.State.FAILED:
        moved = await request.app[web_mod.DISPATCHER].undelivered(sid, _error(form, status))
        log.info("twilio undelivered", provider_id=sid, code=form.get("ErrorCode"), moved_to=moved)
    elif state is not None:
        changed = await request.app[web_mod.STORE].apply_receipt(sid, state, None, web_mod.now(request))
        log.debug("twilio receipt", provider_id=sid, status=status, changed=changed)
    return web.Response(status=204)


def _error(form: dict[str, str], status: str) -> errors.DeliveryError:
    """What Twilio's ErrorCode means, from the channel's classification table."""
    code = form.get("ErrorCode", "")
    if not (code.isascii() and code.isdigit() and len(code) <= 10):
        return errors.Permanent(f"Twilio reported the message {status}", code=status)
    return twilio_sms.classify(400, int(code), None)


# -- siren gateways ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ack:
    """A gateway's acknowledgement of one command (`request_id` is the delivery id alertd sent)."""

    command_id: str
    siren_id: str
    request_id: str
    result: str  # activated | failed | busy
    at: dt.datetime
    reason: str = ""


def _no_control(value: str) -> str:
    if any(c < " " or c == "\x7f" for c in value):
        raise ValueError("must not contain control characters")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:  # PostgreSQL stores no NUL in text
        raise ValueError("must not contain a NUL character")
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
        raise ValueError("out of range once in UTC") from None


Text = Annotated[pydantic.StrictStr, pydantic.Field(min_length=1, max_length=200), pydantic.AfterValidator(_no_control)]
Reason = Annotated[pydantic.StrictStr, pydantic.Field(max_length=500), pydantic.AfterValidator(_no_nul)]
When = Annotated[pydantic.AwareDatetime, pydantic.AfterValidator(_utc)]
Fraction = Annotated[float, pydantic.Field(strict=True, ge=0, le=1)]


class _AckIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)  # fields a gateway adds are ignored

    type: Literal["ack"]
    command_id: Text
    siren_id: Text
    request_id: Text
    result: Literal["activated", "failed", "busy"]
    reason: Reason = ""
    at: When


class _HeartbeatIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    type: Literal["heartbeat"]
    siren_id: Text
    at: When
    mains: pydantic.StrictBool | None = None
    battery: Fraction | None = None
    fault: pydantic.StrictBool = False
    sabotage: pydantic.StrictBool = False


_RECEIPT = pydantic.TypeAdapter(Annotated[_AckIn | _HeartbeatIn, pydantic.Field(discriminator="type")])
Receipt = Ack | sirens.Heartbeat


def parse_siren(body: bytes) -> list[tuple[str, Receipt]]:
    """A gateway's POST: one receipt or a list of them, each with the prefix of its fields in
    problems ("" for one object, "3." for the fourth of a list). `errors.BadRequest` when it is no
    JSON, `errors.Invalid` naming every field at fault."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise errors.BadRequest("The body is not valid UTF-8 JSON.", field="body") from None
    if isinstance(data, dict):
        items = [("", data)]
    else:
        items = [(f"{i}.", d) for i, d in enumerate(data)] if isinstance(data, list) else []
    if not items or len(items) > MAX_RECEIPTS:
        raise errors.BadRequest(f"The body must be a receipt object or a list of 1 to {MAX_RECEIPTS}.", field="body")
    parsed, problems = [], []
    for prefix, item in items:
        try:
            parsed.append((prefix, _receipt(_RECEIPT.validate_python(item))))
        except pydantic.ValidationError as exc:
            problems += [_problem(prefix, e) for e in exc.errors()]
    if problems:
        raise invalid(problems)
    return parsed


def _receipt(item: _AckIn | _HeartbeatIn) -> Receipt:
    fields = item.model_dump(exclude={"type"})
    return Ack(**fields) if isinstance(item, _AckIn) else sirens.Heartbeat(**fields)


def _problem(prefix: str, error: Any) -> dict[str, str]:
    loc = [str(part) for part in error["loc"][1:]]  # the first part is the receipt's type
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = ["type"]
    field = (prefix + ".".join(loc)).rstrip(".") or "body"
    return {"field": field, "message": error["msg"]}


def clamped(receipts: list[tuple[str, Receipt]], now: dt.datetime) -> list[tuple[str, Receipt]]:
    """Receipts dated no later than alertd received them (`now`): one dated ahead would otherwise
    outrank every true report made before the gateway's clock came back to it, a fault included.
    Reports dated in the past keep the gateway's order."""
    return [(prefix, dataclasses.replace(r, at=min(r.at, now))) for prefix, r in receipts]


def invalid(problems: list[dict[str, str]]) -> errors.Invalid:
    first = problems[0]
    return errors.Invalid(f"{first['field']}: {first['message']}", field=first["field"], errors=problems)


def gateway(request: web.Request) -> str:
    """The siren channel whose receipt token the request presents: 401 without one, 403 for another."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthenticated("A siren gateway's receipt token is required.", field="Authorization")
    for name, channel in request.app[web_mod.DISPATCHER].channels.items():
        accepts = getattr(channel, "accepts_receipt", None)
        if accepts is not None and accepts(token):
            return name
    _refused(request, "siren: unknown token")
    raise errors.Forbidden("This is no siren gateway's receipt token.", field="Authorization")


def siren_zones(request: web.Request) -> dict[str, tuple[str, ...] | None]:
    """Each siren channel's zones (`siren_http.gateways_of`); None for one that names none."""
    channels = request.app[web_mod.DISPATCHER].channels
    return {name: getattr(ch, "zones", None) for name, ch in channels.items() if ch.kind is model.Kind.SIREN}


async def commands(
    store: store_mod.Store, channel: str, receipts: list[tuple[str, Receipt]],
    served: Mapping[str, tuple[str, ...] | None],
) -> dict[str, model.Delivery]:
    """The deliveries the acks are about, by request id; `errors.Invalid` when a siren is unknown,
    a heartbeat is for a siren this gateway does not serve, or an ack names no command this
    gateway's channel sent to that siren."""
    known = {s.id: s for s in await store.list_sirens()}
    found, problems = {}, []
    for prefix, receipt in receipts:
        siren = known.get(receipt.siren_id)
        if siren is None:
            problems.append({"field": prefix + "siren_id", "message": f"unknown siren {receipt.siren_id!r}"})
        elif isinstance(receipt, sirens.Heartbeat):
            problems += _not_served(prefix, siren, channel, siren_http.gateways_of(siren, served))
        else:
            delivery = await _command(store, receipt.request_id)
            if delivery is None or (delivery.channel, delivery.target) != (channel, receipt.siren_id):
                message = f"no command {receipt.request_id!r} of this gateway to siren {receipt.siren_id!r}"
                problems.append({"field": prefix + "request_id", "message": message})
            else:
                found[receipt.request_id] = delivery
    if problems:
        log.warning("siren receipts refused", channel=channel, count=len(problems), first=problems[0]["message"])
        raise invalid(problems)
    return found


def _not_served(prefix: str, siren: model.Siren, channel: str, gateways: list[str]) -> list[dict[str, str]]:
    """The problem with a heartbeat of `channel` for `siren`, whose possible gateways are `gateways`."""
    if gateways == [channel]:
        return []
    if channel in gateways:  # the configuration does not say which gateway serves it
        message = f"siren {siren.id!r} has no single gateway: give each siren channel its zones"
    else:
        message = f"siren {siren.id!r} is not one this gateway serves"
    return [{"field": prefix + "siren_id", "message": message}]


async def _command(store: store_mod.Store, request_id: str) -> model.Delivery | None:
    # ASCII digits only: "²" is a digit to str.isdigit, not to int().
    decimal = request_id.isascii() and request_id.isdigit() and len(request_id) < 19
    return await store.get_delivery(int(request_id)) if decimal else None


@routes.post("/v1/receipts/siren")
async def siren(request: web.Request) -> web.Response:
    channel = gateway(request)
    receipts = clamped(parse_siren(await request.read()), web_mod.now(request))
    store = request.app[web_mod.STORE]
    deliveries = await commands(store, channel, receipts, siren_zones(request))
    beats = [r for _, r in receipts if isinstance(r, sirens.Heartbeat)]
    if beats:
        await store.record_heartbeats(beats, web_mod.now(request))
    early = [
        ack for _, ack in receipts
        if isinstance(ack, Ack) and not await _apply(request, ack, deliveries[ack.request_id])
    ]
    if early:
        detail = f"command {early[0].command_id!r} is not recorded yet: post its acknowledgement again"
        title = (errors.Conflict.__doc__ or "").strip()
        resp = web_mod.problem(409, errors.Conflict.type, title, detail, field="command_id")
        resp.headers["Retry-After"] = str(RETRY_EARLY)
        return resp
    return web.Response(status=204)


async def _apply(request: web.Request, ack: Ack, delivery: model.Delivery) -> bool:
    """Apply one ack to its delivery; False when a `busy` came before its command was recorded."""
    store, now = request.app[web_mod.STORE], web_mod.now(request)
    await store.record_siren_ack(ack.siren_id, ack.result, ack.at)
    recorded = delivery.provider_id == ack.command_id
    sending = delivery.state is model.State.SENDING
    if ack.result == "busy":
        if recorded:  # the siren did not sound: retried under the retry policy, like a failed send
            busy = errors.Transient(f"siren {ack.siren_id} busy: {ack.reason or 'no reason given'}", code="busy")
            moved = await request.app[web_mod.DISPATCHER].undelivered(ack.command_id, busy)
            log.info("siren busy", alert_id=delivery.alert_id, siren_id=ack.siren_id, moved_to=moved)
        return recorded or not sending
    if not (recorded or sending):  # a copy of an ack for an earlier attempt
        return True
    state = model.State.DELIVERED if ack.result == "activated" else model.State.FAILED
    error = None if ack.result == "activated" else f"siren {ack.siren_id} failed: {ack.reason or 'no reason given'}"
    changed = await store.apply_receipt(ack.command_id, state, error, now)
    if changed and state is model.State.FAILED:
        request.app[web_mod.METRICS].failed_later(delivery.channel, "failed")
    level = log.warning if state is model.State.FAILED else log.info
    level("siren ack", alert_id=delivery.alert_id, siren_id=ack.siren_id, result=ack.result, changed=changed)
    return True
