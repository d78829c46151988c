"""The store logic both SQL stores share, over the tiny driver API of `sql.Conn`.

A driver subclass supplies its `sql.Dialect`, connections (`_conn`) and transactions (`_tx`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from alertd import audit, errors, model, store as store_mod
from alertd.store import approvals, audit as audit_store, legacy, people, planning, progress, sirens, sql

# What runs after a migration's statements, in its transaction: the data it moves (store, conn).
STEPS = {people.MIGRATION[0]: legacy.migrate_old_tokens}
SIRENS = "SELECT * FROM sirens ORDER BY id"


class SQLStore(
    planning.PlanningStore, progress.ProgressStore, audit_store.AuditStore, sirens.SirenStore, people.PeopleStore,
    approvals.ApprovalStore,
):
    """Every `Store` method, over `sql.Conn`s from the driver subclass (`dialect`, `_tx`, `_conn`:
    see `mixin.Base`)."""

    async def migrate(self) -> None:
        async with self._tx() as conn:
            if self.dialect.migration_lock:
                await conn.execute(self.dialect.migration_lock)
            await conn.execute(sql.SCHEMA_VERSION)
            current = (await conn.fetch("SELECT max(version) AS v FROM schema_version"))[0]["v"] or 0
            for version, statements in sorted(sql.MIGRATIONS):
                if version > current:
                    for statement in statements:
                        await conn.execute(statement)
                    if version in STEPS:
                        await STEPS[version](self, conn)
                    await conn.execute(
                        "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                        version, self._t(model.utcnow()),
                    )

    # -- audience ----------------------------------------------------------------------------------
    async def upsert_recipients(self, recipients: Sequence[model.Recipient]) -> int:
        latest = {r.id: r for r in recipients}  # a batch naming a recipient twice: the last wins
        if not latest:
            return 0
        async with self._tx() as conn:
            await conn.executemany(sql.UPSERT_RECIPIENT, [
                (r.id, r.phone, r.push_token, r.locale, json.dumps(list(r.zones)), r.lat, r.lon, r.exercise)
                for r in latest.values()
            ])
            await conn.execute(
                "DELETE FROM recipient_zones WHERE recipient_id IN (SELECT value FROM {each}($1))",
                json.dumps(list(latest)),
            )
            await conn.executemany(
                "INSERT INTO recipient_zones (zone, recipient_id) VALUES ($1, $2)",
                [row for r in latest.values() for row in sql.zone_rows(r.id, r.zones)],
            )
        return len(latest)

    async def get_recipient(self, recipient_id: str) -> model.Recipient:
        rows = await self._fetch("SELECT * FROM recipients WHERE id = $1", recipient_id)
        if not rows:
            raise errors.NotFound(f"no recipient {recipient_id!r}", resource="recipient", id=recipient_id)
        return model.Recipient.from_row(rows[0])

    async def recipients(self, ids: Sequence[str]) -> list[model.Recipient]:
        if not ids:
            return []
        rows = await self._fetch(
            "SELECT * FROM recipients WHERE id IN (SELECT value FROM {each}($1))", json.dumps(list(ids))
        )
        return [model.Recipient.from_row(r) for r in rows]

    async def count_recipients(self) -> int:
        return (await self._fetch("SELECT count(*) AS n FROM recipients"))[0]["n"]

    async def mark_push_token_dead(self, push_token: str) -> int:
        return await self._execute(
            "UPDATE recipients SET push_token_dead = TRUE WHERE push_token = $1 AND NOT push_token_dead",
            push_token,
        )

    async def upsert_sirens(self, sirens: Sequence[model.Siren]) -> int:
        async with self._tx() as conn:
            await conn.executemany(
                "INSERT INTO sirens (id, zone, label, lat, lon) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id)"
                " DO UPDATE SET zone = excluded.zone, label = excluded.label, lat = excluded.lat, lon = excluded.lon",
                [(s.id, s.zone, s.label, s.lat, s.lon) for s in sirens],
            )
        return len(sirens)

    async def list_sirens(self) -> list[model.Siren]:
        # A plain read (`_fetch`): on SQLite a planning's siren list does not wait for the writer.
        return [model.Siren.from_row(r) for r in await self._fetch(SIRENS)]

    @staticmethod
    async def _sirens(conn: sql.Conn) -> list[model.Siren]:
        return [model.Siren.from_row(r) for r in await conn.fetch(SIRENS)]

    # -- alerts ------------------------------------------------------------------------------------
    async def create_alert(
        self, alert: model.Alert, idempotency_key: str, cap: str | None = None, audit_entry: audit.Entry | None = None
    ) -> tuple[model.Alert, bool]:
        async with self._brief_tx() as conn:
            created = await conn.execute(
                sql.INSERT_ALERT, alert.id, alert.sender, alert.identifier, idempotency_key, alert.state.value,
                alert.token_id, json.dumps(alert.to_json()), self._t(model.utcnow()),
                self._t(alert.expires), self._t(alert.cancelled_at), cap,
            )
            if created:
                await conn.executemany(
                    "INSERT INTO alert_refs (alert_id, ref_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    [(alert.id, r.alert_id) for r in alert.references if r.alert_id],
                )
                if audit_entry is not None:
                    await self._audit(conn, audit_entry)
                return alert, True
            rows = await conn.fetch(
                "SELECT * FROM alerts WHERE sender = $1 AND idempotency_key = $2", alert.sender, idempotency_key
            )
        return sql.alert_from_row(rows[0]), False

    async def get_alert(self, alert_id: str) -> model.Alert:
        rows = await self._fetch("SELECT * FROM alerts WHERE id = $1", alert_id)
        if not rows:
            raise sql.no_alert(alert_id)
        return sql.alert_from_row(rows[0])

    async def find_alert(self, sender: str, identifier: str) -> model.Alert | None:
        rows = await self._fetch(
            "SELECT * FROM alerts WHERE sender = $1 AND identifier = $2 ORDER BY seq DESC LIMIT 1", sender, identifier
        )
        return sql.alert_from_row(rows[0]) if rows else None

    async def referenced_by(self, alert_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT r.alert_id FROM alert_refs r JOIN alerts a ON a.id = r.alert_id WHERE r.ref_id = $1"
            " ORDER BY a.seq", alert_id,
        )
        return [r["alert_id"] for r in rows]

    async def alert_cap(self, alert_id: str) -> str | None:
        rows = await self._fetch("SELECT cap FROM alerts WHERE id = $1", alert_id)
        if not rows:
            raise sql.no_alert(alert_id)
        return rows[0]["cap"]

    async def list_alerts(self, limit: int = 50, before: str | None = None) -> list[model.Alert]:
        if before is None:
            rows = await self._fetch("SELECT * FROM alerts ORDER BY seq DESC LIMIT $1", limit)
        else:
            rows = await self._fetch(
                "SELECT * FROM alerts WHERE seq < (SELECT seq FROM alerts WHERE id = $2)"
                " ORDER BY seq DESC LIMIT $1", limit, before,
            )
        return [sql.alert_from_row(r) for r in rows]

    async def alerts_in_state(self, state: model.AlertState) -> list[model.Alert]:
        rows = await self._fetch("SELECT * FROM alerts WHERE state = $1 ORDER BY seq", state.value)
        return [sql.alert_from_row(r) for r in rows]

    async def set_alert_state(
        self, alert_id: str, state: model.AlertState, only_from: model.AlertState | None = None
    ) -> bool:
        async with self._tx() as conn:
            if only_from is None:
                changed = await conn.execute("UPDATE alerts SET state = $2 WHERE id = $1", alert_id, state.value)
            else:
                changed = await conn.execute(
                    "UPDATE alerts SET state = $2 WHERE id = $1 AND state = $3",
                    alert_id, state.value, only_from.value,
                )
            if not changed and not await conn.fetch("SELECT 1 FROM alerts WHERE id = $1", alert_id):
                raise sql.no_alert(alert_id)
        return changed > 0

    async def issue_draft(self, alert: model.Alert, audit_entry: audit.Entry) -> bool:
        """Turn a stored draft into `alert` (same id, state `planning`), with its audit entry; False
        when it is no longer a draft (approved or discarded meanwhile)."""
        async with self._tx() as conn:
            changed = await conn.execute(
                "UPDATE alerts SET state = 'planning', data = $2, expires = $3, cap = NULL"
                " WHERE id = $1 AND state = 'draft'",
                alert.id, json.dumps(alert.to_json()), self._t(alert.expires),
            )
            if changed:
                await self._audit(conn, audit_entry)
        return changed > 0

    # -- fan-out -----------------------------------------------------------------------------------
    async def claim(
        self, channel: str, owner: str, now: dt.datetime, limit: int, lease: dt.timedelta,
        done: Sequence[model.Outcome] = (),
    ) -> list[model.Delivery]:
        async with self._fanout_tx() as conn:
            await self._record(conn, done, now)
            rows = await conn.fetch(
                sql.CLAIM, channel, self._t(now), limit, owner, self._t(now + lease), store_mod.LAPSED
            )
        return sorted((model.Delivery.from_row(r) for r in rows), key=lambda d: (d.priority, d.next_at, d.id))

    async def renew(self, ids: Sequence[int], owner: str, until: dt.datetime) -> set[int]:
        if not ids:
            return set()
        async with self._fanout_tx() as conn:
            rows = await conn.fetch(sql.RENEW, json.dumps(list(ids)), owner, self._t(until))
        return {r["id"] for r in rows}

    async def record(self, outcomes: Sequence[model.Outcome], now: dt.datetime) -> None:
        async with self._fanout_tx() as conn:
            await self._record(conn, outcomes, now)

    async def _record(self, conn: sql.Conn, outcomes: Sequence[model.Outcome], now: dt.datetime) -> None:
        at = self._t(now)
        sent = [(o.delivery_id, o.provider_id, at) for o in outcomes if o.state is model.State.SENT]
        other = [
            (o.delivery_id, o.state.value, self._t(o.next_at), o.last_error, o.provider_id, at)
            for o in outcomes if o.state is not model.State.SENT
        ]
        if sent:
            await conn.executemany(sql.RECORD_SENT, sent)
            await self._apply_early(conn, [p for _, p, _ in sent if p is not None], at)
        if other:
            await conn.executemany(sql.RECORD, other)

    async def _apply_early(self, conn: sql.Conn, provider_ids: Sequence[str], at: Any) -> None:
        """Apply the receipts that arrived before these provider ids were recorded."""
        if not provider_ids:
            return
        ids = json.dumps(provider_ids)
        if self.dialect.receipts_shared:
            await conn.execute(self.dialect.receipts_shared, ids)
        early = await conn.fetch(sql.EARLY_FOR, ids)
        if early:
            await conn.executemany(sql.RECEIPT, [
                (r["provider_id"], r["state"], r["error"], at, json.dumps(sql.receipt_sources(model.State(r["state"]))))
                for r in early
            ])
            await conn.execute(sql.EARLY_DONE, ids)

    async def apply_receipt(
        self, provider_id: str, state: model.State, error: str | None, now: dt.datetime
    ) -> bool:
        args = (provider_id, state.value, error, self._t(now), json.dumps(sql.receipt_sources(state)))
        async with self._brief_tx() as conn:
            if await conn.execute(sql.RECEIPT, *args):
                return True
            if self.dialect.receipts_lock:  # then look again: a record may have committed meanwhile
                await conn.execute(self.dialect.receipts_lock, provider_id)
                if await conn.execute(sql.RECEIPT, *args):
                    return True
            if not await conn.fetch("SELECT 1 FROM deliveries WHERE provider_id = $1", provider_id):
                await conn.execute(sql.EARLY_RECEIPT, *args)  # the record will apply it
        return False

    async def purge_early_receipts(self, before: dt.datetime) -> int:
        return await self._execute("DELETE FROM early_receipts WHERE at < $1", self._t(before))

    async def delivery_by_provider(self, provider_id: str) -> model.Delivery | None:
        rows = await self._fetch("SELECT * FROM deliveries WHERE provider_id = $1", provider_id)
        return model.Delivery.from_row(rows[0]) if rows else None

    async def requeue(
        self, delivery_id: int, provider_id: str, next_at: dt.datetime, error: str, now: dt.datetime
    ) -> bool:
        return bool(await self._execute(sql.REQUEUE, delivery_id, provider_id, self._t(next_at), error, self._t(now)))

    async def cancel_alert(self, alert_id: str, now: dt.datetime, audit_entry: audit.Entry | None = None) -> int:
        async with self._tx() as conn:
            # An alert an update replaced stays `updated`: its cancel is the update's.
            found = await conn.execute(
                "UPDATE alerts SET state = CASE WHEN state = 'updated' THEN state ELSE 'cancelled' END,"
                " cancelled_at = COALESCE(cancelled_at, $2) WHERE id = $1",
                alert_id, self._t(now),
            )
            if not found:
                raise sql.no_alert(alert_id)
            cancelled = await conn.execute(
                "UPDATE deliveries SET state = 'cancelled', updated_at = $2"
                " WHERE alert_id = $1 AND state = 'pending' AND command <> 'cancel'",
                alert_id, self._t(now),
            )
            if audit_entry is not None:
                await self._audit(conn, audit_entry)
            await self._notify(conn, alert_id)
        return cancelled

    async def expire_due(self, now: dt.datetime) -> int:
        async with self._tx() as conn:
            # A siren's `cancel` outlives its alert: a siren must never be left sounding.
            expired = await conn.execute(
                "UPDATE deliveries SET state = 'expired', updated_at = $1 WHERE state = 'pending'"
                " AND command <> 'cancel' AND alert_id IN (SELECT id FROM alerts WHERE expires <= $1)",
                self._t(now),
            )
            # A completed alert stays completed: expired says its fan-out was cut short.
            await conn.execute(
                "UPDATE alerts SET state = 'expired' WHERE expires <= $1 AND state IN ('planning', 'active')",
                self._t(now),
            )
        return expired

    async def complete_settled(self) -> list[str]:
        rows = await self._fetch(
            "UPDATE alerts SET state = 'completed' WHERE state = 'active' AND NOT EXISTS (SELECT 1"
            f" FROM deliveries d WHERE d.alert_id = alerts.id AND d.state IN {sql.OPEN}) RETURNING id"
        )
        return sorted(r["id"] for r in rows)

    async def move_pending(self, channel: str, to: str, note: str, now: dt.datetime) -> int:
        async with self._tx() as conn:
            moved = await conn.execute(sql.MOVE_PENDING, channel, to, note, self._t(now))
            if moved:
                await self._notify(conn, to)
        return moved

    async def next_due(self, channel: str) -> dt.datetime | None:
        # A lease that runs out (its instance died) makes work due too; a row no claim would take
        # (a siren cancel waiting for its activate) does not.
        rows = await self._fetch(
            "SELECT min(t) AS t FROM ("
            f" SELECT min(next_at) AS t FROM deliveries d WHERE d.channel = $1 AND {sql.CLAIMABLE}"
            " UNION ALL"
            " SELECT min(lease_until) AS t FROM deliveries WHERE channel = $1 AND state = 'sending') AS due",
            channel,
        )
        return model.to_utc(rows[0]["t"])

    async def unsettled(self) -> int:
        return (await self._fetch(f"SELECT count(*) AS n FROM deliveries WHERE state IN {sql.OPEN}"))[0]["n"]

    # -- reading -----------------------------------------------------------------------------------
    async def counts(self, alert_id: str) -> dict[str, dict[str, int]]:
        return sql.fill_counts(await self._fetch(
            "SELECT channel, state, count(*) AS n FROM deliveries WHERE alert_id = $1 GROUP BY channel, state",
            alert_id,
        ))

    async def deliveries(
        self,
        alert_id: str,
        channel: str | None = None,
        state: model.State | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[model.Delivery]:
        rows = await self._page(
            "deliveries", [("alert_id = $1", alert_id), ("id > $2", after_id)],
            [("channel", channel), ("state", state and state.value)], "id", limit,
        )
        return [model.Delivery.from_row(r) for r in rows]
