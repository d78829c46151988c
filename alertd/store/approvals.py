"""Alerts awaiting a second person, in the store (mixed into `base.SQLStore`): their moves from state
to state, each a compare-and-set with its audit entry, and the counts of whom they would reach."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence

from alertd import approval, audit, model
from alertd.store import mixin, sql

# Whom a planning would reach, per kind: the recipients in its zones, its own targets (shapes, test
# recipients) and those the alerts it updates or cancels reached, as `TARGET_REACHED` takes them.
COUNT_AUDIENCE = """SELECT r.locale, count(CASE WHEN r.phone IS NOT NULL THEN 1 END) AS sms,
    count(CASE WHEN r.push_token IS NOT NULL AND NOT r.push_token_dead THEN 1 END) AS push
    FROM recipients r WHERE ({everyone}
    OR r.id IN (SELECT recipient_id FROM recipient_zones WHERE zone IN (SELECT value FROM {{each}}($1)))
    OR r.id IN (SELECT value FROM {{each}}($2))
    OR r.id IN (SELECT target FROM deliveries WHERE alert_id IN (SELECT value FROM {{each}}($3))
        AND kind <> 'siren' AND command = 'send' AND state <> 'failed')){exercise}
    GROUP BY r.locale"""


class ApprovalStore(mixin.Base):
    """The approval methods of `base.SQLStore` (mixed in), over its `_tx` and `_fetch`."""

    async def move_alert(
        self, alert_id: str, from_state: model.AlertState, alert: model.Alert, audit_entry: audit.Entry | None = None,
    ) -> bool:
        """Store `alert` (its state, approval record and all) in place of the alert `alert_id`, only
        if that is still in `from_state`, with its audit entry; False when it moved meanwhile."""
        async with self._tx() as conn:
            changed = await conn.execute(
                "UPDATE alerts SET state = $3, data = $4, expires = $5 WHERE id = $1 AND state = $2",
                alert_id, from_state.value, alert.state.value, json.dumps(alert.to_json()), self._t(alert.expires),
            )
            if not changed and not await conn.fetch("SELECT 1 FROM alerts WHERE id = $1", alert_id):
                raise sql.no_alert(alert_id)
            if changed and audit_entry is not None:
                await self._audit(conn, audit_entry)
        return changed > 0

    async def expire_approvals(self, now: dt.datetime) -> list[str]:
        """Move every approval request past its time to `approval_expired` (never sent); their ids."""
        expired = []
        for alert in await self.alerts_in_state(model.AlertState.AWAITING_APPROVAL):
            if alert.approval is None or not approval.expired(alert.approval, now):
                continue
            entry = audit.Entry(cell=alert.cell, action="approval_expired", at=now, subject=alert.id,
                                detail={"requested_by": alert.approval.requested_by,
                                        "expires_at": alert.approval.expires_at.isoformat()}, address="alertd")
            moved = dataclasses.replace(alert, state=model.AlertState.APPROVAL_EXPIRED)
            if await self.move_alert(alert.id, model.AlertState.AWAITING_APPROVAL, moved, entry):
                expired.append(alert.id)
        return expired

    async def count_audience(
        self, everyone: bool = False, zones: Sequence[str] = (), ids: Sequence[str] = (),
        reached_by: Sequence[str] = (), exercise_only: bool = False,
    ) -> dict[str, int]:
        """How many recipients a planning over these would write an SMS and a push for."""
        by_locale = await self.count_audience_by_locale(everyone, zones, ids, reached_by, exercise_only)
        return {kind: sum(counts.get(kind, 0) for counts in by_locale.values()) for kind in ("sms", "push")}

    async def count_audience_by_locale(
        self, everyone: bool = False, zones: Sequence[str] = (), ids: Sequence[str] = (),
        reached_by: Sequence[str] = (), exercise_only: bool = False,
    ) -> dict[str, dict[str, int]]:
        """`count_audience` by the recipients' locale (their SMS and push are rendered in it)."""
        text = COUNT_AUDIENCE.format(everyone="TRUE" if everyone else "FALSE",
                                     exercise=" AND r.exercise" if exercise_only else "")
        rows = await self._fetch(text, json.dumps(list(zones)), json.dumps(list(ids)), json.dumps(list(reached_by)))
        return {row["locale"]: {"sms": int(row["sms"]), "push": int(row["push"])} for row in rows
                if row["sms"] or row["push"]}
