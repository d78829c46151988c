"""The JSON order and subscriber schemas (pydantic): loose input in, frozen `model` values out.

These classes are also the single source of the API's JSON schemas (see `openapi`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints

from alertd import cap, errors, geo, model, zones

# An RFC 5646 language tag (BCP 47): language (and extended language subtags), script, region (two
# letters or UN M.49 digits), variants, extensions, private use: fr, fr-CA, es-419, zh-Hant-TW,
# sr-Latn-RS, de-CH-1901. Tags are case-insensitive and a `_` is taken for a `-` (fr_ca); `Locale`
# keeps them in their usual form (fr-CA).
LOCALE_PATTERN = (
    r"^[A-Za-z]{2,3}(?:[-_][A-Za-z]{3}){0,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*(?:[-_][A-WYZa-wyz0-9](?:[-_][A-Za-z0-9]{2,8})+)*"
    r"(?:[-_][Xx](?:[-_][A-Za-z0-9]{1,8})+)?$"
)
IDENTIFIER_PATTERN = r"^[^\s,<&]+$"  # CAP 1.2: no spaces, commas or restricted characters
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"  # usable as a template variable
TEMPLATE_PATTERN = r"^[a-z0-9_]+$"
CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a kind, or a configured channel's name
MAX_PARAM_LENGTH = 500
CATEGORIES = tuple(cap.check.ENUMS["category"].split())  # CAP 1.2's

Zone = Annotated[str, StringConstraints(pattern=zones.PATTERN)]
LocalZone = Annotated[str, StringConstraints(pattern=zones.LOCAL_PATTERN)]


# Checked as written (any case, `_` or `-`), then kept in the usual form: zh-hant-tw → zh-Hant-TW.
Locale = Annotated[str, StringConstraints(pattern=LOCALE_PATTERN), pydantic.AfterValidator(model.language_tag)]
ParamName = Annotated[str, StringConstraints(pattern=PARAM_NAME_PATTERN)]
Channel = Annotated[str, StringConstraints(pattern=CHANNEL_PATTERN)]

# What a user reads instead of a regular expression.
_PATTERN_MESSAGES = {
    zones.PATTERN: "not a zone code: an INSEE commune code, a département code or *",
    zones.LOCAL_PATTERN: "not a zone code: an INSEE commune code or a département code",
    LOCALE_PATTERN: "not a language tag (RFC 5646) like fr, fr-CA, es-419 or zh-Hant-TW",
    IDENTIFIER_PATTERN: "must not contain spaces, commas, < or &",
    TEMPLATE_PATTERN: "not a template name: lower-case letters, digits and _",
    CHANNEL_PATTERN: "not a channel: a kind (sms, push, siren, cell_broadcast...) or a configured channel's name",
    PARAM_NAME_PATTERN: "not a parameter name: letters, digits and _, not starting with a digit",
}


def _scalar(value: Any) -> Any:
    """Parameters are plain data for templates: one clear error instead of one per union member."""
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError("must be a string, a number or a boolean")
    if isinstance(value, str) and len(value) > MAX_PARAM_LENGTH:
        raise ValueError(f"must be at most {MAX_PARAM_LENGTH} characters")
    return value


ParamValue = Annotated[str | int | float | bool, pydantic.BeforeValidator(_scalar)]


class Text(pydantic.BaseModel):
    """The alert's own words in one locale, used instead of a template."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    headline: str = Field(min_length=1, max_length=200, examples=["Inondation : mettez-vous à l'abri"])
    instruction: str = Field(
        "", max_length=1000, examples=["Montez dans les étages. N'allez pas chercher vos enfants à l'école."]
    )
    description: str = Field(
        "", max_length=1000, description="What is happening (CAP description).",
        examples=["La Seine déborde entre Austerlitz et Javel."],
    )


Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Lon = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class Circle(pydantic.BaseModel):
    """A disc on the ground (CAP circle)."""

    model_config = ConfigDict(extra="forbid")

    lat: Lat
    lon: Lon
    radius_km: float = Field(gt=0, le=geo.MAX_RADIUS_KM, allow_inf_nan=False, examples=[2.5])


