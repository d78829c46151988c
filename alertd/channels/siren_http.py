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
    token = "…"                  # bearer token for the gateway (the caller resolves files)
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

from alertd import channels, errors, model

# The pattern setting each command reads, and its default (French SAIP signals).
PATTERN_SETTING = {
    "activate": ("pattern_activate", "saip_alert"),
    "cancel": ("pattern_cancel", "saip_end"),
    "test": ("pattern_test", "saip_test"),
    "silent_test": ("pattern_test", "saip_test"),
}

# Statuses worth retrying besides 5xx: the siren is busy (409) or the gateway is overloaded.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
MISCONFIGURED_STATUSES = frozenset({401, 403})
ZONE = re.compile(model.ZONE_PATTERN)  # what a gateway's `zones` may name
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


def patterns(config: Mapping[str, Any]) -> dict[str, str]:
    """The signal pattern of each command, from the channel's configuration."""
    return {cmd: str(config.get(key, default)) for cmd, (key, default) in PATTERN_SETTING.items()}


def receipt_token(config: Mapping[str, Any], name: str) -> str | None:
    """The token the gateway presents on receipts: ``receipt_token``, or the content of
    ``receipt_token_file`` when the configuration left that file for the channel to read."""
    token, path = config.get("receipt_token"), config.get("receipt_token_file")
    where = f"channel {name!r}"
    if token and path:
        raise errors.ConfigError(f"{where}: give receipt_token or receipt_token_file, not both")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().rstrip("\r\n")
        except OSError as exc:
            raise errors.ConfigError(f"{where}: cannot read receipt_token_file {path!r}: {exc.strerror}") from None
    return str(token) if token else None


def served_zones(config: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    """The zones whose sirens this gateway serves: ``zones``, a list of zone codes (or their
    comma-separated text, from $ALERTD_…), or None when it does not say."""
    value = config.get("zones")
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    zones = tuple(z.strip() if isinstance(z, str) else z for z in items) if isinstance(items, (list, tuple)) else ()
    if not zones or not all(isinstance(z, str) and ZONE.fullmatch(z) for z in zones):
        raise errors.ConfigError(
            f"channel {name!r}: zones must be a non-empty list of zone codes (\"*\", a département or a"
            f" commune), got {value!r}"
        )
    return zones


gateways_of = channels.gateways_of  # which gateway serves a siren: any `channels.Heartbeats`


def receipt_settings(config: Mapping[str, Any], name: str, has_token: bool) -> dict[str, float | None]:
    """``ack_timeout`` and ``heartbeat_timeout`` in seconds, each None unless its ``acks`` or
    ``heartbeats`` switch is on. A switch on needs a receipt token: nothing could arrive without it."""
    settings, problems = {}, []
    for switch, key, default in (("acks", "ack_timeout", 60.0), ("heartbeats", "heartbeat_timeout", 300.0)):
        on, seconds = config.get(switch, False), _seconds(config.get(key, default))
        if not isinstance(on, bool):
            problems.append(f"channel {name!r}: {switch} must be true or false, got {on!r}")
        elif on and not has_token:
            problems.append(f"channel {name!r}: {switch} = true needs receipt_token (or receipt_token_file)")
        if seconds is None:
            problems.append(f"channel {name!r}: {key} must be a positive number of seconds, got {config[key]!r}")
        settings[key] = seconds if on is True else None
    if problems:
        raise errors.ConfigError(problems=problems)
    return settings


def _seconds(value: Any) -> float | None:
    """A positive number of seconds (an environment override arrives as text), else None."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


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
    receipt_alias: ClassVar[str | None] = "siren"  # POST /v1/receipts/siren finds the gateway by its token

    def __init__(self, config: Mapping[str, Any], context: channels.Context) -> None:
        super().__init__(config, context)
        missing = [key for key in ("base_url", "token") if not config.get(key)]
        if missing:
            raise errors.ConfigError(
                problems=[f"channel {context.name!r}: {key} is required" for key in missing]
            )
        self.base_url = str(config["base_url"]).rstrip("/")
        self.timeout = float(config.get("timeout", 5))
        self.patterns = patterns(config)
        self._token = str(config["token"])
        self._receipt_token = receipt_token(config, context.name)
        receipts = receipt_settings(config, context.name, self._receipt_token is not None)
        self.ack_timeout: float | None = receipts["ack_timeout"]  # None: the gateway sends no acks
        self.heartbeat_timeout: float | None = receipts["heartbeat_timeout"]  # None: no heartbeats
        self.zones = served_zones(config, context.name)  # None: every siren no other gateway claims
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
                f"a siren cannot {message.command!r}; commands: {', '.join(PATTERN_SETTING)}",
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
        return value.astimezone(dt.timezone.utc)
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
