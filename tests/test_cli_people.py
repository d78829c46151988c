"""`alertd cell|user|token …`: crisis cells, their users and their tokens, from the command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import pytest

from alertd import auth, cli, model, people
from tests import helpers
from tests.test_cli import config_file, one_line_error, with_store

DAY = dt.timedelta(days=1)


@pytest.fixture
def alertd(tmp_path, capsys):
    """`alertd …` on a store that exists: its exit code; the output is read with capsys."""
    cfg = config_file(tmp_path)
    return lambda *argv: cli.main([*argv, "--config", cfg])


def stored(tmp_path, method: str, *args):
    return with_store(tmp_path, lambda db: getattr(db, method)(*args))


def output(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out


def add_rhone(alertd, capsys, *options: str) -> None:
    assert alertd("cell", "add", "pref-69", "--name", "Préfecture du Rhône", "--zones", "69,69123", *options) == 0
    capsys.readouterr()


# -- cells -----------------------------------------------------------------------------------------


def test_cell_add_prints_and_stores_the_cell_and_audits_it(alertd, tmp_path, capsys):
    assert alertd("cell", "add", "pref-69", "--name", "Préfecture du Rhône", "--zones", "69,69123",
                  "--sender", "pref69@interieur.gouv.fr", "--sender", "cogic69", "--exercise-approval", "required",
                  "--cancel-approval", "none", "--approval-minutes", "20", "--orders-per-minute", "30",
                  "--burst", "5") == 0
    out = output(capsys)
    assert "pref-69: Préfecture du Rhône" in out and "69, 69123" in out and "30 orders/min" in out
    cell = stored(tmp_path, "get_cell", "pref-69")
    assert cell.zones == ("69", "69123") and cell.senders == ("pref69@interieur.gouv.fr", "cogic69")
    assert cell.approval["actual"] == people.Approval.REQUIRED  # the default
    assert cell.approval["exercise"] == people.Approval.REQUIRED and cell.approval["cancel"] == people.Approval.NONE
    assert (cell.approval_minutes, cell.rate) == (20, people.Rate(30, 5))
    (entry,) = stored(tmp_path, "audit", 10)
    assert (entry.action, entry.subject, entry.address) == ("cell_created", "pref-69", "local")


def test_a_cell_signs_with_its_id_unless_told_otherwise(alertd, tmp_path, capsys):
    add_rhone(alertd, capsys)
    assert stored(tmp_path, "get_cell", "pref-69").senders == ("pref-69",)


def test_cell_add_with_a_drawn_boundary(alertd, tmp_path, capsys):
    geojson = tmp_path / "paris.geojson"  # GeoJSON: longitude first
    geojson.write_text('{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                       '[[[2.22, 48.80], [2.47, 48.80], [2.47, 48.92], [2.22, 48.92], [2.22, 48.80]]]}}')
    assert alertd("cell", "add", "pp", "--name", "Préfecture de police", "--zones", "75",
                  "--boundary", str(geojson)) == 0
    cell = stored(tmp_path, "get_cell", "pp")
    assert cell.boundary == (((48.80, 2.22), (48.80, 2.47), (48.92, 2.47), (48.92, 2.22), (48.80, 2.22)),)


def test_cell_add_refuses_a_taken_id_and_a_sender_of_another_cell(alertd, tmp_path, capsys):
    add_rhone(alertd, capsys, "--sender", "pref69")
    assert alertd("cell", "add", "pref-69", "--name", "Autre", "--zones", "13") == 1
    assert "id" in one_line_error(capsys)
    assert alertd("cell", "add", "pref-13", "--name", "Bouches-du-Rhône", "--zones", "13", "--sender", "pref69") == 1
    assert "senders" in one_line_error(capsys)
    assert [c.id for c in stored(tmp_path, "list_cells")] == ["pref-69"]


@pytest.mark.parametrize("zones", ["Lyon", "", "69,nowhere"])
def test_cell_add_refuses_bad_zones(alertd, tmp_path, capsys, zones):
    assert alertd("cell", "add", "x", "--name", "X", "--zones", zones) == 1
    assert "zones" in one_line_error(capsys)
    assert stored(tmp_path, "list_cells") == []


def test_a_bad_cell_id_is_refused(alertd, tmp_path, capsys):
    assert alertd("cell", "add", "Pref 69!", "--name", "X", "--zones", "69") == 1
    assert "id" in one_line_error(capsys)


def test_cell_set_changes_only_what_it_is_told(alertd, tmp_path, capsys):
    add_rhone(alertd, capsys, "--burst", "7")
    assert alertd("cell", "set", "pref-69", "--approval", "none", "--zones", "69") == 0
    assert "changed" in output(capsys)
    cell = stored(tmp_path, "get_cell", "pref-69")
    assert cell.approval["actual"] == people.Approval.NONE and cell.zones == ("69",)
    assert cell.name == "Préfecture du Rhône" and cell.rate.burst == 7 and cell.senders == ("pref-69",)
    assert stored(tmp_path, "audit", 1)[0].action == "cell_updated"
    assert alertd("cell", "set", "nowhere", "--approval", "none") == 1
    assert "no cell 'nowhere'" in one_line_error(capsys)


def test_cell_list_and_show(alertd, capsys):
    assert alertd("cell", "list") == 0
    assert "no cells yet" in capsys.readouterr().err
    add_rhone(alertd, capsys)
    assert alertd("user", "add", "alice", "--cell", "pref-69", "--role", "issuer", "--role", "approver") == 0
    capsys.readouterr()
    assert alertd("cell", "list") == 0
    (header, row) = output(capsys).splitlines()
    assert header.split()[:3] == ["ID", "NAME", "ZONES"] and row.startswith("pref-69 ") and "Préfecture du Rhône" in row
    assert alertd("cell", "show", "pref-69") == 0
    shown = output(capsys)
    assert "approval  actual required" in shown and "alice" in shown and "approver,issuer" in shown
    assert alertd("cell", "show", "nowhere") == 1
    assert "no cell 'nowhere'" in one_line_error(capsys)


# -- users -----------------------------------------------------------------------------------------


def test_user_add_list_and_disable(alertd, tmp_path, capsys):
    add_rhone(alertd, capsys)
    assert alertd("user", "add", "alice", "--cell", "pref-69", "--role", "issuer") == 0
    assert "created person alice of cell pref-69 (issuer)" in output(capsys)
    assert alertd("user", "add", "cms-69", "--cell", "pref-69", "--role", "issuer", "--machine", "--trusted") == 0
    assert "trusted machine cms-69" in output(capsys)
    machine = stored(tmp_path, "get_user", "cms-69")
    assert machine.machine and machine.trusted and machine.roles == {model.Role.ISSUER}
    assert alertd("user", "list", "--cell", "pref-69") == 0
    rows = output(capsys).splitlines()[1:]
    assert sorted(r.split()[0] for r in rows) == ["alice", "cms-69"]
    assert alertd("user", "disable", "alice") == 0
    assert "disabled alice" in output(capsys)
    assert stored(tmp_path, "get_user", "alice").disabled
    actions = [e.action for e in stored(tmp_path, "audit", 10)]
    assert actions[:3] == ["user_disabled", "user_created", "user_created"]


@pytest.mark.parametrize("argv, says", [
    (["bob", "--cell", "nowhere", "--role", "issuer"], "no cell 'nowhere'"),
    (["bob", "--cell", "pref-69", "--role", "issuer", "--trusted"], "trusted"),
    (["alice", "--cell", "pref-69", "--role", "operator"], "name"),  # taken
])
def test_user_add_refuses(alertd, tmp_path, capsys, argv, says):
    add_rhone(alertd, capsys)
    assert alertd("user", "add", "alice", "--cell", "pref-69", "--role", "issuer") == 0
    capsys.readouterr()
    assert alertd("user", "add", *argv) == 1
    assert says in one_line_error(capsys)
    assert [u.name for u in stored(tmp_path, "list_users")] == ["alice"]


def test_an_unknown_role_is_a_usage_error(alertd, capsys):
    with pytest.raises(SystemExit) as exit:
        alertd("user", "add", "bob", "--cell", "pref-69", "--role", "king")
    assert exit.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--role" in err and "king" in err and "Traceback" not in err


def test_disabling_an_unknown_user(alertd, capsys):
    assert alertd("user", "disable", "nobody") == 1
    assert "no user 'nobody'" in one_line_error(capsys)


# -- tokens ----------------------------------------------------------------------------------------


def people_and_machines(alertd, capsys) -> None:
    add_rhone(alertd, capsys)
    assert alertd("user", "add", "alice", "--cell", "pref-69", "--role", "issuer") == 0
    assert alertd("user", "add", "cms-69", "--cell", "pref-69", "--role", "issuer", "--machine") == 0
    capsys.readouterr()


def created_token(alertd, capsys, *argv: str) -> tuple[str, str]:
    assert alertd("token", "create", *argv) == 0
    captured = capsys.readouterr()
    return captured.out.strip(), captured.err


def test_token_create_prints_the_token_once_and_stores_only_its_hash(alertd, tmp_path, capsys):
    people_and_machines(alertd, capsys)
    before = model.utcnow()
    plaintext, said = created_token(alertd, capsys, "--user", "alice")
    token_id, secret_hash = auth.parse_bearer(f"Bearer {plaintext}")
    (token,) = stored(tmp_path, "list_tokens", "alice")
    assert token.id == token_id and token.secret_hash == secret_hash
    assert before + 90 * DAY <= token.expires_at <= model.utcnow() + 90 * DAY  # a person's default
    assert f"token {token_id} for alice of cell pref-69" in said and f"{token.expires_at:%Y-%m-%d}" in said
    assert plaintext not in (tmp_path / "alertd.db").read_bytes().decode("latin1")
    entry = stored(tmp_path, "audit", 1)[0]
    assert (entry.action, entry.subject, entry.detail["user"]) == ("token_created", token_id, "alice")


@pytest.mark.parametrize("user, expires, lasts", [
    ("alice", "12h", dt.timedelta(hours=12)), ("alice", "30d", 30 * DAY),
    ("cms-69", None, 365 * DAY), ("cms-69", "never", None),
])
def test_token_expiry(alertd, tmp_path, capsys, user, expires, lasts):
    people_and_machines(alertd, capsys)
    before = model.utcnow()
    created_token(alertd, capsys, "--user", user, *(["--expires", expires] if expires else []))
    (token,) = stored(tmp_path, "list_tokens", user)
    if lasts is None:
        assert token.expires_at is None
    else:
        assert before + lasts <= token.expires_at <= model.utcnow() + lasts


def test_a_persons_token_always_expires(alertd, tmp_path, capsys):
    people_and_machines(alertd, capsys)
    assert alertd("token", "create", "--user", "alice", "--expires", "never") == 1
    assert "expires" in one_line_error(capsys)
    assert stored(tmp_path, "list_tokens") == []


def test_token_create_for_an_unknown_user_or_with_a_bad_expiry(alertd, capsys):
    people_and_machines(alertd, capsys)
    assert alertd("token", "create", "--user", "nobody") == 1
    assert "no user 'nobody'" in one_line_error(capsys)
    with pytest.raises(SystemExit) as exit:
        alertd("token", "create", "--user", "alice", "--expires", "soon")
    assert exit.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--expires" in err and "never" in err and "Traceback" not in err


def test_token_list_shows_no_secret_and_revoke_stops_it(alertd, tmp_path, capsys):
    people_and_machines(alertd, capsys)
    plaintext, _ = created_token(alertd, capsys, "--user", "alice")
    created_token(alertd, capsys, "--user", "cms-69", "--expires", "never")
    match = auth._TOKEN.fullmatch(plaintext)  # the secret may hold "_" itself: split by the token's grammar
    token_id, secret = match["id"], match["secret"]
    assert alertd("token", "list") == 0
    listed = output(capsys)
    assert secret not in listed and token_id in listed and "never" in listed
    assert alertd("token", "revoke", token_id) == 0
    assert f"revoked token {token_id}" in output(capsys)
    assert alertd("token", "list", "--user", "alice") == 0
    (header, row) = output(capsys).splitlines()
    assert row.split()[:3] == [token_id, "alice", "pref-69"] and row.split()[-1] == "yes"
    entry = stored(tmp_path, "audit", 1)[0]
    assert (entry.action, entry.subject, entry.detail["user"]) == ("token_revoked", token_id, "alice")
    assert alertd("token", "revoke", token_id) == 0  # nothing more to do
    assert "already revoked" in capsys.readouterr().err


def test_revoking_an_unknown_token(alertd, tmp_path, capsys):
    assert alertd("token", "revoke", "0123456789abcdef") == 1
    assert "no token 0123456789abcdef" in one_line_error(capsys)
    assert stored(tmp_path, "audit", 10) == []


# -- against the daemon ----------------------------------------------------------------------------


async def test_a_created_token_authenticates_until_revoked_or_its_user_disabled(daemon, tmp_path, capsys):
    cfg = str(tmp_path / "alertd.toml")  # the daemon's own configuration (the fixture wrote it)

    async def alertd(*argv: str) -> str:
        capsys.readouterr()
        assert await asyncio.to_thread(cli.main, [*argv, "--config", cfg]) == 0, capsys.readouterr().err
        return capsys.readouterr().out  # the daemon, in this process, may log there too

    async def status(token: str) -> int:
        return (await daemon.client.get("/v1/alerts", headers=helpers.auth_header(token))).status

    await alertd("cell", "add", "pref-69", "--name", "Préfecture du Rhône", "--zones", "69")
    tokens = {}
    for name in ("alice", "bob"):
        await alertd("user", "add", name, "--cell", "pref-69", "--role", "operator")
        tokens[name] = re.search(r"^alertd_\S+$", await alertd("token", "create", "--user", name), re.M)[0]
        assert await status(tokens[name]) == 200
    await alertd("token", "revoke", tokens["alice"].split("_")[1])
    assert await status(tokens["alice"]) == 401
    assert await status(tokens["bob"]) == 200
    await alertd("user", "disable", "bob")
    assert await status(tokens["bob"]) == 401