class Area(pydantic.BaseModel):
    """Where the alert applies: French administrative codes, shapes drawn on the map, or both.

    Recipients and sirens in any zone or inside any shape are targeted, each once."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    zones: list[Zone] = Field(
        default_factory=list,
        max_length=500,
        description='INSEE commune codes ("75056", "2A004", "97105"), département codes '
        '("75", "2A", "971") or "*" for the whole country (national tokens only).',
        examples=[["75056"], ["13", "84007"]],
    )
    polygons: list[list[tuple[Lat, Lon]]] = Field(
        default_factory=list,
        description="Closed rings of [lat, lon] pairs (WGS 84, CAP order: latitude first), at least four "
        f"pairs, first equal to last, not self-intersecting; at most {geo.MAX_POLYGONS} polygons and "
        f"{geo.MAX_VERTICES} pairs in all.",
        examples=[[[[48.85, 2.29], [48.87, 2.35], [48.84, 2.39], [48.85, 2.29]]]],
    )
    circles: list[Circle] = Field(default_factory=list, max_length=geo.MAX_CIRCLES)
    description: str = Field("", max_length=1000, description="The area in words (CAP areaDesc).")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _not_too_big(cls, data: Any) -> Any:
        """Counted before any point is checked: a body of refused points once took seconds to refuse."""
        if isinstance(data, dict):
            polygons, circles = data.get("polygons"), data.get("circles")
            rings = [ring if isinstance(ring, list) else () for ring in polygons] if isinstance(polygons, list) else []
            if problems := geo.size_problems(rings, circles if isinstance(circles, list) else ()):
                raise cap.check.invalid(f"{problems[0]['field']}: {problems[0]['message']}", problems)
        return data

    @pydantic.model_validator(mode="after")
    def _somewhere(self) -> Area:
        if not (self.zones or self.polygons or self.circles):
            raise ValueError("give zones, polygons or circles")
        geo.check(self.polygons, [(c.lat, c.lon, c.radius_km) for c in self.circles])
        return self


class Reference(pydantic.BaseModel):
    """An earlier alert, as CAP names it: its sender, identifier and sent time."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    sender: str = Field(min_length=1, max_length=200, pattern=IDENTIFIER_PATTERN)
    identifier: str = Field(min_length=1, max_length=200, pattern=IDENTIFIER_PATTERN)
    sent: AwareDatetime


class Order(pydantic.BaseModel):
    """An alert order, as a crisis cell posts it to `POST /v1/alerts`."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "status": "actual",
                    "event": "Inondation",
                    "urgency": "Immediate",
                    "severity": "Severe",
                    "certainty": "Observed",
                    "expires": "2030-01-01T18:00:00+01:00",
                    "area": {"zones": ["75056"], "description": "Paris"},
                    "channels": ["sms", "push"],
                    "template": "shelter_in_place",
                    "params": {"place": "Paris", "until": "18 h"},
                }
            ]
        },
    )

    identifier: str | None = Field(
        None,
        max_length=200,
        pattern=IDENTIFIER_PATTERN,
        description="CAP identifier; defaults to the alert's id.",
        examples=["FR-75-2030-0001"],
    )
    status: Literal["actual", "exercise", "system", "test", "draft"] = Field(
        description="CAP status: who the alert is for.", examples=["actual"]
    )
    msg_type: Literal["alert", "update", "cancel"] = Field(
        "alert",
        description="CAP msgType. `update` replaces the referenced alerts: its text reaches everyone they "
        "reached or were reaching, and anyone in its own area. `cancel` stops them and tells those already "
        "reached (template `all_clear` unless the order gives its own); it may leave out `event`, `urgency`, "
        "`severity`, `certainty`, `area` and `channels`, which then come from the first referenced alert.",
    )
    references: list[Reference] = Field(
        default_factory=list, max_length=20, description="The alerts an update or a cancel replaces or stops."
    )
    event: str | None = Field(None, min_length=1, max_length=200, description="What happens.", examples=["Inondation"])
    urgency: Literal["Immediate", "Expected", "Future", "Past", "Unknown"] | None = Field(
        None, description="CAP urgency."
    )
    severity: Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"] | None = Field(
        None, description="CAP severity."
    )
    certainty: Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"] | None = Field(
        None, description="CAP certainty."
    )
    expires: AwareDatetime | None = Field(
        None,
        description="When the alert stops applying: undelivered messages are dropped. "
        "An ISO 8601 time with its offset, in the future.",
        examples=["2030-01-01T18:00:00+01:00"],
    )
    area: Area | None = None
    channels: list[Channel] | None = Field(
        None,
        min_length=1,
        max_length=8,
        json_schema_extra={"uniqueItems": True},
        description="The channels to fan out over: each a kind (sms, push, siren, cell_broadcast, or a plugin's "
        "kind: the first channel configured for it) or the name of a configured channel (`[channels.NAME]`). "
        "At most one channel of each kind.",
        examples=[["sms", "push", "siren"], ["sms", "cbc-national"]],
    )
    template: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=TEMPLATE_PATTERN,
        description="A message template name (templates/<locale>/<name>.<channel>.j2). "
        "Give exactly one of `template` and `texts`.",
        examples=["shelter_in_place"],
    )
    params: dict[ParamName, ParamValue] = Field(
        default_factory=dict,
        max_length=50,
        json_schema_extra={"additionalProperties": False},
        description=f"Data for the template (never code); string values at most {MAX_PARAM_LENGTH} characters.",
        examples=[{"place": "Paris", "until": "18 h"}],
    )
    texts: dict[Locale, Text] | None = Field(
        None,
        min_length=1,
        validate_default=True,
        description="The message in each locale (an RFC 5646 language tag: fr, fr-CA, es-419), instead of a "
        "template. Give exactly one of `template` and `texts`.",
        examples=[{"fr": {"headline": "Inondation", "instruction": "Montez dans les étages."}}],
    )
    locale: Locale | None = Field(
        None, description="The locale for recipients whose own locale has no message (an RFC 5646 language "
        "tag; each tag falls back to its language: es-419 to es).", examples=["fr"]
    )
    topics: bool = Field(False, description="Also push to the FCM topics `zone-<code>` of the area.")
    category: Literal[CATEGORIES] = Field(  # type: ignore[valid-type]
        model.DEFAULT_CATEGORY, description="CAP category of the event, written in the alert's CAP document.",
        examples=["Met"],
    )

    @pydantic.field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[str] | None) -> list[str] | None:
        if channels is not None and len(set(channels)) != len(channels):
            raise ValueError("each channel at most once")
        return channels

    @pydantic.field_validator("expires")
    @classmethod
    def _in_future(cls, expires: dt.datetime | None, info: pydantic.ValidationInfo) -> dt.datetime | None:
        now = (info.context or {}).get("now") or model.utcnow()
        if expires is not None and expires <= now:
            raise ValueError("must be in the future")
        return expires

    @pydantic.field_validator("texts")
    @classmethod
    def _template_or_texts(cls, texts: dict | None, info: pydantic.ValidationInfo) -> dict | None:
        if "template" not in info.data:  # the template itself was invalid: already reported
            return texts
        if texts is not None and info.data["template"] is not None:
            raise ValueError("give exactly one of template and texts")
        if texts is None and info.data["template"] is None and info.data.get("msg_type") != "cancel":
            raise ValueError("give exactly one of template and texts")
        return texts

    @pydantic.model_validator(mode="after")
    def _complete(self) -> Order:
        """Only a cancel may leave out what it can take from the alert it stops."""
        if self.msg_type != "alert" and not self.references:
            raise ValueAt("references", f"a {self.msg_type} names the alerts it replaces or stops")
        if self.msg_type == "cancel":
            return self
        for name in ("event", "urgency", "severity", "certainty", "area", "channels"):
            if getattr(self, name) is None:
                raise ValueAt(name, "Field required")
        return self


class ValueAt(ValueError):
    """A whole-order check's failure, located at `field` (pydantic locates it at the order)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- the bodies of an approval and a rejection ---------------------------------------------------

