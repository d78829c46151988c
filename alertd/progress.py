"""Alerts' progress: `Progress`, an alert's state and counts at one moment (a row of the store's
`progress` table), `settled`, and the recorder that turns the changing counts of live alerts into
those rows.

Every `interval` it looks at the alerts it follows (those touched, and every alert planning or
active, so it needs no hook in the hot path), and writes a row for each whose state or counts
changed since its last row: a few rows per second per alert under load, however many deliveries
move meanwhile. An alert in a final state whose deliveries have all settled (`Progress.final`) gets
its final row, and is forgotten once no receipt can still change it (nothing `sent`, or nothing
changed for RECEIPT_WINDOW). The store's last row
is the reference, not memory, so a restarted instance, or a second one on PostgreSQL, writes no
duplicate of it.

Streams (`web.events`) wait on `wait()`: woken at once by a row written here, and every `timeout`
anyway to see other instances' rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from alertd import errors, model

if TYPE_CHECKING:  # the store's progress rows become the values below: it imports this module
    from alertd import store as store_mod

log = structlog.get_logger("alertd.progress")

INTERVAL = 0.5  # seconds between passes: what coalesces a fan-out's changes into a few rows a second
FOLLOWED = (model.AlertState.PLANNING, model.AlertState.ACTIVE)  # what each pass picks up by itself
RECEIPT_WINDOW = dt.timedelta(minutes=10)  # how long after its last change a settled alert is followed

# The states an alert's progress still moves in; any other state is final.
LIVE = frozenset({
    model.AlertState.PLANNING, model.AlertState.ACTIVE, model.AlertState.DRAFT, model.AlertState.AWAITING_APPROVAL,
})
OPEN = frozenset({model.State.PENDING, model.State.SENDING})

Counts = Mapping[str, Mapping[str, int]]  # {channel: {state: n}}


def settled(state: str, counts: Counts) -> bool:
    """Whether the alert's progress is over: a final state, and no delivery pending or on the wire
    (a cancel still sends its siren stops, and the sends on the wire end after it)."""
    return state not in LIVE and not any(n for per in counts.values() for s, n in per.items() if s in OPEN)


@dataclasses.dataclass(frozen=True)
class Progress:
    """An alert's state and counts at one moment."""

    seq: int
    alert_id: str
    at: dt.datetime
    state: str  # an `model.AlertState` value; kept as text so that states added later still read
    counts: Counts

    @property
    def final(self) -> bool:
        """The alert's last row: nothing will change after it."""
        return settled(self.state, self.counts)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Progress:
        return cls(
            seq=row["seq"], alert_id=row["alert_id"], at=model.to_utc(row["at"]), state=row["state"],
            counts=json.loads(row["counts"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "state": self.state, "at": self.at.isoformat(), "counts": self.counts}


class Recorder:
    def __init__(
        self, store: store_mod.Store, clock: Callable[[], dt.datetime] = model.utcnow, interval: float = INTERVAL
    ) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.closing = False  # the app is shutting down: streams end
        self._followed: set[str] = set()
        self._written = asyncio.Event()  # replaced after each wake-up: every waiter of the moment wakes
        self._pass = asyncio.Lock()
        self._task: asyncio.Task | None = None

    def touch(self, alert_id: str) -> None:
        """The alert's progress may have changed: look at it in the next pass."""
        self._followed.add(alert_id)

    async def flush(self) -> int:
        """One pass now; the rows written."""
        async with self._pass:
            for state in FOLLOWED:
                self._followed.update(a.id for a in await self.store.alerts_in_state(state))
            written = 0
            for alert_id in sorted(self._followed):
                written += await self._record(alert_id)
        if written:
            self._wake()
        return written

    async def _record(self, alert_id: str) -> bool:
        try:
            alert = await self.store.get_alert(alert_id)
        except errors.NotFound:
            self._followed.discard(alert_id)
            return False
        counts = await self.store.counts(alert_id)
        last = await self.store.last_progress(alert_id)
        if alert.state in (model.AlertState.DRAFT, model.AlertState.AWAITING_APPROVAL) or (
            settled(alert.state, counts) and not self._awaiting_receipts(counts, last)
        ):
            # Nothing moves any more (a draft, an alert awaiting approval: until it is sent).
            self._followed.discard(alert_id)
        if last is not None and (last.state, last.counts) == (alert.state.value, counts):
            return False
        await self.store.record_progress(alert_id, alert.state.value, counts, self.clock())
        return True

    def _awaiting_receipts(self, counts: Counts, last: Progress | None) -> bool:
        """Messages `sent` may still be confirmed delivered, or failed, by the provider's receipts:
        followed a while after the fan-out, so that the rows (and the reach curve) show them."""
        sent = any(per.get(model.State.SENT.value) for per in counts.values())
        return sent and (last is None or self.clock() - last.at < RECEIPT_WINDOW)

    async def wait(self, timeout: float) -> None:
        """Until a row is written here, the app shuts down, or `timeout` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written.wait(), timeout)

    def _wake(self) -> None:
        self._written.set()
        self._written = asyncio.Event()

    def end_streams(self) -> None:
        """The app is shutting down: every stream ends now rather than hold the shutdown up."""
        self.closing = True
        self._wake()

    # -- running ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="progress-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.flush()
            except Exception:  # the store is down: the next pass tries again
                log.exception("progress pass failed")
            await asyncio.sleep(self.interval)
