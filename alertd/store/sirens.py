"""Siren health: what each siren's gateway last said about it, and the state operators see (as
`alertd.sirenstate` decides it from that health and the siren's last command).

The gateway's heartbeats (mains, battery, fault, sabotage) and acknowledgements land in
`siren_status`, one row per siren (the protocol is in `alertd.fakes.siren`). Two clocks meet here:
a heartbeat's own time (`reported_at`, the gateway's clock, never later than when alertd received
it: `alertd.web.receipts.clamped`) only orders heartbeats that repeat or arrive out of order; the
time alertd received it (`at`, alertd's clock) says whether the siren has gone silent, so a
gateway whose clock drifts is not declared silent for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from alertd import model, sirenstate
from alertd.store import mixin

MIGRATION = (5, (
    # `silent`: the siren's silence was reported (logged) once; its next heartbeat clears it.
    """CREATE TABLE siren_status (siren_id TEXT PRIMARY KEY, at {time},
        reported_at {time}, mains BOOLEAN, battery DOUBLE PRECISION, fault BOOLEAN NOT NULL DEFAULT FALSE,
        sabotage BOOLEAN NOT NULL DEFAULT FALSE, last_ack TEXT, last_ack_at {time},
        silent BOOLEAN NOT NULL DEFAULT FALSE)""",
))

# Only a later heartbeat (by the gateway's clock) replaces the one kept.
# Hearing from a siren always counts (`at`, alertd's clock); its health is the latest report by
# the gateway's clock (the later received of two at the same time), so a late copy of an old
# heartbeat does not undo a newer one.
HEARTBEAT = """INSERT INTO siren_status (siren_id, at, reported_at, mains, battery, fault, sabotage)
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (siren_id) DO UPDATE SET at = excluded.at, silent = FALSE,
    reported_at = CASE WHEN {newer} THEN excluded.reported_at ELSE siren_status.reported_at END,
    mains = CASE WHEN {newer} THEN excluded.mains ELSE siren_status.mains END,
    battery = CASE WHEN {newer} THEN excluded.battery ELSE siren_status.battery END,
    fault = CASE WHEN {newer} THEN excluded.fault ELSE siren_status.fault END,
    sabotage = CASE WHEN {newer} THEN excluded.sabotage ELSE siren_status.sabotage END""".replace(
    "{newer}", "(siren_status.reported_at IS NULL OR siren_status.reported_at <= excluded.reported_at)"
)
ACK = """INSERT INTO siren_status (siren_id, last_ack, last_ack_at) VALUES ($1, $2, $3)
    ON CONFLICT (siren_id) DO UPDATE SET last_ack = excluded.last_ack, last_ack_at = excluded.last_ack_at
    WHERE siren_status.last_ack_at IS NULL OR siren_status.last_ack_at < excluded.last_ack_at"""
# Sent, accepted by the gateway, and never acknowledged: it did not sound.
UNACKNOWLEDGED = """UPDATE deliveries SET state = 'failed', last_error = $3, updated_at = $4
    WHERE channel = $1 AND kind = 'siren' AND command = 'activate' AND state = 'sent' AND updated_at <= $2
    RETURNING *"""
# A siren never heard from gets a row, silent from the start.
NEVER_HEARD = """INSERT INTO siren_status (siren_id, silent) SELECT id, TRUE FROM sirens s
    WHERE NOT EXISTS (SELECT 1 FROM siren_status t WHERE t.siren_id = s.id) ON CONFLICT DO NOTHING
    RETURNING siren_id"""
WENT_SILENT = """UPDATE siren_status SET silent = TRUE WHERE NOT silent AND (at IS NULL OR at <= $1)
    RETURNING siren_id"""
STATUS = """SELECT s.id, s.zone, s.label, s.lat, s.lon, t.at AS heard_at, t.mains, t.battery, t.fault,
    t.sabotage, t.last_ack, t.last_ack_at FROM sirens s LEFT JOIN siren_status t ON t.siren_id = s.id ORDER BY s.id"""


def from_row(
    row: Mapping[str, Any], last: model.Delivery | None, now: dt.datetime, stale_after: dt.timedelta | None
) -> sirenstate.SirenState:
    health = sirenstate.Health(model.to_utc(row["heard_at"]), bool(row["fault"]), bool(row["sabotage"]))
    return sirenstate.SirenState(
        siren_id=row["id"], zone=row["zone"], label=row["label"] or "", lat=row["lat"], lon=row["lon"],
        state=sirenstate.decide(last, health, now, stale_after), last_heartbeat=health.heard_at,
        silent=sirenstate.silent(health, now, stale_after), battery=row["battery"],
        mains=None if row["mains"] is None else bool(row["mains"]), fault=health.fault, sabotage=health.sabotage,
        last_ack=row["last_ack"], last_ack_at=model.to_utc(row["last_ack_at"]), last_command=last,
    )


class SirenStore(mixin.Base):
    """Siren health and acknowledgements, mixed into `base.SQLStore` (uses its `_tx`, `_fetch`,
    `_t` and `last_siren_deliveries`)."""

    async def record_heartbeats(self, beats: Sequence[model.Heartbeat], now: dt.datetime) -> None:
        async with self._tx() as conn:
            await conn.executemany(HEARTBEAT, [
                (b.siren_id, self._t(now), self._t(b.at), b.mains, b.battery, b.fault, b.sabotage) for b in beats
            ])

    async def record_siren_ack(self, siren_id: str, result: str, at: dt.datetime) -> None:
        async with self._tx() as conn:
            await conn.execute(ACK, siren_id, result, self._t(at))

    async def get_delivery(self, delivery_id: int) -> model.Delivery | None:
        rows = await self._fetch("SELECT * FROM deliveries WHERE id = $1", delivery_id)
        return model.Delivery.from_row(rows[0]) if rows else None

    async def fail_unacknowledged(
        self, channel: str, before: dt.datetime, now: dt.datetime
    ) -> list[model.Delivery]:
        error = f"no acknowledgement within {(now - before).total_seconds():g} s"
        async with self._tx() as conn:
            rows = await conn.fetch(UNACKNOWLEDGED, channel, self._t(before), error, self._t(now))
        return sorted((model.Delivery.from_row(r) for r in rows), key=lambda d: d.id)

    async def newly_silent(self, before: dt.datetime) -> list[str]:
        async with self._tx() as conn:
            never = await conn.fetch(NEVER_HEARD)
            went = await conn.fetch(WENT_SILENT, self._t(before))
        return sorted(r["siren_id"] for r in [*never, *went])

    async def siren_states(self, now: dt.datetime, stale_after: dt.timedelta | None) -> list[sirenstate.SirenState]:
        rows = await self._fetch(STATUS)
        last = await self.last_siren_deliveries()
        return [from_row(r, last.get(r["id"]), now, stale_after) for r in rows]
