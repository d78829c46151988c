"""The dispatcher: claim due deliveries → render → send → decide → record, per channel.

Each configured channel gets a few workers; each worker claims a batch (leased in the store, so a
dead instance's batch is claimed again when the lease runs out), renders the messages, hands them
to the channel in one `send_batch`, lets `retry.decide` judge each failure, and records the whole
batch in one write. Planning runs beside it and wakes the workers after every chunk.

At-least-once: a delivery is recorded after its provider call, so a crash between the two sends it
again after the lease; the duplicate window is one in-flight batch per worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import uuid
from collections.abc import Callable, Mapping

import structlog

from alertd import channels as channels_mod, errors, model, planner, render, retry, store as store_mod

log = structlog.get_logger("alertd.dispatcher")

# Siren commands by alert status: a test or an exercise must never sound the alert signal.
SIREN_COMMAND = {
    model.Status.ACTUAL: "activate",
    model.Status.SYSTEM: "test",
    model.Status.TEST: "test",
    model.Status.EXERCISE: "silent_test",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    batch_size: int = 500
    workers: int = 2  # per channel: while one batch is on the wire, the next is claimed
    lease: dt.timedelta = dt.timedelta(seconds=60)
    plan_chunk: int = 5000
    idle_poll: float = 1.0  # seconds; a safety net, the workers are woken on new work


class Dispatcher:
    def __init__(
        self,
        store: store_mod.Store,
        channels: Mapping[str, channels_mod.Channel],
        renderer: render.Renderer,
        policy: retry.Policy = retry.Policy(),
        settings: Settings = Settings(),
        clock: Callable[[], dt.datetime] = model.utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.channels = dict(channels)
        self.renderer = renderer
        self.policy = policy
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = uuid.uuid4().hex[:12]
        self.cancelled: set[str] = set()
        self._alerts: dict[str, model.Alert] = {}
        self._wake = {name: asyncio.Event() for name in self.channels}
        self._planning: set[asyncio.Task] = set()
        self._workers: list[asyncio.Task] = []

    # -- planning --------------------------------------------------------------------------------

    def kinds(self) -> dict[str, model.Kind]:
        return {name: ch.kind for name, ch in self.channels.items()}

    def submit(self, alert: model.Alert) -> asyncio.Task:
        """Plan `alert` in the background; its deliveries flow as soon as the first chunk lands."""
        task = asyncio.create_task(self._plan(alert), name=f"plan-{alert.id}")
        self._planning.add(task)
        task.add_done_callback(self._planning.discard)
        return task

    async def _plan(self, alert: model.Alert) -> None:
        try:
            route = planner.routes(alert, self.kinds())
            await planner.plan(
                self.store, alert, route, chunk=self.settings.plan_chunk, clock=self.clock,
                on_chunk=self.wake,
            )
        except Exception:
            # The alert stays `planning` in the store; the next start resumes it.
            log.exception("planning failed", alert_id=alert.id)

    async def resume(self) -> None:
        """Resume the plannings a previous process left unfinished."""
        for alert in await self.store.alerts_in_state(model.AlertState.PLANNING):
            self.submit(alert)

    def wake(self, channel: str | None = None) -> None:
        for name, event in self._wake.items():
            if channel is None or channel == name:
                event.set()

    def cancel(self, alert_id: str) -> None:
        """From now on this process starts no delivery of the alert except siren cancels."""
        self.cancelled.add(alert_id)
        self._alerts.pop(alert_id, None)

    # -- one batch -------------------------------------------------------------------------------

    async def tick(self, name: str) -> int:
        """Claim, send and record one batch of channel `name`; the number of deliveries handled."""
        channel = self.channels[name]
        size = max(1, min(self.settings.batch_size, channel.concurrency))
        batch = await self.store.claim(name, self.owner, self.clock(), size, self.settings.lease)
        if batch:
            outcomes, dead = await self._send(channel, batch)
            await self.store.record(outcomes, self.clock())
            for address in dead:  # FCM said UNREGISTERED: dead for every later alert too
                await self.store.mark_push_token_dead(address)
        return len(batch)

    async def _send(
        self, channel: channels_mod.Channel, batch: list[model.Delivery]
    ) -> tuple[list[model.Outcome], list[str]]:
        now = self.clock()
        dead: list[str] = []
        outcomes: dict[int, model.Outcome] = {}
        ready: list[tuple[model.Delivery, model.Message]] = []
        for delivery in batch:
            alert = await self._alert(delivery.alert_id)
            stop = self._stop(alert, delivery, now)
            if stop is not None:
                outcomes[delivery.id] = model.Outcome(delivery.id, stop)
                continue
            try:
                ready.append((delivery, self._message(alert, delivery)))
            except errors.AlertdError as exc:  # a template that cannot render will never render
                outcomes[delivery.id] = model.Outcome(delivery.id, model.State.FAILED, last_error=exc.message)
        if ready:
            results = await channel.send_batch([m for _, m in ready])
            done = self.clock()
            for (delivery, _), result in zip(ready, results, strict=True):
                result = channels_mod.as_result(result)
                if getattr(result, "dead_address", False):
                    dead.append(delivery.address)
                alert = self._alerts.get(delivery.alert_id)
                outcomes[delivery.id] = self._outcome(delivery, result, alert, done)
        return [outcomes[d.id] for d in batch], dead

    def _stop(self, alert: model.Alert, delivery: model.Delivery, now: dt.datetime) -> model.State | None:
        """Why this delivery must not start, if it must not."""
        if delivery.command == "cancel":
            return None
        if alert.id in self.cancelled or alert.state is model.AlertState.CANCELLED:
            return model.State.CANCELLED
        if alert.is_expired(now):
            return model.State.EXPIRED
        return None

    def _message(self, alert: model.Alert, delivery: model.Delivery) -> model.Message:
        rendered = self.renderer.render(alert, delivery.kind, delivery.locale or None)
        command = delivery.command
        if delivery.kind is model.Kind.SIREN and command == "activate":
            command = SIREN_COMMAND.get(alert.status, "test")
        return model.Message(
            delivery_id=delivery.id,
            alert_id=alert.id,
            kind=delivery.kind,
            to=delivery.address,
            body=rendered.body,
            title=rendered.title,
            locale=rendered.locale,
            command=command,
            data={"event": alert.event, "severity": alert.severity},
        )

    def _outcome(
        self, delivery: model.Delivery, result: model.Receipt | errors.DeliveryError,
        alert: model.Alert | None, now: dt.datetime,
    ) -> model.Outcome:
        if isinstance(result, model.Receipt):
            return model.Outcome(delivery.id, model.State.SENT, provider_id=result.provider_id)
        expires = alert.expires if alert else None
        decision = retry.decide(self.policy, delivery, result, now, expires, self.rng.random())
        log.info(
            "delivery failed", alert_id=delivery.alert_id, delivery_id=delivery.id,
            channel=delivery.channel, to=model.mask(delivery.address), attempt=delivery.attempts,
            error=decision.reason, retry_at=getattr(decision, "at", None),
        )
        if isinstance(decision, retry.RetryAt):
            return model.Outcome(delivery.id, model.State.PENDING, next_at=decision.at, last_error=decision.reason)
        return model.Outcome(delivery.id, decision.state, last_error=decision.reason)

    async def _alert(self, alert_id: str) -> model.Alert:
        alert = self._alerts.get(alert_id)
        if alert is None:
            alert = self._alerts[alert_id] = await self.store.get_alert(alert_id)
        return alert

    # -- running ---------------------------------------------------------------------------------

    async def start(self) -> None:
        for name, channel in self.channels.items():
            await channel.start()
            for i in range(self.settings.workers):
                self._workers.append(asyncio.create_task(self._work(name), name=f"send-{name}-{i}"))
        await self.resume()

    async def stop(self) -> None:
        for task in [*self._workers, *self._planning]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._planning, return_exceptions=True)
        self._workers.clear()
        for channel in self.channels.values():
            await channel.close()

    async def _work(self, name: str) -> None:
        event = self._wake[name]
        while True:
            try:
                if await self.tick(name):
                    continue
            except Exception:
                log.exception("dispatch failed", channel=name)  # the leases bring the batch back
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), await self._idle_wait(name))
            except TimeoutError:
                pass

    async def _idle_wait(self, name: str) -> float:
        due = await self.store.next_due(name)
        if due is None:
            return self.settings.idle_poll
        return min(self.settings.idle_poll, max(0.0, (due - self.clock()).total_seconds()))

    async def housekeeping(self) -> None:
        """Expire what outlived its alert; mark finished alerts completed. Run periodically."""
        await self.store.expire_due(self.clock())
        for alert_id in await self.store.complete_settled():
            self._alerts.pop(alert_id, None)
            log.info("alert completed", alert_id=alert_id)

    async def planned(self) -> None:
        """Wait until every planning under way has finished."""
        while self._planning:
            await asyncio.gather(*self._planning)

    async def run_until_idle(self, advance: Callable[[dt.datetime], None] | None = None) -> None:
        """For tests and `--once`: plan, send and record until nothing is left to do.

        With `advance`, retries waiting in the future are brought forward by moving the caller's
        clock to their time instead of sleeping; without it, only work due now is done."""
        await self.planned()
        while True:
            worked = 0
            for name in self.channels:
                while n := await self.tick(name):
                    worked += n
            await self.housekeeping()
            if worked:
                continue
            due = [d for d in [await self.store.next_due(n) for n in self.channels] if d]
            if not due or advance is None:
                return
            advance(min(due))
