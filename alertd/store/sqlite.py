"""The embedded store: one SQLite file in WAL mode, for a single instance.

Times are stored as epoch seconds (REAL) so that comparisons are numeric. One connection writes for
the instance; a lock keeps each coroutine's transaction whole, and lets the waiting coroutines in by
their `store.TURN` (then first come). Read-only connections serve the plain reads (a file store
only): in WAL mode they read the last commit while the writer is inside a transaction, so a
request's lookups and a lane's reads never queue behind a big fan-out's writes; there are `READERS`
of them, so that a token lookup does not queue behind one long read either (the counts of a
100,000-recipient alert take up to 100 ms).
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import aiosqlite

from alertd import errors, fair, store as store_mod
from alertd.store import base, sql

PREFIX = "sqlite:///"
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON")
MEMORY = ":memory:"  # a database of one connection's own: no reader beside it
READERS = 2

DIALECT = sql.Dialect(
    time="REAL",
    serial="INTEGER PRIMARY KEY",
    key="TEXT",
    each="json_each",
    lock="",  # BEGIN IMMEDIATE already holds the only write lock
    row_lock="",
    receipts_lock=None,
    receipts_shared=None,
    migration_lock=None,
    audit_lock=None,  # BEGIN IMMEDIATE already serialises writers
    snapshot=None,  # one writer at a time: nothing changes under a transaction
    # Without statistics SQLite would rather range-scan `next_at` on `deliveries_claim` and sort
    # every due row by priority: 7 ms a claim on 100,000 pending became 90.
    claim_index="INDEXED BY deliveries_claim_priority",
    instant=lambda value: value.timestamp(),
    placeholders=lambda text: re.sub(r"\$(\d+)", r"?\1", text),
)


def path_of(url: str) -> str:
    """`sqlite:///rel.db` → `rel.db`, `sqlite:////abs.db` → `/abs.db`, `sqlite:///:memory:`."""
    if not url.startswith(PREFIX) or len(url) == len(PREFIX):
        raise errors.ConfigError(f"a SQLite store URL looks like {PREFIX}path/to/alertd.db, not {url!r}")
    return url[len(PREFIX):]


class _Conn:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        with _errors():
            rows = await self._db.execute_fetchall(DIALECT.sql(text), args)
        # sqlite3.Row, like asyncpg.Record, is not a Mapping, but the store reads rows only by key
        # (`row[column]`, `keys()`), the part of Mapping both rows have.
        return cast(list[Mapping[str, Any]], list(rows))

    async def execute(self, text: str, *args: Any) -> int:
        with _errors():
            async with self._db.execute(DIALECT.sql(text), args) as cursor:
                return cursor.rowcount

    async def executemany(self, text: str, rows: Iterable[Sequence[Any]]) -> None:
        with _errors():
            await self._db.executemany(DIALECT.sql(text), rows)


async def _connect(target: str, pragmas: Sequence[str]) -> aiosqlite.Connection:
    db = await aiosqlite.connect(target, isolation_level=None, uri=target.startswith("file:"))
    db.row_factory = sqlite3.Row
    for pragma in pragmas:
        await db.execute(f"PRAGMA {pragma}")
    return db


@contextlib.contextmanager
def _errors():
    """Driver errors leave the store as `errors.Conflict` (a constraint) or `errors.StoreError`."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise errors.Conflict(str(exc)) from exc
    except sqlite3.Error as exc:
        raise errors.StoreError(f"SQLite store failed: {exc}") from exc


class SQLiteStore(base.SQLStore):
    dialect = DIALECT

    def __init__(self, url: str) -> None:
        self.path = path_of(url)
        self._db: aiosqlite.Connection | None = None
        self._readers: tuple[aiosqlite.Connection, ...] = ()
        self._free: list[aiosqlite.Connection] = []  # the readers no read holds
        self._lock = fair.Gate(1)
        self._reading = fair.Gate(READERS)

    async def open(self) -> None:
        self._db = await _connect(self.path, PRAGMAS)
        await self.migrate()
        if self.path != MEMORY:  # read-only: a write sent there by mistake fails loudly
            reader = f"{pathlib.Path(self.path).resolve().as_uri()}?mode=ro"
            self._readers = tuple([await _connect(reader, ("busy_timeout=5000",)) for _ in range(READERS)])
            self._free = list(self._readers)

    async def close(self) -> None:
        for db in [*self._readers, self._db]:
            if db is not None:
                await db.close()
        self._db, self._readers, self._free = None, (), []

    async def ping(self) -> None:
        try:  # on the writer: the connection every write needs
            async with self._conn() as conn:
                await conn.fetch("SELECT 1")
        except (errors.StoreError, ValueError) as exc:  # aiosqlite raises ValueError once closed
            raise errors.StoreError(f"SQLite store unreachable: {exc}") from exc

    async def listen(self, callback: Callable[[str], object]) -> None:
        """Other instances' wake-ups: there are none, a SQLite store serves one instance, so
        `callback` is never called (the PostgreSQL store's `listen` calls it)."""

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise errors.StoreError("the SQLite store is not open")
        return self._db

    async def _fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        # Only a SELECT can go to the reader: some statements read with RETURNING what they write.
        if not self._readers or not text.lstrip().upper().startswith("SELECT"):
            return await super()._fetch(text, *args)
        async with self._reading.turn((store_mod.TURN.get(),)):
            reader = self._free.pop()  # the gate lets in no more reads than there are readers
            try:
                return await _Conn(reader).fetch(text, *args)
            finally:
                self._free.append(reader)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        async with self._lock.turn((store_mod.TURN.get(),)):
            yield _Conn(self.db)

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        async with self._lock.turn((store_mod.TURN.get(),)):
            with _errors():
                await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _Conn(self.db)
                with _errors():
                    await self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # a failed COMMIT leaves it open
                    await self.db.execute("ROLLBACK")
                raise
