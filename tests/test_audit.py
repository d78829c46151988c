"""The audit log through the API and the command line: who did what, when, from where."""

from __future__ import annotations

from alertd import cli, model
from tests import helpers
from tests.test_cli import config_file, with_store


async def test_orders_cancels_and_imports_are_audited(daemon):
    sent = await daemon.send()
    await daemon.post(f"/v1/alerts/{sent['id']}/cancel")
    resp = await daemon.get("/v1/audit", who="admin")
    assert resp.status == 200
    entries = (await resp.json())["entries"]
    actions = [(e["action"], e["subject"]) for e in entries]
    assert actions[:2] == [("cancelled", sent["id"]), ("created", sent["id"])]
    assert ("subscribers_imported", None) in actions  # the fixture's import
    created = entries[1]
    assert (created["cell"], created["user"]) == ("prefecture-test-75", "issuer@prefecture-test-75")
    assert created["address"] == "127.0.0.1" and created["token_id"]
    assert created["detail"]["status"] == "actual"
    status = await daemon.status(sent["id"])
    assert status["cancelled_by"]["cell"] == "prefecture-test-75"


async def test_a_cap_cancel_audits_each_alert_it_stops(daemon):
    first = await daemon.status((await daemon.send())["id"])
    ref = {"sender": first["sender"], "identifier": first["identifier"], "sent": first["sent"]}
    cancel = await daemon.send(msg_type="cancel", references=[ref])
    entries = (await (await daemon.get(f"/v1/audit?subject={first['id']}", who="admin")).json())["entries"]
    assert [(e["action"], e["detail"].get("by")) for e in entries] == [("cancelled", cancel["id"]), ("created", None)]


async def test_only_admins_read_it_and_nobody_edits_it(daemon):
    assert (await daemon.get("/v1/audit", who="operator")).status == 403
    assert (await daemon.get("/v1/audit", who="issuer")).status == 403
    assert (await daemon.client.get("/v1/audit")).status == 401
    for method in ("PUT", "PATCH", "DELETE"):
        resp = await daemon.client.request(method, "/v1/audit", headers=daemon.headers["admin"])
        assert resp.status == 405


def test_the_command_line_audits_what_it_does_and_shows_the_log(tmp_path, capsys):
    assert cli.main(["cell", "add", "lyon", "--config", config_file(tmp_path), "--name", "Mairie de Lyon",
                     "--zones", "69123"]) == 0
    capsys.readouterr()
    assert cli.main(["audit", "--config", config_file(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert "cell_created" in line and "local:" in line and '"Mairie de Lyon"' in line
    assert cli.main(["audit", "--config", config_file(tmp_path), "--verify"]) == 0
    with_store(tmp_path, lambda db: db._execute("UPDATE audit SET cell = 'x'"))
    assert cli.main(["audit", "--config", config_file(tmp_path), "--verify"]) == 1
    assert "breaks at entry 1" in capsys.readouterr().err


async def test_an_admin_reads_its_own_cells_entries_and_a_national_admin_every_cells(daemon):
    plaintext = await helpers.add_token(daemon.store, model.Role.ADMIN, ["69"], cell="Préfecture du Rhône")
    lyon = helpers.auth_header(plaintext)
    sent = await daemon.send()  # by the issuer of prefecture-test-75
    resp = await daemon.client.get("/v1/audit", headers=lyon)
    assert resp.status == 200
    assert (await resp.json())["entries"] == []  # nothing of prefecture-test-75's: not the alert, not its user
    refused = await daemon.client.get("/v1/audit?cell=prefecture-test-75", headers=lyon)
    assert refused.status == 403 and (await refused.json())["field"] == "cell"
    national = await (await daemon.get("/v1/audit?cell=prefecture-test-75", who="admin")).json()
    assert [(e["action"], e["subject"]) for e in national["entries"]] == [("created", sent["id"])]
