"""People and their cells as the daemon meets them: a token stops at once when it is revoked, expires
or its user is disabled; the audit names who and which cell; a store from before users existed
migrates, its old tokens still working as machine clients."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import structlog
from aiohttp import test_utils

from alertd import app as app_mod, audit, auth, demo, model, store as store_mod
from alertd.store import legacy, sql
from tests import helpers

MIGRATED = "tokens from before users existed were migrated"


async def me(daemon, token: str):
    return await daemon.client.get("/v1/me", headers=helpers.auth_header(token))


async def refused(daemon, token: str, reason: str) -> None:
    resp = await me(daemon, token)
    assert resp.status == 401 and resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == 401 and reason in body["detail"], body


async def failures(daemon) -> dict[str, float]:
    text = await (await daemon.client.get("/metrics")).text()
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("alertd_auth_failures_total{")}


async def test_revoked_expired_and_disabled_tokens_are_refused_at_once(daemon):
    await helpers.add_cell(daemon.store, "pref-75", ["75"], name="Préfecture de police")
    alice = await helpers.add_person(daemon.store, "alice", "pref-75", model.Role.ISSUER)
    bob = await helpers.add_person(daemon.store, "bob", "pref-75", model.Role.OPERATOR, expires=dt.timedelta(hours=8))
    carol = await helpers.add_person(daemon.store, "carol", "pref-75", model.Role.OPERATOR)
    for token in (alice, bob, carol):
        assert (await me(daemon, token)).status == 200
    assert await daemon.store.revoke_token(alice.split("_")[1])
    await refused(daemon, alice, "revoked")
    daemon.clock.advance(8 * 3600)
    await refused(daemon, bob, "expired")
    assert (await me(daemon, carol)).status == 200
    await daemon.store.disable_user("carol")
    await refused(daemon, carol, "disabled")
    counted = await failures(daemon)
    assert (counted["revoked"], counted["expired"], counted["disabled"]) == (1, 1, 1)


async def test_the_console_learns_who_signed_in(daemon):
    await helpers.add_cell(daemon.store, "pref-75", ["75"], name="Préfecture de police")
    token = await helpers.add_person(daemon.store, "alice", "pref-75", model.Role.ISSUER, model.Role.APPROVER)
    body = await (await me(daemon, token)).json()
    assert body == {
        "token_id": token.split("_")[1], "cell": "pref-75", "cell_name": "Préfecture de police", "user": "alice",
        "roles": ["approver", "issuer"], "zones": ["75"],
        "expires_at": (helpers.START + dt.timedelta(days=90)).isoformat(),
    }


async def test_the_audit_names_the_person_and_the_cell(daemon):
    await helpers.add_cell(daemon.store, "pref-75", ["75"], name="Préfecture de police")
    alice = helpers.auth_header(await helpers.add_person(daemon.store, "alice", "pref-75", model.Role.ISSUER))
    resp = await daemon.client.post("/v1/subscribers", headers=alice, json=helpers.PEOPLE[:1])
    assert resp.status == 200, await resp.text()
    entries = (await (await daemon.get("/v1/audit?action=subscribers_imported", who="admin")).json())["entries"]
    assert [(e["cell"], e["user"]) for e in entries] == [
        ("pref-75", "alice"), ("prefecture-test-national", "admin@prefecture-test-national")]  # the fixture's
    assert await daemon.store.verify_audit() is None


# -- a store from before users existed --------------------------------------------------------------

OLD_TOKENS = (  # id, cell, role, zones: two of one cell, and two names that make the same id
    ("0000000000000001", "Préfecture du Rhône", "issuer", ["69"]),
    ("0000000000000002", "Préfecture du Rhône", "operator", ["69123", "01"]),
    ("0000000000000003", "Lyon", "issuer", ["69123"]),
    ("0000000000000004", "LYON", "admin", ["*"]),
)
SECRET = "s" * 43


@pytest.fixture(params=["sqlite", "postgresql"])
def old_url(request, tmp_path, pg_schema_url):
    return pg_schema_url if request.param == "postgresql" else f"sqlite:///{tmp_path / 'old.db'}"


async def old_store(url: str, monkeypatch) -> None:
    """A store at schema version 8, with tokens, an alert and an audit entry as alertd then wrote them."""
    with monkeypatch.context() as patch:
        patch.setattr(sql, "MIGRATIONS", tuple(m for m in sql.MIGRATIONS if m[0] <= 8))
        db = store_mod.open_store(url)
        await db.open()
    for token_id, cell, role, zones in OLD_TOKENS:
        await db._execute(
            "INSERT INTO tokens (id, cell, role, zones, secret_hash, created_at, revoked)"
            " VALUES ($1, $2, $3, $4, $5, $6, FALSE)",
            token_id, cell, role, json.dumps(zones), auth.hash_secret(SECRET + token_id), db._t(helpers.START),
        )
    alert = helpers.alert("old-alert", model.Kind.SMS)
    data = alert.to_json() | {"cell": "Préfecture du Rhône", "sender": "prefecture-du-rhone"}
    data.pop("cell_name", None)
    await db._execute(
        "INSERT INTO alerts (id, sender, identifier, idempotency_key, state, token_id, data, created_at)"
        " VALUES ($1, $2, $3, $4, 'completed', $5, $6, $7)",
        alert.id, "prefecture-du-rhone", alert.identifier, "key", OLD_TOKENS[0][0], json.dumps(data),
        db._t(helpers.START),
    )
    entry = audit.Entry("Préfecture du Rhône", "created", helpers.START, OLD_TOKENS[0][0], alert.id, {}, "127.0.0.1")
    await db._execute(
        "INSERT INTO audit (at, cell, token_id, action, subject, detail, address, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", db._t(entry.at), entry.cell, entry.token_id, entry.action,
        entry.subject, "{}", entry.address, audit.GENESIS, audit.chained(audit.GENESIS, entry),
    )
    await db.close()


async def test_an_old_store_migrates_and_its_tokens_still_work(old_url, tmp_path, fakes_url, monkeypatch):
    await old_store(old_url, monkeypatch)
    port = demo.free_port()
    app = app_mod.build(helpers.load_config(tmp_path, fakes_url, port, store=old_url), clock=helpers.ManualClock(),
                        run_workers=False)
    with structlog.testing.capture_logs() as logged:
        async with test_utils.TestClient(test_utils.TestServer(app, host="127.0.0.1", port=port)) as client:
            old = OLD_TOKENS[1][0]
            resp = await client.get("/v1/me", headers=helpers.auth_header(f"alertd_{old}_{SECRET}{old}"))
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {
                "token_id": OLD_TOKENS[1][0], "cell": "prefecture-du-rhone", "cell_name": "Préfecture du Rhône",
                "user": f"prefecture-du-rhone.operator.{OLD_TOKENS[1][0]}", "roles": ["operator"],
                "zones": ["69", "69123", "01"], "expires_at": None,
            }
    warnings = [e for e in logged if e["event"].startswith(MIGRATED)]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert SECRET not in json.dumps(warnings, default=str)
    assert [c["id"] for c in warnings[0]["cells"]] == ["prefecture-du-rhone", "lyon", "lyon-2"]
    await migrated(old_url)


async def migrated(url: str) -> None:
    """What the migration made, and a second migration changing nothing."""
    db = store_mod.open_store(url)
    await db.open()
    try:
        cells = {c.id: c for c in await db.list_cells()}
        assert {i: (c.name, c.senders) for i, c in cells.items()} == {
            "prefecture-du-rhone": ("Préfecture du Rhône", ("prefecture-du-rhone",)),
            "lyon": ("Lyon", ("lyon",)), "lyon-2": ("LYON", ("lyon-2",)),
        }
        users = await db.list_users()
        assert len(users) == 4 and all(u.machine and not u.trusted and len(u.roles) == 1 for u in users)
        assert {u.cell for u in users if model.Role.ADMIN in u.roles} == {"lyon-2"}
        tokens = await db.list_tokens()
        assert [t.id for t in tokens] == [t[0] for t in OLD_TOKENS] and all(t.expires_at is None for t in tokens)
        alert = (await db._fetch("SELECT data FROM alerts"))[0]
        assert json.loads(alert["data"])["cell"] == "prefecture-du-rhone"
        assert json.loads(alert["data"])["cell_name"] == "Préfecture du Rhône"
        assert await db.verify_audit() is None  # the old entry still verifies
        before = [await db.list_cells(), await db.list_users(), await db.list_tokens(), alert]
        with structlog.testing.capture_logs() as logged:
            await db.migrate()
            async with db._tx() as conn:  # the data step itself, run again
                await legacy.migrate_old_tokens(db, conn)
        after = [await db.list_cells(), await db.list_users(), await db.list_tokens(),
                 (await db._fetch("SELECT data FROM alerts"))[0]]
        assert after == before and not [e for e in logged if e["event"].startswith(MIGRATED)]
    finally:
        await db.close()


async def test_a_fresh_store_migrates_nothing_and_says_nothing(tmp_path):
    db = store_mod.open_store(f"sqlite:///{tmp_path / 'new.db'}")
    with structlog.testing.capture_logs() as logged:
        await db.open()
    try:
        assert not [e for e in logged if e["event"].startswith(MIGRATED)]
        assert await db.list_cells() == [] and await db.list_tokens() == []
    finally:
        await db.close()
