"""Bearer tokens, roles and jurisdictions: plain decisions; the web layer looks tokens up.

A token reads `alertd_<token_id>_<secret>`. Only the SHA-256 of the secret is stored, so a leaked
database does not leak working tokens, and the plaintext is shown once, when it is made.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from alertd import errors, geo, model

PREFIX = "alertd"
_TOKEN = re.compile(r"alertd_(?P<id>[0-9a-f]{8,32})_(?P<secret>[A-Za-z0-9_-]{20,128})")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(
    cell: str, role: model.Role, zones: list[str], now: dt.datetime, boundary: tuple[model.Ring, ...] = ()
) -> tuple[str, model.Token]:
    """A fresh token for crisis cell `cell`: its plaintext (shown once) and its record to store.
    `boundary` outlines the jurisdiction for areas drawn as shapes."""
    bad = [z for z in zones if not re.fullmatch(model.ZONE_PATTERN, z)]
    if bad or not zones:
        message = f"not zone codes: {', '.join(bad)}" if bad else "at least one zone is required"
        raise errors.Invalid(message, field="zones", errors=[{"field": "zones", "message": message}])
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    token = model.Token(
        id=token_id,
        cell=cell,
        role=model.Role(role),
        zones=tuple(dict.fromkeys(zones)),
        secret_hash=hash_secret(secret),
        created_at=model.to_utc(now),
        boundary=boundary,
    )
    return f"{PREFIX}_{token_id}_{secret}", token


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
    polygons = {"Polygon": [data.get("coordinates")], "MultiPolygon": data.get("coordinates")}.get(kind)
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


def check(token: model.Token | None, presented_hash: str, token_id: str | None = None) -> model.Token:
    """The stored token if it authenticates the presented secret (and id, when given)."""
    if token is None or (token_id is not None and token_id != token.id):
        raise errors.Unauthenticated()
    if not hmac.compare_digest(token.secret_hash.encode(), presented_hash.encode()):
        raise errors.Unauthenticated()
    if token.revoked:
        raise errors.Unauthenticated("This token has been revoked.", reason="revoked")
    return token


def require_role(token: model.Token, *roles: model.Role) -> None:
    if token.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise errors.Forbidden(
            f"Role {token.role.value} may not do that (needs {allowed}).", role=token.role, allowed=roles
        )


def outside(token: model.Token, zones: Iterable[str]) -> list[str]:
    """The zones that lie outside the token's jurisdiction."""
    return [z for z in zones if not any(model.zone_within(z, mine) for mine in token.zones)]


def covers(token: model.Token, area: model.Area) -> bool:
    """Whether the whole area lies in the token's jurisdiction."""
    if outside(token, area.zones):
        return False
    if not area.shaped or model.NATIONAL in token.zones:
        return True
    return bool(token.boundary) and geo.outside(geo.Shapes.of(area.polygons, area.circles), token.boundary) is None


def check_area(token: model.Token, area: model.Area) -> None:
    """Refuse an area that leaves the token's jurisdiction, saying which part does."""
    check_jurisdiction(token, list(area.zones))
    if not area.shaped or model.NATIONAL in token.zones:
        return
    if not token.boundary:
        raise errors.OutsideJurisdiction(
            "The caller's jurisdiction has no boundary drawn, so an area drawn as shapes cannot be checked "
            "against it: target zone codes, or ask an admin for a token with a boundary.",
            field="area.polygons" if area.polygons else "area.circles",
        )
    beyond = geo.outside(geo.Shapes.of(area.polygons, area.circles), token.boundary)
    if beyond is not None:
        raise errors.OutsideJurisdiction(
            f"The area leaves the caller's jurisdiction by {beyond.area_km2:.2f} km².",
            field="area.polygons" if area.polygons else "area.circles",
            outside_area=beyond.to_json(),
        )


def check_jurisdiction(token: model.Token, zones: list[str], field: str = "area.zones") -> None:
    """Refuse an area with any zone outside the token's zones, naming every such zone."""
    if beyond := outside(token, zones):
        raise errors.OutsideJurisdiction(
            f"The area leaves the caller's jurisdiction: {', '.join(beyond)}.",
            field=field,
            outside=beyond,
        )
