"""Before sending: how long it takes and how much it costs, per channel (pure).

From whom an alert would reach on each channel (recipients by the SMS segments of the text they get),
the channel's rate and prices (`config.Pace`), now and the alert's `expires`: recipients, messages,
SMS segments, the seconds until the last message goes out at that rate, the cost, and warnings: a
fan-out that would end after the alert expires, a rate that is the provider's documented default
rather than the operator's, a rate nobody knows. The rate bounds the fan-out: Twilio sends each
sender's segments at its pace (queueing the excess), FCM keeps to the project's quota.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Sequence

from alertd import config, model

CENT = decimal.Decimal("0.01")
# What a forecast warns of: the fan-out would outlast the alert; the rate is the provider's documented
# one, not the operator's; nobody knows the rate (no time is given).
ENDS_AFTER_EXPIRY, DEFAULT_RATE, RATE_UNKNOWN = CODES = ("ends-after-expiry", "default-rate", "rate-unknown")


@dataclasses.dataclass(frozen=True)
class Group:
    """Recipients of a channel who get the same message: `segments` SMS segments each (0 off SMS)."""

    recipients: int
    segments: int = 0


@dataclasses.dataclass(frozen=True)
class Planned:
    """Whom an alert would reach on the channel carrying `kind`, and that channel's pace and prices."""

    kind: str  # a `model.Kind` for the built-ins
    pace: config.Pace
    groups: tuple[Group, ...] = ()


@dataclasses.dataclass(frozen=True)
class Cost:
    amount: decimal.Decimal
    currency: str


@dataclasses.dataclass(frozen=True)
class Line:
    """One channel's forecast."""

    kind: str  # a `model.Kind` for the built-ins
    recipients: int
    messages: int
    segments: int | None  # SMS only
    rate: float | None  # messages (SMS: segments) a second; None: unknown
    rate_is_default: bool
    seconds_to_last: float | None
    ends_at: dt.datetime | None
    cost: Cost | None


@dataclasses.dataclass(frozen=True)
class Caveat:
    code: str  # one of CODES
    channel: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Estimate:
    lines: tuple[Line, ...]
    warnings: tuple[Caveat, ...]



def estimate(planned: Sequence[Planned], now: dt.datetime, expires: dt.datetime | None) -> Estimate:
    """The forecast of each planned channel, with what the sender should know before sending."""
    lines = tuple(line(p, now) for p in planned)
    warnings = [w for p, ln in zip(planned, lines, strict=True) for w in _warnings(p.pace, ln, expires)]
    return Estimate(lines, tuple(warnings))


def line(planned: Planned, now: dt.datetime) -> Line:
    pace, sms = planned.pace, planned.kind is model.Kind.SMS
    recipients = sum(g.recipients for g in planned.groups)
    messages = recipients  # each recipient gets one message per channel, in the locale closest to theirs
    segments = sum(g.recipients * g.segments for g in planned.groups) if sms else None
    sent = messages if segments is None else segments  # the rate counts SMS segments
    seconds = round(sent / pace.rate, 1) if pace.rate else None
    return Line(
        planned.kind, recipients, messages, segments, pace.rate, pace.rate_is_default, seconds,
        now + dt.timedelta(seconds=seconds) if seconds is not None else None, cost(pace, messages, segments or 0),
    )


def cost(pace: config.Pace, messages: int, segments: int) -> Cost | None:
    """At the configured prices (a price per segment counts on SMS only); None without a price."""
    if pace.currency is None or (pace.price_per_segment is None and pace.price_per_message is None):
        return None
    amount = _price(pace.price_per_segment) * segments + _price(pace.price_per_message) * messages
    return Cost(amount.quantize(CENT, decimal.ROUND_HALF_UP), pace.currency)


def _price(value: float | None) -> decimal.Decimal:
    return decimal.Decimal(str(value)) if value is not None else decimal.Decimal(0)


def _warnings(pace: config.Pace, ln: Line, expires: dt.datetime | None) -> list[Caveat]:
    channel, found = str(ln.kind), []
    unit = "segments" if ln.kind is model.Kind.SMS else "messages"
    if pace.rate is None:
        found.append(Caveat(RATE_UNKNOWN, channel, f"no `rate` configured for the {channel} channel, and its "
                             "provider documents none: how long it takes is unknown"))
    elif pace.rate_is_default:
        found.append(Caveat(DEFAULT_RATE, channel, f"no `rate` configured for the {channel} channel: assumed "
                             f"the provider's documented {pace.rate:g} {unit} a second"))
    if ln.ends_at is not None and expires is not None and ln.ends_at > expires:
        found.append(Caveat(ENDS_AFTER_EXPIRY, channel, (
            f"at {pace.rate:g} {unit} a second the last of {ln.segments if ln.segments is not None else ln.messages:,}"
            f" {unit} goes out after {duration(ln.seconds_to_last or 0)}, at {ln.ends_at.isoformat(timespec='seconds')}"
            f", later than the alert expires ({expires.isoformat(timespec='seconds')}): those after it are never sent"
        )))
    return found


def duration(seconds: float) -> str:
    """`seconds` for a reader: 45 s, 12 min, 27 h 47 min."""
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{seconds:g} s"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"
