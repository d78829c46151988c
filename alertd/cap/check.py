"""The rules of OASIS CAP 1.2 (urn:oasis:names:tc:emergency:cap:1.2) that `cap.parse` enforces.

Three kinds, all reported together, each problem at the XPath of the element at fault: the schema's
shape (namespace, known elements, their order and count: `structure`), each element's lexical form
(enumerations, date-times, coordinates…: the readers in `READ`, applied by `Reader`), and the rules
between elements (`requirements` on the tree, `consistency` on the values read).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET

import shapely

from alertd import errors

NS = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"  # the schema's one extension: a signature, last
# CAP writes UTC as -00:00; a +00:00 received is accepted too (the schema allows it) and kept as
# written: this zone's name is the only trace of that sign.
PLUS_ZERO = dt.timezone(dt.timedelta(0), "+00:00")

# Each complex element's children in schema order; `?` optional, `*` any number, `+` at least one.
_SHAPES = {
    "alert": "identifier sender sent status msgType source? scope restriction? addresses? code* note? "
    "references? incidents? info*",
    "info": "language? category+ event responseType* urgency severity certainty audience? eventCode* "
    "effective? onset? expires? senderName? headline? description? instruction? web? contact? "
    "parameter* resource* area*",
    "resource": "resourceDesc mimeType size? uri? derefUri? digest?",
    "area": "areaDesc polygon* circle* geocode* altitude? ceiling?",
    "eventCode": "valueName value",
    "parameter": "valueName value",
    "geocode": "valueName value",
}
# (name, required, repeatable) per child, in order.
SCHEMA = {
    parent: tuple((word.rstrip("?*+"), word[-1] not in "?*", word[-1] in "*+") for word in shape.split())
    for parent, shape in _SHAPES.items()
}
REPEATABLE = frozenset(name for children in SCHEMA.values() for name, _, many in children if many)
ENUMS = {
    "status": "Actual Exercise System Test Draft",
    "msgType": "Alert Update Cancel Ack Error",
    "scope": "Public Restricted Private",
    "category": "Geo Met Safety Security Rescue Fire Health Env Transport Infra CBRNE Other",
    "responseType": "Shelter Evacuate Prepare Execute Avoid Monitor Assess AllClear None",
    "urgency": "Immediate Expected Future Past Unknown",
    "severity": "Extreme Severe Moderate Minor Unknown",
    "certainty": "Observed Likely Possible Unlikely Unknown",
}
REFERRING = ("Update", "Cancel", "Ack", "Error")  # the msgTypes about earlier messages

Problem = dict[str, str | None]  # a problem of the whole body has field None
MAX_PROBLEMS = 100  # listed in an answer; the rest are counted (a 1 MB body once gave 18 MB of them)


def problem(field: str, message: str) -> Problem:
    return {"field": field, "message": message}


class Problems(list):
    """Problems as found, the first MAX_PROBLEMS kept and the rest counted in `more`."""

    more = 0

    def append(self, item: Problem) -> None:
        if len(self) < MAX_PROBLEMS:
            super().append(item)
        else:
            self.more += 1

    def extend(self, items) -> None:
        for item in items:
            self.append(item)

    @property
    def total(self) -> int:
        return len(self) + self.more


def invalid(summary: str, found: list[Problem]) -> errors.Invalid:
    """`errors.Invalid` for every problem found, at most MAX_PROBLEMS of them listed; `summary`
    says what is not valid, the detail also how many problems there are when not all are listed."""
    listed = found if isinstance(found, Problems) else Problems(found[:MAX_PROBLEMS])
    total = found.total if isinstance(found, Problems) else len(found)
    more = total - len(listed)
    message = f"{summary}: {total} problems, the first {len(listed)} listed" if more else summary
    return errors.Invalid(message, field=listed[0]["field"], errors=list(listed), more_errors=more or None)


# -- lexical forms: text in, value out, ValueError(detail) when the text is not that form -------------

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)([+-])(\d\d):(\d\d)")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_IDENTIFIER = re.compile(r"[^\s,<&]+")
_LANGUAGE = re.compile(r"[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*")
_ENTRY = re.compile(r'\s*(?:"([^"]*)"|([^\s"]+))(?=\s|$)')


def time(text: str) -> dt.datetime:
    """A CAP date-time, aware, in the offset it was written with (never converted)."""
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a CAP date-time like 2030-01-01T10:00:00+01:00 (numeric offset, no Z)")
    *fields, sign, hours, minutes = match.groups()
    year, month, day, hour, minute, second = map(int, fields)
    offset = dt.timedelta(hours=int(hours), minutes=int(minutes))
    try:
        zone = PLUS_ZERO if sign == "+" and not offset else dt.timezone(-offset if sign == "-" else offset)
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a real date-time: {exc}") from None


def decimal(text: str) -> float:
    if not _DECIMAL.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a decimal number")
    return float(text)


def size(text: str) -> int:
    if not re.fullmatch(r"\+?\d+", text.strip()):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(text)


def identifier(text: str) -> str:
    if not _IDENTIFIER.fullmatch(text):
        raise ValueError(f"{text!r} must be non-empty, without spaces, commas, < or &")
    return text


def language(text: str) -> str:
    if not _LANGUAGE.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a language tag like fr, fr-CA, es-419 or zh-Hant-TW")
    return text.strip()


def spaced(text: str) -> tuple[str, ...]:
    """Space-delimited entries, those holding whitespace in double quotes (addresses, incidents)."""
    entries, at, end = [], 0, len(text.rstrip())
    while at < end:
        match = _ENTRY.match(text, at)
        if not match:
            raise ValueError(f"a double quote is misplaced or not closed in {text[at:].strip()[:40]!r}")
        entries.append(match[2] if match[1] is None else match[1])
        at = match.end()
    return tuple(entries)


def references(text: str) -> tuple[tuple[str, str, dt.datetime], ...]:
    """Whitespace-separated sender,identifier,sent triplets; every malformed one is named."""
    found, bad = [], []
    for triplet in text.split():
        parts = triplet.split(",")
        try:
            if len(parts) != 3:
                raise ValueError("not sender,identifier,sent")
            found.append((identifier(parts[0]), identifier(parts[1]), time(parts[2])))
        except ValueError as exc:
            bad.append(f"{triplet!r}: {exc}")
    if bad:
        raise ValueError("; ".join(bad))
    return tuple(found)


def _point(text: str) -> tuple[float, float]:
    if text.count(",") != 1:
        raise ValueError(f"{text!r} is not a lat,lon pair")
    lat, lon = map(decimal, text.split(","))
    if not -90 <= lat <= 90:
        raise ValueError(f"latitude in {text!r} is outside [-90, 90]")
    if not -180 <= lon <= 180:
        raise ValueError(f"longitude in {text!r} is outside [-180, 180]")
    return lat, lon


def polygon(text: str) -> tuple[tuple[float, float], ...]:
    pairs = text.split()
    if len(pairs) < 4:
        raise ValueError(f"a polygon needs at least 4 space-separated lat,lon pairs, not {len(pairs)}")
    points = tuple(map(_point, pairs))
    if points[0] != points[-1]:
        raise ValueError("the polygon is not closed: its first and last points differ")
    if not shapely.LinearRing([(lon, lat) for lat, lon in points]).is_simple:
        raise ValueError("the polygon crosses itself")
    return points


def circle(text: str) -> tuple[float, float, float]:
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not a circle 'lat,lon radius' (radius in km)")
    radius = decimal(parts[1])
    if radius < 0:
        raise ValueError(f"the radius {parts[1]} is negative")
    return (*_point(parts[0]), radius)


def _one_of(name: str, values: str) -> Callable[[str], str]:
    allowed = values.split()

    def read(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not a CAP {name}: one of {', '.join(allowed)}")
        return text

    return read


# The reader of each simple element's text; the others are free text, kept exactly.
READ: dict[str, Callable[[str], Any]] = {
    "identifier": identifier, "sender": identifier, "sent": time, "effective": time, "onset": time,
    "expires": time, "references": references, "addresses": spaced, "incidents": spaced,
    "language": language, "polygon": polygon, "circle": circle, "altitude": decimal, "ceiling": decimal,
    "size": size, **{name: _one_of(name, values) for name, values in ENUMS.items()},
}


class Reader:
    """One CAP element's children, read by name (in whatever order they came: `structure` judges
    the order); a child that does not read is noted at its XPath and read as None."""

    def __init__(self, element: ET.Element, path: str, problems: list[Problem],
                 read: dict[tuple[str, str], Any] | None = None) -> None:
        self.element, self.path, self.problems = element, path, problems
        # Each distinct text is read once (a polygon costs GEOS a check): the text read, or its ValueError.
        self.read = {} if read is None else read

    def one(self, name: str) -> Any:
        found = self._all(name)
        return self._read(name, found[0], self._path(name, 1)) if found else None

    def many(self, name: str) -> tuple[Any, ...]:
        return tuple(self._read(name, e, self._path(name, i)) for i, e in enumerate(self._all(name), 1))

    def children(self, name: str) -> list[Reader]:
        return [Reader(e, self._path(name, i), self.problems, self.read) for i, e in enumerate(self._all(name), 1)]

    def _all(self, name: str) -> list[ET.Element]:
        return self.element.findall(f"{{{NS}}}{name}")

    def _path(self, name: str, index: int) -> str:
        return f"{self.path}/{name}[{index}]" if name in REPEATABLE else f"{self.path}/{name}"

    def _read(self, name: str, element: ET.Element, path: str) -> Any:
        key = (name, element.text or "")
        if key not in self.read:
            try:
                self.read[key] = READ.get(name, str)(key[1])
            except ValueError as exc:
                self.read[key] = exc
        value = self.read[key]
        if isinstance(value, ValueError):
            self.problems.append(problem(path, str(value)))
            return None
        return value


# -- the schema's shape ------------------------------------------------------------------------------


def structure(element: ET.Element, path: str, problems: list[Problem]) -> None:
    """Namespaces, known elements, their order and their count, under `element` (a CAP element)."""
    parent = element.tag.rpartition("}")[2]
    order = [name for name, _, _ in SCHEMA[parent]] + ["Signature"]
    counts: dict[str, int] = {}
    furthest = -1
    for child in element:
        namespace, _, name = child.tag[1:].rpartition("}") if child.tag[0] == "{" else ("", "", child.tag)
        if namespace == DSIG_NS and parent == "alert":
            furthest = len(order) - 1
            continue
        if namespace != NS:
            problems.append(problem(f"{path}/{name}", f"{name} is in namespace {namespace or '(none)'}, not {NS}"))
            continue
        counts[name] = counts.get(name, 0) + 1
        where = f"{path}/{name}[{counts[name]}]" if name in REPEATABLE else f"{path}/{name}"
        if name not in order[:-1]:
            problems.append(problem(where, f"{name} is not an element of {parent} in CAP 1.2"))
            continue
        position = order.index(name)
        if position < furthest:
            problems.append(problem(where, f"{name} is out of sequence: it must come before {order[furthest]}"))
        elif counts[name] == 2 and name not in REPEATABLE:
            problems.append(problem(where, f"{name} may appear only once in {parent}"))
        furthest = max(furthest, position)
        if name in SCHEMA:
            structure(child, where, problems)
        elif len(child):
            problems.append(problem(where, f"{name} holds text, not elements"))
    for name, required, _ in SCHEMA[parent]:
        if required and name not in counts:
            problems.append(problem(f"{path}/{name}", f"the required element {name} is missing"))


# -- rules between elements --------------------------------------------------------------------------


def _text(element: ET.Element, name: str) -> str:
    found = element.find(f"{{{NS}}}{name}")
    return "" if found is None else (found.text or "").strip()


def requirements(root: ET.Element, problems: list[Problem]) -> None:
    """Elements that another element calls for."""
    msg_type, scope = _text(root, "msgType"), _text(root, "scope")
    if msg_type in REFERRING and not _text(root, "references"):
        problems.append(problem("/alert/references", f"msgType {msg_type} must name the messages it is about"))
    if scope == "Restricted" and not _text(root, "restriction"):
        problems.append(problem("/alert/restriction", "a Restricted alert must say who may read it"))
    if scope == "Private" and not _text(root, "addresses"):
        problems.append(problem("/alert/addresses", "a Private alert must name its addressees"))
    for i, info in enumerate(root.findall(f"{{{NS}}}info"), 1):
        for j, area in enumerate(info.findall(f"{{{NS}}}area"), 1):
            if area.find(f"{{{NS}}}ceiling") is not None and area.find(f"{{{NS}}}altitude") is None:
                problems.append(problem(f"/alert/info[{i}]/area[{j}]/ceiling", "ceiling needs an altitude"))


def consistency(doc: Any, problems: list[Problem]) -> None:
    """Rules between the values read (any may be None where it did not read): what the references
    name, ceiling against altitude."""
    for ref in doc.references:
        if (ref.sender, ref.identifier) == (doc.sender, doc.identifier):
            problems.append(problem("/alert/references", f"{ref.identifier} is this very document"))
        elif doc.sent is not None and ref.sent > doc.sent:
            problems.append(problem("/alert/references", f"{ref.identifier} was sent after this document"))
    # No rule ties effective, onset or expires to sent: publishers (Environment Canada, the Bureau
    # of Meteorology, IPAWS, DWD, MeteoAlarm) date effective seconds to hours before sent. An alert
    # already past is alertd's own refusal (`cap.alert`), made against the clock, not here.
    for i, info in enumerate(doc.infos, 1):
        for j, area in enumerate(info.areas, 1):
            if area.altitude is not None and area.ceiling is not None and area.ceiling < area.altitude:
                problems.append(problem(f"/alert/info[{i}]/area[{j}]/ceiling", "ceiling is below altitude"))
