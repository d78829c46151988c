"""Planning, the store's side: an alert's targets, its deliveries written chunk by chunk with the
cursor, and what an update or a cancel does to the alerts before it. Mixed into `base.SQLStore`
(uses its `_tx`, `_fetch`, `_notify` and `_t`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from alertd import model, priority
from alertd.store import mixin, sql

UNREACHED = "the cancelled alert never reached this recipient: no all-clear is owed"
UNBROADCAST = "the broadcast never went out: there is nothing to withdraw"


class PlanningStore(mixin.Base):
    async def located(self, box: tuple[float, float, float, float]) -> list[Mapping[str, Any]]:
        min_lat, min_lon, max_lat, max_lon = box
        return await self._fetch(
            "SELECT id, lat, lon FROM recipients WHERE lat IS NOT NULL AND lat BETWEEN $1 AND $3"
            " AND lon BETWEEN $2 AND $4", min_lat, min_lon, max_lat, max_lon,
        )

    async def add_targets(
        self, alert_id: str, ids: Sequence[str] = (), zones: Sequence[str] = (), reached_by: Sequence[str] = ()
    ) -> None:
        async with self._tx() as conn:
            await conn.executemany(sql.TARGET_IDS, [(alert_id, i) for i in ids])
            if zones:
                await conn.execute(sql.TARGET_ZONES, alert_id, json.dumps(list(zones)))
            if reached_by:
                await conn.execute(sql.TARGET_REACHED, alert_id, json.dumps(list(reached_by)))

    async def plan_chunk(
        self,
        alert: model.Alert,
        routes: Mapping[str, str],
        audience: model.Audience,
        after: str | None,
        limit: int,
        now: dt.datetime,
        ranks: Mapping[str, int] | None = None,
        *,
        addresses: Mapping[str, model.Address] = model.ADDRESSES,
    ) -> str | None:
        ranks = ranks or priority.ranks(alert)
        async with self._tx() as conn:
            if not await self._still_planning(conn, alert.id):
                return None  # cancelled meanwhile: planning more would undo the cancel
            per_person = {k: (name, addresses[k]) for k, name in routes.items() if addresses.get(k) in sql.PLAN}
            last = await self._plan_recipients(conn, alert.id, per_person, audience, after or "", limit, now, ranks)
            for channel in sorted(set(routes.values())):
                await self._notify(conn, channel)
        return last

    async def plan_fixed(
        self, alert: model.Alert, fixed: Sequence[model.NewDelivery], now: dt.datetime,
        ranks: Mapping[str, int] | None = None,
    ) -> bool:
        async with self._brief_tx() as conn:
            if not await self._still_planning(conn, alert.id):
                return False
            ranks = ranks or priority.ranks(alert)
            await conn.executemany(sql.INSERT_DELIVERY, [
                (d.alert_id, d.channel, str(d.kind), d.target, d.address, d.locale, d.command, self._t(now),
                 ranks[d.kind])
                for d in fixed
            ])
            for channel in sorted({d.channel for d in fixed}):
                await self._notify(conn, channel)
        return True

    @staticmethod
    async def _still_planning(conn: sql.Conn, alert_id: str) -> bool:
        # Locked until commit: a cancel waits for this transaction, then cancels what it wrote.
        rows = await conn.fetch("SELECT state FROM alerts WHERE id = $1 {row_lock}", alert_id)
        if not rows:
            raise sql.no_alert(alert_id)
        return rows[0]["state"] == model.AlertState.PLANNING

    async def _plan_recipients(
        self, conn: sql.Conn, alert_id: str, routes: Mapping[str, tuple[str, model.Address]],
        audience: model.Audience, after: str, limit: int, now: dt.datetime, ranks: Mapping[str, int],
    ) -> str | None:
        last = await self._chunk_end(conn, alert_id, audience, after, limit)
        if last is None:
            return None
        source, extra = {
            "everyone": (sql.EVERYONE, ()),
            "zones": (sql.IN_ZONES, (json.dumps(list(audience.zones)),)),
            "targets": (sql.IN_TARGETS, ()),
        }[audience.walk]
        if audience.exercise_only:
            source += sql.EXERCISE_ONLY
        for kind, (channel, address) in routes.items():
            # Literals: the placeholders differ by audience, a rank is a small integer and a kind
            # matches `model.KIND_PATTERN`.
            select = sql.PLAN[address].replace("{audience}", source).replace("{priority}", str(int(ranks[kind])))
            await conn.execute(
                sql.INSERT_PLANNED.replace("{select}", select.replace("{kind}", sql.kind_literal(kind))),
                alert_id, channel, self._t(now), after, last, *extra,
            )
        await conn.execute("UPDATE alerts SET plan_cursor = $2 WHERE id = $1", alert_id, last)
        return last

    @staticmethod
    async def _chunk_end(
        conn: sql.Conn, alert_id: str, audience: model.Audience, after: str, limit: int
    ) -> str | None:
        if audience.walk == "nobody":
            return None
        if audience.walk == "everyone":
            return (await conn.fetch(sql.CHUNK_END_EVERYONE, after, limit))[0]["last"]
        if audience.walk == "targets":
            return (await conn.fetch(sql.CHUNK_END_TARGETS, alert_id, after, limit))[0]["last"]
        codes = sorted(set(audience.zones))
        ids = [[r["id"] for r in await conn.fetch(sql.CHUNK_IN_ZONE, z, after, limit)] for z in codes]
        return sql.chunk_end(ids, limit)

    async def plan_reached(
        self, alert_id: str, earlier: Sequence[str], kinds: Sequence[str], now: dt.datetime,
        exercise_only: bool = False, rank: int = priority.DEFAULT,
    ) -> int:
        statement = sql.PLAN_REACHED.replace("{participants}", sql.PARTICIPANTS if exercise_only else "")
        async with self._tx() as conn:
            if self.dialect.snapshot:  # WAIT_FOR_REACH sees the originals as PLAN_REACHED saw them
                await conn.execute(self.dialect.snapshot)
            added = await conn.execute(
                statement, alert_id, json.dumps(list(earlier)), self._t(now), json.dumps([str(k) for k in kinds]),
                rank,
            )
            await conn.execute(sql.WAIT_FOR_REACH, alert_id, json.dumps(list(earlier)))
            for channel in await conn.fetch("SELECT DISTINCT channel FROM deliveries WHERE alert_id = $1", alert_id):
                await self._notify(conn, channel["channel"])
        return added

    async def drop_unreached(self, now: dt.datetime) -> int:
        async with self._tx() as conn:
            dropped = await conn.execute(sql.UNREACHED, self._t(now), UNREACHED)
            dropped += await conn.execute(sql.UNBROADCAST_DONE, self._t(now), UNBROADCAST)
            await conn.execute(sql.REACH_WAITS_DONE)
        return dropped

    async def replace(self, earlier: Sequence[str], by: str, now: dt.datetime) -> int:
        """Mark the alerts an update replaces, and cancel their deliveries that have not started."""
        ids = json.dumps(list(earlier))
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE alerts SET state = 'updated' WHERE id IN (SELECT value FROM {each}($1))"
                " AND state NOT IN ('cancelled', 'draft')", ids,
            )
            replaced = await conn.execute(
                "UPDATE deliveries SET state = 'cancelled', last_error = $2, updated_at = $3"
                " WHERE alert_id IN (SELECT value FROM {each}($1)) AND state = 'pending' AND command <> 'cancel'",
                ids, f"replaced by {by}", self._t(now),
            )
            for alert_id in earlier:
                await self._notify(conn, alert_id)
        return replaced

    async def plan_cursor(self, alert_id: str) -> str | None:
        rows = await self._brief_fetch("SELECT plan_cursor FROM alerts WHERE id = $1", alert_id)
        if not rows:
            raise sql.no_alert(alert_id)
        return rows[0]["plan_cursor"]

    async def plan_siren_cancel(self, alert_id: str, now: dt.datetime, keep: Sequence[str] = ()) -> int:
        async with self._tx() as conn:
            added = await conn.execute(sql.SIREN_CANCEL, alert_id, self._t(now), json.dumps(list(keep)))
            await self._notify(conn, alert_id)
        return added
