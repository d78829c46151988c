"""Frozen values that flow through alertd.

Rows become these values at the store boundary (`from_row`); loose input becomes them in `orders`.
Times are timezone-aware UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, overload


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@overload
def to_utc(value: None) -> None: ...
@overload
def to_utc(value: dt.datetime | str | float) -> dt.datetime: ...
def to_utc(value: dt.datetime | str | float | None) -> dt.datetime | None:
    """Normalise a stored time (ISO text, epoch seconds or datetime) to an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


class Status(enum.StrEnum):
    """CAP `status`: who the alert is for."""

    ACTUAL = "actual"
    EXERCISE = "exercise"
    SYSTEM = "system"
    TEST = "test"
    DRAFT = "draft"


class Kind(enum.StrEnum):
    """The built-in kinds of channel. A plugin may declare a kind of its own (`email`, `voice`):
    a kind is any name `KIND_PATTERN` allows, and `kind()` gives the built-ins as these members."""

    SMS = "sms"
    PUSH = "push"
    SIREN = "siren"
    CELL_BROADCAST = "cell_broadcast"


KIND_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"  # safe as an SQL literal and in a template's file name


def kind(name: str) -> str:
    """A kind as alertd keeps it: a built-in as its `Kind` member (`is` comparisons hold), any
    other as the plain string it is."""
    try:
        return Kind(name)
    except ValueError:
        return str(name)


class Address(enum.StrEnum):
    """What a channel sends to, as it declares (`channels.Channel.address`): a subscriber's phone
    or app install (one delivery per subscriber who has one), or nothing but the area: one
    message per alert, like a cell broadcast. Sirens are the configured sirens in the area."""

    PHONE = "phone"
    PUSH_TOKEN = "push_token"
    SIREN = "siren"
    AREA = "area"


# The built-ins' addresses: what planning assumes when it is not told the configured channels'.
ADDRESSES: Mapping[str, Address] = {Kind.SMS: Address.PHONE, Kind.PUSH: Address.PUSH_TOKEN, Kind.SIREN: Address.SIREN,
             Kind.CELL_BROADCAST: Address.AREA}
AREA_TARGET = "area"  # the target of an area broadcast's one delivery


class AlertState(enum.StrEnum):
    PLANNING = "planning"  # committed; deliveries still being written
    ACTIVE = "active"  # every delivery planned; fan-out under way
    COMPLETED = "completed"  # every delivery settled
    CANCELLED = "cancelled"  # by the API or by a CAP Cancel
    UPDATED = "updated"  # a later alert (CAP Update) replaced it
    EXPIRED = "expired"  # its `expires` passed before it was cancelled or updated
    DRAFT = "draft"  # stored and rendered on demand, never sent
    AWAITING_APPROVAL = "awaiting_approval"  # waits for a second person; nothing planned yet
    REJECTED = "rejected"  # its approval was refused: never sent
    APPROVAL_EXPIRED = "approval_expired"  # nobody approved it in time: never sent
    REFUSED = "refused"  # planning found its content differs from what was approved: never sent


# An alert in one of these states sends nothing more (except siren cancels).
FINAL = frozenset({
    AlertState.CANCELLED, AlertState.UPDATED, AlertState.EXPIRED, AlertState.REJECTED, AlertState.APPROVAL_EXPIRED,
    AlertState.REFUSED,
})
# Alerts that were never released: nothing of theirs is public, nothing of theirs goes out.
UNRELEASED = frozenset({
    AlertState.DRAFT, AlertState.AWAITING_APPROVAL, AlertState.REJECTED, AlertState.APPROVAL_EXPIRED,
    AlertState.REFUSED,
})


class MsgType(enum.StrEnum):
    """CAP msgType, as far as alertd acts on it."""

    ALERT = "alert"
    UPDATE = "update"  # replaces the referenced alerts
    CANCEL = "cancel"  # stops the referenced alerts and tells those already reached


