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

from alertd import errors, model

PREFIX = "alertd"
_TOKEN = re.compile(r"alertd_(?P<id>[0-9a-f]{8,32})_(?P<secret>[A-Za-z0-9_-]{20,128})")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(cell: str, role: model.Role, zones: list[str], now: dt.datetime) -> tuple[str, model.Token]:
    """A fresh token for crisis cell `cell`: its plaintext (shown once) and its record to store."""
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
    )
    return f"{PREFIX}_{token_id}_{secret}", token


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


def check_jurisdiction(token: model.Token, zones: list[str], field: str = "area.zones") -> None:
    """Refuse an area with any zone outside the token's zones, naming every such zone."""
    if beyond := outside(token, zones):
        raise errors.OutsideJurisdiction(
            f"The area leaves the caller's jurisdiction: {', '.join(beyond)}.",
            field=field,
            outside=beyond,
        )
