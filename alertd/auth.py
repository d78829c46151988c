"""Cells, users, bearer tokens, roles and jurisdictions: plain decisions; the web layer looks callers up.

A token reads `alertd_<token_id>_<secret>`. Only the SHA-256 of the secret is stored, so a leaked
database does not leak working tokens, and the plaintext is shown once, when it is made.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from alertd import errors, geo, model, people, zones

PREFIX = "alertd"
CAP_SENDER = r"[^\s,<&]+"  # CAP 1.2: a sender has no whitespace, commas, < or &
_TOKEN = re.compile(r"alertd_(?P<id>[0-9a-f]{8,32})_(?P<secret>[A-Za-z0-9_-]{20,128})")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(
    user: people.User, now: dt.datetime, expires: dt.timedelta | None = None
) -> tuple[str, people.Token]:
    """A fresh token of `user`: its plaintext (shown once) and its record to store. It expires after
    `expires`, by default `people.PERSON_TOKEN_DAYS` (`MACHINE_TOKEN_DAYS` for a machine client)."""
    if expires is None:
        expires = dt.timedelta(days=people.MACHINE_TOKEN_DAYS if user.machine else people.PERSON_TOKEN_DAYS)
    if expires <= dt.timedelta(0):
        raise _invalid("expires", "a token must expire after it is made")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = model.to_utc(now)
    token = people.Token(
        id=token_id, user=user.id, secret_hash=hash_secret(secret), created_at=now, expires_at=now + expires,
    )
    return f"{PREFIX}_{token_id}_{secret}", token


def new_cell(
    id: str, name: str, zones: Iterable[str], now: dt.datetime, *, senders: Iterable[str] = (),
    boundary: tuple[model.Ring, ...] = (), approval: Mapping[str, str] | None = None,
    approval_minutes: int = people.APPROVAL_MINUTES, rate: people.Rate | None = None,
) -> people.Cell:
    """A crisis cell, checked: `errors.Invalid` names the field at fault. Its senders default to its
    id; `approval` overrides `people.DEFAULT_APPROVAL` key by key."""
    cell_id = id
    if not people.valid_cell_id(cell_id):
        raise _invalid("id", f"not a cell id (lower case letters, digits and inner dashes): {cell_id!r}")
    if not name.strip():
        raise _invalid("name", "a cell needs a name")
    senders = tuple(dict.fromkeys(senders)) or (cell_id,)
    if bad := [s for s in senders if not re.fullmatch(CAP_SENDER, s)]:
        raise _invalid("senders", f"not CAP senders (no spaces, commas, < or &): {', '.join(map(repr, bad))}")
    rate = rate or people.Rate()
    if not (rate.per_minute > 0 and rate.burst >= 1):
        raise _invalid("rate", "a rate needs a positive per_minute and a burst of at least 1")
    if not isinstance(approval_minutes, int) or approval_minutes < 1:
        raise _invalid("approval_minutes", "approval_minutes must be a whole number of minutes, at least 1")
    return people.Cell(
        id=cell_id, name=name.strip(), zones=check_zones(zones), senders=senders, created_at=model.to_utc(now),
        boundary=tuple(boundary), approval=approval_policy(approval or {}), approval_minutes=approval_minutes,
        rate=rate,
    )


def approval_policy(overrides: Mapping[str, str]) -> dict[str, people.Approval]:
    """`people.DEFAULT_APPROVAL` with `overrides` (status or "cancel" → "required" | "none")."""
    if unknown := sorted(set(overrides) - set(people.APPROVAL_KEYS)):
        raise _invalid("approval", f"not statuses nor cancel: {', '.join(unknown)}")
    try:
        return {**people.DEFAULT_APPROVAL, **{k: people.Approval(v) for k, v in overrides.items()}}
    except ValueError:
        raise _invalid("approval", "each approval is required or none") from None


def new_user(
    name: str, cell_id: str, roles: Iterable[model.Role | str], now: dt.datetime, *, machine: bool = False,
    trusted: bool = False,
) -> people.User:
    """A person, or a machine client, of the cell `cell_id`, checked: `errors.Invalid` names the field."""
    if not people.valid_user_name(name):
        raise _invalid("name", f"not a user name (letters, digits, . _ @ -, up to 128): {name!r}")
    try:
        held = frozenset(model.Role(r) for r in roles)
    except ValueError:
        raise _invalid("roles", f"roles are {', '.join(r.value for r in model.Role)}") from None
    if not held:
        raise _invalid("roles", "a user needs at least one role")
    if trusted and not machine:
        raise _invalid("trusted", "only a machine client may be trusted; a person's alerts follow the cell's approval")
    return people.User(
        id=secrets.token_hex(8), cell=cell_id, name=name, roles=held, created_at=model.to_utc(now), machine=machine,
        trusted=trusted,
    )


def check_zones(codes: Iterable[str]) -> tuple[str, ...]:
    codes = list(codes)
    bad = [z for z in codes if not re.fullmatch(zones.PATTERN, z)]
    if bad or not codes:
        raise _invalid("zones", f"not zone codes: {', '.join(bad)}" if bad else "at least one zone is required")
    return tuple(dict.fromkeys(codes))


def _invalid(field: str, message: str) -> errors.Invalid:
    return errors.Invalid(message, field=field, errors=[{"field": field, "message": message}])


def boundary_from_geojson(data: object) -> tuple[model.Ring, ...]:
    """The outer rings of a GeoJSON Polygon or MultiPolygon (or a Feature or FeatureCollection of
    them) as (lat, lon) rings: GeoJSON writes longitude first, CAP and alertd latitude first."""
    if not isinstance(data, dict):
        raise errors.Invalid("the boundary is not a GeoJSON object", field="boundary")
    kind = data.get("type")
    if kind == "FeatureCollection":
        return tuple(ring for f in data.get("features") or () for ring in boundary_from_geojson(f))
    if kind == "Feature":
        return boundary_from_geojson(data.get("geometry"))
    coordinates = data.get("coordinates")
    # Loose JSON: the parse below is the check (anything else is a TypeError, ValueError or IndexError).
    polygons: Any = [coordinates] if kind == "Polygon" else coordinates if kind == "MultiPolygon" else None
    try:
        rings = tuple(tuple((float(lat), float(lon)) for lon, lat, *_ in polygon[0]) for polygon in polygons)
    except (TypeError, ValueError, IndexError):
        raise errors.Invalid(f"not a GeoJSON Polygon or MultiPolygon: {kind!r}", field="boundary") from None
    geo.check(rings, ())
    return rings


def parse_bearer(header: str | None) -> tuple[str, str]:
    """The token id and secret hash an `Authorization: Bearer alertd_…` header presents."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    match = _TOKEN.fullmatch(credentials.strip())
    if scheme.lower() != "bearer" or not match:
        raise errors.Unauthenticated()
    return match["id"], hash_secret(match["secret"])


