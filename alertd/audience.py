"""The audience: subscribers as `POST /v1/subscribers` and the CSV import take them, and their
phone numbers, normalised to E.164 once, here; and which test recipients a test reaches.

The schema is pydantic, like orders' (and shares its field types); it is also the source of the
API's Subscriber schema.

A CAP `test` or `system` alert is for the configured test recipients only (`[alerts]
test_recipients`: subscribers and sirens by id), never the public, whatever its area: and of those,
only the ones inside its area (`testers`), which the order's checks keep inside the caller's
jurisdiction. A cell's test reaches its own test phones and sirens, not another cell's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import phonenumbers
import pydantic
from pydantic import ConfigDict, Field

from alertd import errors, geo, model, orders, zones

MAX_SUBSCRIBERS = 10_000


class Subscriber(pydantic.BaseModel):
    """A citizen's phone and/or app install, as `POST /v1/subscribers` takes it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["citizen-42"])
    phone: str | None = Field(
        None, max_length=40, description="Any French or international notation; stored in E.164.",
        examples=["06 12 34 56 78", "+33612345678"],
    )
    push_token: str | None = Field(
        None, min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9_:.\-]+$",
        validate_default=True, description="The app install's FCM registration token.",
    )
    locale: orders.Locale = Field("fr", examples=["fr", "en", "ar"])
    zones: list[orders.LocalZone] = Field(min_length=1, max_length=500, examples=[["75056"]])
    lat: orders.Lat | None = Field(None, description="Where to be warned for (with `lon`): shapes target it.")
    lon: orders.Lon | None = None
    exercise: bool = Field(False, description="Takes part in exercises (the only recipients of one).")

    @pydantic.model_validator(mode="after")
    def _located(self) -> Subscriber:
        if (self.lat is None) != (self.lon is None):
            raise orders.ValueAt("lat" if self.lat is None else "lon", "give both lat and lon, or neither")
        return self

    @pydantic.field_validator("phone")
    @classmethod
    def _normalise_phone(cls, phone: str | None) -> str | None:
        return None if phone is None else _e164(phone, "FR")

    @pydantic.field_validator("push_token")
    @classmethod
    def _reachable(cls, push_token: str | None, info: pydantic.ValidationInfo) -> str | None:
        if "phone" in info.data and info.data["phone"] is None and push_token is None:
            raise ValueError("give a phone number, a push token or both")
        if push_token is not None and push_token.startswith("zone-"):  # a topic's name, not an app's
            raise ValueError("a push token cannot start with 'zone-'")
        return push_token


def parse_subscribers(body: bytes) -> list[model.Recipient]:
    """One subscriber object or a list of them; errors name the row, e.g. `3.phone`."""
    data = orders.load_json(body)
    if isinstance(data, dict):
        return [_recipient(orders.validate(Subscriber.model_validate, data))]
    if not isinstance(data, list):
        raise errors.BadRequest("The body must be a JSON object or a list of objects.", field=None)
    if len(data) > MAX_SUBSCRIBERS:  # before any is checked: pydantic counts after checking each phone
        raise _invalid(None, f"at most {MAX_SUBSCRIBERS} subscribers in one body, got {len(data)}")
    subscribers = orders.validate(_SUBSCRIBER_LIST.validate_python, data)
    _refuse_duplicates(subscribers)
    return [_recipient(s) for s in subscribers]


_SUBSCRIBER_LIST = pydantic.TypeAdapter(Annotated[list[Subscriber], Field(max_length=MAX_SUBSCRIBERS)])


def _refuse_duplicates(subscribers: list[Subscriber]) -> None:
    # One body is stored in one statement, where a repeated id is ambiguous (and fails on PostgreSQL).
    seen: set[str] = set()
    for index, subscriber in enumerate(subscribers):
        if subscriber.id in seen:
            raise _invalid(f"{index}.id", f"duplicate id {subscriber.id!r}")
        seen.add(subscriber.id)


def _invalid(field: str | None, message: str) -> errors.Invalid:
    return errors.Invalid(f"{field or 'body'}: {message}", field=field, errors=[{"field": field, "message": message}])


def normalise_phone(raw: str, region: str = "FR") -> str:
    """A phone number in E.164, e.g. "06 12 34 56 78" → "+33612345678"."""
    try:
        return _e164(raw, region)
    except ValueError as exc:
        raise _invalid("phone", str(exc)) from None


# Overseas départements write their numbers nationally too ("0690 …" in Guadeloupe): a French
# number that is not a metropolitan one is tried there before it is refused.
_OVERSEAS = {"FR": ("GP", "MQ", "GF", "RE", "YT")}


def _e164(raw: str, region: str) -> str:
    for candidate in (region, *_OVERSEAS.get(region, ())):
        try:
            number = phonenumbers.parse(raw, candidate)
        except phonenumbers.NumberParseException:
            raise ValueError("not a phone number") from None
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise ValueError("not a valid phone number")


def _recipient(subscriber: Subscriber) -> model.Recipient:
    return model.Recipient(
        id=subscriber.id,
        locale=subscriber.locale,
        zones=tuple(dict.fromkeys(subscriber.zones)),
        phone=subscriber.phone,
        push_token=subscriber.push_token,
        lat=subscriber.lat,
        lon=subscriber.lon,
        exercise=subscriber.exercise,
    )


def subscriber_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    return Subscriber.model_json_schema(ref_template=ref_template)


def inside(area: model.Area, codes: tuple[str, ...], lat: float | None, lon: float | None) -> bool:
    """Whether a recipient or a siren in zones `codes`, at (`lat`, `lon`) if known, lies in the area:
    in one of its zones, or inside one of its shapes."""
    if any(zones.within(mine, zone) for mine in codes for zone in area.zones):
        return True
    if not area.shaped or lat is None or lon is None:
        return False
    return geo.Shapes.of(area.polygons, area.circles).contains_point(lat, lon)


def testers(area: model.Area, recipients: list[model.Recipient]) -> list[str]:
    """The ids of the test recipients (looked up by their configured ids) that a test alert over
    `area` reaches."""
    return [r.id for r in recipients if inside(area, r.zones, r.lat, r.lon)]


def test_sirens(area: model.Area, sirens: list[model.Siren], tests: Sequence[str]) -> list[model.Siren]:
    """The configured test sirens inside the area: those a test alert tells to run their test."""
    wanted = set(tests)
    return [s for s in sirens if s.id in wanted and inside(area, (s.zone,), s.lat, s.lon)]
