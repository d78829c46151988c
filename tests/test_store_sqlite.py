"""The store contract on SQLite, and what only SQLite has: its URLs and its file."""

from __future__ import annotations

import pytest
import store_contract

from alertd import errors, store as store_mod
from alertd.store import sql, sqlite


class TestSQLiteStore(store_contract.StoreContract):
    @pytest.fixture
    async def store(self, tmp_path):
        db = store_mod.open_store(f"sqlite:///{tmp_path}/alertd.db")
        await db.open()
        yield db
        await db.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///var/alertd.db", "var/alertd.db"), ("sqlite:////var/alertd.db", "/var/alertd.db"),
     ("sqlite:///:memory:", ":memory:")],
)
def test_url_forms(url, path):
    assert sqlite.SQLiteStore(url).path == path


def test_malformed_url_is_a_config_error():
    with pytest.raises(errors.ConfigError):
        sqlite.SQLiteStore("sqlite://alertd.db")


async def test_in_memory_store_works():
    db = sqlite.SQLiteStore("sqlite:///:memory:")
    await db.open()
    await db.ping()
    assert await db.upsert_recipients(store_contract.RECIPIENTS) == 5
    await db.close()


async def test_reopening_keeps_data_and_schema(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        db = sqlite.SQLiteStore("sqlite:///relative.db")
        await db.open()
        await db.upsert_recipients(store_contract.RECIPIENTS[:1])
        assert await db.count_recipients() == 1
        assert (await db._fetch("SELECT count(*) AS n FROM schema_version"))[0]["n"] == len(sql.MIGRATIONS)
        assert (await db._fetch("PRAGMA journal_mode"))[0][0] == "wal"
        await db.close()
    assert (tmp_path / "relative.db").exists()


async def test_closed_store_fails_ping():
    db = sqlite.SQLiteStore("sqlite:///:memory:")
    with pytest.raises(errors.StoreError):
        await db.ping()


async def test_driver_errors_become_store_errors():
    db = sqlite.SQLiteStore("sqlite:///:memory:")
    await db.open()
    await db._execute("DROP TABLE sirens")  # a broken database, as a user could meet one
    with pytest.raises(errors.StoreError):
        await db.list_sirens()
    with pytest.raises(errors.StoreError):
        await db.upsert_sirens(store_contract.SIRENS)
    assert await db.upsert_recipients(store_contract.RECIPIENTS) == 5  # the failed transaction was undone
    await db.close()