class State(enum.StrEnum):
    """A delivery's state. It only moves forward (see `RANK`)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# A receipt may only move a delivery to a higher rank: callbacks repeat and arrive out of order.
RANK = {
    State.PENDING: 0,
    State.SENDING: 1,
    State.SENT: 2,
    State.DELIVERED: 3,
    State.FAILED: 3,
    State.EXPIRED: 3,
    State.CANCELLED: 3,
}
SETTLED = frozenset({State.SENT, State.DELIVERED, State.FAILED, State.EXPIRED, State.CANCELLED})


class Role(enum.StrEnum):
    """What a user may do. A person may hold several."""

    ISSUER = "issuer"  # composes and sends alerts
    APPROVER = "approver"  # releases another person's alert that awaits approval
    OPERATOR = "operator"  # watches alerts, deliveries and sirens
    ADMIN = "admin"  # everything, and the audit log


@dataclasses.dataclass(frozen=True)
class Text:
    """The free text of an alert in one locale (CAP info headline, description, instruction)."""

    headline: str = ""
    instruction: str = ""
    description: str = ""


Point = tuple[float, float]  # (lat, lon), CAP order
Ring = tuple[Point, ...]  # closed: first == last
Circle = tuple[float, float, float]  # (lat, lon, radius in km)


@dataclasses.dataclass(frozen=True)
class Area:
    """Where an alert applies: the union of its zone codes' members and its shapes' insides."""

    zones: tuple[str, ...] = ()
    description: str = ""
    polygons: tuple[Ring, ...] = ()
    circles: tuple[Circle, ...] = ()

    @property
    def shaped(self) -> bool:
        return bool(self.polygons or self.circles)

    def to_json(self) -> dict[str, Any]:
        return {
            "zones": list(self.zones),
            "description": self.description,
            "polygons": [[list(p) for p in ring] for ring in self.polygons],
            "circles": [{"lat": c[0], "lon": c[1], "radius_km": c[2]} for c in self.circles],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Area:
        return cls(
            zones=tuple(data.get("zones") or ()),
            description=data.get("description", ""),
            polygons=tuple(tuple((float(lat), float(lon)) for lat, lon in ring) for ring in data.get("polygons") or ()),
            circles=tuple((float(c["lat"]), float(c["lon"]), float(c["radius_km"])) for c in data.get("circles") or ()),
        )


@dataclasses.dataclass(frozen=True)
class Reference:
    """An earlier alert named by a CAP `references` triplet; `alert_id` once the store resolved it."""

    sender: str
    identifier: str
    sent: dt.datetime
    alert_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sender": self.sender, "identifier": self.identifier, "sent": self.sent.isoformat(), "id": self.alert_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reference:
        return cls(data["sender"], data["identifier"], dt.datetime.fromisoformat(data["sent"]), data.get("id"))


DEFAULT_CATEGORY = "Safety"  # CAP category of an order that names none


@dataclasses.dataclass(frozen=True)
class Approval:
    """The second person's part in an alert: what was put before them (the rendered messages, each
    locale × channel as the API shows them, the area and the audience counts per channel), their
    digests, and who asked, approved or rejected it, when. `digest` covers what the approver saw;
    `content_digest` only the messages and the area, which planning checks again (the audience may
    move a little between approval and planning: people subscribe)."""

    requested_by: str
    requested_cell: str
    requested_at: dt.datetime
    expires_at: dt.datetime
    digest: str
    content_digest: str
    messages: tuple[Mapping[str, Any], ...] = ()
    area: Area = Area()
    audience: Mapping[str, int] = dataclasses.field(default_factory=dict)
    approved_by: str | None = None
    approved_cell: str | None = None
    approved_at: dt.datetime | None = None
    rejected_by: str | None = None
    rejected_cell: str | None = None
    rejected_at: dt.datetime | None = None
    reason: str | None = None

    TIMES = ("requested_at", "expires_at", "approved_at", "rejected_at")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self) | {"area": self.area.to_json(), "messages": [dict(m) for m in self.messages],
                                           "audience": dict(self.audience)}
        return data | {k: getattr(self, k).isoformat() if getattr(self, k) else None for k in self.TIMES}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Approval:
        values = dict(data) | {k: to_utc(data.get(k)) for k in cls.TIMES}
        return cls(**values | {"area": Area.from_json(data["area"]), "audience": dict(data.get("audience") or {}),
                               "messages": tuple(dict(m) for m in data.get("messages") or ())})


@dataclasses.dataclass(frozen=True)
class Alert:
    id: str
    identifier: str
    sender: str  # CAP sender: no spaces, commas, < or & (the cell's first sender for JSON orders)
    sent: dt.datetime
    status: Status
    event: str
    urgency: str
    severity: str
    certainty: str
    area: Area
    channels: tuple[str, ...]  # kinds (`kind`)
    expires: dt.datetime | None = None
    msg_type: MsgType = MsgType.ALERT
    references: tuple[Reference, ...] = ()
    template: str | None = None
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    texts: Mapping[str, Text] = dataclasses.field(default_factory=dict)
    locale: str | None = None  # the fallback locale chosen by the issuer
    topics: bool = False  # push to `zone-<code>` topics too
    state: AlertState = AlertState.PLANNING
    token_id: str | None = None
    cancelled_at: dt.datetime | None = None
    cell: str = ""  # the crisis cell whose token issued it, as people call it
    category: str = DEFAULT_CATEGORY  # CAP category of the event (for a CAP document, its first info's first)
    cell_name: str = ""  # the cell's display name
    created_by: str | None = None  # the user who ordered it (None for alerts from before users existed)
    approval: Approval | None = None  # the second person's part, when its cell asks for one
    via: tuple[str, ...] = ()  # configured channels the order named, for those of its kinds (else the first)

    def to_json(self) -> dict[str, Any]:
        """The alert as the API shows it (and as the store keeps it)."""
        return {
            "id": self.id,
            "identifier": self.identifier,
            "sender": self.sender,
            "cell": self.cell,
            "sent": self.sent.isoformat(),
            "status": self.status.value,
            "msg_type": self.msg_type.value,
            "event": self.event,
            "urgency": self.urgency,
            "severity": self.severity,
            "certainty": self.certainty,
            "expires": self.expires.isoformat() if self.expires else None,
            "area": self.area.to_json(),
            "references": [r.to_json() for r in self.references],
            "channels": [str(c) for c in self.channels],
            "via": list(self.via),
            "template": self.template,
            "params": dict(self.params),
            "texts": {k: dataclasses.asdict(v) for k, v in self.texts.items()},
            "locale": self.locale,
            "category": self.category,
            "topics": self.topics,
            "state": self.state.value,
            "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None,
            "cell_name": self.cell_name,
            "created_by": self.created_by,
            "approval": self.approval.to_json() if self.approval else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **overrides: Any) -> Alert:
        values = dict(data) | overrides
        return cls(
            id=values["id"],
            identifier=values["identifier"],
            sender=values["sender"],
            cell=values.get("cell", ""),
            sent=to_utc(values["sent"]),
            status=Status(values["status"]),
            msg_type=MsgType(values.get("msg_type", "alert")),
            references=tuple(Reference.from_json(r) for r in values.get("references") or ()),
            event=values["event"],
            urgency=values["urgency"],
            severity=values["severity"],
            certainty=values["certainty"],
            expires=to_utc(values.get("expires")),
            area=Area.from_json(values["area"]),
            channels=tuple(kind(c) for c in values["channels"]),
            via=tuple(values.get("via") or ()),
            template=values.get("template"),
            params=dict(values.get("params") or {}),
            texts={k: Text(**v) for k, v in (values.get("texts") or {}).items()},
            locale=values.get("locale"),
            category=values.get("category") or DEFAULT_CATEGORY,
            topics=bool(values.get("topics")),
            state=AlertState(values.get("state", "planning")),
            token_id=values.get("token_id"),
            cancelled_at=to_utc(values.get("cancelled_at")),
            cell_name=values.get("cell_name") or "",
            created_by=values.get("created_by"),
            approval=Approval.from_json(values["approval"]) if values.get("approval") else None,
        )

    def is_expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclasses.dataclass(frozen=True)
class Recipient:
    """A subscriber: a citizen's phone and/or app install, in a locale, in some zones."""

    id: str
    locale: str
    zones: tuple[str, ...]
    phone: str | None = None  # E.164
    push_token: str | None = None
    push_token_dead: bool = False
    lat: float | None = None  # where the citizen asked to be warned for, if anywhere
    lon: float | None = None
    exercise: bool = False  # takes part in exercises: the only recipients of an exercise alert

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Recipient:
        return cls(
            id=row["id"],
            locale=row["locale"],
            zones=tuple(json.loads(row["zones"])) if isinstance(row["zones"], str) else tuple(row["zones"]),
            phone=row["phone"],
            push_token=row["push_token"],
            push_token_dead=bool(row["push_token_dead"]),
            lat=row["lat"],
            lon=row["lon"],
            exercise=bool(row["exercise"]),
        )