MAX_REASON = 1000  # characters of a rejection's reason


class Issue(pydantic.BaseModel):
    """`POST /v1/alerts/{id}/approve` of a draft: the status it is issued as (none for an alert
    awaiting approval)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["actual", "exercise", "test", "system"] = "actual"


class Rejection(pydantic.BaseModel):
    """`POST /v1/alerts/{id}/reject`: why, for the audit and the person who sent it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON)] = Field(
        description=f"Why (at most {MAX_REASON} characters).")


def parse_issue(body: bytes) -> Issue:
    return validate(Issue.model_validate, parse_object(body) if body.strip() else {})


def parse_rejection(body: bytes) -> Rejection:
    return validate(Rejection.model_validate, parse_object(body))


# -- parsing -----------------------------------------------------------------------------------


def parse(body: bytes, now: dt.datetime) -> Order:
    """Validate an order's JSON body; `now` decides whether `expires` is in the future."""
    return validate(Order.model_validate, parse_object(body), context={"now": now})


def parse_object(body: bytes) -> dict[str, Any]:
    """A JSON object body, or BadRequest."""
    data = load_json(body)
    if not isinstance(data, dict):
        raise errors.BadRequest("The body must be a JSON object.", field=None)
    return data


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise errors.BadRequest(f"The body is not valid JSON: {exc}", field=None) from None
    except RecursionError:  # `[[[[…` nested deeper than the parser can go
        raise errors.BadRequest("The body is nested too deeply.", field=None) from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# C0 controls but tab, line feed and carriage return, and DEL: no phone shows them, a terminal obeys
# them, and PostgreSQL stores no NUL. Checked in the raw body, so every field and key is covered.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _controls(data: Any, path: tuple[str, ...] = ()) -> list[str]:
    """The fields (dotted paths) of `data` whose text or key holds a control character."""
    if isinstance(data, str):
        return [".".join(path)] if CONTROL.search(data) else []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    found = []
    for key, value in items:
        here = (*path, str(key))
        found += [".".join(here)] if isinstance(key, str) and CONTROL.search(key) else _controls(value, here)
    return found


