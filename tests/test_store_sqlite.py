"""The store contract on SQLite, and what only SQLite has: its URLs and its file."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
import store_contract

from alertd import auth, errors, model, people, priority, store as store_mod
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


# -- who waits for whom on the one writer connection (issue 12: an urgent 202 during a big fan-out) --


@pytest.fixture
async def filed(tmp_path):
    db = sqlite.SQLiteStore(f"sqlite:///{tmp_path}/alertd.db")
    await db.open()
    yield db
    await db.close()


def _big(n: int, start: int = 0) -> list[model.Recipient]:
    return [model.Recipient(f"r{i:06d}", "fr", ("69123",), phone=f"+3362{i:07d}") for i in range(start, start + n)]


async def _as(turn: int, work):
    store_mod.TURN.set(turn)  # the task's own context: the turn stays with this call
    return await work


async def test_a_request_goes_before_background_writers_that_queued_first(filed):
    finished: list[str] = []

    async def write(name: str, turn: int, work) -> None:
        await _as(turn, work)
        finished.append(name)

    background = [filed.upsert_recipients(_big(2000, 2000 * k)) for k in range(3)]
    tasks = [asyncio.create_task(write(f"background-{k}", priority.DEFAULT, work)) for k, work in enumerate(background)]
    tasks.append(asyncio.create_task(write(
        "request", store_mod.REQUEST, filed.create_alert(store_contract.make_alert("URGENT"), "k-urgent"))))
    await asyncio.gather(*tasks)
    # The first background write held the connection; the request was let in next, not last.
    assert finished == ["background-0", "request", "background-1", "background-2"]
    assert (await filed.get_alert("URGENT")).id == "URGENT"


async def test_equal_turns_are_served_first_come(filed):
    finished: list[int] = []

    async def write(k: int) -> None:
        await filed.upsert_recipients(_big(500, 500 * k))
        finished.append(k)

    await asyncio.gather(*(write(k) for k in range(4)))
    assert finished == [0, 1, 2, 3]


async def test_a_read_does_not_wait_for_a_write_transaction(filed):
    await filed.create_alert(store_contract.make_alert("A1"), "k1")
    order: list[str] = []

    async def write() -> None:
        await filed.upsert_recipients(_big(20_000))
        order.append("write")

    async def read() -> None:
        assert (await filed.get_alert("A1")).id == "A1"
        order.append("read")

    writing = asyncio.create_task(write())
    await asyncio.sleep(0)  # the write is under way: it holds the writer connection
    await read()
    await writing
    assert order == ["read", "write"]
    assert await filed.count_recipients() == 20_000  # and the read sees it once committed


async def test_a_short_read_does_not_wait_for_a_long_one(filed):
    # A token lookup beside the counts of a 100,000-recipient alert: another reader serves it.
    await filed.create_alert(store_contract.make_alert("A1"), "k1")
    order: list[str] = []

    async def long_read() -> None:
        await filed._fetch("SELECT count(*) AS n FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL"
                           " SELECT x + 1 FROM c WHERE x < 3000000) SELECT x FROM c)")
        order.append("long")

    reading = asyncio.create_task(long_read())
    await asyncio.sleep(0)  # the long read is under way: it holds a reader
    assert (await filed.get_alert("A1")).id == "A1"
    order.append("short")
    await reading
    assert order == ["short", "long"]


async def test_the_reader_refuses_writes(filed):
    with pytest.raises(errors.StoreError):
        await sqlite._Conn(filed._readers[0]).execute("DELETE FROM alerts")


async def test_housekeeping_finds_the_pending_cancels_by_their_index(filed):
    plan = await filed._fetch("EXPLAIN QUERY PLAN " + sql.UNBROADCAST_DONE, 0.0, "x")
    assert any("deliveries_pending_cancels" in row["detail"] for row in plan)


@pytest.mark.parametrize("every", [0.0, 3600.0])
async def test_the_wal_stays_bounded_while_the_writer_never_pauses(filed, tmp_path, monkeypatch, every):
    # The writer never checkpoints in its commits, and a fan-out's lanes commit back to back: a WAL
    # is started over only by a write that begins once everything was copied, which a checkpoint
    # running beside the writes never achieves (a 50,000-recipient fan-out left an 834 MB WAL beside
    # an 80 MB database). every=3600: no checkpoint in the run, the WAL of all it wrote (~30 MB).
    monkeypatch.setattr(sqlite, "CHECKPOINT_SECONDS", every)
    for k in range(100):  # never waiting for a checkpoint
        await filed.upsert_recipients(_big(1_000, start=k * 1_000))
    wal = (tmp_path / "alertd.db-wal").stat().st_size
    assert (wal < 12_000_000) is (every == 0.0), wal


async def test_a_brief_transaction_waits_for_another_process_off_the_loop(filed, tmp_path):
    # A CLI command (another process) holds the write lock: the daemon's loop must go on meanwhile.
    other = sqlite3.connect(tmp_path / "alertd.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        creating = asyncio.create_task(filed.create_alert(store_contract.make_alert("A1"), "k1"))
        started = time.monotonic()
        await asyncio.sleep(0)  # the task begins: on the loop it would wait out the busy timeout here
        assert time.monotonic() - started < 1 and not creating.done()
    finally:
        other.execute("COMMIT")
        other.close()
    assert (await creating)[1]  # created once the other process let go


async def test_a_token_lookup_takes_no_hand_over_to_a_thread(filed):
    # Every request begins with it: under a fan-out each hand-over to a thread and back cost ms.
    await filed.add_cell(people.Cell("pref-69", "Préfecture du Rhône", ("69",), ("pref-69",), model.utcnow()))
    alice = auth.new_user("alice", "pref-69", [model.Role.ISSUER], model.utcnow())
    await filed.add_user(alice)
    _, token = auth.new_token(alice, model.utcnow())
    await filed.add_token(token)
    lookup = asyncio.create_task(filed.caller_by_hash(token.secret_hash))
    await asyncio.sleep(0)  # one step of the loop
    assert lookup.done() and lookup.result().user == "alice"
