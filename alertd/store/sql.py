"""The SQL both stores share: the schema, the statements, and the decisions around them.

Statements are written once with numbered `$n` parameters (SQLite reads them as `?n`) and a few
dialect slots (`{time}`, `{serial}`, `{key}`, `{each}`, `{lock}`, `{row_lock}`, `{claim_index}`) that each driver's
`Dialect` fills.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from alertd import errors, model, priority, zones
from alertd.store import audit, people, progress, sirens

OPEN = "('pending', 'sending')"  # spelt as in the partial index, so the planners match it
# Alerts whose pending deliveries never go (`refused`: planning found content other than approved).
STOPPED = "('cancelled', 'updated', 'expired', 'refused', 'rejected', 'approval_expired')"

SCHEMA_VERSION = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, applied_at {time} NOT NULL)"""

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE tokens (id TEXT PRIMARY KEY, cell TEXT NOT NULL, role TEXT NOT NULL,
            zones TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE, created_at {time} NOT NULL,
            revoked BOOLEAN NOT NULL DEFAULT FALSE)""",
        """CREATE TABLE recipients (id {key} PRIMARY KEY, phone TEXT, push_token TEXT,
            push_token_dead BOOLEAN NOT NULL DEFAULT FALSE, locale TEXT NOT NULL, zones TEXT NOT NULL)""",
        "CREATE INDEX recipients_push_token ON recipients (push_token)",
        # Every code covering each of a recipient's zones (`zones.covering`): targeting is one join.
        """CREATE TABLE recipient_zones (zone TEXT NOT NULL,
            recipient_id {key} NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
            PRIMARY KEY (zone, recipient_id))""",
        "CREATE INDEX recipient_zones_recipient ON recipient_zones (recipient_id)",
        "CREATE TABLE sirens (id TEXT PRIMARY KEY, zone TEXT NOT NULL, label TEXT NOT NULL DEFAULT '')",
        """CREATE TABLE alerts (seq {serial}, id TEXT NOT NULL UNIQUE, sender TEXT NOT NULL,
            identifier TEXT NOT NULL, idempotency_key TEXT NOT NULL, state TEXT NOT NULL,
            plan_cursor TEXT, token_id TEXT, data TEXT NOT NULL, created_at {time} NOT NULL,
            expires {time}, cancelled_at {time}, UNIQUE (sender, idempotency_key))""",
        """CREATE TABLE deliveries (id {serial}, alert_id TEXT NOT NULL REFERENCES alerts (id),
            channel TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL, address TEXT NOT NULL,
            locale TEXT NOT NULL, command TEXT NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_at {time} NOT NULL, lease_until {time},
            owner TEXT, last_error TEXT, provider_id TEXT, updated_at {time} NOT NULL,
            UNIQUE (alert_id, channel, target, command))""",
        "CREATE INDEX deliveries_claim ON deliveries (channel, state, next_at)",
        "CREATE INDEX deliveries_counts ON deliveries (alert_id, channel, state)",
        "CREATE INDEX deliveries_provider ON deliveries (provider_id) WHERE provider_id IS NOT NULL",
        f"CREATE INDEX deliveries_open ON deliveries (alert_id) WHERE state IN {OPEN}",
    )),
    (2, (
        # A provider's receipt that arrived before the delivery's provider id was recorded.
        """CREATE TABLE early_receipts (provider_id TEXT PRIMARY KEY, state TEXT NOT NULL, error TEXT,
            at {time} NOT NULL)""",
    )),
    progress.MIGRATION,
    (4, (
        "ALTER TABLE recipients ADD COLUMN lat DOUBLE PRECISION",
        "ALTER TABLE recipients ADD COLUMN lon DOUBLE PRECISION",
        "ALTER TABLE recipients ADD COLUMN exercise BOOLEAN NOT NULL DEFAULT FALSE",
        "CREATE INDEX recipients_location ON recipients (lat, lon) WHERE lat IS NOT NULL",
        "ALTER TABLE sirens ADD COLUMN lat DOUBLE PRECISION",
        "ALTER TABLE sirens ADD COLUMN lon DOUBLE PRECISION",
        "ALTER TABLE tokens ADD COLUMN boundary TEXT",
        "ALTER TABLE alerts ADD COLUMN cap TEXT",  # the CAP document it came as, kept to give it back
        "CREATE INDEX alerts_identifier ON alerts (sender, identifier)",
        # The chain of CAP references, readable both ways.
        """CREATE TABLE alert_refs (alert_id TEXT NOT NULL REFERENCES alerts (id),
            ref_id TEXT NOT NULL REFERENCES alerts (id), PRIMARY KEY (alert_id, ref_id))""",
        "CREATE INDEX alert_refs_ref ON alert_refs (ref_id)",
        # The recipients of an alert whose audience is not a plain list of zones (shapes, updates,
        # tests), written once before its planning, which walks them in id order like zone members.
        """CREATE TABLE alert_targets (alert_id TEXT NOT NULL, recipient_id {key} NOT NULL,
            PRIMARY KEY (alert_id, recipient_id))""",
    )),
    sirens.MIGRATION,
    audit.MIGRATION,
    (7, (
        # An all-clear planned while an original of its recipient was still `sending` waits for
        # those originals (`REACH_WAITS`): it goes only if one of them reached the recipient.
        """CREATE TABLE reach_waits (delivery_id BIGINT NOT NULL, original_id BIGINT NOT NULL,
            PRIMARY KEY (delivery_id, original_id))""",
    )),
    (8, (
        # Who goes first (`priority.rank`), decided at planning; the claim walks this index in
        # (priority, next_at, id) order and stops at its limit.
        f"ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT {priority.DEFAULT}",
        f"UPDATE deliveries SET priority = {priority.SIREN} WHERE kind = 'siren'",
        "CREATE INDEX deliveries_claim_priority ON deliveries (channel, state, priority, next_at, id)",
    )),
    people.MIGRATION,  # cells and users; every token belongs to a user (`legacy` moves the old ones)
    (10, (
        # Few alerts ever await a second person: housekeeping finds them without walking every alert.
        "CREATE INDEX alerts_awaiting ON alerts (seq) WHERE state = 'awaiting_approval'",
    )),
    (11, (
        # Housekeeping's `UNBROADCAST_DONE` looks at the pending cancels only: without this it read
        # every pending delivery each round, 60-100 ms of the SQLite writer during a big fan-out.
        "CREATE INDEX deliveries_pending_cancels ON deliveries (id) WHERE state = 'pending' AND command = 'cancel'",
    )),
)

DELIVERY_COLUMNS = "alert_id, channel, kind, target, address, locale, command, state, attempts, next_at, updated_at,"\
    " priority"

# The recipients of a planning chunk, ids in ($4, $5]: everyone, or those in the zones $6.
EVERYONE = "FROM recipients r WHERE r.id > $4 AND r.id <= $5"
IN_ZONES = """FROM recipient_zones rz JOIN recipients r ON r.id = rz.recipient_id
    WHERE rz.zone IN (SELECT value FROM {each}($6)) AND rz.recipient_id > $4 AND rz.recipient_id <= $5"""
IN_TARGETS = """FROM alert_targets t JOIN recipients r ON r.id = t.recipient_id
    WHERE t.alert_id = $1 AND t.recipient_id > $4 AND t.recipient_id <= $5"""
EXERCISE_ONLY = " AND r.exercise"  # the one gate between an exercise and the public: every plan passes it
# The deliveries of a chunk, by the subscriber address the channel's kind needs.
PLAN = {
    model.Address.PHONE: "SELECT $1, $2, {kind}, r.id, r.phone, r.locale, 'send', 'pending', 0,"
    " CAST($3 AS {time}), CAST($3 AS {time}), {priority} {audience} AND r.phone IS NOT NULL",
    model.Address.PUSH_TOKEN: "SELECT $1, $2, {kind}, r.id, r.push_token, r.locale, 'send', 'pending', 0,"
    " CAST($3 AS {time}), CAST($3 AS {time}), {priority} {audience}"
    " AND r.push_token IS NOT NULL AND NOT r.push_token_dead",
}


def kind_literal(kind: str) -> str:
    """A kind as an SQL literal; only a name `model.KIND_PATTERN` allows may become one."""
    if not re.fullmatch(model.KIND_PATTERN, kind):
        raise ValueError(f"not a kind: {kind!r}")
    return f"'{kind}'"

CHUNK_END_TARGETS = """SELECT max(recipient_id) AS last FROM (SELECT recipient_id FROM alert_targets
    WHERE alert_id = $1 AND recipient_id > $2 ORDER BY recipient_id LIMIT $3) c"""
TARGET_IDS = "INSERT INTO alert_targets (alert_id, recipient_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
TARGET_ZONES = """INSERT INTO alert_targets (alert_id, recipient_id) SELECT DISTINCT $1, recipient_id
    FROM recipient_zones WHERE zone IN (SELECT value FROM {each}($2)) ON CONFLICT DO NOTHING"""
# Everyone an earlier alert reached or was reaching: an update's text goes to them too.
TARGET_REACHED = """INSERT INTO alert_targets (alert_id, recipient_id) SELECT DISTINCT $1, target
    FROM deliveries WHERE alert_id IN (SELECT value FROM {each}($2)) AND kind <> 'siren' AND command = 'send'
    AND state <> 'failed' AND target IN (SELECT id FROM recipients) ON CONFLICT DO NOTHING"""
# Reached: the provider accepted the message. A `sending` delivery may be on the wire, or only
# claimed and about to be dropped for the cancel: it has not reached anyone yet.
REACHED = "('sent', 'delivered')"
# A cancel's own message goes over the very channel and address that reached each recipient, or
# that may yet reach them: those still `sending` get theirs only once reached (`WAIT_FOR_REACH`).
# An area broadcast is withdrawn instead (`SIREN_CANCEL`).
PLAN_REACHED = f"""INSERT INTO deliveries ({DELIVERY_COLUMNS})
    SELECT $1, channel, kind, target, address, locale, command, 'pending', 0, CAST($3 AS {{time}}),
    CAST($3 AS {{time}}), CAST($5 AS INTEGER) FROM deliveries WHERE alert_id IN (SELECT value FROM {{each}}($2))
    AND kind IN (SELECT value FROM {{each}}($4)) AND kind <> 'siren' AND command <> 'broadcast'
    AND state IN ('sending', 'sent', 'delivered') {{participants}} ON CONFLICT DO NOTHING"""
# Run after PLAN_REACHED, in its transaction and on its snapshot (`Dialect.snapshot`): each all-clear
# ($1's) planned from an original ($2's) still `sending`, whose recipient no original has reached,
# waits for those still sending.
WAIT_FOR_REACH = f"""INSERT INTO reach_waits (delivery_id, original_id)
    SELECT n.id, o.id FROM deliveries o JOIN deliveries n ON n.alert_id = $1 AND n.channel = o.channel
    AND n.target = o.target AND n.command = o.command
    LEFT JOIN (SELECT DISTINCT channel, target, command FROM deliveries WHERE alert_id IN (SELECT value
    FROM {{each}}($2)) AND state IN {REACHED}) r ON r.channel = o.channel AND r.target = o.target
    AND r.command = o.command
    WHERE o.alert_id IN (SELECT value FROM {{each}}($2)) AND o.state = 'sending' AND r.target IS NULL
    ON CONFLICT DO NOTHING"""
# The all-clears that wait: none of their originals has reached the recipient yet. Not correlated,
# so a claim computes it once, whatever the number of rows it looks at.
REACH_WAITS = f"""SELECT w.delivery_id FROM reach_waits w JOIN deliveries o ON o.id = w.original_id
    GROUP BY w.delivery_id HAVING max(CASE WHEN o.state IN {REACHED} THEN 1 ELSE 0 END) = 0"""
# ... and none of them can any more: no all-clear is owed.
UNREACHED = f"""UPDATE deliveries SET state = 'cancelled', last_error = $2, updated_at = $1
    WHERE state = 'pending' AND id IN (SELECT w.delivery_id FROM reach_waits w JOIN deliveries o
    ON o.id = w.original_id GROUP BY w.delivery_id
    HAVING max(CASE WHEN o.state IN {REACHED} OR o.state IN {OPEN} THEN 1 ELSE 0 END) = 0)"""
REACH_WAITS_DONE = f"""DELETE FROM reach_waits WHERE delivery_id IN (SELECT id FROM deliveries
    WHERE id IN (SELECT delivery_id FROM reach_waits) AND state NOT IN {OPEN})"""
# An exercise's cancel goes to those reached who still take part in exercises, and to no one else.
PARTICIPANTS = "AND target IN (SELECT id FROM recipients WHERE exercise)"
INSERT_PLANNED = f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) {{select}} ON CONFLICT DO NOTHING"
INSERT_DELIVERY = f"""INSERT INTO deliveries ({DELIVERY_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $9) ON CONFLICT DO NOTHING"""
CHUNK_END_EVERYONE = "SELECT max(id) AS last FROM (SELECT id FROM recipients WHERE id > $1 ORDER BY id LIMIT $2) c"
# One zone at a time, so each read walks the (zone, recipient_id) index in order and stops at $3.
CHUNK_IN_ZONE = """SELECT recipient_id AS id FROM recipient_zones WHERE zone = $1 AND recipient_id > $2
    ORDER BY recipient_id LIMIT $3"""
# What a `cancel` stops: a siren's activation, an area broadcast (a cell broadcast is withdrawn).
STOPPABLE = "((kind = 'siren' AND command = 'activate') OR command = 'broadcast')"
# A siren or a broadcast that never started (cancelled, expired) has nothing to stop.
SIREN_CANCEL = f"""INSERT INTO deliveries ({DELIVERY_COLUMNS})
    SELECT alert_id, channel, kind, target, address, locale, 'cancel', 'pending', 0, CAST($2 AS {{time}}),
    CAST($2 AS {{time}}), {priority.SIREN} FROM deliveries WHERE alert_id = $1 AND {STOPPABLE}
    AND state NOT IN ('cancelled', 'expired') AND target NOT IN (SELECT value FROM {{each}}($3))
    ON CONFLICT DO NOTHING"""
# A `cancel` waits for what it stops to settle, so that it never overtakes it on the wire.
SIREN_WAITS = f"""d.command = 'cancel' AND EXISTS (SELECT 1 FROM deliveries s WHERE s.alert_id = d.alert_id
    AND s.channel = d.channel AND s.target = d.target AND s.command IN ('activate', 'broadcast')
    AND s.state IN {OPEN})"""
# A broadcast's `cancel` deletes the CBC's message of its identifier, whoever broadcast it: only one
# whose broadcast went out may go (a failed one may have failed for another alert holding it).
UNBROADCAST = f"""d.command = 'cancel' AND d.kind <> 'siren' AND NOT EXISTS (SELECT 1 FROM deliveries s
    WHERE s.alert_id = d.alert_id AND s.channel = d.channel AND s.target = d.target AND s.command = 'broadcast'
    AND s.state IN {REACHED})"""
# A pending delivery that may go once due, unless it waits. Not for a cancelled alert, unless it stops a siren.
CLAIMABLE = f"""d.state = 'pending' AND NOT ({SIREN_WAITS}) AND NOT ({UNBROADCAST}) AND d.id NOT IN ({REACH_WAITS})
    AND (d.command = 'cancel'
    OR NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = d.alert_id AND a.state IN {STOPPED}))"""
# ... and once the broadcast settled without going out, nothing is to be withdrawn.
UNBROADCAST_DONE = f"""UPDATE deliveries SET state = 'cancelled', last_error = $2, updated_at = $1
    WHERE id IN (SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND NOT ({SIREN_WAITS}) AND {UNBROADCAST})"""
DUE = f"d.next_at <= $2 AND {CLAIMABLE}"
# A lapsed lease is claimed whatever its alert: the dispatcher settles a cancelled one without sending.
LAPSED = "d.state = 'sending' AND d.lease_until <= $2"
# Each branch walks the priority claim index in (priority, next_at, id) order and stops at the limit
# (an OR would sort them all): the most urgent goes first, then the oldest due.
CLAIM_BRANCH = """SELECT id, priority, next_at FROM (SELECT d.id, d.priority, d.next_at FROM deliveries d {claim_index}
    WHERE d.channel = $1 AND {due} ORDER BY d.priority, d.next_at, d.id LIMIT $3 {lock}) AS {name}"""
CLAIM = f"""WITH picked AS (
    {CLAIM_BRANCH.format(due=DUE, name="due", lock="{lock}", claim_index="{claim_index}")}
    UNION ALL
    {CLAIM_BRANCH.format(due=LAPSED, name="lapsed", lock="{lock}", claim_index="{claim_index}")}
    ORDER BY priority, next_at, id LIMIT $3)
