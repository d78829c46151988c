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

import asyncio
import concurrent.futures
import contextlib
import pathlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from alertd import errors, fair, store as store_mod
from alertd.store import base, sql

PREFIX = "sqlite:///"
# The writer never checkpoints in a commit (`wal_autocheckpoint=0`): a brief transaction commits on
# the loop, and a checkpoint there held it 10-20 ms. A connection of its own does it beside the writer.
BUSY_MS = 5000  # how long a write waits for another process's (a CLI command's)
PRAGMAS = (
    "journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={BUSY_MS}", "foreign_keys=ON", "wal_autocheckpoint=0",
)
CHECKPOINT_SECONDS = 0.5  # at most this often, after a commit
WAL_PAGES = 1000  # SQLite's own autocheckpoint threshold: beyond, the WAL is started over
MEMORY = ":memory:"  # a database of one connection's own: no reader beside it
READERS = 2
T = TypeVar("T")

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


class _Link:
    """One sqlite3 connection and the thread of its own that runs its statements off the loop."""

    def __init__(self) -> None:
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="alertd-sqlite")
        self._db: sqlite3.Connection | None = None

    async def open(self, target: str, pragmas: Sequence[str]) -> _Link:
        self._db = await self.run(_connect, target, pragmas)
        return self

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise errors.StoreError("the SQLite store is not open")
        return self._db

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=False)


