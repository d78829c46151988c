"""The siren channel: commands to a siren gateway over alertd's siren-gateway protocol.

The protocol (JSON over HTTP, bearer token) is documented in `alertd.fakes.siren`, the fake gateway
that tests and demos use. One delivery is one command to one siren: ``message.to`` is the siren id,
``message.command`` the verb (activate, cancel, test, silent_test), ``message.body`` the
optional voice text. The delivery id travels as the gateway's idempotency key (``request_id``), so
a delivery sent twice (at-least-once dispatch) does not sound a siren twice. The gateway's
``command_id`` is the delivery's provider id.

The gateway reports back to ``POST /v1/receipts/siren`` (or ``/v1/receipts/<the channel's name>``;
`receipt` reads and verifies, `alertd.web.receipts` acts): acknowledgements of commands and
heartbeats, authenticated by this channel's ``receipt_token``, and only for its own
sirens: an ack for a command this channel sent, a heartbeat for a siren it serves (`gateways_of`:
the sirens of its ``zones``; without ``zones``, those no other siren channel claims). Both are
opt-in, since a gateway that sends neither must not see every siren fail or fall silent:

- ``acks = true``: the gateway acknowledges each command. An ``activate`` accepted by the gateway
  (delivery ``sent``) and not acknowledged ``activated`` within ``ack_timeout`` seconds failed to
  sound: the delivery becomes ``failed`` ("no acknowledgement within 60 s"), by housekeeping.
- ``heartbeats = true``: the gateway reports each siren's health regularly. A siren not heard from
  for ``heartbeat_timeout`` seconds (or never) is ``no_heartbeat`` and is logged once as a warning.

Configuration::

    [channels.siren]
    plugin = "siren-http"
    base_url = "http://127.0.0.1:8900/siren"
    token = "…"                  # bearer token for the gateway (or token_file, or "credential:NAME")
    timeout = 5                  # seconds per request
    max_concurrency = 50         # commands in flight
    pattern_activate = "saip_alert"
    pattern_cancel = "saip_end"
    pattern_test = "saip_test"   # also used for silent tests
    receipt_token = "…"          # what the gateway presents on receipts (or receipt_token_file)
    acks = false                 # the gateway acknowledges commands
    ack_timeout = 60             # seconds; only with acks = true
    heartbeats = false           # the gateway sends heartbeats
    heartbeat_timeout = 300      # seconds; only with heartbeats = true
    zones = ["75", "92"]         # the sirens it serves (zone codes); default: all, if the only one
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
import pydantic

from alertd import channels, errors, model, settings, zones

# Statuses worth retrying besides 5xx: the siren is busy (409) or the gateway is overloaded.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
MISCONFIGURED_STATUSES = frozenset({401, 403})
ZONE = re.compile(zones.PATTERN)  # what a gateway's `zones` may name
MAX_RECEIPTS = 10_000  # per POST: a gateway's heartbeats for all its sirens fit


def classify(status: int, error: str | None, retry_after: float | None) -> errors.DeliveryError:
    """What a gateway's non-2xx answer means for the delivery.

    409 busy, 408, 425, 429, 5xx → transient (Retry-After honoured); 401 / 403 → the channel is
    misconfigured (its token); anything else (404 unknown siren, 422 fault, 400 …) → permanent.
    """
    code = error or f"http_{status}"
    message = f"siren gateway answered HTTP {status} ({code})"
    if status in MISCONFIGURED_STATUSES:
        return errors.ChannelMisconfigured(message + "; check the channel's token", code=code)
    if status in TRANSIENT_STATUSES or status >= 500:
        return errors.Transient(message, code=code, retry_after=retry_after)
    return errors.Permanent(message, code=code)


def _zones(value: Any) -> Any:
    """Zone codes, from a list or from comma-separated text ($ALERTD_…)."""
    items = value.split(",") if isinstance(value, str) else value
    zones = tuple(z.strip() if isinstance(z, str) else z for z in items) if isinstance(items, (list, tuple)) else ()
    if not zones or not all(isinstance(z, str) and ZONE.fullmatch(z) for z in zones):
        raise ValueError(
            f"zones must be a non-empty list of zone codes (\"*\", a département or a commune), got {value!r}"
        )
    return zones


class Settings(settings.Channel):
    base_url: str
    token: pydantic.SecretStr  # what alertd presents to the gateway
    timeout: settings.Positive = 5.0
    pattern_activate: str = "saip_alert"
    pattern_cancel: str = "saip_end"
    pattern_test: str = "saip_test"
    receipt_token: pydantic.SecretStr | None = None  # what the gateway presents on receipts
    acks: bool = False
    ack_timeout: settings.Positive = 60.0
    heartbeats: bool = False
    heartbeat_timeout: settings.Positive = 300.0
    # The zones whose sirens this gateway serves; None: every siren no other gateway claims.
    zones: Annotated[tuple[str, ...] | None, pydantic.BeforeValidator(_zones)] = None

    @pydantic.model_validator(mode="after")
    def _receipts_can_arrive(self) -> Settings:
        for switch, on in (("acks", self.acks), ("heartbeats", self.heartbeats)):
            if on and self.receipt_token is None:
                raise ValueError(f"{switch} = true needs receipt_token (or receipt_token_file)")
        return self

    def patterns(self) -> dict[str, str]:
        """The signal pattern of each command (defaults: French SAIP signals)."""
        return {"activate": self.pattern_activate, "cancel": self.pattern_cancel,
                "test": self.pattern_test, "silent_test": self.pattern_test}


gateways_of = channels.gateways_of  # which gateway serves a siren: any `channels.Heartbeats`


def command_body(message: model.Message, pattern: str) -> dict[str, Any]:
    body = {
        "command": message.command,
        "pattern": pattern,
        "alert_id": message.alert_id,
        "request_id": str(message.delivery_id),
    }
    return body | ({"text": message.body} if message.body else {})


class SirenHTTP(channels.Base):
    """Siren commands over HTTP to a gateway speaking alertd's siren-gateway protocol."""

    kind = model.Kind.SIREN
    settings = Settings
    options: Settings
    address = model.Address.SIREN
    receipt_alias: ClassVar[str | None] = "siren"  # POST /v1/receipts/siren finds the gateway by its token

    def __init__(self, config: Mapping[str, Any] | Settings, context: channels.Context) -> None:
        super().__init__(config, context)
        o = self.options
        self.base_url = o.base_url.rstrip("/")
        self.timeout = o.timeout
        self.patterns = o.patterns()
        self._token = o.token.get_secret_value()
        self._receipt_token = o.receipt_token.get_secret_value() if o.receipt_token else None
        self.ack_timeout: float | None = o.ack_timeout if o.acks else None  # None: the gateway sends no acks
        self.heartbeat_timeout: float | None = o.heartbeat_timeout if o.heartbeats else None  # None: no heartbeats
        self.zones = o.zones  # None: every siren no other gateway claims
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"SirenHTTP(name={self.context.name!r}, base_url={self.base_url!r})"

    def accepts_receipt(self, token: str) -> bool:
        """Whether `token` is this gateway's receipt token (compared in constant time)."""
        expected = self._receipt_token
        return expected is not None and hmac.compare_digest(token.encode(), expected.encode())

    async def receipt(self, callback: channels.Callback) -> list[channels.Report]:
        """A gateway's acknowledgements and heartbeats (`channels.Receipts`): 401 without a bearer
        token, 403 with another than this channel's ``receipt_token``."""
        scheme, _, token = callback.header("Authorization").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthenticated("A siren gateway's receipt token is required.", field="Authorization")
        if not self.accepts_receipt(token):
            raise errors.Forbidden("This is no siren gateway's receipt token.", field="Authorization")
        return [_report(item, prefix) for prefix, item in parse(await callback.read())]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
            headers={"Authorization": f"Bearer {self._token}"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, message: model.Message) -> model.Receipt:
        pattern = self.patterns.get(message.command)
        if pattern is None:
            raise errors.Permanent(
                f"a siren cannot {message.command!r}; commands: {', '.join(self.patterns)}",
                code="unsupported_command",
            )
        url = self._siren_url(message.to) + "/commands"
        answer = await self._call("POST", url, "command_id", json=command_body(message, pattern))
        return model.Receipt(provider_id=str(answer["command_id"]))

    async def siren_state(self, siren_id: str) -> str:
        """The siren's last known state as the gateway reports it (ready, activated, fault …)."""
        return str((await self._call("GET", self._siren_url(siren_id), "state"))["state"])

    def _siren_url(self, siren_id: str) -> str:
        return f"{self.base_url}/v1/sirens/{urllib.parse.quote(siren_id, safe='')}"

    async def _call(self, method: str, url: str, want: str, **kwargs: Any) -> dict[str, Any]:
        """One gateway request: its JSON answer (holding `want`), or a classified failure."""
        assert self._session is not None, "send before start"
        try:
            async with self._session.request(method, url, allow_redirects=False, **kwargs) as resp:
                body = await _json_or_none(resp)
                if _is_2xx(resp.status) and isinstance(body, dict) and want in body:
                    return body
                raise _failure(resp, body)
        except TimeoutError as exc:
            raise errors.Transient(
                f"siren gateway timed out after {self.timeout}s", code="timeout"
            ) from exc
        except aiohttp.ClientError as exc:
            raise errors.Transient(f"siren gateway unreachable: {exc}", code="network") from exc


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