@dataclasses.dataclass(frozen=True)
class Siren:
    id: str
    zone: str
    label: str = ""
    lat: float | None = None
    lon: float | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Siren:
        return cls(id=row["id"], zone=row["zone"], label=row["label"] or "", lat=row["lat"], lon=row["lon"])

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message of one alert to one address over one configured channel."""

    id: int
    alert_id: str
    channel: str  # the configured channel's name, e.g. "sms"
    kind: str  # `kind`
    target: str  # recipient id, siren id, or topic name
    address: str  # phone number, push token, siren id or topic
    locale: str
    state: State
    attempts: int = 0
    next_at: dt.datetime | None = None
    last_error: str | None = None
    provider_id: str | None = None
    command: str = "send"  # sirens: activate / cancel / test
    updated_at: dt.datetime | None = None
    lease_until: dt.datetime | None = None  # while `sending`: the claim's lease
    priority: int = 0  # lower goes first (`priority.rank`)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Delivery:
        return cls(
            id=row["id"],
            alert_id=row["alert_id"],
            channel=row["channel"],
            kind=kind(row["kind"]),
            target=row["target"],
            address=row["address"],
            locale=row["locale"],
            state=State(row["state"]),
            attempts=row["attempts"],
            next_at=to_utc(row["next_at"]),
            last_error=row["last_error"],
            provider_id=row["provider_id"],
            command=row["command"],
            updated_at=to_utc(row["updated_at"]),
            lease_until=to_utc(row["lease_until"]),
            priority=row["priority"],
        )



@dataclasses.dataclass(frozen=True)
class Audience:
    """Whom a planning walks, in recipient id order: everyone, the members of `zones`, the alert's
    own targets (written before planning: shapes, updates, tests), or nobody (sirens and copies only).
    `exercise_only` keeps every recipient who does not take part in exercises out."""

    walk: str  # "everyone" | "zones" | "targets" | "nobody"
    zones: tuple[str, ...] = ()
    exercise_only: bool = False


@dataclasses.dataclass(frozen=True)
class NewDelivery:
    """A delivery to be planned: the store gives it an id and state `pending`."""

    alert_id: str
    channel: str
    kind: str
    target: str
    address: str
    locale: str
    command: str = "send"


@dataclasses.dataclass(frozen=True)
class Message:
    """A rendered message, ready for one provider call."""

    delivery_id: int
    alert_id: str
    kind: str
    to: str  # phone number, push token, `/topics/...` name, or siren id
    body: str
    title: str = ""
    locale: str = ""
    command: str = "send"
    data: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sender: str = ""  # which of the channel's `channels.Senders` it goes from ("": the channel's own)


@dataclasses.dataclass(frozen=True)
class Receipt:
    """The provider's acceptance of one message."""

    provider_id: str
    status: str = "sent"


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """A siren's health as its gateway reported it at `at` (the gateway's clock)."""

    siren_id: str
    at: dt.datetime
    mains: bool | None = None  # None: the gateway did not say
    battery: float | None = None  # charge, 0.0–1.0
    fault: bool = False
    sabotage: bool = False
    field: str = dataclasses.field(default="", compare=False)  # where in the gateway's body, for problems


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the dispatcher decided for one attempted delivery; the store writes these in bulk."""

    delivery_id: int
    state: State
    next_at: dt.datetime | None = None
    last_error: str | None = None
    provider_id: str | None = None


def cap_sender(cell: str) -> str:
    """A CAP-valid sender for a cell's JSON orders: its name without accents, spaces, commas, < or &."""
    plain = unicodedata.normalize("NFKD", cell).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9@._-]+", "-", plain).strip("-").lower() or "alertd"


def language_tag(text: str) -> str:
    """An RFC 5646 language tag in its usual case: `zh-hant-tw` → `zh-Hant-TW`, `FR_ca` → `fr-CA`,
    `es-419` as it is. Only the case (and `_` for `-`) changes; whether it is well formed is for
    `orders.LOCALE_PATTERN` to say."""
    first, *rest = text.strip().replace("_", "-").split("-")
    subtags, extension = [first.lower()], False
    for subtag in rest:
        extension = extension or len(subtag) == 1  # after a singleton (-u-, -x-) everything is lower case
        if not extension and subtag.isalpha() and len(subtag) in (2, 4):
            subtags.append(subtag.upper() if len(subtag) == 2 else subtag.title())  # region, script
        else:
            subtags.append(subtag.lower())
    return "-".join(subtags)


@overload
def mask(address: str) -> str: ...
@overload
def mask(address: None) -> None: ...
def mask(address: str | None) -> str | None:
    """Phone numbers and push tokens for logs and APIs: only the last digits stay."""
    if not address:
        return address
    keep = 3 if len(address) > 6 else 1
    return "…" + address[-keep:]
