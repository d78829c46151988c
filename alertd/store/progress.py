"""Progress snapshots: what each alert's counts were, row by row, for the live feed and the console.

A row is written only when an alert's state or counts changed since its last row, so the rows of an
alert are exactly the sequence of changes a client replays; `seq` orders them across alerts and
instances (a client resumes after the last `seq` it saw).
"""

from __future__ import annotations

import datetime as dt
import json

from alertd import model, progress as progress_mod
from alertd.store import mixin

MIGRATION = (3, (
    """CREATE TABLE progress (seq {serial}, alert_id TEXT NOT NULL, at {time} NOT NULL,
        state TEXT NOT NULL, counts TEXT NOT NULL)""",
    "CREATE INDEX progress_alert ON progress (alert_id, seq)",
    # A siren's last command, whatever the alert: the sirens page reads it for every siren at once.
    "CREATE INDEX deliveries_siren ON deliveries (target, id) WHERE kind = 'siren'",
))

class ProgressStore(mixin.Base):
    """The progress rows and siren reads, mixed into `base.SQLStore` (uses its `_fetch` and `_t`)."""

    async def record_progress(self, alert_id: str, state: str, counts: progress_mod.Counts, at: dt.datetime) -> int:
        rows = await self._fetch(
            "INSERT INTO progress (alert_id, at, state, counts) VALUES ($1, $2, $3, $4) RETURNING seq",
            alert_id, self._t(at), str(state), json.dumps(counts, sort_keys=True),
        )
        return rows[0]["seq"]

    async def progress(self, alert_id: str, after_seq: int = 0, limit: int = 1000) -> list[progress_mod.Progress]:
        rows = await self._fetch(
            "SELECT * FROM progress WHERE alert_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            alert_id, after_seq, limit,
        )
        return [progress_mod.Progress.from_row(r) for r in rows]

    async def last_progress(self, alert_id: str) -> progress_mod.Progress | None:
        rows = await self._fetch(
            "SELECT * FROM progress WHERE alert_id = $1 ORDER BY seq DESC LIMIT 1", alert_id
        )
        return progress_mod.Progress.from_row(rows[0]) if rows else None

    async def last_siren_deliveries(self) -> dict[str, model.Delivery]:
        rows = await self._fetch(
            "SELECT * FROM deliveries WHERE id IN"
            " (SELECT max(id) FROM deliveries WHERE kind = 'siren' GROUP BY target)"
        )
        return {r["target"]: model.Delivery.from_row(r) for r in rows}