def validate(validate: Any, data: Any, **kwargs: Any) -> Any:
    try:
        fields = _controls(data)
    except RecursionError:  # as deep as the JSON parser went, from a deeper stack
        raise errors.BadRequest("The body is nested too deeply.", field=None) from None
    if fields:
        problems = [{"field": f or None, "message": "must not contain a control character"} for f in fields]
        raise cap.check.invalid(f"{fields[0] or 'body'}: must not contain a control character", problems)
    try:
        return validate(data, **kwargs)
    except pydantic.ValidationError as exc:
        found = exc.errors(include_url=False, include_input=False)
        problems = cap.check.Problems(_problem(e) for e in found[:cap.check.MAX_PROBLEMS])
        problems.more = len(found) - len(problems)
        first = problems[0]
        raise cap.check.invalid(f"{first['field'] or 'body'}: {first['message']}", problems) from None


def _problem(error: Any) -> dict[str, Any]:
    # A dict key's own error is located at "<key>.[key]": the key names the field well enough.
    loc = [str(part) for part in error["loc"] if part != "[key]"]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValueAt):
        loc.append(cause.field)
    field = ".".join(loc) or None
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "string_pattern_mismatch":
        message = _PATTERN_MESSAGES.get(error["ctx"]["pattern"], error["msg"])
    else:
        message = error["msg"].removeprefix("Value error, ")
    return {"field": field, "message": message}


# -- to the model ------------------------------------------------------------------------------


def to_alert(
    order: Order, *, alert_id: str, cell: str, token_id: str, now: dt.datetime,
    kinds: Mapping[str, str] | None = None,
) -> model.Alert:
    """The frozen alert an accepted order becomes; its CAP sender is made from the cell's id (the web
    layer signs it with the cell's first sender: `identity.signed`). `kinds` (configured channel
    name → kind) resolves channels named by name; without it every channel is taken as a kind."""
    channels, via = _channels(order.channels or [], kinds)
    return model.Alert(
        id=alert_id,
        identifier=order.identifier or alert_id,
        sender=model.cap_sender(cell),
        cell=cell,
        sent=model.to_utc(now),
        status=model.Status(order.status),
        msg_type=model.MsgType(order.msg_type),
        references=tuple(model.Reference(r.sender, r.identifier, r.sent) for r in order.references),
        # None in a cancel that leaves them out, until `lifecycle.complete` takes the stopped alert's.
        event=order.event, urgency=order.urgency,  # type: ignore[arg-type]
        severity=order.severity, certainty=order.certainty,  # type: ignore[arg-type]
        expires=model.to_utc(order.expires),
        area=_area(order.area),
        channels=channels,
        via=via,
        template=order.template,
        params=dict(order.params),
        texts={
            locale: model.Text(t.headline, t.instruction, t.description) for locale, t in (order.texts or {}).items()
        },
        locale=order.locale,
        topics=order.topics,
        category=order.category,
        token_id=token_id,
    )


def _channels(named: list[str], kinds: Mapping[str, str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The kinds an order's channels ask for, and the configured channels it named by name. A kind
    wins over a name of the same spelling (`sms` is the first channel of kind sms), so an order
    means what the same CAP document would."""
    if kinds is None:
        return tuple(model.kind(c) for c in named), ()
    kinds_of = set(kinds.values())
    problems: list[cap.check.Problem] = [
        {"field": f"channels.{i}", "message": f"no channel {c!r} is configured: name a kind "
         f"({', '.join(sorted(kinds_of))}) or a channel ({', '.join(sorted(kinds))})"}
        for i, c in enumerate(named) if c not in kinds and c not in kinds_of
    ]
    chosen = [model.kind(c if c in kinds_of else kinds.get(c, c)) for c in named]
    problems += [
        {"field": f"channels.{i}", "message": f"a second channel of kind {k}: at most one of each kind"}
        for i, k in enumerate(chosen) if k in chosen[:i]
    ]
    if problems:
        raise cap.check.invalid(f"{problems[0]['field']}: {problems[0]['message']}", problems)
    return tuple(chosen), tuple(c for c in named if c not in kinds_of)


def _area(area: Area | None) -> model.Area:
    if area is None:  # a cancel that takes the area of the alert it stops
        return model.Area()
    return model.Area(
        zones=tuple(dict.fromkeys(area.zones)),
        description=area.description,
        polygons=tuple(tuple(ring) for ring in area.polygons),
        circles=tuple((c.lat, c.lon, c.radius_km) for c in area.circles),
    )


# -- schemas -----------------------------------------------------------------------------------


def schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The order's JSON schema; its sub-schemas are under `$defs`, referred to by `ref_template`."""
    return Order.model_json_schema(ref_template=ref_template)


