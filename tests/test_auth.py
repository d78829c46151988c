"""Tokens, roles and jurisdictions as a crisis cell meets them."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from alertd import auth, errors, model

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def token(role: model.Role = model.Role.ISSUER, zones: tuple[str, ...] = ("75",)) -> tuple[str, model.Token]:
    return auth.new_token("prefecture-75", role, list(zones), NOW)


def authenticate(header: str | None, stored: model.Token | None) -> model.Token:
    token_id, presented = auth.parse_bearer(header)
    found = stored if stored is not None and stored.secret_hash == presented else None  # the store's lookup
    return auth.check(found, presented, token_id)


# -- tokens ------------------------------------------------------------------------------------


def test_new_token_roundtrip():
    plaintext, stored = token()
    assert plaintext.startswith(f"alertd_{stored.id}_")
    assert plaintext.split("_", 2)[2] not in repr(stored)  # only the hash is kept
    assert stored.cell == "prefecture-75" and stored.role is model.Role.ISSUER
    assert stored.zones == ("75",) and stored.created_at == NOW
    assert authenticate(f"Bearer {plaintext}", stored) == stored
    assert authenticate(f"bearer   {plaintext} ", stored) == stored


def test_tokens_are_unique():
    (first, a), (second, b) = token(), token()
    assert first != second and a.id != b.id and a.secret_hash != b.secret_hash


def test_wrong_secret_is_refused():
    plaintext, stored = token()
    other, _ = token()
    forged = f"alertd_{stored.id}_{other.split('_', 2)[2]}"
    with pytest.raises(errors.Unauthenticated):
        authenticate(f"Bearer {forged}", stored)
    with pytest.raises(errors.Unauthenticated):
        auth.check(stored, auth.parse_bearer(f"Bearer {forged}")[1])


def test_another_tokens_id_is_refused():
    plaintext, stored = token()
    secret = plaintext.split("_", 2)[2]
    with pytest.raises(errors.Unauthenticated):
        authenticate(f"Bearer alertd_0123456789abcdef_{secret}", stored)


def test_revoked_token_is_refused():
    plaintext, stored = token()
    with pytest.raises(errors.Unauthenticated) as caught:
        authenticate(f"Bearer {plaintext}", dataclasses.replace(stored, revoked=True))
    assert caught.value.status == 401
    assert "revoked" in caught.value.message


def test_unknown_token_is_refused():
    plaintext, _ = token()
    with pytest.raises(errors.Unauthenticated):
        authenticate(f"Bearer {plaintext}", None)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token alertd_0123456789abcdef_" + "a" * 43,
        "Bearer alertd_0123456789abcdef",
        "Bearer alertd__" + "a" * 43,
        "Bearer alertd_XYZ_" + "a" * 43,
        "Bearer other_0123456789abcdef_" + "a" * 43,
        "Bearer alertd_0123456789abcdef_short",
        "Bearer alertd_0123456789abcdef_" + "a" * 42 + "!",
    ],
)
def test_malformed_headers_are_unauthenticated(header):
    with pytest.raises(errors.Unauthenticated):
        auth.parse_bearer(header)


@pytest.mark.parametrize("zones", [[], ["75", "7"], ["20"], ["**"]])
def test_token_zones_are_checked(zones):
    with pytest.raises(errors.Invalid) as caught:
        auth.new_token("cell", model.Role.ISSUER, zones, NOW)
    assert caught.value.field == "zones"


# -- roles -------------------------------------------------------------------------------------


def test_roles():
    issuer, operator, admin = (token(role)[1] for role in model.Role)
    auth.require_role(admin, model.Role.ADMIN)
    with pytest.raises(errors.Forbidden) as caught:
        auth.require_role(operator, model.Role.ISSUER, model.Role.ADMIN)
    assert caught.value.status == 403
    assert "operator" in caught.value.message


# -- jurisdiction ------------------------------------------------------------------------------


def test_communes_in_the_departement_are_within():
    auth.check_jurisdiction(token(zones=("75",))[1], ["75056", "75"])
    auth.check_jurisdiction(token(zones=("2A",))[1], ["2A004"])
    auth.check_jurisdiction(token(zones=("971", "13055"))[1], ["97105", "13055"])


def test_zones_outside_are_listed():
    _, paris = token(zones=("75",))
    with pytest.raises(errors.OutsideJurisdiction) as caught:
        auth.check_jurisdiction(paris, ["75056", "92012", "13", "2A004"])
    assert caught.value.status == 403
    assert caught.value.field == "area.zones"
    assert caught.value.outside == ["92012", "13", "2A004"]


def test_a_commune_token_cannot_alert_its_departement():
    _, commune = token(zones=("75056",))
    auth.check_jurisdiction(commune, ["75056"])
    with pytest.raises(errors.OutsideJurisdiction) as caught:
        auth.check_jurisdiction(commune, ["75"])
    assert caught.value.outside == ["75"]
    with pytest.raises(errors.OutsideJurisdiction) as caught:
        auth.check_jurisdiction(commune, ["13055"], field="zones")
    assert caught.value.field == "zones"


def test_national_token_covers_everything_and_only_it_covers_the_nation():
    _, national = token(zones=("*",))
    auth.check_jurisdiction(national, ["*", "75056", "976", "2B"])
    with pytest.raises(errors.OutsideJurisdiction) as caught:
        auth.check_jurisdiction(token(zones=("75", "92", "93", "94"))[1], ["*"])
    assert caught.value.outside == ["*"]
