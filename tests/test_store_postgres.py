"""The store contract on PostgreSQL (a fresh schema per test), and what only it has: NOTIFY."""

from __future__ import annotations

import asyncio

import pytest
import store_contract

from alertd import errors, model, store as store_mod
from alertd.store import postgres, sql


class TestPostgresStore(store_contract.StoreContract):
    @pytest.fixture
    async def store(self, pg_schema_url):
        db = store_mod.open_store(pg_schema_url)
        await db.open()
        yield db
        await db.close()


async def test_open_twice_migrates_once(pg_schema_url):
    for _ in range(2):
        db = postgres.PostgresStore(pg_schema_url)
        await db.open()
        assert (await db._fetch("SELECT count(*) AS n FROM schema_version"))[0]["n"] == len(sql.MIGRATIONS)
        await db.close()


async def test_planning_and_cancel_wake_listeners(pg_schema_url):
    db, other = postgres.PostgresStore(pg_schema_url), postgres.PostgresStore(pg_schema_url)
    await db.open()
    await other.open()
    heard: asyncio.Queue[str] = asyncio.Queue()
    await other.listen(heard.put_nowait)
    alert = store_contract.make_alert()
    await db.create_alert(alert, "k")
    await store_contract.chunk(db, alert, {model.Kind.SMS: "sms"}, None, 10, store_contract.NOW)
    assert await asyncio.wait_for(heard.get(), 5) == "sms"
    await db.cancel_alert(alert.id, store_contract.NOW)
    assert await asyncio.wait_for(heard.get(), 5) == alert.id
    await other.close()
    await db.close()


async def test_driver_errors_become_store_errors(pg_schema_url):
    db = postgres.PostgresStore(pg_schema_url)
    await db.open()
    await db.ping()
    await db._execute("DROP TABLE sirens")
    with pytest.raises(errors.StoreError):
        await db.list_sirens()
    with pytest.raises(errors.StoreError):
        await db.upsert_sirens(store_contract.SIRENS)
    await db.close()
    with pytest.raises(errors.StoreError):
        await db.ping()


async def test_unreachable_server_fails_ping():
    db = postgres.PostgresStore("postgresql://alertd@127.0.0.1:1/alertd")
    with pytest.raises(errors.StoreError):
        await db.open()
    with pytest.raises(errors.StoreError):
        await db.ping()