UPDATE deliveries SET state = 'sending', attempts = attempts + 1, owner = $4, lease_until = $5, updated_at = $2,
    last_error = CASE WHEN state = 'sending' THEN $6 WHEN last_error = $6 THEN NULL ELSE last_error END
WHERE id IN (SELECT id FROM picked) RETURNING *"""
# The leases of what an owner has in hand, extended while its calls are on the wire.
RENEW = """UPDATE deliveries SET lease_until = $3 WHERE id IN (SELECT CAST(value AS BIGINT) FROM {each}($1))
    AND owner = $2 AND state = 'sending' RETURNING id"""
# A retry of a delivery whose alert was cancelled meanwhile is cancelled instead: nothing would claim it.
RECORD = f"""UPDATE deliveries SET
    state = CASE WHEN $2 = 'pending' AND command <> 'cancel' AND EXISTS (SELECT 1 FROM alerts a
        WHERE a.id = deliveries.alert_id AND a.state IN {STOPPED}) THEN 'cancelled' ELSE $2 END,
    next_at = COALESCE($3, next_at), last_error = COALESCE($4, last_error),
    provider_id = COALESCE($5, provider_id), lease_until = NULL, owner = NULL, updated_at = $6
WHERE id = $1 AND state = 'sending'"""
# The common case, written many thousands of times a second: a send the provider accepted.
RECORD_SENT = """UPDATE deliveries SET state = 'sent', provider_id = $2, lease_until = NULL, owner = NULL,
    updated_at = $3 WHERE id = $1 AND state = 'sending'"""
RECEIPT = """UPDATE deliveries SET state = $2, last_error = COALESCE($3, last_error), lease_until = NULL,
    updated_at = $4 WHERE provider_id = $1 AND state IN (SELECT value FROM {each}($5))"""
# The one backward move: the provider accepted the message, then could not deliver it for a reason
# that may pass (handset switched off). The provider id goes: a late copy of that receipt must not
# fail the retry.
REQUEUE = f"""UPDATE deliveries SET state = 'pending', next_at = $3, provider_id = NULL, last_error = $4,
    updated_at = $5 WHERE id = $1 AND provider_id = $2 AND state = 'sent'
    AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = deliveries.alert_id AND a.state IN {STOPPED})"""
# Failover: a failing channel's pending deliveries go to another of its kind (`health`), one statement.
# One tried already failed for the channel's sake, not its own: it is due at once on the other.
MOVE_PENDING = """UPDATE deliveries SET channel = $2, last_error = $3, updated_at = $4,
    next_at = CASE WHEN attempts > 0 AND next_at > $4 THEN $4 ELSE next_at END
    WHERE channel = $1 AND state = 'pending' AND NOT EXISTS (SELECT 1 FROM deliveries o
    WHERE o.alert_id = deliveries.alert_id AND o.channel = $2 AND o.target = deliveries.target
    AND o.command = deliveries.command)"""
# Keep the receipt of higher rank when one is already waiting for that provider id.
EARLY_RECEIPT = """INSERT INTO early_receipts (provider_id, state, error, at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (provider_id) DO UPDATE SET state = excluded.state, error = excluded.error, at = excluded.at
    WHERE early_receipts.state IN (SELECT value FROM {each}($5))"""
EARLY_FOR = "SELECT * FROM early_receipts WHERE provider_id IN (SELECT value FROM {each}($1))"
# Only the receipts whose delivery now carries their provider id are done with.
EARLY_DONE = """DELETE FROM early_receipts WHERE provider_id IN (SELECT value FROM {each}($1))
    AND EXISTS (SELECT 1 FROM deliveries d WHERE d.provider_id = early_receipts.provider_id)"""
UPSERT_RECIPIENT = """INSERT INTO recipients (id, phone, push_token, push_token_dead, locale, zones, lat, lon,
    exercise) VALUES ($1, $2, $3, FALSE, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET phone = excluded.phone,
    push_token = excluded.push_token, push_token_dead = FALSE, locale = excluded.locale, zones = excluded.zones,
    lat = excluded.lat, lon = excluded.lon, exercise = excluded.exercise"""
INSERT_ALERT = """INSERT INTO alerts (id, sender, identifier, idempotency_key, state, token_id, data,
    created_at, expires, cancelled_at, cap) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (sender, idempotency_key) DO NOTHING"""


@dataclasses.dataclass(frozen=True)
class Dialect:
    time: str  # the column type of instants
    serial: str  # an auto-numbered primary key
    key: str  # text ordered by code point, as Python orders it (planning cursors compare ids)
    each: str  # a table function yielding the `value`s of a JSON array of text
    lock: str  # what a claim adds to lock the rows it picks
    row_lock: str  # what a read adds to lock the row it reads until the transaction ends
    receipts_lock: str | None  # taken by a receipt that finds no delivery ($1: its provider id)
    receipts_shared: str | None  # taken by a record before it looks for early receipts ($1: JSON of its ids)
    migration_lock: str | None  # serialises instances migrating at once
    audit_lock: str | None  # serialises instances appending to the audit chain
    snapshot: str | None  # first in a transaction: every statement in it reads the same snapshot
    claim_index: str  # what a claim's FROM adds so that it walks `deliveries_claim_priority`
    instant: Callable[[dt.datetime], Any]  # a datetime as the driver stores it
    placeholders: Callable[[str], str]  # `$n` parameters spelt the driver's way

    @functools.lru_cache(maxsize=256)  # noqa: B019 (one Dialect per driver, kept for the process's life)
    def sql(self, text: str) -> str:
        """The statement for this driver: dialect slots filled, parameters spelt its way."""
        slots = dict(
            time=self.time, serial=self.serial, key=self.key, each=self.each, lock=self.lock, row_lock=self.row_lock,
            claim_index=self.claim_index,
        )
        return self.placeholders(text.format(**slots))


class Conn(Protocol):
    """A driver connection; it renders every statement with `Dialect.sql`."""

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


# -- decisions --------------------------------------------------------------------------------------


def no_alert(alert_id: str) -> errors.NotFound:
    return errors.NotFound(f"no alert {alert_id!r}", resource="alert", id=alert_id)


def receipt_sources(state: model.State) -> list[str]:
    """The states a receipt may move a delivery from to `state`: lower rank, and not settled except
    `sent` (a provider confirms or refutes what it accepted)."""
    return [
        s.value
        for s in model.State
        if model.RANK[s] < model.RANK[state] and (s not in model.SETTLED or s is model.State.SENT)
    ]


def zone_rows(owner_id: str, codes: Iterable[str]) -> set[tuple[str, str]]:
    """(code, owner) for every code covering one of the zones."""
    return {(code, owner_id) for zone in codes for code in zones.covering(zone)}


def chunk_end(id_lists: Iterable[Sequence[str]], limit: int) -> str | None:
    """The `limit`-th smallest distinct id over sorted id lists (the largest when fewer)."""
    ids = sorted(set().union(*id_lists))
    return ids[min(limit, len(ids)) - 1] if ids else None


def fill_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        per_state = counts.setdefault(row["channel"], {s.value: 0 for s in model.State})
        per_state[row["state"]] = row["n"]
    return counts


def alert_from_row(row: Mapping[str, Any]) -> model.Alert:
    return model.Alert.from_json(
        json.loads(row["data"]),
        state=row["state"],
        token_id=row["token_id"],
        cancelled_at=model.to_utc(row["cancelled_at"]),
    )


def rowcount(status: str) -> int:
    """The row count at the end of a command status tag such as `UPDATE 3` or `INSERT 0 5`."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0

