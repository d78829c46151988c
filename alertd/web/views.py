"""What the API answers: one pydantic view per shape, read from the frozen values at the HTTP edge.

A handler writes `answer(views.X.of(value))`, and the document's schema of that answer is `X`'s
(`ANSWERS` are its response components): a field is in both or in neither. The domain values stay
frozen dataclasses; these are the boundary shape, their docstrings and descriptions the document's.
Types are checked on the way out; bounds the producers keep (at most `MAX_PROBLEMS` errors) are
only documented (`json_schema_extra`): checked again here, a slip would turn an answer into a 500.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

import pydantic
from aiohttp import web
from pydantic import ConfigDict, Field

from alertd import cap, estimate, model, sirenstate

# Written as `isoformat()` writes it (`+00:00`), as the store keeps it and as the API always answered.
Time = Annotated[
    dt.datetime,
    pydantic.PlainSerializer(lambda t: t.isoformat(), return_type=str),
    pydantic.WithJsonSchema({"type": "string", "format": "date-time"}),
]
Point = tuple[float, float]  # [lat, lon]
# A channel's kind: a built-in (`model.Kind`) or a plugin's own (`voice`), as the order names it.
KindName = Annotated[str, Field(pattern=model.KIND_PATTERN, examples=[k.value for k in model.Kind])]


class View(pydantic.BaseModel):
    """The base of every answer: read from a value's attributes, nested values included."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, value: Any, **more: Any) -> Self:
        """The view of `value` (a frozen value, or a mapping); `more` gives the fields the value
        does not hold (an alert's counts beside the alert)."""
        if more:
            value = {name: getattr(value, name) for name in cls.model_fields if hasattr(value, name)} | more
        return cls.model_validate(value)