def check(caller: people.Caller | None, presented_hash: str, token_id: str | None, now: dt.datetime) -> people.Caller:
    """The caller if its token authenticates the presented secret (and id, when given) and may act
    at `now`: not revoked, not expired, its user not disabled (each a 401 with its `reason`)."""
    if caller is None or (token_id is not None and token_id != caller.token.id):
        raise errors.Unauthenticated()
    if not hmac.compare_digest(caller.token.secret_hash.encode(), presented_hash.encode()):
        raise errors.Unauthenticated()
    if caller.token.revoked:
        raise errors.Unauthenticated("This token has been revoked.", reason="revoked")
    if caller.token.expired(now):
        raise errors.Unauthenticated("This token has expired: ask an admin for a new one.", reason="expired")
    if caller.account.disabled:
        raise errors.Unauthenticated("This token's user is disabled.", reason="disabled")
    return caller


def require_role(caller: people.Caller, *roles: model.Role) -> None:
    """Refuse a caller holding none of `roles`."""
    if not caller.may(*roles):
        held = ", ".join(sorted(r.value for r in caller.roles)) or "none"
        allowed = ", ".join(r.value for r in roles)
        raise errors.Forbidden(
            f"Role {held} may not do that (needs {allowed}).", roles=sorted(caller.roles), allowed=roles
        )


def outside(caller: people.Caller, codes: Iterable[str]) -> list[str]:
    """The zones that lie outside the caller's jurisdiction."""
    return [z for z in codes if not any(zones.within(z, mine) for mine in caller.zones)]


def covers(caller: people.Caller, area: model.Area) -> bool:
    """Whether the whole area lies in the caller's jurisdiction."""
    if outside(caller, area.zones):
        return False
    if not area.shaped or zones.NATIONAL in caller.zones:
        return True
    return bool(caller.boundary) and geo.outside(geo.Shapes.of(area.polygons, area.circles), caller.boundary) is None


def check_area(caller: people.Caller, area: model.Area) -> None:
    """Refuse an area that leaves the caller's jurisdiction, saying which part does."""
    check_jurisdiction(caller, list(area.zones))
    if not area.shaped or zones.NATIONAL in caller.zones:
        return
    if not caller.boundary:
        raise errors.OutsideJurisdiction(
            "The caller's jurisdiction has no boundary drawn, so an area drawn as shapes cannot be checked "
            "against it: target zone codes, or ask an admin to draw the cell's boundary.",
            field="area.polygons" if area.polygons else "area.circles",
        )
    beyond = geo.outside(geo.Shapes.of(area.polygons, area.circles), caller.boundary)
    if beyond is not None:
        raise errors.OutsideJurisdiction(
            f"The area leaves the caller's jurisdiction by {beyond.area_km2:.2f} km².",
            field="area.polygons" if area.polygons else "area.circles",
            outside_area=beyond.to_json(),
        )


def check_jurisdiction(caller: people.Caller, zones: list[str], field: str = "area.zones") -> None:
    """Refuse an area with any zone outside the caller's zones, naming every such zone."""
    if beyond := outside(caller, zones):
        raise errors.OutsideJurisdiction(
            f"The area leaves the caller's jurisdiction: {', '.join(beyond)}.",
            field=field,
            outside=beyond,
        )
