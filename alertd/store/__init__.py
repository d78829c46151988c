"""The store: the source of truth and the only state shared between instances.

`open_store(url)` picks the implementation by URL scheme and imports its driver lazily.
Every implementation passes the one behaviour suite in ``tests/store_contract.py``.

Rules every implementation keeps:

- Deliveries only move forward (`model.RANK`), except that the owner of a claimed (`sending`)
  delivery may put it back to `pending` for a retry.
- Planning is idempotent: a delivery is unique on (alert_id, channel, target, command), so a
  restarted planning never writes a second copy.
- A claim is a lease: a `sending` delivery whose lease ran out (its instance died) is claimed again.
- All times are passed in by the caller (`now`), so tests drive the clock.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

# Aliased: `audit` and `people` are this package's submodules too, and `progress` a method below.
from alertd import (
    audit as audit_mod,
    errors,
    model,
    people as people_mod,
    priority,
    progress as progress_mod,
    sirenstate,
)

# What a claim writes as `last_error` of a delivery it took from a lapsed lease: whoever held it may
# have sent it, and it may go twice.
LAPSED = "claimed again: an earlier claim's lease lapsed before its outcome was recorded"

# The place in line of the current task's store calls, lower first, on the scale of delivery
# priorities (`priority.rank`). A store that serves one caller at a time (SQLite) lets the best
# waiting caller in next, so an urgent alert's 202, its planning and the siren lane wait for the
# transaction in progress only, not for the queue of a big fan-out's claims and chunks. A task
# inherits its creator's turn: the dispatcher sets its own tasks' (`Dispatcher._plan`, `Lane.run`).
TURN: contextvars.ContextVar[int] = contextvars.ContextVar("alertd_store_turn", default=priority.DEFAULT)
REQUEST = priority.SIREN - 1  # an API request (`web.first`): before any background work


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date (migrations are idempotent)."""

    async def close(self) -> None: ...

    async def listen(self, callback: Callable[[str], object]) -> None:
        """Call `callback(payload)` for every notice of another instance sharing this store: a
        channel name when deliveries were planned for it, an alert id when it was cancelled. A store
        that serves one instance (SQLite) never calls it."""

    async def ping(self) -> None:
        """Raise `errors.StoreError` when the store is unreachable."""

    # -- cells, users and tokens (alertd.store.people) -------------------------------------------
    async def add_cell(self, cell: people_mod.Cell) -> None:
        """`errors.Conflict` (field `id`) when the id is taken, (field `senders`) when one of its
        senders is another cell's: no two cells sign with the same CAP sender."""

    async def update_cell(self, cell: people_mod.Cell) -> None:
        """Replace the cell of that id (same checks as `add_cell`); `errors.NotFound` when absent."""

    async def get_cell(self, cell_id: str) -> people_mod.Cell:
        """Raise `errors.NotFound` when absent."""

    async def list_cells(self) -> list[people_mod.Cell]:
        """By id."""

    async def add_user(self, user: people_mod.User) -> None:
        """`errors.Conflict` (field `name`) when the name is taken; `errors.NotFound` when its cell is absent."""

    async def get_user(self, name: str) -> people_mod.User:
        """By name; raise `errors.NotFound` when absent."""

    async def list_users(self, cell: str | None = None) -> list[people_mod.User]:
        """By name; only the cell's (by id) when given."""

    async def disable_user(self, name: str) -> people_mod.User:
        """The user, disabled: its tokens authenticate no more. `errors.NotFound` when absent."""

    async def add_token(self, token: people_mod.Token) -> None:
        """`errors.NotFound` when its user is absent."""

    async def list_tokens(self, user: str | None = None) -> list[people_mod.Token]:
        """Oldest first; only the user's (by name) when given."""

    async def revoke_token(self, token_id: str) -> bool:
        """False when absent or revoked already."""

    async def caller_by_hash(self, secret_hash: str) -> people_mod.Caller | None:
        """The token with that secret hash, its user and the user's cell (one query), whatever their
        state (revoked, expired, disabled: `auth.check` decides)."""

    # -- audience --------------------------------------------------------------------------------
    async def upsert_recipients(self, recipients: Sequence[model.Recipient]) -> int:
        """Insert or replace by id (a replaced recipient's token is alive again). Returns count."""

    async def get_recipient(self, recipient_id: str) -> model.Recipient:
        """Raise `errors.NotFound` when absent."""

    async def recipients(self, ids: Sequence[str]) -> list[model.Recipient]:
        """Those of `ids` that exist, in any order (one query)."""

    async def count_recipients(self) -> int: ...

    async def mark_push_token_dead(self, push_token: str) -> int:
        """FCM said UNREGISTERED: never plan a push to this token again. Returns rows changed."""

    async def upsert_sirens(self, sirens: Sequence[model.Siren]) -> int: ...

    async def list_sirens(self) -> list[model.Siren]: ...

    # -- alerts ----------------------------------------------------------------------------------
    async def create_alert(
        self, alert: model.Alert, idempotency_key: str, cap: str | None = None,
        audit_entry: audit_mod.Entry | None = None,
    ) -> tuple[model.Alert, bool]:
        """Commit a new alert (state `planning`), or return the alert already stored under
        (alert.sender, idempotency_key). The bool is True when this call created it. Its resolved
        references (`alert_id` set) become links `referenced_by` follows back; `cap` is the CAP
        document (JSON) it came as, if any; `audit_entry` is appended in the same transaction."""

    async def find_alert(self, sender: str, identifier: str) -> model.Alert | None:
        """The latest alert of `sender` with that CAP identifier."""

    async def referenced_by(self, alert_id: str) -> list[str]:
        """The ids of the later alerts that reference this one, oldest first."""

    async def alert_cap(self, alert_id: str) -> str | None:
        """The CAP document an alert came as (None for a JSON order)."""

    async def get_alert(self, alert_id: str) -> model.Alert:
        """Raise `errors.NotFound` when absent."""

    async def list_alerts(self, limit: int = 50, before: str | None = None) -> list[model.Alert]:
        """Newest first."""

    async def alerts_in_state(self, state: model.AlertState) -> list[model.Alert]: ...

    async def set_alert_state(
        self, alert_id: str, state: model.AlertState, only_from: model.AlertState | None = None
    ) -> bool:
        """Set the alert's state; with `only_from`, only when its current state is `only_from` (so a
        planner finishing never undoes a cancel). Returns whether it changed a row; raises
        `errors.NotFound` when the alert does not exist."""

    async def issue_draft(self, alert: model.Alert, audit_entry: audit_mod.Entry) -> bool:
        """Turn a stored draft into `alert` (same id, state `planning`; the CAP document it came
        as is dropped: it said Draft) and append `audit_entry`, in one transaction. False when
        the alert is no longer a draft."""

    # -- approvals -------------------------------------------------------------------------------
    async def move_alert(
        self, alert_id: str, from_state: model.AlertState, alert: model.Alert,
        audit_entry: audit_mod.Entry | None = None,
    ) -> bool:
        """Store `alert` (state, approval record, data) in place of the alert `alert_id` if that is
        still in `from_state`, with `audit_entry`, in one transaction; False when it moved meanwhile.
        Raises `errors.NotFound` when the alert does not exist."""

    async def expire_approvals(self, now: dt.datetime) -> list[str]:
        """Move the alerts whose approval request ran out to `approval_expired`, each with an audit
        entry `approval_expired`; their ids."""

    async def count_audience(
        self, everyone: bool = False, zones: Sequence[str] = (), ids: Sequence[str] = (),
        reached_by: Sequence[str] = (), exercise_only: bool = False,
    ) -> dict[str, int]:
        """{"sms": n, "push": n}: the recipients a planning would write an SMS and a push for, among
        everyone or those in `zones` (any covering code), the ids given, and those the alerts
        `reached_by` reached; with `exercise_only`, only exercise participants."""

    async def count_audience_by_locale(
        self, everyone: bool = False, zones: Sequence[str] = (), ids: Sequence[str] = (),
        reached_by: Sequence[str] = (), exercise_only: bool = False,
    ) -> dict[str, dict[str, int]]:
        """`count_audience` by recipient locale, as stored: {"fr": {"sms": n, "push": n}, ...}; a
        locale none of whom would get an SMS or a push is left out."""

    # -- planning --------------------------------------------------------------------------------
    async def located(self, box: tuple[float, float, float, float]) -> list[Mapping[str, Any]]:
        """`id`, `lat`, `lon` of the located recipients in the box (min_lat, min_lon, max_lat, max_lon)."""

    async def add_targets(
        self, alert_id: str, ids: Sequence[str] = (), zones: Sequence[str] = (), reached_by: Sequence[str] = ()
    ) -> None:
        """Add to the alert's own targets, each once: recipients by id, the members of zones, and the
        recipients that the alerts `reached_by` reached or were reaching (not failed)."""

    async def plan_fixed(
        self, alert: model.Alert, fixed: Sequence[model.NewDelivery], now: dt.datetime,
        ranks: Mapping[str, int] | None = None,
    ) -> bool:
        """Write the `fixed` deliveries (sirens, topics) of an alert still `planning`, before its
        people (`plan_chunk`), in a brief transaction of their own: a siren command is claimable
        before the first thousand people are planned. Writing them again
        writes nothing (a resumed planning). False, writing nothing, when the alert is no longer
        `planning`."""

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
        """Write the deliveries for up to `limit` recipients of `audience` with id > `after`, in
        one transaction with the alert's planning cursor (its sirens and topics: `plan_fixed`).
        Returns the last recipient id written, or None when no recipient is left. When the alert
        is no longer `planning` (it was cancelled), writes nothing and returns None: the alert's
        state is read (and locked) in the same transaction, so a cancel either waits for the chunk
        and cancels it, or stops it. `routes` maps each kind the alert asks for
        to the configured channel name. A recipient is in zone audience when one of its zones equals
        an audience zone or lies in it (`zones.within`). A kind gets a delivery per recipient that has
        the address its channel needs (`addresses`): a phone, or a live push token.
        Deliveries start `pending` with `next_at = now`, and the priority `ranks` gives their kind
        (by default `priority.ranks(alert)`): claims take the lowest first."""

    async def plan_reached(
        self, alert_id: str, earlier: Sequence[str], kinds: Sequence[str], now: dt.datetime,
        exercise_only: bool = False, rank: int = priority.DEFAULT,
    ) -> int:
        """Plan one delivery of `alert_id` for each delivery of the `earlier` alerts over `kinds`
        (not sirens) that reached its recipient (sent or delivered) or may yet (sending): same
        channel, address and command (each recipient once per channel). One planned while none of
        its recipient's originals has reached them waits, unclaimable, until one has (then it goes)
        or all are settled unreached (`drop_unreached` cancels it). `exercise_only`: only
        recipients who take part in exercises."""

    async def drop_unreached(self, now: dt.datetime) -> int:
        """Cancel the waiting all-clears (`plan_reached`) whose originals all settled without
        reaching their recipient, and the withdrawals (`cancel`) of broadcasts that settled without
        going out; forget the waits of settled deliveries. Returns how many."""

    async def replace(self, earlier: Sequence[str], by: str, now: dt.datetime) -> int:
        """Mark the `earlier` alerts `updated` (unless cancelled or drafts) and cancel their pending
        deliveries (siren cancels excepted). Returns how many deliveries were replaced."""

    async def plan_cursor(self, alert_id: str) -> str | None:
        """Where an interrupted planning resumes (the last recipient id planned)."""

    async def plan_siren_cancel(self, alert_id: str, now: dt.datetime, keep: Sequence[str] = ()) -> int:
        """Add a `cancel` delivery for every siren that has an `activate` delivery in the alert that
        started (not cancelled or expired), except the sirens in `keep`."""

    # -- fan-out ---------------------------------------------------------------------------------
    async def claim(
        self, channel: str, owner: str, now: dt.datetime, limit: int, lease: dt.timedelta,
        done: Sequence[model.Outcome] = (),
    ) -> list[model.Delivery]:
        """First `record(done, now)`, in the same transaction (a worker records its last batch
        while it claims the next: one write instead of two). Then take up to `limit` due deliveries
        of `channel`: `pending` with next_at <= now, or `sending` whose lease ran out. They become
        `sending`, attempts + 1, leased to `owner` until now + lease. A pending delivery of a
        cancelled alert is not claimed unless its command is `cancel`; a lapsed one is (the
        dispatcher settles it cancelled without sending). A siren `cancel` is not claimed while the
        `activate` of its alert and target is pending or sending, so it never overtakes it. Oldest
        `next_at` first. A delivery taken from a lapsed lease comes back with `last_error` set to
        `LAPSED` (and only then: a claim clears an earlier one)."""

    async def renew(self, ids: Sequence[int], owner: str, until: dt.datetime) -> set[int]:
        """Extend to `until` the leases of those of `ids` still `sending` under `owner`; the ids
        renewed (one missing was claimed again by someone else, or settled)."""

    async def record(self, outcomes: Sequence[model.Outcome], now: dt.datetime) -> None:
        """Write the outcomes of claimed deliveries in one transaction. Only rows still `sending`
        change: a receipt that arrived first wins. A `sent` outcome's provider id then picks up
        the receipt stored early for it (see `apply_receipt`), if it moves the delivery forward."""

    async def apply_receipt(
        self, provider_id: str, state: model.State, error: str | None, now: dt.datetime
    ) -> bool:
        """A provider's receipt for the delivery with that provider id. Applied only when it moves
        the delivery forward (`model.RANK`); returns whether it changed anything. When no delivery
        has that provider id yet (the callback beat the dispatcher's `record`), the receipt is kept
        (the higher ranked one, per provider id) for `record` to apply, and False is returned."""

    async def purge_early_receipts(self, before: dt.datetime) -> int:
        """Forget the receipts kept for a delivery that never came (received before `before`)."""

    async def delivery_by_provider(self, provider_id: str) -> model.Delivery | None: ...

    async def requeue(
        self, delivery_id: int, provider_id: str, next_at: dt.datetime, error: str, now: dt.datetime
    ) -> bool:
        """The one backward move: a `sent` delivery with that provider id goes back to `pending` at
        `next_at` (its provider id cleared), because the provider reported a failure that may pass.
        Not for a cancelled alert. Returns whether it moved."""

    async def cancel_alert(
        self, alert_id: str, now: dt.datetime, audit_entry: audit_mod.Entry | None = None
    ) -> int:
        """Mark the alert cancelled and every `pending` delivery of it (except siren `cancel`
        commands) cancelled. Returns the deliveries cancelled."""

    async def expire_due(self, now: dt.datetime) -> int:
        """Pending deliveries of alerts whose `expires` has passed become `expired`."""

    async def complete_settled(self) -> list[str]:
        """Alerts `active` with no delivery left pending or sending become `completed`; their ids."""

    async def move_pending(self, channel: str, to: str, note: str, now: dt.datetime) -> int:
        """Failover, in one statement: every `pending` delivery of `channel` goes to channel `to`
        (same kind), with `note` as its `last_error`, except one whose alert already has a delivery
        to the same target by `to`. Returns how many moved."""

    async def next_due(self, channel: str) -> dt.datetime | None:
        """When the next delivery of `channel` falls due: the earliest `next_at` of a pending one a
        claim would take or `lease_until` of a sending one (None when neither exists)."""

    async def unsettled(self) -> int:
        """How many deliveries are pending or sending, all alerts together."""

    # -- reading ---------------------------------------------------------------------------------
    async def counts(self, alert_id: str) -> dict[str, dict[str, int]]:
        """{channel: {state: n}} for the alert, every `model.State` present (zero when none)."""

    # -- progress (alertd.store.progress) --------------------------------------------------------
    async def record_progress(self, alert_id: str, state: str, counts: progress_mod.Counts, at: dt.datetime) -> int:
        """Append a progress row for the alert; its `seq` (increasing across alerts and instances)."""

    async def progress(self, alert_id: str, after_seq: int = 0, limit: int = 1000) -> list[progress_mod.Progress]:
        """The alert's rows with seq > `after_seq`, in seq order."""

    async def last_progress(self, alert_id: str) -> progress_mod.Progress | None: ...

    async def last_siren_deliveries(self) -> dict[str, model.Delivery]:
        """Each siren's latest delivery (any alert, any command), by siren id."""

    async def deliveries(
        self,
        alert_id: str,
        channel: str | None = None,
        state: model.State | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[model.Delivery]:
        """Keyset-paginated by id."""


    # -- sirens (alertd.store.sirens) ---------------------------------------------------------------
    async def record_heartbeats(self, beats: Sequence[model.Heartbeat], now: dt.datetime) -> None:
        """Keep each siren's latest heartbeat (by the gateway's time; an older one changes nothing),
        received at `now`; a heartbeat ends the siren's reported silence."""

    async def record_siren_ack(self, siren_id: str, result: str, at: dt.datetime) -> None:
        """The siren's latest acknowledgement (activated, failed, busy), if later than the one kept."""

    async def get_delivery(self, delivery_id: int) -> model.Delivery | None: ...

    async def fail_unacknowledged(self, channel: str, before: dt.datetime, now: dt.datetime) -> list[model.Delivery]:
        """Siren `activate` deliveries of `channel` sent at or before `before` and still only `sent`
        (no acknowledgement) become `failed`: "no acknowledgement within N s". Returns them."""

    async def newly_silent(self, before: dt.datetime) -> list[str]:
        """The sirens not heard from since `before` (or never) whose silence was not yet reported;
        each is returned once until its next heartbeat."""

    async def siren_states(self, now: dt.datetime, stale_after: dt.timedelta | None) -> list[sirenstate.SirenState]:
        """Every siren with its state and last reported health, by id. With `stale_after`, a siren not
        heard from for that long (or never) is `no_heartbeat`."""

    # -- audit -----------------------------------------------------------------------------------
    async def add_audit(self, entry: audit_mod.Entry) -> None:
        """Append to the audit log (entries are never changed nor removed)."""

    async def audit(
        self, limit: int = 100, before: int | None = None, cell: str | None = None, action: str | None = None,
        subject: str | None = None,
    ) -> list[audit_mod.Entry]:
        """Newest first; only entries with id < `before`, and the given cell, action and subject."""

    async def verify_audit(self) -> int | None:
        """The id of the first entry where the hash chain breaks, or None when it holds throughout."""


def open_store(url: str) -> Store:
    """The store for `url` (not yet opened). Drivers are imported only when chosen."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from alertd.store import sqlite

        return sqlite.SQLiteStore(url)
    if scheme in ("postgres", "postgresql"):
        from alertd.store import postgres

        return postgres.PostgresStore(url)
    raise errors.UnsupportedStore(f"unsupported store URL scheme {scheme!r}; use sqlite:// or postgresql://")
