"""OASIS CAP 1.2 XML ⇄ `Document`, a frozen value: safe parsing, full validation, faithful output.

`parse` refuses what is not XML to read safely (over MAX_BYTES, any DOCTYPE, malformed) with
`errors.BadRequest`, then reports every CAP violation at once with `errors.Invalid` (the rules are in
`cap.check`). `dumps` writes a Document back in schema order, each time in the offset it was sent
with, so a document is never re-dated; `parse(dumps(doc)) == doc`. `to_json` / `from_json` keep a
Document in plain JSON and rebuild it exactly.

XML is read with defusedxml over the standard library's expat: it refuses a DOCTYPE as soon as
expat meets it, before any entity is declared, so no entity is ever expanded or fetched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar
from xml.etree import ElementTree as ET
from xml.parsers import expat

import defusedxml
import defusedxml.ElementTree

from alertd import errors
from alertd.cap import check

MAX_BYTES = 1_000_000
MAX_ELEMENTS = 50_000  # ten languages of a thousand polygons, a thousand circles and 500 geocodes fit
NS = check.NS
DEFAULT_LANGUAGE = "en-US"  # CAP 1.2: "If not present, an implicit default value of 'en-US' SHALL be assumed"

Pair = tuple[str, str]  # (valueName, value)


class _Value:
    """Plain JSON: times as CAP text (their offset kept), tuples as lists, nested values as dicts."""

    _times: ClassVar[tuple[str, ...]] = ()
    _children: ClassVar[dict[str, type[_Value]]] = {}
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # every subclass is a dataclass

    def to_json(self) -> dict[str, Any]:
        return {field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        values = {}
        for name, value in data.items():
            if name in cls._times:
                value = None if value is None else check.time(value)
            elif name in cls._children:
                value = tuple(cls._children[name].from_json(item) for item in value)
            values[name] = _tuples(value)
        return cls(**values)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, _Value):
        return value.to_json()
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass(frozen=True)
class Reference(_Value):
    """An earlier message this one is about."""

    sender: str
    identifier: str
    sent: dt.datetime

    _times = ("sent",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resource(_Value):
    resource_desc: str
    mime_type: str
    size: int | None = None  # bytes
    uri: str | None = None
    deref_uri: str | None = None  # the resource itself, base64
    digest: str | None = None  # SHA-1 of the resource


@dataclasses.dataclass(frozen=True, kw_only=True)
class Area(_Value):
    area_desc: str
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()  # rings of (lat, lon), closed
    circles: tuple[tuple[float, float, float], ...] = ()  # (lat, lon, radius_km)
    geocodes: tuple[Pair, ...] = ()
    altitude: float | None = None  # feet above mean sea level
    ceiling: float | None = None
    # (element, text) of each number-bearing element as received, written back in place of the
    # numbers' shortest form while it still reads as the same value: publishers pad (29.50,-94.80).
    # Presentation, not value: two areas that differ only by it are equal.
    received: tuple[Pair, ...] = dataclasses.field(default=(), compare=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Info(_Value):
    language: str = DEFAULT_LANGUAGE
    categories: tuple[str, ...]
    event: str
    response_types: tuple[str, ...] = ()
    urgency: str
    severity: str
    certainty: str
    audience: str | None = None
    event_codes: tuple[Pair, ...] = ()
    effective: dt.datetime | None = None
    onset: dt.datetime | None = None
    expires: dt.datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: tuple[Pair, ...] = ()
    resources: tuple[Resource, ...] = ()
    areas: tuple[Area, ...] = ()

    _times = ("effective", "onset", "expires")
    _children = {"resources": Resource, "areas": Area}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Document(_Value):
    """One CAP 1.2 alert message."""

    identifier: str
    sender: str
    sent: dt.datetime
    status: str
    msg_type: str
    source: str | None = None
    scope: str
    restriction: str | None = None
    addresses: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    note: str | None = None
    references: tuple[Reference, ...] = ()
    incidents: tuple[str, ...] = ()
    infos: tuple[Info, ...] = ()

    _times = ("sent",)
    _children = {"references": Reference, "infos": Info}


# -- reading -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Limits:
    """Sizes a reader takes, which CAP leaves open; counted before anything costly is done."""

    elements: int = MAX_ELEMENTS
    polygons: int | None = None  # distinct polygons in all areas together (each language repeats its area)
    vertices: int | None = None  # in those polygons
    circles: int | None = None  # distinct circles


def parse(data: bytes, limits: Limits = Limits()) -> Document:
    """The Document in `data`, or BadRequest (not safe to read as XML) / Invalid (every violation).

    CPU-bound (up to a second for a worst-case megabyte): the API calls it off the event loop."""
    root = _xml(data, limits.elements)
    if root.tag != f"{{{NS}}}alert":
        local = root.tag.rpartition("}")[2]
        raise _invalid([check.problem(f"/{local}", f"the root must be alert in namespace {NS}, not {root.tag}")])
    if too_big := _size_problems(root, limits):  # before any element is read: those sizes cost little to count
        raise _invalid(too_big)
    problems = check.Problems()
    check.structure(root, "/alert", problems)
    check.requirements(root, problems)
    doc = _document(check.Reader(root, "/alert", problems))
    check.consistency(doc, problems)
    if problems:
        raise _invalid(problems)
    return doc


def _invalid(problems: list[check.Problem]) -> errors.Invalid:
    return check.invalid("the CAP document is not valid", problems)


def _size_problems(root: ET.Element, limits: Limits) -> list[check.Problem]:
    """The distinct polygons, their vertices and the distinct circles of all areas, over `limits`."""
    polygons = {(e.text or "").strip() for e in root.iter(f"{{{NS}}}polygon")}
    circles = {(e.text or "").strip() for e in root.iter(f"{{{NS}}}circle")}
    counts = (
        ("polygon", "polygons", limits.polygons, len(polygons)),
        ("polygon", "vertices in all polygons together", limits.vertices, sum(len(t.split()) for t in polygons)),
        ("circle", "circles", limits.circles, len(circles)),
    )
    return [check.problem(f"/alert/info/area/{name}", f"at most {most} distinct {what}, got {count}")
            for name, what, most, count in counts if most is not None and count > most]


_CHUNK = 64 * 1024  # expat holds the GIL while it parses a chunk: the event loop's thread waits no longer


def _xml(data: bytes, max_elements: int) -> ET.Element:
    if len(data) > MAX_BYTES:
        message = f"the CAP document is {len(data)} bytes, over the {MAX_BYTES} accepted"
        raise errors.TooLarge(message, limit=MAX_BYTES)
    # Counted in the bytes before expat calls Python for each element (0.7 s for a megabyte of them).
    # Tags, not elements (a comment or CDATA holding "<" counts too): an upper bound.
    tags = data.count(b"<") - data.count(b"</") - data.count(b"<?") - data.count(b"<!")
    if tags > max_elements:
        raise _invalid([check.problem("/alert", f"at most {max_elements} elements, got {tags}")])
    parser = defusedxml.ElementTree.DefusedXMLParser(
        target=ET.TreeBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True,
    )
    try:
        for at in range(0, len(data), _CHUNK):
            parser.feed(data[at:at + _CHUNK])
        return parser.close()
    except defusedxml.DTDForbidden as exc:
        message = f"the CAP document has a DOCTYPE ({exc.name}): DTDs are refused"
        raise errors.BadRequest(message, doctype=exc.name) from None
    except ET.ParseError as exc:
        line, column = exc.position[0], exc.position[1] + 1  # expat counts columns from 0
        reason = expat.ErrorString(exc.code)
        message = f"the CAP document is not well-formed XML: {reason} at line {line}, column {column}"
        raise errors.BadRequest(message, line=line, column=column) from None


def _document(r: check.Reader) -> Document:
    return Document(
        identifier=r.one("identifier"), sender=r.one("sender"), sent=r.one("sent"), status=r.one("status"),
        msg_type=r.one("msgType"), source=r.one("source"), scope=r.one("scope"), restriction=r.one("restriction"),
        addresses=r.one("addresses") or (), codes=r.many("code"), note=r.one("note"),
        references=tuple(Reference(*triplet) for triplet in r.one("references") or ()),
        incidents=r.one("incidents") or (), infos=tuple(map(_info, r.children("info"))),
    )


def _info(r: check.Reader) -> Info:
    return Info(
        language=r.one("language") or DEFAULT_LANGUAGE, categories=r.many("category"), event=r.one("event"),
        response_types=r.many("responseType"), urgency=r.one("urgency"), severity=r.one("severity"),
        certainty=r.one("certainty"), audience=r.one("audience"), event_codes=_pairs(r, "eventCode"),
        effective=r.one("effective"), onset=r.one("onset"), expires=r.one("expires"),
        sender_name=r.one("senderName"), headline=r.one("headline"), description=r.one("description"),
        instruction=r.one("instruction"), web=r.one("web"), contact=r.one("contact"),
        parameters=_pairs(r, "parameter"), resources=tuple(map(_resource, r.children("resource"))),
        areas=tuple(map(_area, r.children("area"))),
    )


def _resource(r: check.Reader) -> Resource:
    return Resource(
        resource_desc=r.one("resourceDesc"), mime_type=r.one("mimeType"), size=r.one("size"), uri=r.one("uri"),
        deref_uri=r.one("derefUri"), digest=r.one("digest"),
    )


def _area(r: check.Reader) -> Area:
    return Area(
        area_desc=r.one("areaDesc"), polygons=r.many("polygon"), circles=r.many("circle"),
        geocodes=_pairs(r, "geocode"), altitude=r.one("altitude"), ceiling=r.one("ceiling"),
        received=tuple((name, e.text or "") for name in _NUMBERED for e in r.element.findall(f"{{{NS}}}{name}")),
    )


_NUMBERED = ("polygon", "circle", "altitude", "ceiling")


def _pairs(r: check.Reader, name: str) -> tuple[Pair, ...]:
    return tuple((pair.one("valueName"), pair.one("value")) for pair in r.children(name))


# -- writing -----------------------------------------------------------------------------------------

Items = Iterable[tuple[str, Any]]  # (element name, text | Items | None to leave it out), in schema order


def dumps(doc: Document) -> bytes:
    """CAP 1.2 XML (UTF-8, declared, CAP as the default namespace), elements in schema order."""
    root = ET.Element(f"{{{NS}}}alert")
    _fill(root, _alert(doc))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=NS) + b"\n"


def format_time(value: dt.datetime) -> str:
    """CAP's date-time text, in the value's own offset: 2030-01-01T10:00:00+01:00; UTC is -00:00
    (as CAP 1.2 asks) unless it was received as +00:00."""
    offset = value.utcoffset()
    assert offset is not None, "a CAP time is aware"
    minutes = int(offset.total_seconds()) // 60
    plus = minutes > 0 or (minutes == 0 and value.tzname() == check.PLUS_ZERO.tzname(None))
    sign = "+" if plus else "-"
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _number(value: float) -> str:
    """The shortest text that reads back as the same float, in plain decimals: 48.85, 2, 0.00001."""
    text = repr(float(value))
    if "e" in text:
        text = format(decimal.Decimal(text), "f")
    return text.removesuffix(".0")


def _fill(parent: ET.Element, items: Items) -> None:
    for name, value in items:
        if value is not None:
            child = ET.SubElement(parent, f"{{{NS}}}{name}")
            if isinstance(value, str):
                child.text = value
            else:
                _fill(child, value)


def _optional(write: Any, value: Any) -> str | None:
    return None if value is None else write(value)


def _spaced(entries: tuple[str, ...]) -> str | None:
    return " ".join(f'"{entry}"' if not entry or re.search(r"\s", entry) else entry for entry in entries) or None


def _pair(name: str, value: str) -> Items:
    return (("valueName", name), ("value", value))


def _alert(doc: Document) -> Iterator[tuple[str, Any]]:
    yield from (("identifier", doc.identifier), ("sender", doc.sender), ("sent", format_time(doc.sent)))
    yield from (("status", doc.status), ("msgType", doc.msg_type), ("source", doc.source), ("scope", doc.scope))
    yield from (("restriction", doc.restriction), ("addresses", _spaced(doc.addresses)))
    yield from (("code", code) for code in doc.codes)
    yield "note", doc.note
    triplets = (f"{ref.sender},{ref.identifier},{format_time(ref.sent)}" for ref in doc.references)
    yield "references", " ".join(triplets) or None
    yield "incidents", _spaced(doc.incidents)
    yield from (("info", _info_items(info)) for info in doc.infos)


def _info_items(info: Info) -> Iterator[tuple[str, Any]]:
    yield "language", info.language
    yield from (("category", category) for category in info.categories)
    yield "event", info.event
    yield from (("responseType", response) for response in info.response_types)
    yield from (("urgency", info.urgency), ("severity", info.severity), ("certainty", info.certainty))
    yield "audience", info.audience
    yield from (("eventCode", _pair(*pair)) for pair in info.event_codes)
    for name in ("effective", "onset", "expires"):
        yield name, _optional(format_time, getattr(info, name))
    yield from (("senderName", info.sender_name), ("headline", info.headline), ("description", info.description))
    yield from (("instruction", info.instruction), ("web", info.web), ("contact", info.contact))
    yield from (("parameter", _pair(*pair)) for pair in info.parameters)
    yield from (("resource", _resource_items(resource)) for resource in info.resources)
    yield from (("area", _area_items(area)) for area in info.areas)


def _resource_items(resource: Resource) -> Items:
    return (
        ("resourceDesc", resource.resource_desc), ("mimeType", resource.mime_type),
        ("size", _optional(str, resource.size)), ("uri", resource.uri), ("derefUri", resource.deref_uri),
        ("digest", resource.digest),
    )


def _area_items(area: Area) -> Iterator[tuple[str, Any]]:
    yield "areaDesc", area.area_desc
    for n, ring in enumerate(area.polygons):
        yield "polygon", _as_received(area, "polygon", n, ring) or " ".join(
            f"{_number(lat)},{_number(lon)}" for lat, lon in ring)
    for n, (lat, lon, radius) in enumerate(area.circles):
        yield "circle", _as_received(area, "circle", n, (lat, lon, radius)) or (
            f"{_number(lat)},{_number(lon)} {_number(radius)}")
    yield from (("geocode", _pair(*pair)) for pair in area.geocodes)
    for name in ("altitude", "ceiling"):
        value = getattr(area, name)
        yield name, None if value is None else _as_received(area, name, 0, value) or _number(value)


def _as_received(area: Area, name: str, index: int, value: Any) -> str | None:
    """The text the `index`th `name` of `area` came as, if it still reads as `value`."""
    texts = [text for element, text in area.received if element == name]
    if index >= len(texts):
        return None
    try:
        return texts[index] if check.READ[name](texts[index]) == value else None
    except ValueError:
        return None
