"""The audit log: who did what, when, from where. Append-only, and chained so that an edit shows.

No API edits or deletes an entry; the store has no method that could. Each entry (`alertd.audit.Entry`)
also carries the SHA-256 of its content and of the previous entry's hash, so an entry changed or
removed behind alertd's back (in the database itself) breaks the chain, and `alertd audit --verify`
says where (`broken`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from alertd import audit
from alertd.store import mixin

MIGRATION = (6, (
    """CREATE TABLE audit (id {serial}, at {time} NOT NULL, cell TEXT NOT NULL, token_id TEXT,
        action TEXT NOT NULL, subject TEXT, detail TEXT NOT NULL, address TEXT, prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    "CREATE INDEX audit_subject ON audit (subject, id)",
))


def broken(rows: Sequence[Mapping[str, Any]], prev_hash: str = audit.GENESIS) -> int | None:
    """The id of the first entry whose chain does not hold, in rows taken in id order from the first."""
    for row in rows:
        entry = audit.Entry.from_row(row)
        if row["prev_hash"] != prev_hash or audit.chained(prev_hash, entry) != row["hash"]:
            return entry.id
        prev_hash = row["hash"]
    return None


class AuditStore(mixin.Base):
    """The audit methods of `base.SQLStore` (mixed in), over its `_tx` and `_fetch`."""

    async def _audit(self, conn: Any, entry: audit.Entry) -> None:
        """Append `entry` inside the caller's transaction: the entry and what it records commit together."""
        if self.dialect.audit_lock:  # one chain: appenders on other instances wait their turn
            await conn.execute(self.dialect.audit_lock)
        last = await conn.fetch("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")
        prev = last[0]["hash"] if last else audit.GENESIS
        await conn.execute(
            "INSERT INTO audit (at, cell, token_id, user_name, action, subject, detail, address, prev_hash, hash)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            self._t(entry.at), entry.cell, entry.token_id, entry.user, entry.action, entry.subject,
            json.dumps(dict(entry.detail), ensure_ascii=False), entry.address, prev, audit.chained(prev, entry),
        )

    async def add_audit(self, entry: audit.Entry) -> None:
        async with self._tx() as conn:
            await self._audit(conn, entry)

    async def audit(
        self, limit: int = 100, before: int | None = None, cell: str | None = None, action: str | None = None,
        subject: str | None = None,
    ) -> list[audit.Entry]:
        """Newest first; only entries with id < `before`, and the given cell, action and subject."""
        rows = await self._page(
            "audit", [("id < $1", before if before is not None else 2**62)],
            [("cell", cell), ("action", action), ("subject", subject)], "id DESC", limit,
        )
        return [audit.Entry.from_row(r) for r in rows]

    async def verify_audit(self) -> int | None:
        """The id of the first entry where the chain breaks, or None when it holds throughout."""
        prev, after = audit.GENESIS, 0
        while rows := await self._fetch("SELECT * FROM audit WHERE id > $1 ORDER BY id LIMIT 10000", after):
            if (bad := broken(rows, prev)) is not None:
                return bad
            prev, after = rows[-1]["hash"], rows[-1]["id"]
        return None