def _failure(resp: aiohttp.ClientResponse, body: Any) -> errors.DeliveryError:
    if _is_2xx(resp.status):  # accepted but unreadable; the request_id makes a retry safe
        return errors.Transient("siren gateway sent an unreadable answer", code="bad_answer")
    error = body.get("error") if isinstance(body, dict) else None
    retry_after = channels.retry_after(resp.headers.get("Retry-After"), model.utcnow())
    return classify(resp.status, str(error) if error else None, retry_after)


# -- receipts: the gateway's acknowledgements and heartbeats (protocol in `alertd.fakes.siren`) -----


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
        return value.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
        raise ValueError("out of range once in UTC") from None


Text = Annotated[pydantic.StrictStr, pydantic.Field(min_length=1, max_length=200), pydantic.AfterValidator(_no_control)]
Reason = Annotated[pydantic.StrictStr, pydantic.Field(max_length=500), pydantic.AfterValidator(_no_nul)]
When = Annotated[pydantic.AwareDatetime, pydantic.AfterValidator(_utc)]
Fraction = Annotated[float, pydantic.Field(strict=True, ge=0, le=1)]


class AckIn(pydantic.BaseModel):
    """A gateway's acknowledgement of one command (`request_id` is the delivery id alertd sent)."""

    model_config = pydantic.ConfigDict(frozen=True)  # fields a gateway adds are ignored

    type: Literal["ack"]
    command_id: Text
    siren_id: Text
    request_id: Text
    result: Literal["activated", "failed", "busy"]
    reason: Reason = ""
    at: When


class HeartbeatIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    type: Literal["heartbeat"]
    siren_id: Text
    at: When
    mains: pydantic.StrictBool | None = None
    battery: Fraction | None = None
    fault: pydantic.StrictBool = False
    sabotage: pydantic.StrictBool = False


_RECEIPT = pydantic.TypeAdapter(Annotated[AckIn | HeartbeatIn, pydantic.Field(discriminator="type")])


def parse(body: bytes) -> list[tuple[str, AckIn | HeartbeatIn]]:
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
            parsed.append((prefix, _RECEIPT.validate_python(item)))
        except pydantic.ValidationError as exc:
            problems += [_problem(prefix, e) for e in exc.errors()]
    if problems:
        raise invalid(problems)
    return parsed


def _problem(prefix: str, error: Any) -> dict[str, str]:
    loc = [str(part) for part in error["loc"][1:]]  # the first part is the receipt's type
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = ["type"]
    field = (prefix + ".".join(loc)).rstrip(".") or "body"
    return {"field": field, "message": error["msg"]}


def invalid(problems: list[dict[str, str]]) -> errors.Invalid:
    first = problems[0]
    return errors.Invalid(f"{first['field']}: {first['message']}", field=first["field"], errors=problems)


def _report(item: AckIn | HeartbeatIn, prefix: str) -> channels.Report:
    """An acknowledgement as the delivery state it means (busy: a transient failure, retried), or a
    heartbeat."""
    if isinstance(item, HeartbeatIn):
        return model.Heartbeat(**item.model_dump(exclude={"type"}), field=prefix)
    why = f"siren {item.siren_id} {item.result}: {item.reason or 'no reason given'}"
    errors_of = {"failed": errors.Permanent(why, code="failed"), "busy": errors.Transient(why, code="busy")}
    error = errors_of.get(item.result)
    state = model.State.DELIVERED if item.result == "activated" else model.State.FAILED
    return channels.Status(item.command_id, state, error, delivery_id=item.request_id, target=item.siren_id,
                           at=item.at, word=item.result, field=prefix)