class _Conn:
    """A link's statements, each on the link's thread, or at once on the loop if `brief`: a
    transaction of a few statements on a bounded number of rows (a lane's claim, a receipt, a new
    alert) then takes no hand-over to the thread and back. Under a fan-out each hand-over waited for
    a core and the GIL, several ms (`bench/priority.py`), and the writer was held all that time."""

    def __init__(self, link: _Link, brief: bool = False) -> None:
        self._link = link
        self._brief = brief

    async def fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        # sqlite3.Row, like asyncpg.Record, is not a Mapping, but the store reads rows only by key
        # (`row[column]`, `keys()`), the part of Mapping both rows have.
        return cast(list[Mapping[str, Any]], await self._run(_fetchall, DIALECT.sql(text), args))

    async def execute(self, text: str, *args: Any) -> int:
        return await self._run(_execute, DIALECT.sql(text), args)

    async def executemany(self, text: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._run(_executemany, DIALECT.sql(text), list(rows))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with _errors():
            if self._brief:
                return fn(self._link.db, *args)
            return await self._link.run(fn, self._link.db, *args)


def _connect(target: str, pragmas: Sequence[str]) -> sqlite3.Connection:
    # Used from its link's thread and, for brief transactions, the loop's: never both at once (the gates).
    db = sqlite3.connect(target, isolation_level=None, uri=target.startswith("file:"), check_same_thread=False)
    db.row_factory = sqlite3.Row
    for pragma in pragmas:
        db.execute(f"PRAGMA {pragma}")
    return db


def _begin_at_once(db: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE if no other process holds the write lock: the loop never waits for one. Once
    begun, nothing in the transaction waits (in WAL mode readers never block the writer)."""
    with _errors():
        db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError:  # busy: another process writes (or worse: the thread will say)
        return False
    finally:
        with _errors():
            db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")


def _checkpoint(db: sqlite3.Connection) -> int:
    """The WAL's pages (0 if it could not say), once what no reader still needs was copied."""
    # PASSIVE: it copies what no reader still needs and waits for nobody; the next one does the rest.
    try:
        return int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    except sqlite3.Error:
        return 0


def _fetchall(db: sqlite3.Connection, text: str, args: Sequence[Any]) -> list[sqlite3.Row]:
    return db.execute(text, args).fetchall()


def _execute(db: sqlite3.Connection, text: str, args: Sequence[Any]) -> int:
    return db.execute(text, args).rowcount


def _executemany(db: sqlite3.Connection, text: str, rows: list[Sequence[Any]]) -> None:
    db.executemany(text, rows)


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
        self._writer = _Link()
        self._readers: tuple[_Link, ...] = ()
        self._free: list[_Link] = []  # the readers no read holds
        self._checkpointer = _Link()
        self._checkpoint: asyncio.Future[None] | None = None
        self._checkpointed = 0.0  # monotonic
        self._lock = fair.Gate(1)
        self._reading = fair.Gate(READERS)

    async def open(self) -> None:
        await self._writer.open(self.path, PRAGMAS)
        await self.migrate()
        if self.path != MEMORY:  # read-only: a write sent there by mistake fails loudly
            reader = f"{pathlib.Path(self.path).resolve().as_uri()}?mode=ro"
            self._readers = tuple([await _Link().open(reader, (f"busy_timeout={BUSY_MS}",)) for _ in range(READERS)])
            self._free = list(self._readers)
            await self._checkpointer.open(self.path, (f"busy_timeout={BUSY_MS}",))

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        for link in [*self._readers, self._checkpointer, self._writer]:
            await link.close()
        self._readers, self._free = (), []

    async def ping(self) -> None:
        try:  # on the writer: the connection every write needs
            async with self._conn() as conn:
                await conn.fetch("SELECT 1")
        except errors.StoreError as exc:
            raise errors.StoreError(f"SQLite store unreachable: {exc}") from exc

    async def listen(self, callback: Callable[[str], object]) -> None:
        """Other instances' wake-ups: there are none, a SQLite store serves one instance, so
        `callback` is never called (the PostgreSQL store's `listen` calls it)."""

    async def _fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        return await self._read(text, args)

    async def _brief_fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        return await self._read(text, args, brief=True)  # a few rows by key: at once, on the loop

    async def _read(self, text: str, args: Sequence[Any], brief: bool = False) -> list[Mapping[str, Any]]:
        # Only a SELECT can go to the reader: some statements read with RETURNING what they write.
        if not self._readers or not text.lstrip().upper().startswith("SELECT"):
            return await super()._fetch(text, *args)
        async with self._reading.turn((store_mod.TURN.get(),)):
            reader = self._free.pop()  # the gate lets in no more reads than there are readers
            try:
                return await _Conn(reader, brief).fetch(text, *args)
            finally:
                self._free.append(reader)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        async with self._lock.turn((store_mod.TURN.get(),)):
            yield _Conn(self._writer)

    def _brief_tx(self) -> contextlib.AbstractAsyncContextManager[_Conn]:
        return self._tx(brief=True)

    @contextlib.asynccontextmanager
    async def _tx(self, brief: bool = False) -> AsyncIterator[_Conn]:
        async with self._lock.turn((store_mod.TURN.get(),)):
            conn = _Conn(self._writer, brief)
            if not (brief and _begin_at_once(self._writer.db)):
                await _Conn(self._writer).execute("BEGIN IMMEDIATE")  # waits, if it must, off the loop
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                if self._writer.db.in_transaction:  # a failed COMMIT leaves it open
                    await conn.execute("ROLLBACK")
                raise
        self._committed()

    def _committed(self) -> None:
        """Checkpoint the WAL beside the writer, at most every `CHECKPOINT_SECONDS`: without it the
        WAL would grow for as long as the daemon runs."""
        now = time.monotonic()
        if not self._readers or now - self._checkpointed < CHECKPOINT_SECONDS:
            return  # a store in memory has no WAL (and no reader)
        if self._checkpoint is None or self._checkpoint.done():
            self._checkpointed = now
            self._checkpoint = asyncio.ensure_future(self._checkpoint_wal())

    async def _checkpoint_wal(self) -> None:
        db = self._checkpointer.db
        if await self._checkpointer.run(_checkpoint, db) < WAL_PAGES:
            return
        # Only a write that begins once everything was copied starts the WAL over, which the writes
        # of a fan-out, back to back, never let happen: the WAL grew by all they wrote (834 MB for
        # 50,000 recipients). With the writer held, this pass copies the little it appended meanwhile.
        async with self._lock.turn((store_mod.TURN.get(),)):
            await self._checkpointer.run(_checkpoint, db)
