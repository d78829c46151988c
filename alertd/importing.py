"""CSV imports of the audience: subscribers and sirens.

Subscribers: ``id,phone,push_token,locale,zones,lat,lon,exercise`` (``id`` and ``zones`` columns
required; zones separated by ``;``, ``,`` or spaces; locale ``fr`` when empty; a phone or a push
token or both; ``lat``/``lon`` in decimal degrees, both or neither; ``exercise`` yes/no, 1/0, true/false).
Rows are validated by the same rules as ``POST /v1/subscribers`` (`audience.parse_subscribers`):
phone numbers are normalised to E.164 (French notation by default).
Sirens: ``id,zone,label,lat,lon`` (``lat``/``lon`` optional, both or neither).

A file is read once, as a stream, in UTF-8 (a byte-order mark is fine), with ``,`` or ``;`` as the
delimiter (whichever the header uses). Blank lines are skipped. Every bad row is reported with its
line number (the header is line 1) and the good rows are kept. An id seen twice: the later row wins,
and a problem on its line says which line it replaces.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from alertd import audience, errors, model, zones

Source = str | os.PathLike[str] | IO[str] | IO[bytes]
ZONE_SEPARATORS = re.compile(r"[;,\s]+")
SIREN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


@dataclasses.dataclass(frozen=True)
class RowProblem:
    line: int  # in the file, the header being line 1
    field: str  # a column name, or "row" / "header" / "file"
    reason: str


@dataclasses.dataclass(frozen=True)
class ImportResult:
    items: tuple[Any, ...]  # model.Recipient or model.Siren, one per id
    problems: tuple[RowProblem, ...]


@dataclasses.dataclass(frozen=True)
class Columns:
    required: tuple[str, ...]
    optional: tuple[str, ...]


SUBSCRIBERS = Columns(required=("id", "zones"), optional=("phone", "push_token", "locale", "lat", "lon", "exercise"))
_YES, _NO = ("1", "yes", "y", "true", "oui", "x"), ("", "0", "no", "n", "false", "non")
SIRENS = Columns(required=("id", "zone"), optional=("label", "lat", "lon"))


def read_subscribers(source: Source) -> ImportResult:
    return _collect(iter_subscribers(source))


def read_sirens(source: Source) -> ImportResult:
    return _collect(iter_sirens(source))


def iter_subscribers(source: Source) -> Iterator[model.Recipient | RowProblem]:
    """Recipients and problems in file order, without holding the file: for very large imports."""
    return _parse(source, SUBSCRIBERS, _subscriber)


def iter_sirens(source: Source) -> Iterator[model.Siren | RowProblem]:
    return _parse(source, SIRENS, _siren)


def _collect(results: Iterable[Any]) -> ImportResult:
    items: dict[str, Any] = {}
    problems = []
    for result in results:
        if isinstance(result, RowProblem):
            problems.append(result)
        else:
            items[result.id] = result
    return ImportResult(tuple(items.values()), tuple(problems))


# -- rows --------------------------------------------------------------------------------------


def _subscriber(row: Mapping[str, str]) -> model.Recipient:
    data: dict[str, Any] = {key: row[key] for key in ("id", "phone", "push_token") if key in row}
    if "locale" in row:
        data["locale"] = _locale(row["locale"])
    if "zones" in row:
        data["zones"] = _split_zones(row["zones"])
    for key in ("lat", "lon"):
        if row.get(key, "").strip():
            data[key] = _number(row[key], key)
    if "exercise" in row:
        data["exercise"] = _flag(row["exercise"])
    (recipient,) = audience.parse_subscribers(json.dumps(data).encode())
    return recipient


def _number(raw: str, field: str) -> float:
    try:
        return float(raw.strip().replace(",", "."))  # a French spreadsheet writes 48,85
    except ValueError:
        raise errors.Invalid(f"not a number: {raw!r}", field=field) from None


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text not in _YES + _NO:
        raise errors.Invalid(f"not yes or no: {raw!r}", field="exercise")
    return text in _YES


def _siren(row: Mapping[str, str]) -> model.Siren:
    problems = []
    if not SIREN_ID.fullmatch(row.get("id", "")):
        problems.append({"field": "id", "message": "required: letters, digits and _ . : - (at most 100)"})
    zone = row.get("zone", "").upper()
    if not re.fullmatch(zones.LOCAL_PATTERN, zone):
        problems.append({"field": "zone", "message": f"not an INSEE commune or département code: {zone!r}"})
    lat, lon = (_siren_coordinate(row, key, limit, problems) for key, limit in (("lat", 90), ("lon", 180)))
    given = [key for key in ("lat", "lon") if row.get(key, "").strip()]
    if len(given) == 1:
        problems.append({"field": "lon" if given == ["lat"] else "lat", "message": "give both lat and lon, or neither"})
    if problems:
        raise errors.Invalid(problems[0]["message"], field=problems[0]["field"], errors=problems)
    return model.Siren(id=row["id"], zone=zone, label=row.get("label", ""), lat=lat, lon=lon)


def _siren_coordinate(row: Mapping[str, str], key: str, limit: float, problems: list[dict]) -> float | None:
    if not row.get(key, "").strip():
        return None
    try:
        value = _number(row[key], key)
    except errors.Invalid as exc:
        problems.append({"field": key, "message": exc.message})
        return None
    if not -limit <= value <= limit:
        problems.append({"field": key, "message": f"must be between -{limit} and {limit}"})
        return None
    return value


def _split_zones(raw: str) -> list[str]:
    return [zone for zone in ZONE_SEPARATORS.split(raw.upper()) if zone]


def _locale(raw: str) -> str:
    """Spelled as `orders` expects: "FR" → "fr", "fr_fr" → "fr-FR"."""
    language, _, region = raw.replace("_", "-").partition("-")
    return f"{language.lower()}-{region.upper()}" if region else language.lower()


def _problems(line: int, exc: errors.Invalid, row: Mapping[str, str]) -> Iterator[RowProblem]:
    for error in exc.errors or [{"field": exc.field, "message": exc.message}]:
        name, _, index = (error["field"] or "row").partition(".")
        reason = error["message"]
        if name == "zones" and index.isdigit():  # orders locates a bad zone by its position
            reason = f"{reason}: {_split_zones(row['zones'])[int(index)]!r}"
        yield RowProblem(line, name, reason)


# -- the file ----------------------------------------------------------------------------------


def _parse(
    source: Source, columns: Columns, build: Callable[[Mapping[str, str]], Any]
) -> Iterator[Any]:
    seen: dict[str, int] = {}
    with _text(source) as text:
        for row in _rows(text, columns):
            if isinstance(row, RowProblem):
                yield row
                continue
            line, fields = row
            try:
                item = build(fields)
            except errors.Invalid as exc:
                yield from _problems(line, exc, fields)
                continue
            if item.id in seen:
                yield RowProblem(line, "id", f"duplicate of line {seen[item.id]}: this row replaces it")
            seen[item.id] = line
            yield item


@contextlib.contextmanager
def _text(source: Source) -> Iterator[IO[str]]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8-sig", newline="") as f:
            yield f
    elif isinstance(source, (io.RawIOBase, io.BufferedIOBase)):
        wrapper = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
        try:
            yield wrapper
        finally:
            wrapper.detach()  # the caller's stream stays open
    else:
        yield source  # type: ignore[misc]


def _rows(text: IO[str], columns: Columns) -> Iterator[tuple[int, dict[str, str]] | RowProblem]:
    try:
        first = text.readline().lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        yield RowProblem(1, "file", f"not UTF-8 text: {exc}")
        return
    delimiter = ";" if first.count(";") > first.count(",") else ","
    header = [name.strip().lower() for name in next(csv.reader([first], delimiter=delimiter), [])]
    problems = _header_problems(header, columns)
    yield from problems
    if any(p.reason.startswith("missing") for p in problems):
        return
    reader = csv.reader(text, delimiter=delimiter)
    try:
        for values in reader:
            line = reader.line_num + 1  # the header was read before the reader started
            if len(values) > len(header):
                yield RowProblem(line, "row", f"{len(values)} fields but the header names {len(header)}")
            elif any(v.strip() for v in values):  # a shorter row leaves its last columns empty
                yield line, {name: v.strip() for name, v in zip(header, values, strict=False) if v.strip()}
    except (csv.Error, UnicodeDecodeError) as exc:
        yield RowProblem(reader.line_num + 2, "file", f"cannot read further: {exc}")


def _header_problems(header: list[str], columns: Columns) -> list[RowProblem]:
    known = columns.required + columns.optional
    expected = ", ".join(known)
    problems = [RowProblem(1, name, f"missing column (expected {expected})")
                for name in columns.required if name not in header]
    problems += [RowProblem(1, name, f"unknown column, ignored (expected {expected})")
                 for name in header if name and name not in known]
    problems += [RowProblem(1, name, "column named twice")
                 for name in sorted(set(header)) if header.count(name) > 1]
    return problems
