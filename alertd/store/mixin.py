"""What every part of `base.SQLStore` stands on: its dialect, connections, transactions and reads.

The store's methods are split over mixins (`planning`, `progress`, `audit`, `sirens`, `people`,
`approvals`), each a subclass of `Base`, so that each names what it uses from the others. A driver
subclass of `base.SQLStore` supplies `dialect`, `_conn` and `_tx`.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # these modules import the mixins: a cycle at run time
    from alertd import audit, model
    from alertd.store import sql


class Base(abc.ABC):
    dialect: sql.Dialect

    @abc.abstractmethod
    def _tx(self) -> contextlib.AbstractAsyncContextManager[sql.Conn]:
        """A connection inside one transaction, committed on exit (writes take the lock at once)."""

    @abc.abstractmethod
    def _conn(self) -> contextlib.AbstractAsyncContextManager[sql.Conn]:
        """A connection for one autocommitted statement."""

    def _brief_tx(self) -> contextlib.AbstractAsyncContextManager[sql.Conn]:
        """`_tx` for a few statements on a bounded number of rows (a new alert, a receipt): a
        driver may run them at once (SQLite: on the loop, no hand-over to its thread)."""
        return self._tx()

    def _fanout_tx(self) -> contextlib.AbstractAsyncContextManager[sql.Conn]:
        """`_brief_tx` for the lanes' claims, records and renewals (a driver may keep connections
        for them)."""
        return self._brief_tx()

    async def _notify(self, conn: sql.Conn, payload: str) -> None:  # noqa: B027 (a hook: a no-op by default)
        """Wake the other instances (PostgreSQL); nothing to do with one instance."""

    def _t(self, value: dt.datetime | None) -> Any:
        return None if value is None else self.dialect.instant(value)

    async def _fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        async with self._conn() as conn:
            return await conn.fetch(text, *args)

    async def _brief_fetch(self, text: str, *args: Any) -> list[Mapping[str, Any]]:
        """`_fetch` for a read of a few rows by key (a request's token): a driver may run it at once."""
        return await self._fetch(text, *args)

    async def _execute(self, text: str, *args: Any) -> int:
        async with self._conn() as conn:
            return await conn.execute(text, *args)

    async def _page(
        self, table: str, fixed: Sequence[tuple[str, Any]], optional: Sequence[tuple[str, Any]], order: str,
        limit: int,
    ) -> list[Mapping[str, Any]]:
        """A paged read of `table`: the `fixed` conditions (text with `$n`, value), then
        `column = value` for each optional filter given (not None), ordered by `order`."""
        where, args = [cond for cond, _ in fixed], [value for _, value in fixed]
        for column, value in optional:
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        args.append(limit)
        return await self._fetch(
            f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ${len(args)}", *args
        )

    # What one mixin uses of another's (each is defined in the module named).

    @abc.abstractmethod
    async def _audit(self, conn: sql.Conn, entry: audit.Entry) -> None:
        """`audit.AuditStore`."""

    @abc.abstractmethod
    async def alerts_in_state(self, state: model.AlertState) -> list[model.Alert]:
        """`base.SQLStore`."""

    @abc.abstractmethod
    async def last_siren_deliveries(self) -> dict[str, model.Delivery]:
        """`progress.ProgressStore`."""
