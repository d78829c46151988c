"""The shared store: PostgreSQL, for several instances behind a load balancer.

Instances share the work by claiming with `FOR UPDATE SKIP LOCKED` under a lease, and wake each
other with `NOTIFY alertd_work` (payload: a channel name after planning, an alert id on cancel).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from alertd import errors
from alertd.store import base, sql

NOTIFY_CHANNEL = "alertd_work"
POOL_MIN, POOL_MAX = 1, 10
# The lanes' claims, records and lease renewals have connections of their own: a burst of receipts
# or API reads cannot make a lane wait to record what it sent.
FANOUT_MAX = 4

DIALECT = sql.Dialect(
    time="timestamptz",
    serial="BIGSERIAL PRIMARY KEY",
    key='TEXT COLLATE "C"',
    each="json_array_elements_text",
    lock="FOR UPDATE OF d SKIP LOCKED",
    row_lock="FOR UPDATE",
    # A receipt finding no delivery and a record writing its provider id never miss each other. One
    # lock per bucket of provider ids, not one for all: the status callbacks that arrive before their
    # sends are recorded (under load, most of them) neither queue behind each other nor hold up the
    # record of everything else, which would widen the crash duplicate window (what is sent and not
    # yet recorded).
    receipts_lock="SELECT pg_advisory_xact_lock(7424212, hashtext($1) & 127)",
    receipts_shared="""SELECT pg_advisory_xact_lock_shared(7424212, b) FROM (SELECT DISTINCT hashtext(value) & 127
        AS b FROM json_array_elements_text($1) ORDER BY b) buckets""",
    migration_lock="SELECT pg_advisory_xact_lock(7424211)",  # any constant shared by all instances
    audit_lock="SELECT pg_advisory_xact_lock(7424213)",
    snapshot="SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    claim_index="",  # its planner walks `deliveries_claim_priority` of itself (`bench/priority.py --claim`)
    instant=lambda value: value,
    placeholders=lambda text: text,
)


class _Conn:
    """Used only inside `PostgresStore._conn`/`_tx`, which turn driver errors into the store's."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        return await self._conn.fetch(DIALECT.sql(text), *args)

    async def execute(self, text: str, *args: Any) -> int:
        return sql.rowcount(await self._conn.execute(DIALECT.sql(text), *args))

    async def executemany(self, text: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self._conn.executemany(DIALECT.sql(text), rows)


@contextlib.contextmanager
def _errors():
    """Driver errors leave the store as `errors.Conflict` (a constraint) or `errors.StoreError`."""
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise errors.Conflict(str(exc)) from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise errors.StoreError(f"PostgreSQL store failed: {exc}") from exc
    except OSError as exc:  # the connection a pool opens or uses failed
        raise errors.StoreError(f"PostgreSQL store unreachable: {exc}") from exc


class PostgresStore(base.SQLStore):
    dialect = DIALECT

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._fanout: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=POOL_MIN, max_size=POOL_MAX)
            self._fanout = await asyncpg.create_pool(self.url, min_size=1, max_size=FANOUT_MAX)
        except (OSError, asyncpg.PostgresError) as exc:
            await self.close()
            raise errors.StoreError(f"PostgreSQL store unreachable: {exc}") from exc
        await self.migrate()

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        for pool in (self._pool, self._fanout):
            if pool is not None:
                await pool.close()
        self._pool = self._fanout = None

    async def ping(self) -> None:
        try:
            await self._fetch("SELECT 1")
        except errors.StoreError as exc:
            raise errors.StoreError(f"PostgreSQL store unreachable: {exc}") from exc

    async def listen(self, callback: Callable[[str], object]) -> None:
        """Call `callback(payload)` on every `NOTIFY alertd_work`, from this or another instance:
        a channel name when deliveries were planned, an alert id when one was cancelled. Runs on a
        dedicated connection until `close()`."""
        if self._listener is None:
            self._listener = await asyncpg.connect(self.url)
        await self._listener.add_listener(NOTIFY_CHANNEL, lambda _conn, _pid, _chan, payload: callback(payload))

    async def _notify(self, conn: sql.Conn, payload: str) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise errors.StoreError("the PostgreSQL store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        with _errors():  # also acquiring a connection
            async with self.pool.acquire() as conn:
                yield _Conn(conn)

    @contextlib.asynccontextmanager
    async def _tx(self, pool: asyncpg.Pool | None = None) -> AsyncIterator[_Conn]:
        with _errors():  # also acquiring a connection and committing
            async with (pool or self.pool).acquire() as conn, conn.transaction():
                yield _Conn(conn)

    def _fanout_tx(self) -> contextlib.AbstractAsyncContextManager[_Conn]:
        if self._fanout is None:
            raise errors.StoreError("the PostgreSQL store is not open")
        return self._tx(self._fanout)
