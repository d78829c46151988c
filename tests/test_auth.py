"""Tokens, roles and jurisdictions as a crisis cell meets them."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from alertd import auth, errors, model, people

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def token(role: model.Role = model.Role.ISSUER, zones: tuple[str, ...] = ("75",), **user) -> tuple[str, people.Caller]:
    """A token of a user of a cell over `zones`, and the caller the store finds for it."""
    cell = auth.new_cell("prefecture-75", "Préfecture de police", zones, NOW)
    account = auth.new_user("alice", cell.id, [role], NOW, **user)
    plaintext, stored = auth.new_token(account, NOW)
    return plaintext, people.Caller(stored, account, cell)


def authenticate(header: str | None, stored: people.Caller | None, now: dt.datetime = NOW) -> people.Caller:
    token_id, presented = auth.parse_bearer(header)
    found = stored if stored is not None and stored.token.secret_hash == presented else None  # the store's lookup
    return auth.check(found, presented, token_id, now)


# -- tokens ------------------------------------------------------------------------------------


def test_new_token_roundtrip():
    plaintext, caller = token()
    stored = caller.token
    assert plaintext.startswith(f"alertd_{stored.id}_")
    assert plaintext.split("_", 2)[2] not in repr(stored)  # only the hash is kept
    assert stored.user == caller.account.id and stored.created_at == NOW
    assert stored.expires_at == NOW + dt.timedelta(days=people.PERSON_TOKEN_DAYS)
    assert (caller.cell, caller.user, caller.zones) == ("prefecture-75", "alice", ("75",))
    assert caller.roles == {model.Role.ISSUER}
    assert authenticate(f"Bearer {plaintext}", caller) == caller
    assert authenticate(f"bearer   {plaintext} ", caller) == caller


def test_a_machine_clients_token_lasts_longer_and_any_expiry_may_be_asked():
    machine = auth.new_user("crisis-system", "prefecture-75", [model.Role.ISSUER], NOW, machine=True)
    assert auth.new_token(machine, NOW)[1].expires_at == NOW + dt.timedelta(days=people.MACHINE_TOKEN_DAYS)
    assert auth.new_token(machine, NOW, dt.timedelta(hours=8))[1].expires_at == NOW + dt.timedelta(hours=8)
    with pytest.raises(errors.Invalid) as caught:
        auth.new_token(machine, NOW, dt.timedelta(0))
    assert caught.value.field == "expires"


def test_tokens_are_unique():
    (first, a), (second, b) = token(), token()
    assert first != second and a.id != b.id and a.token.secret_hash != b.token.secret_hash


def test_wrong_secret_is_refused():
    plaintext, stored = token()
    other, _ = token()
    forged = f"alertd_{stored.id}_{other.split('_', 2)[2]}"
    with pytest.raises(errors.Unauthenticated):
        authenticate(f"Bearer {forged}", stored)
    with pytest.raises(errors.Unauthenticated):
        auth.check(stored, auth.parse_bearer(f"Bearer {forged}")[1], None, NOW)


def test_another_tokens_id_is_refused():
    plaintext, stored = token()
    secret = plaintext.split("_", 2)[2]
    with pytest.raises(errors.Unauthenticated):
        authenticate(f"Bearer alertd_0123456789abcdef_{secret}", stored)


def test_revoked_expired_and_disabled_are_refused_each_saying_why():
    plaintext, caller = token()
    revoked = dataclasses.replace(caller, token=dataclasses.replace(caller.token, revoked=True))
    disabled = dataclasses.replace(caller, account=dataclasses.replace(caller.account, disabled=True))
    expiry = caller.token.expires_at
    for stored, now, reason in ((revoked, NOW, "revoked"), (caller, expiry, "expired"), (disabled, NOW, "disabled")):
        with pytest.raises(errors.Unauthenticated) as caught:
            authenticate(f"Bearer {plaintext}", stored, now)
        assert caught.value.status == 401 and caught.value.reason == reason and reason in caught.value.message
    assert authenticate(f"Bearer {plaintext}", caller, expiry - dt.timedelta(seconds=1)) == caller


def test_a_migrated_token_never_expires():
    plaintext, caller = token()
    old = dataclasses.replace(caller, token=dataclasses.replace(caller.token, expires_at=None))
    assert authenticate(f"Bearer {plaintext}", old, NOW + dt.timedelta(days=3650)) == old


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
def test_cell_zones_are_checked(zones):
    with pytest.raises(errors.Invalid) as caught:
        auth.new_cell("cell", "Cell", zones, NOW)
    assert caught.value.field == "zones"


@pytest.mark.parametrize(("change", "field"), [
    ({"id": "Pref 75"}, "id"), ({"id": "-pref"}, "id"), ({"name": " "}, "name"),
    ({"senders": ["a b"]}, "senders"), ({"senders": ["a,b"]}, "senders"),
    ({"approval": {"actual": "maybe"}}, "approval"), ({"approval": {"draft": "none"}}, "approval"),
    ({"approval_minutes": 0}, "approval_minutes"), ({"rate": people.Rate(0, 5)}, "rate"),
])
def test_a_bad_cell_names_its_field(change, field):
    values = {"id": "pref-75", "name": "Préfecture", "zones": ["75"], "now": NOW} | change
    with pytest.raises(errors.Invalid) as caught:
        auth.new_cell(**values)
    assert caught.value.field == field and caught.value.errors[0]["field"] == field


def test_a_cell_signs_with_its_id_unless_told_and_waits_for_approval_by_default():
    cell = auth.new_cell("pref-75", "Préfecture", ["75", "75"], NOW)
    assert cell.senders == ("pref-75",) and cell.zones == ("75",) and cell.approval == people.DEFAULT_APPROVAL
    relaxed = auth.new_cell("pref-75", "Préfecture", ["75"], NOW, senders=["prefecture-75@interieur.gouv.fr"],
                            approval={"actual": "none"})
    assert relaxed.senders == ("prefecture-75@interieur.gouv.fr",)
    assert relaxed.approval["actual"] is people.Approval.NONE and relaxed.approval["cancel"] is people.Approval.REQUIRED


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "a b"}, "name"), ({"name": ""}, "name"), ({"roles": []}, "roles"), ({"roles": ["boss"]}, "roles"),
    ({"trusted": True}, "trusted"),
])
def test_a_bad_user_names_its_field(change, field):
    values = {"name": "alice", "cell_id": "pref-75", "roles": ["issuer"], "now": NOW} | change
    with pytest.raises(errors.Invalid) as caught:
        auth.new_user(**values)
    assert caught.value.field == field


# -- roles -------------------------------------------------------------------------------------


def test_roles():
    issuer, approver, operator, admin = (token(role)[1] for role in model.Role)
    auth.require_role(admin, model.Role.ADMIN)
    auth.require_role(approver, model.Role.ISSUER, model.Role.APPROVER)
    with pytest.raises(errors.Forbidden) as caught:
        auth.require_role(operator, model.Role.ISSUER, model.Role.ADMIN)
    assert caught.value.status == 403
    assert "operator" in caught.value.message


def test_a_person_may_hold_several_roles():
    cell = auth.new_cell("pref-75", "Préfecture", ["75"], NOW)
    both = auth.new_user("bob", cell.id, [model.Role.ISSUER, model.Role.APPROVER], NOW)
    caller = people.Caller(auth.new_token(both, NOW)[1], both, cell)
    auth.require_role(caller, model.Role.APPROVER)
    auth.require_role(caller, model.Role.ISSUER)
    with pytest.raises(errors.Forbidden):
        auth.require_role(caller, model.Role.ADMIN)


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
