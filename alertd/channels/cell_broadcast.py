"""The cell broadcast channel: an alert's one message to a Cell Broadcast Centre (CBC), which has
every cell of its networks broadcast it to every phone there (EU-Alert, 3GPP TS 23.041).

It speaks the ECBE REST interface of the open-source osmo-cbc (`cbc.schema.json`,
`smscb.schema.json`, `src/rest_api.c` in osmocom/osmo-cbc):

- ``POST {base_url}/api/ecbe/v1/message`` creates a message: ``cbe_name``, ``category``,
  ``repetition_period`` (units of 1.883 s), ``num_of_bcast`` (0: until deleted), ``scope``
  (``{"scope_plmn": {}}``: the CBC's whole network, the only scope osmo-cbc knows) and
  ``smscb_message`` {``serial_nr`` {``serial_nr_decoded``: geo_scope, msg_code, update_nr},
  ``message_id``, ``payload`` {``payload_encoded``: ``dcs``, ``pages`` as hex}}. ``201`` created;
  ``400`` a refused body (text); ``409`` the CBC holds a message of that identifier already.
- ``DELETE {base_url}/api/ecbe/v1/message/{message_id}`` withdraws it: ``200``; ``404`` none.

One delivery per alert (the channel's address is the area, `model.Address.AREA`): the message
identifier comes from the alert's status, severity, urgency and certainty (`cbs.message_id`), the
pages from the rendered text (`cbs.paginate`: GSM-7 or UCS-2, at most 15, refused at the order by
the renderer). A ``cancel`` command (the alert was cancelled or updated) deletes it. Since one
broadcast reaches every phone of the CBC's networks, the channel names their ``zones``, and only
an alert whose area covers them all is broadcast (`planner.covers`; refused at the order).

Configuration::

    [channels.cbc]
    plugin = "cbc"
    base_url = "http://127.0.0.1:8900/cbc"  # the CBC's REST root
    zones = ["*"]               # what one broadcast reaches: the CBC's networks' coverage
    cbe_name = "alertd"         # how the CBC knows us
    language = "fr"             # the networks' own language; other locales use the additional-language ids
    category = "high_priority"  # normal | high_priority | background
    repetition_period = 32      # × 1.883 s between repetitions (1-4095): about a minute
    timeout = 5                 # seconds per request
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import aiohttp
import pydantic

from alertd import cbs, channels, errors, model, settings, zones

API = "/api/ecbe/v1/message"
REPETITION_UNIT = 1.883  # seconds (3GPP TS 48.049 §8.2.8, CBSP Repetition Period)
MAX_BROADCASTS = 65535
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})  # 409: that identifier's slot is taken (yet)
MISCONFIGURED_STATUSES = frozenset({401, 403, 404})  # 404 on a create: the URL is not a CBC's


def classify(status: int, text: str, retry_after: float | None) -> errors.DeliveryError:
    """What a CBC's non-2xx answer means: 409, 408, 425, 429, 5xx → transient; 401 / 403 / 404
    (no such API there) → the channel is misconfigured; anything else (400: a body it refused) →
    permanent."""
    code = f"http_{status}"
    message = f"CBC answered HTTP {status}: {' '.join(text.split())[:200]}".rstrip(": ")
    if status in TRANSIENT_STATUSES or status >= 500:
        return errors.Transient(message, code=code, retry_after=retry_after)
    if status in MISCONFIGURED_STATUSES:
        return errors.ChannelMisconfigured(message + "; check the channel's base_url", code=code)
    return errors.Permanent(message, code=code)


def _zones(value: Any) -> Any:
    return [z.strip() for z in value.split(",")] if isinstance(value, str) else value


ZoneCode = Annotated[str, pydantic.StringConstraints(strip_whitespace=True, pattern=zones.PATTERN)]


class Settings(settings.Channel):
    base_url: Annotated[str, pydantic.StringConstraints(min_length=1)]
    # What one broadcast reaches: zone codes ("*", a département, a commune).
    zones: Annotated[tuple[ZoneCode, ...], pydantic.BeforeValidator(_zones), pydantic.Field(min_length=1)]
    category: Literal["normal", "high_priority", "background"] = "high_priority"
    repetition_period: int = pydantic.Field(32, ge=1, le=4095)  # in units of REPETITION_UNIT
    language: str = "fr"  # the network's language: another locale's broadcast is an additional-language one
    cbe_name: str = "alertd"
    timeout: settings.Positive = 5.0


def broadcasts(period: int, expires: str | None, now: dt.datetime) -> int:
    """How many times the message is repeated: until the alert expires, or (0) until deleted."""
    if not expires:
        return 0
    left = (model.to_utc(expires) - now).total_seconds()
    return max(1, min(MAX_BROADCASTS, math.ceil(left / (period * REPETITION_UNIT))))


def identifier(message: model.Message, language: str) -> int:
    facts = message.data
    return cbs.message_id(
        facts.get("status", ""), facts.get("event", ""), facts.get("severity", ""), facts.get("urgency", ""),
        facts.get("certainty", ""), national=facts.get("scope") == "national",
        additional_language=_language(message.locale) != language,
    )


def create_body(message: model.Message, options: Settings, now: dt.datetime) -> dict[str, Any]:
    """The ECBE `cbc_message` that broadcasts `message`."""
    language = options.language
    pages = cbs.paginate(message.body, _language(message.locale))
    return {
        "cbe_name": options.cbe_name,
        "category": options.category,
        "repetition_period": options.repetition_period,
        "num_of_bcast": broadcasts(options.repetition_period, message.data.get("expires"), now),
        "scope": {"scope_plmn": {}},
        "smscb_message": {
            "serial_nr": {"serial_nr_decoded": {
                "geo_scope": "plmn_wide", "msg_code": cbs.serial_code(message.alert_id), "update_nr": 0,
            }},
            "message_id": identifier(message, language),
            "payload": {"payload_encoded": {"dcs": pages.dcs, "pages": [p.hex() for p in pages.pages]}},
        },
    }


def _language(locale: str) -> str:
    return locale.split("-")[0].lower()


class CellBroadcast(channels.Base):
    """An alert's one message to a Cell Broadcast Centre over osmo-cbc's ECBE REST interface."""

    kind = model.Kind.CELL_BROADCAST
    address = model.Address.AREA
    settings = Settings
    options: Settings
    # Calls in order: an update's `cancel` (a DELETE by identifier) must not pass its new create.
    default_concurrency = 1

    def __init__(self, config: Mapping[str, Any] | Settings, context: channels.Context) -> None:
        super().__init__(config, context)
        self.zones: tuple[str, ...] = self.options.zones
        self.base_url = self.options.base_url.rstrip("/")
        self.language = self.options.language
        self.timeout = self.options.timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"CellBroadcast(name={self.context.name!r}, base_url={self.base_url!r})"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), connector=aiohttp.TCPConnector(limit=self.concurrency),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, message: model.Message) -> model.Receipt:
        message_id = identifier(message, self.language)
        if message.command == "cancel":
            await self._call("DELETE", f"{self.base_url}{API}/{message_id}", deleting=True)
            return model.Receipt(provider_id=f"{message_id}/deleted/{message.delivery_id}")
        try:
            body = create_body(message, self.options, model.utcnow())
        except errors.MessageTooLong as exc:  # the order's check lets none through; a changed template might
            raise errors.Permanent(exc.message, code="too_long") from None
        await self._call("POST", self.base_url + API, json=body)
        serial = body["smscb_message"]["serial_nr"]["serial_nr_decoded"]["msg_code"]
        return model.Receipt(provider_id=f"{message_id}/{serial}/{message.delivery_id}")

    async def _call(self, method: str, url: str, *, deleting: bool = False, **kwargs: Any) -> None:
        assert self._session is not None, "send before start"
        try:
            async with self._session.request(method, url, allow_redirects=False, **kwargs) as resp:
                if 200 <= resp.status < 300 or (deleting and resp.status == 404):  # 404: already withdrawn
                    return
                retry_after = channels.retry_after(resp.headers.get("Retry-After"), model.utcnow())
                raise classify(resp.status, await resp.text(), retry_after)
        except TimeoutError as exc:
            raise errors.Transient(f"CBC timed out after {self.timeout}s", code="timeout") from exc
        except aiohttp.ClientError as exc:
            raise errors.Transient(f"CBC unreachable: {exc}", code="network") from exc