def answer(view: pydantic.BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(view.model_dump(mode="json"), status=status, headers=headers)


# -- alerts --------------------------------------------------------------------------------------


class Accepted(View):
    """An alert order taken in."""

    id: str = Field(description="The alert's id.")
    identifier: str = Field(description="The CAP identifier.")
    state: model.AlertState
    status_url: str = Field(description="Where to follow the alert.", json_schema_extra={"format": "uri"})

    @classmethod
    def of(cls, value: model.Alert, public_url: str) -> Self:  # type: ignore[override]
        return super().of(value, status_url=f"{public_url.rstrip('/')}/v1/alerts/{value.id}")


class AlertCircle(View):
    lat: float
    lon: float
    radius_km: float


class AlertArea(View):
    """Where an alert applies, as stored: its zones, its shapes (polygons as closed rings of
    [lat, lon] pairs) and its description."""

    zones: list[str]
    description: str
    polygons: list[list[Point]]
    circles: list[AlertCircle]

    @pydantic.field_validator("circles", mode="before")
    @classmethod
    def _discs(cls, circles: Any) -> Any:
        """`model.Area` keeps a circle as (lat, lon, radius in km)."""
        return [dict(zip(("lat", "lon", "radius_km"), c, strict=False)) if isinstance(c, tuple) else c for c in circles]


class AlertText(View):
    """The alert's own words in one locale."""

    headline: str
    instruction: str
    description: str


class AlertReference(View):
    """An earlier alert this one updates or cancels, by its CAP triplet."""

    sender: str
    identifier: str
    sent: Time
    id: str | None = Field(validation_alias="alert_id",
                           description="The alert in this store.")


class Preview(View):
    """One message as rendered, for one locale over one channel."""

    locale: str
    channel: str
    title: str
    body: str
    encoding: str = Field(examples=["GSM-7", "UCS-2", "utf-8"])
    segments: int = Field(description="SMS segments (1 for other channels).")
    size: int = Field(description="Bytes of the payload.")


class Approval(View):
    """The second person's part, when the cell asks for one: what they are (were) shown."""

    requested_by: str = Field(description="Who ordered it (the first person).")
    requested_cell: str
    requested_at: Time
    expires_at: Time = Field(description="Not approved by then, it is never sent (state `approval_expired`).")
    digest: str = Field(description="SHA-256 of the messages, area and audience shown to the approver.")
    content_digest: str = Field(
        description="SHA-256 of the messages and area: planning checks it again, and refuses anything else.")
    messages: list[Preview] = Field(description="Every locale × channel, as rendered.")
    area: AlertArea
    audience: dict[str, int] = Field(
        description="Messages per channel its planning would write, as counted when shown.")
    approved_by: str | None
    approved_cell: str | None
    approved_at: Time | None
    rejected_by: str | None
    rejected_cell: str | None
    rejected_at: Time | None
    reason: str | None = Field(description="Why it was rejected.")


class Alert(View):
    """An alert as issued, with its state."""

    id: str
    identifier: str
    sender: str = Field(description="CAP sender: the issuing cell's name made CAP-safe, or the CAP document's own.")
    cell: str = Field(description="The crisis cell whose token issued it.")
    sent: Time
    status: model.Status
    msg_type: model.MsgType
    references: list[AlertReference] = Field(description="The earlier alerts this one updates or cancels.")
    event: str
    urgency: str
    severity: str
    certainty: str
    expires: Time | None
    area: AlertArea
    channels: list[KindName]
    via: list[str] = Field(description="The configured channels the order named by name, for those of its kinds "
                           "(the others go by the first channel of their kind).")
    template: str | None
    params: dict[str, Any]
    texts: dict[str, AlertText]
    locale: str | None
    category: str = Field(description="CAP category of the event.", examples=["Met", "Safety"])
    topics: bool
    state: model.AlertState
    cancelled_at: Time | None
    cell_name: str = Field(description="The issuing cell's display name.")
    created_by: str | None = Field(description="The user who ordered it.")
    approval: Approval | None


class CancelledBy(View):
    """Who cancelled it first (from the audit log); null unless cancelled."""

    cell: str
    at: Time


# A subclass is one flat object in the document, not `allOf` the alert: a client generator makes one class of it.
class AlertStatus(Alert):
    """An alert and its delivery counts."""

    counts: dict[str, dict[str, int]] = Field(
        description='Deliveries per channel and state, e.g. {"sms": {"sent": 10, "pending": 2}}.')
    totals: dict[str, int] = Field(description="Deliveries per state over every channel.")
    cancelled_by: CancelledBy | None
    referenced_by: list[str] = Field(description="Later alerts naming this one.")
    estimate: Estimate | None = Field(description="While awaiting approval: how long and how much, as of now; "
                                      "else null.")


class Cancelled(Alert):
    """The cancelled alert, and what its cancel stopped."""

    cancelled_by: CancelledBy | None
    stopped: int = Field(description="Deliveries dropped before they started.")
    siren_cancels: int = Field(description="Sirens told to stop.")


class AlertList(View):
    """A page of alerts."""

    alerts: list[Alert] = Field(
        description="Newest first: of the `limit` newest (older than `before`), those of the caller's "
        "jurisdiction, so a page may hold fewer than `limit`, even none. The next page: `before` the last one's id.")


class Messages(View):
    """One message per locale and channel."""

    messages: list[Preview]


class Cost(View):
    amount: float
    currency: str = Field(description="ISO 4217.")


class Forecast(View):
    """One channel's forecast: how many, how long at its rate, how much."""

    recipients: int = Field(description="Recipients its planning would write a message for now (a siren, a zone "
                            "topic: one each).")
    messages: int = Field(description="Messages: one per recipient, in the locale closest to theirs.")
    segments: int | None = Field(description="SMS segments over all its messages; null off SMS.")
    rate: float | None = Field(description="Messages a second (SMS: segments), from the channel's `rate`; null: "
                               "unknown.")
    rate_is_default: bool = Field(description="`rate` is the provider's documented rate, not configured.")
    seconds_to_last: float | None = Field(description="Seconds from now until the last message goes out at that rate.")
    ends_at: Time | None = Field(description="When the last message would go out.")
    cost: Cost | None = Field(description="At the channel's `price_per_segment` (SMS) and `price_per_message`; null "
                              "without a price.")


class Caveat(View):
    code: Literal[estimate.CODES] = Field(  # type: ignore[valid-type]
        description="`ends-after-expiry`: the last messages would go after `expires` (and never will); "
        "`default-rate`: the provider's documented rate was assumed; `rate-unknown`: no time given.")
    channel: str = Field(description="The channel kind.")
    detail: str


class Estimate(View):
    """How long and how much, per channel kind, as of now."""

    channels: dict[str, Forecast] = Field(description="By channel kind.")
    warnings: list[Caveat]

    @classmethod
    def of(cls, value: estimate.Estimate) -> Self:  # type: ignore[override]
        return cls(channels={str(line.kind): Forecast.of(line) for line in value.lines},
                   warnings=[Caveat.of(w) for w in value.warnings])


class Previewed(Messages):
    """What `POST /v1/preview` answers: the messages an order would send and the estimate."""

    estimate: Estimate


class Delivery(View):
    """One message of an alert to one address over one channel."""

    id: int
    channel: str = Field(description="The configured channel's name.")
    kind: KindName
    target: str = Field(description="Recipient id, siren id or topic.")
    address: str = Field(description="Masked phone number or push token; siren id.")
    locale: str
    state: model.State
    attempts: int
    next_at: Time | None = Field(description="When it is tried again, if it is waiting.")
    last_error: str | None
    provider_id: str | None
    command: str = Field(description="`send`, or a siren command: activate or cancel.")
    updated_at: Time | None

    @pydantic.field_validator("address")
    @classmethod
    def _masked(cls, address: str, info: pydantic.ValidationInfo) -> str:
        """A person's phone number or push token is never shown whole."""
        return address if info.data.get("kind") == model.Kind.SIREN else model.mask(address)


class DeliveryPage(View):
    """A page of deliveries."""

    deliveries: list[Delivery]
    next: int | None = Field(description="Pass as `after` for the next page; null on the last.")


# -- sirens --------------------------------------------------------------------------------------

SirenStatus = Annotated[Literal[sirenstate.STATES], Field(  # type: ignore[valid-type]
    description="The siren's state: the first that holds, in this order.")]


class SirenCommand(View):
    """The command shown beside a siren (in an alert: that alert's latest)."""

    alert_id: str
    command: str | None = Field(description="activate or cancel")
    state: model.State
    error: str | None = Field(validation_alias="last_error")
    at: Time | None = Field(validation_alias="updated_at")


class SirenHealth(View):
    """A siren's state and its gateway's last report."""

    siren_id: str
    zone: str
    label: str
    lat: float | None
    lon: float | None
    state: SirenStatus
    last_heartbeat: Time | None = Field(description="When alertd last heard from it.")
    silent: bool = Field(description="Not heard from within the heartbeat timeout.")
    battery: float | None
    mains: bool | None
    fault: bool
    sabotage: bool
    last_ack: Literal["activated", "failed", "busy"] | None
    last_ack_at: Time | None


class Siren(View):
    """A siren: where it is, its state, the command shown beside it and its health."""

    id: str
    zone: str
    label: str
    lat: float | None
    lon: float | None
    status: SirenStatus
    last: SirenCommand | None
    health: SirenHealth

    @classmethod
    def of(cls, value: Any, last: model.Delivery | None) -> Self:  # type: ignore[override]
        """A siren's state (`sirenstate.SirenState`) and the command shown beside it."""
        return super().of(value, id=value.siren_id, status=value.state, last=last, health=value)


class Sirens(View):
    """Sirens."""

    sirens: list[Siren]


# -- the rest --------------------------------------------------------------------------------------


class Readiness(View):
    """Whether the daemon can serve, and why not."""

    ready: bool
    problems: list[str] = Field(description="Why not ready.")
    queue: int | None = Field(description="Deliveries pending or on the wire; null if the store does not answer.")
    channels: dict[str, KindName] = Field(description="Each configured channel's kind, by name.")


class Alive(View):
    """The process is alive."""

    status: Literal["alive"]


class Imported(View):
    """How many subscribers were stored."""

    imported: int


class Me(View):
    """The caller: its token, user, the user's cell (id and name), roles and zones."""

    token_id: str
    cell: str = Field(description="The cell's id.")
    cell_name: str
    user: str = Field(description="The user's name.")
    roles: list[model.Role]
    zones: list[str]
    expires_at: Time | None = Field(description="When the token stops working.")

    @pydantic.field_validator("roles", mode="before")
    @classmethod
    def _sorted(cls, roles: Any) -> Any:
        return sorted(roles)


class AuditEntry(View):
    """Who did what, when, from which address."""

    id: int
    at: Time
    cell: str
    token_id: str | None
    user: str | None = Field(description="The user's name.")
    action: str
    subject: str | None
    detail: dict[str, Any]
    address: str | None


class AuditPage(View):
    """A page of audit entries."""

    entries: list[AuditEntry]
    next: int | None = Field(description="Pass as `before` for the next page; null on the last.")


class ProblemItem(View):
    field: str | None
    message: str


class OutsideArea(View):
    """The part of a drawn area beyond the caller's jurisdiction (outer rings: it can only over-report)."""

    polygons: list[list[Point]]
    area_km2: float
    points: list[Point] = Field(description="Circles too small to draw, outside.")


def _absent_unless_known(schema: dict[str, Any]) -> None:
    """A problem's optional fields are left out, never given their defaults."""
    for prop in schema["properties"].values():
        prop.pop("default", None)


class Problem(View):
    """RFC 9457 problem details: what is not known is left out, never null."""

    model_config = ConfigDict(json_schema_extra=_absent_unless_known)

    type: str = Field(description="A stable URI naming the kind of problem.",
                      json_schema_extra={"format": "uri-reference"})
    title: str
    status: int
    detail: str = ""
    field: str = Field("", description="The dotted path of the field at fault, e.g. `area.zones.0`.")
    errors: list[ProblemItem] = Field(
        [], description=f"The validation errors, in the order found: the first {cap.check.MAX_PROBLEMS} "
        "(`more_errors` counts the others).", json_schema_extra={"maxItems": cap.check.MAX_PROBLEMS})
    more_errors: int = Field(
        0, description=f"How many errors were found beyond the {cap.check.MAX_PROBLEMS} listed; absent if none.",
        json_schema_extra={"minimum": 1})
    outside: list[str] = Field([], description="Zones outside jurisdiction.")
    outside_area: OutsideArea = Field(None)  # type: ignore[assignment]  # absent, never null


# The response components of the document, each a handler's answer (or a part of one).
ANSWERS: tuple[type[View], ...] = (
    Accepted, Alert, AlertStatus, Cancelled, AlertList, Messages, Previewed, DeliveryPage, Sirens, Readiness,
    Alive, Imported, Me, AuditPage, Problem,
)
