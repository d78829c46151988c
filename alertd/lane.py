"""A channel's sending pipeline: the `Lane` the dispatcher runs for each configured channel.

It claims leased batches from the store, hands them to `concurrency` long-lived senders (each a
`Dispatcher.deliver`: render, one provider call, decide), renews the leases of all it holds, and
records the outcomes with its next claim. What it may send twice after a crash is what it holds:
see `Lane`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING

import structlog

from alertd import model, priority, store as store_mod

if TYPE_CHECKING:
    from alertd.dispatcher import Dispatcher

log = structlog.get_logger("alertd.dispatcher")  # an operator's filters know its lines by this name


class Lane:
    """One channel's sending pipeline.

    `concurrency` long-lived senders take claimed deliveries from a local queue and make one
    provider call each; the feeder keeps the queue topped up by claiming batches, and records the
    finished outcomes in the same transaction as its next claim. It claims while a round of calls is
    still queued behind those on the wire, so the senders never wait for the store. Nothing is created
    per message but the message, and the provider always has up to `concurrency` calls in flight. What
    a crash can send twice is what the lane has sent and not recorded: never more than the three
    rounds of `concurrency` it holds (the queued deliveries were not sent), about two in practice.
    """

    def __init__(self, dispatcher: Dispatcher, name: str) -> None:
        self.d = dispatcher
        self.name = name
        self.channel = dispatcher.channels[name]
        # Most urgent first (`priority`): a new urgent alert claimed behind a queued round overtakes it.
        # (priority, next_at, id, delivery): a claimed delivery always has its next_at
        self.queue: asyncio.PriorityQueue[tuple[int, dt.datetime | None, int, model.Delivery]] = asyncio.PriorityQueue()
        self.done: list[model.Outcome] = []
        self.busy = 0  # deliveries a sender has taken and not finished
        self.below = asyncio.Event()  # `held` fell below `self.mark`
        self.mark = 0
        # What the lane claimed and has not recorded yet (queued, on the wire, or done), with the
        # lease as last renewed: `_renew` keeps it from running out under a slow provider.
        self.owned: dict[int, dt.datetime] = {}

    @property
    def held(self) -> int:
        return self.queue.qsize() + self.busy

    async def run(self, until_idle: bool = False) -> None:
        # The siren lane's claims (and its senders' reads) go before the other lanes' and plannings'.
        if self.d.kinds()[self.name] == model.Kind.SIREN:
            store_mod.TURN.set(priority.SIREN)
        senders = [asyncio.create_task(self._sender()) for _ in range(self.channel.concurrency)]
        senders.append(asyncio.create_task(self._renew()))
        self.d._lanes.add(self)
        try:
            await self._feed(until_idle)
            await self._settle()
        finally:
            self.d._lanes.discard(self)
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

    async def _feed(self, until_idle: bool) -> None:
        while not self.d._stopping:
            try:
                if not await self._step(until_idle):
                    return
            except Exception:  # the store is down or locked: keep the lane alive, try again soon
                log.exception("lane failed", channel=self.name)  # `done` is kept for the next claim
                await asyncio.sleep(self.d.settings.idle_poll)

    async def _step(self, until_idle: bool) -> bool:
        """One claim and what follows it; False when the lane may end (idle, and asked to)."""
        wake = self.d._wake[self.name]
        wake.clear()  # before the claim: a wake-up during it is not lost
        batch = await self._claim()
        for delivery in batch:
            self.queue.put_nowait((delivery.priority, delivery.next_at, delivery.id, delivery))
        if batch or self.held >= 2 * self.channel.concurrency:
            await self._until_below(2 * self.channel.concurrency, wake)
        elif self.held:
            await self._until_below(1, wake)
        elif until_idle:
            return False
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), await self.d.idle_wait(self.name))
        return True

    async def _claim(self) -> list[model.Delivery]:
        """Record what is done and claim enough to keep three rounds of calls in hand."""
        done, self.done = self.done, []
        # Being recorded: no renewal of theirs may take them for lost meanwhile.
        recording = {o.delivery_id: self.owned.pop(o.delivery_id) for o in done if o.delivery_id in self.owned}
        moving = self.d.fallback(self.name)  # failing: claim nothing, hand the pending over
        want = 0 if moving else min(self.d.settings.batch_size, 3 * self.channel.concurrency - self.held)
        try:
            batch = await self.d.store.claim(
                self.name, self.d.owner, self.d.clock(), want, self.d.settings.lease, done
            )
        except BaseException:
            self.done[:0] = done
            self.owned.update(recording)
            raise
        if moving:
            await self.d.divert(self.name, moving)
        self._note_lapsed(batch)
        # One of ours whose lease lapsed under us and came back to us is still in hand: not twice.
        fresh = [d for d in batch if d.id not in self.owned]
        self.owned.update((d.id, d.lease_until) for d in fresh if d.lease_until is not None)  # a claim sets it
        return fresh

    def _note_lapsed(self, batch: list[model.Delivery]) -> None:
        lapsed = [d for d in batch if d.last_error == store_mod.LAPSED]
        if lapsed:
            log.warning(
                "leases lapsed: claimed again, their messages may go twice", channel=self.name, count=len(lapsed),
                alert_ids=sorted({d.alert_id for d in lapsed}), delivery_ids=[d.id for d in lapsed[:20]],
            )

    async def _renew(self) -> None:
        """Every third of a lease, extend the leases of all the lane holds, in one statement: a
        call on the wire for longer than a lease is not claimed and sent again."""
        while True:
            await asyncio.sleep(self.d.settings.lease.total_seconds() / 3)
            try:
                await self._renew_once()
            except Exception:  # the store is down: try again at the next tick, before the lease ends
                log.exception("lease renewal failed", channel=self.name)

    async def _renew_once(self) -> None:
        ids = list(self.owned)
        now = self.d.clock()
        until = now + self.d.settings.lease
        kept = await self.d.store.renew(ids, self.d.owner, until)
        lost = [i for i in ids if i not in kept and i in self.owned]
        for i in ids:
            if i in self.owned:
                self.owned[i] = until if i in kept else now  # a lost lease: not to be begun (`deliver`)
        if lost:
            log.warning("leases lost before renewal", channel=self.name, count=len(lost), delivery_ids=lost[:20])

    async def _until_below(
        self, mark: int, woken: asyncio.Event | None = None, timeout: float | None = None
    ) -> None:
        """Wait until the lane holds fewer than `mark` deliveries, or new work is `woken` (it may be
        more urgent than what the lane holds: the claim tops the lane up to three rounds, no more).
        The senders only wake the feeder when it crosses the mark, not after every call: one task
        switch saved per message."""
        async with asyncio.timeout(timeout):
            while self.held >= mark and not (woken is not None and woken.is_set()):
                self.mark = mark
                self.below.clear()
                await self.below.wait()
                if self.d._stopping and mark > 1:  # the feeder is to stop, not to make room
                    return

    async def _sender(self) -> None:
        while True:
            *_, delivery = await self.queue.get()
            if self.d._stopping:  # not begun: given back, as `_settle` does
                self.done.append(model.Outcome(delivery.id, model.State.PENDING, next_at=self.d.clock()))
                continue
            self.busy += 1
            try:
                # Not `self.done.append(await ...)`: that binds the list before the await, and the
                # feeder swaps `self.done` for a fresh one while the call is on the wire.
                outcome = await self.d.deliver(self.channel, delivery, self.owned.get(delivery.id))
                if outcome is not None:
                    self.done.append(outcome)
                else:
                    self.owned.pop(delivery.id, None)
            except Exception:  # the store failed us: the lease brings the delivery back
                log.exception("delivery failed to run", channel=self.name, delivery_id=delivery.id)
            finally:
                self.busy -= 1
                if self.held < self.mark:
                    self.below.set()

    async def _settle(self) -> None:
        """On stop: give back what no sender took, let the calls on the wire end, record it all."""
        now = self.d.clock()
        while not self.queue.empty():
            self.done.append(model.Outcome(self.queue.get_nowait()[-1].id, model.State.PENDING, next_at=now))
        with contextlib.suppress(TimeoutError):
            await self._until_below(1, timeout=self.d.settings.grace)  # the queue is empty: held is busy
        if self.done:
            done, self.done = self.done, []
            await self.d.store.record(done, now)
