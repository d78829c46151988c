"""The dispatcher: claim due deliveries → render → send → decide → record, per channel.

Each configured channel gets a `lane.Lane`: it claims batches (leased in the store, so a dead instance's
deliveries are claimed again when the lease runs out), renders each message (cached per alert,
locale and kind), makes one provider call per message with up to the channel's `concurrency` in
flight, lets `retry.decide` judge each failure, and records the outcomes in batches. Planning runs
beside it and wakes the lanes after every chunk.

At-least-once: a delivery is recorded after its provider call, so a crash between the two sends it
again after the lease. The duplicate window is what a lane has sent and not recorded: the calls on
the wire and those finished and not yet recorded. It never exceeds what a lane holds, three rounds
of concurrency (the third, queued, was not sent), and is about two in practice. A live lane renews
the leases of all it holds, so a provider slower than a lease never makes it send twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import time
import uuid
from collections.abc import Callable, Mapping

import structlog

from alertd import (
    channels as channels_mod,
    config,
    errors,
    fair,
    health,
    housekeeping,
    lane,
    metrics as metrics_mod,
    model,
    pacing,
    planner,
    priority,
    render,
    retry,
    store as store_mod,
    zones,
)

log = structlog.get_logger("alertd.dispatcher")


def facts(alert: model.Alert) -> dict[str, str]:
    """The alert's CAP facts a channel may act on (push data; a cell broadcast's identifier and
    how long it repeats)."""
    found = {
        "event": alert.event, "severity": alert.severity, "urgency": alert.urgency, "certainty": alert.certainty,
        "status": str(alert.status), "scope": "national" if zones.NATIONAL in alert.area.zones else "local",
    }
    return found | ({"expires": alert.expires.isoformat()} if alert.expires else {})


@dataclasses.dataclass(frozen=True)
class Settings:
    batch_size: int = 500
    grace: float = 10.0  # seconds a stopping lane waits for the calls on the wire
    lease: dt.timedelta = dt.timedelta(seconds=60)
    plan_chunk: int = 1000  # rows per planning transaction: short, so other writers wait little
    idle_poll: float = 1.0  # seconds; a safety net, the lanes are woken on new work
    test_recipients: tuple[str, ...] = ()  # who gets CAP `test` and `system` alerts
    plannings: int = 2  # plannings under way at once; the next goes by its cell's share (`fair`)
    # Each channel's rate and prices, by name (`config.Pace`): forecasts read them (`web.forecast`),
    # the lanes pace their sends to the rates the operator gave (`pacing`).
    paces: Mapping[str, config.Pace] = dataclasses.field(default_factory=dict)
    failover: health.Rules = dataclasses.field(default_factory=health.Rules)  # when a channel fails, is tried again


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
        pooled = {name: pooled_pace(settings.paces.get(name), senders_of(ch)) for name, ch in self.channels.items()}
        self.settings = settings = dataclasses.replace(settings, paces={**settings.paces, **pooled})
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = uuid.uuid4().hex[:12]
        self.cancelled: set[str] = set()
        self._alerts: dict[str, model.Alert] = {}
        self._wake = {name: asyncio.Event() for name in self.channels}
        self._planning: dict[str, asyncio.Task] = {}  # by alert id
        self.recent = fair.Recent()  # each cell's alerts planned lately
        self._gate = fair.Gate(settings.plannings)
        self._failed_plans: dict[str, tuple[int, float]] = {}  # alert id: (failures, next try)
        self._workers: list[asyncio.Task] = []
        self._lanes: set[lane.Lane] = set()
        self._halting: set[asyncio.Task] = set()  # halts asked by other instances' cancels
        self._stopping = False
        self.metrics = metrics_mod.Observer()  # records nothing; the app plugs in `metrics.Metrics`
        self.pacers = {
            name: pacing.Pacer.of(paced_rate(settings.paces.get(name)), senders_of(channel))
            for name, channel in self.channels.items()
        }
        self._paced = {name: asyncio.Lock() for name in self.channels}
        self.health = {name: health.Health() for name in self.channels}

    # -- planning --------------------------------------------------------------------------------

    def kinds(self) -> dict[str, str]:
        return {name: ch.kind for name, ch in self.channels.items()}

    def addresses(self) -> dict[str, model.Address]:
        """What each configured kind sends to (the first channel of a kind speaks for it)."""
        found: dict[str, model.Address] = {}
        for channel in self.channels.values():
            found.setdefault(channel.kind, channel.address)
        return found

    def broadcasts(self) -> dict[str, tuple[str, ...]]:
        """The zones each area channel's one message reaches, by channel name."""
        return {name: ch.zones for name, ch in self.channels.items()
                if ch.address is model.Address.AREA and isinstance(ch, channels_mod.AreaBroadcast)}

    def refuses_topics(self, alert: model.Alert) -> bool:
        """Whether the alert asks for zone topics of a push channel that sends to none (`channels.Topics`)."""
        if not alert.topics or model.Kind.PUSH not in alert.channels:
            return False
        channel = self.channels[planner.routes(alert, self.kinds())[model.Kind.PUSH]]
        return not (isinstance(channel, channels_mod.Topics) and channel.sends_topics)

    # -- pace and health ---------------------------------------------------------------------------

    def usable(self) -> dict[str, bool]:
        """Each channel's health: may it carry deliveries now (`health.usable`)?"""
        now = self.clock().timestamp()
        return {name: health.usable(h, now, self.settings.failover) for name, h in self.health.items()}

    def fallback(self, name: str) -> str | None:
        """Where the pending deliveries of `name` go while it is failing, if anywhere. Only channels
        to a person's phone or app stand in for each other: a siren or an area is a gateway's own."""
        if self.health.get(name, health.Health()).failing_since is None:  # the common case, at once
            return None
        personal = {n: ch.kind for n, ch in self.channels.items() if ch.address in STAND_INS}
        return health.fallback(name, personal, self.usable())

    async def divert(self, name: str, to: str) -> None:
        """Move the failing channel's pending deliveries to `to`, and say so."""
        why = self.health[name].last_error
        note = f"moved from {name} to {to}: {name} is failing ({why})"
        moved = await self.store.move_pending(name, to, note, self.clock())
        if moved:
            log.warning("channel failing: deliveries moved", channel=name, to=to, deliveries=moved, error=why)
            self.metrics.failover(name, to, moved)
            self.wake(to)

    def _note(self, name: str, result: model.Receipt | errors.DeliveryError, seconds: float) -> None:
        before = self.health.get(name, health.Health())
        self.health[name] = after = health.note(
            before, result, seconds, self.clock().timestamp(), self.settings.failover)
        if after.failing_since is not None and before.failing_since is None:
            log.warning("channel failing", channel=name, failures=after.streak, error=after.last_error)
        elif after.failing_since is None and before.failing_since is not None:
            log.warning("channel recovered", channel=name)

    async def _turn(self, name: str) -> str:
        """Wait for the channel's turn at its rate (or its first sender's); the sender to send from."""
        if not self.pacers.get(name, pacing.Pacer()).buckets:
            return ""
        async with self._paced[name]:  # one turn at a time, so that no two sends bunch up
            self.pacers[name], wait, sender = pacing.turn(self.pacers[name], time.monotonic())
            if wait > 0 and not self._stopping:
                await asyncio.sleep(wait)  # pacing to the provider's rate is the point
            self.pacers[name] = pacing.began(self.pacers[name], sender, time.monotonic())
        return sender

    def submit(self, alert: model.Alert) -> asyncio.Task:
        """Plan `alert` in the background; its deliveries flow as soon as the first chunk lands."""
        if alert.id in self._planning:
            return self._planning[alert.id]
        # A retry of a failed planning is not one more alert of its cell.
        nth = self.recent.note(alert.cell, self.clock().timestamp()) if alert.id not in self._failed_plans else 1
        task = asyncio.create_task(self._plan(alert, nth), name=f"plan-{alert.id}")
        self._planning[alert.id] = task
        task.add_done_callback(lambda _: self._planning.pop(alert.id, None))
        return task

    async def _plan(self, alert: model.Alert, nth: int) -> None:
        # Its chunks wait in the store's line as its most urgent deliveries will (siren commands
        # first), not as the request that submitted it.
        store_mod.TURN.set(priority.foremost(alert, nth))
        try:
            route = planner.routes(alert, health.preferred(self.kinds(), self.usable()))
            if self.refuses_topics(alert):  # refused at the order; one stored before is planned without
                alert = dataclasses.replace(alert, topics=False)
            # A cancel first: it stops what a flood may have started.
            async with self._gate.turn((alert.msg_type is not model.MsgType.CANCEL, priority.share(nth))):
                await planner.plan(
                    self.store, alert, route, chunk=self.settings.plan_chunk, clock=self.clock,
                    tests=self.settings.test_recipients, on_chunk=self.wake, nth=nth, renderer=self.renderer,
                    broadcasts=self.broadcasts(), addresses=self.addresses(),
                )
            self._failed_plans.pop(alert.id, None)
        except Exception:
            # The alert stays `planning` in the store; `housekeeping` resumes it from its cursor,
            # backing off so that a planning that keeps failing does not flood the log.
            failures = self._failed_plans.get(alert.id, (0, 0.0))[0] + 1
            self._failed_plans[alert.id] = (failures, time.monotonic() + min(300.0, 2.0**failures))
            log.exception("planning failed", alert_id=alert.id, failures=failures)

    async def resume(self) -> None:
        """Resume the plannings left unfinished (by a previous process, or by a failure)."""
        for alert in await self.store.alerts_in_state(model.AlertState.PLANNING):
            if self._failed_plans.get(alert.id, (0, 0.0))[1] <= time.monotonic():
                self.submit(alert)

    def wake(self, channel: str | None = None) -> None:
        for name, event in self._wake.items():
            if channel is None or channel == name:
                event.set()
        for running in self._lanes:  # a feeder waiting for room claims now: new work may be more urgent
            if channel is None or channel == running.name:
                running.below.set()

    def cancel(self, alert_id: str) -> None:
        """From now on this process hands no delivery of the alert to a channel, except siren
        cancels. See `halt` for the messages already handed over."""
        self.cancelled.add(alert_id)
        self._alerts.pop(alert_id, None)

    async def halt(self, alert_id: str) -> None:
        """`cancel`, and return once no channel can still begin a call of the alert: a channel that
        sends from other processes (`channels.remote`) drops the messages it was handed and had not
        begun. In-process channels have begun every call they were handed."""
        self.cancel(alert_id)
        halting = [ch for ch in self.channels.values() if isinstance(ch, channels_mod.Halts)]
        await asyncio.gather(*(ch.halt(alert_id) for ch in halting))

    def notice(self, payload: str) -> None:
        """A notice from another instance sharing the store: a channel's name when it planned work
        for it, an alert's id when it cancelled that alert."""
        if payload in self.channels:
            self.wake(payload)
        else:
            halting = asyncio.create_task(self.halt(payload), name=f"halt-{payload}")
            self._halting.add(halting)
            halting.add_done_callback(self._halting.discard)
            self.wake()

    # -- one delivery ----------------------------------------------------------------------------

    async def deliver(
        self, channel: channels_mod.Channel, delivery: model.Delivery, lease_until: dt.datetime | None = None
    ) -> model.Outcome | None:
        """Send one claimed delivery and decide its outcome. Never raises for the delivery's sake.
        None when the lease ran out before the call: the delivery is another claimer's now.
        `lease_until`: the lease as the lane last renewed it, when it did since the claim."""
        alert = await self._alert(delivery.alert_id)
        if self.fallback(delivery.channel):  # failing: given back unsent, to be moved (`Lane._claim`)
            return model.Outcome(delivery.id, model.State.PENDING, next_at=self.clock())
        sender = await self._turn(delivery.channel)
        now = self.clock()
        if self._stopping:  # stopped while waiting for its turn: not begun, given back
            return model.Outcome(delivery.id, model.State.PENDING, next_at=now)
        lease = lease_until or delivery.lease_until
        if lease is not None and lease <= now:
            log.warning("lease ran out before the send", channel=delivery.channel, delivery_id=delivery.id)
            return None
        stop = self._stop(alert, delivery, now)  # checked last thing before the call
        if stop is not None:
            return model.Outcome(delivery.id, stop)
        try:
            message = self._message(alert, delivery, sender)
        except errors.AlertdError as exc:  # a template that cannot render will never render
            return model.Outcome(delivery.id, model.State.FAILED, last_error=exc.message)
        started = time.monotonic()
        result: model.Receipt | errors.DeliveryError
        try:
            result = await channel.send(message)
        except Exception as exc:  # classified by the channel, or unexpected: see `as_result`
            result = channels_mod.as_result(exc)
        if isinstance(result, errors.Halted):  # a channel dropped it for the cancel (`halt`)
            return model.Outcome(delivery.id, model.State.CANCELLED)
        seconds = time.monotonic() - started
        self.metrics.sent(delivery.channel, alert, seconds, result, self.clock())
        self._note(delivery.channel, result, seconds)
        if dead(channel, result):
            await self._forget(delivery.address)
        return self._outcome(delivery, result, alert, self.clock())

    async def undelivered(self, provider_id: str, error: errors.DeliveryError) -> model.State | None:
        """The provider accepted a message, then reported it undelivered. A failure that may pass is
        retried like a failed send (same policy, same bound by attempts and `expires`); the others,
        and the retries given up, fail the delivery. Returns the state it moved to, if it moved."""
        delivery = await self.store.delivery_by_provider(provider_id)
        now = self.clock()
        if delivery is not None:
            self.metrics.failed_later(delivery.channel, error.code)
        retryable = delivery is not None and delivery.state is model.State.SENT and isinstance(error, errors.Transient)
        if retryable and delivery is not None and await self._requeue(delivery, provider_id, error, now):
            return model.State.PENDING
        failed = await self.store.apply_receipt(provider_id, model.State.FAILED, retry.describe(error), now)
        return model.State.FAILED if failed else None

    async def _requeue(
        self, delivery: model.Delivery, provider_id: str, error: errors.DeliveryError, now: dt.datetime
    ) -> bool:
        alert = await self._alert(delivery.alert_id)
        decision = retry.decide(self.policy, delivery, error, now, alert.expires, self.rng.random())
        if not isinstance(decision, retry.RetryAt):
            return False
        if not await self.store.requeue(delivery.id, provider_id, decision.at, decision.reason, now):
            return False
        self.wake(delivery.channel)
        return True

    async def _forget(self, address: str) -> None:
        """FCM said UNREGISTERED: the token is dead for every later alert too."""
        try:
            await self.store.mark_push_token_dead(address)
        except errors.StoreError:
            log.exception("could not mark a push token dead")

    def _stop(self, alert: model.Alert, delivery: model.Delivery, now: dt.datetime) -> model.State | None:
        """Why this delivery must not start, if it must not."""
        if delivery.command == "cancel":
            return None
        if alert.id in self.cancelled or alert.state in model.FINAL:
            return model.State.CANCELLED
        if alert.is_expired(now):
            return model.State.EXPIRED
        return None

    def _message(self, alert: model.Alert, delivery: model.Delivery, sender: str = "") -> model.Message:
        rendered = self.renderer.render(alert, delivery.kind, delivery.locale or None)
        command = delivery.command
        if delivery.kind is model.Kind.SIREN and command == "activate":
            command = planner.SIREN_COMMAND.get(alert.status, "test")  # the planner decided; this is a gate
        return model.Message(
            delivery_id=delivery.id,
            alert_id=alert.id,
            kind=delivery.kind,
            to=delivery.address,
            body=rendered.body,
            title=rendered.title,
            locale=rendered.locale,
            command=command,
            data=facts(alert),
            sender=sender,
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
            error=decision.reason, retry_at=decision.at if isinstance(decision, retry.RetryAt) else None,
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
            self._workers.append(asyncio.create_task(lane.Lane(self, name).run(), name=f"lane-{name}"))
        await self.resume()

    async def stop(self) -> None:
        """Let each lane finish the calls on the wire and record them, then stop everything.
        Planning is simply interrupted: it resumes from its cursor at the next start."""
        self._stopping = True
        self.wake()
        for running in self._lanes:
            running.below.set()  # a feeder waiting for room stops waiting
        if self._workers:
            await asyncio.wait(self._workers, timeout=self.settings.grace + 1)
        await self.interrupt([*self._workers, *self._planning.values()])
        self._workers.clear()
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))

    async def interrupt(self, tasks: list[asyncio.Task] | None = None) -> None:
        """Cancel `tasks` (by default the plannings under way: they resume from their cursor)."""
        tasks = list(self._planning.values()) if tasks is None else tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle_wait(self, name: str) -> float:
        """How long a lane with nothing to do may sleep before looking again."""
        due = await self.store.next_due(name)
        if due is None:
            return self.settings.idle_poll
        return min(self.settings.idle_poll, max(0.0, (due - self.clock()).total_seconds()))

    def uncache(self, alert_id: str) -> None:
        """Forget the alert's cached value (it completed: no delivery of it is left to send)."""
        self._alerts.pop(alert_id, None)

    async def planned(self) -> None:
        """Wait until every planning under way has finished."""
        while self._planning:
            await asyncio.gather(*self._planning.values())

    async def run_until_idle(self, advance: Callable[[dt.datetime], None] | None = None) -> None:
        """For tests: plan, send and record until nothing is left to do, without background tasks.

        With `advance`, retries waiting in the future are brought forward by moving the caller's
        clock to their time instead of sleeping; without it, only work due now is done."""
        await self.planned()
        while True:
            await asyncio.gather(*(lane.Lane(self, name).run(until_idle=True) for name in self.channels))
            await housekeeping.run(self)
            due = [d for d in [await self.store.next_due(n) for n in self.channels] if d]
            if not due or advance is None:
                return
            advance(min(due))


STAND_INS = (model.Address.PHONE, model.Address.PUSH_TOKEN)  # channels that may stand in for each other


def paced_rate(pace: config.Pace | None) -> float | None:
    """The rate a channel is paced to: the one the operator gave. The provider's documented one is
    a forecast's guess (a short code or a pool sends far more) and paces nothing."""
    return pace.rate if pace is not None and not pace.rate_is_default else None


def senders_of(channel: channels_mod.Channel) -> tuple[pacing.Sender, ...]:
    return channel.senders if isinstance(channel, channels_mod.Senders) else ()


def pooled_pace(pace: config.Pace | None, senders: tuple[pacing.Sender, ...]) -> config.Pace:
    """The channel's pace for forecasts: with senders and no rate given, theirs together."""
    pace = pace or config.Pace()
    if senders and (pace.rate is None or pace.rate_is_default):
        return dataclasses.replace(pace, rate=sum(s.rate for s in senders), rate_is_default=False)
    return pace


def dead(channel: channels_mod.Channel, result: model.Receipt | errors.DeliveryError) -> bool:
    """Whether the send's answer says the address is dead for good (`channels.DeadAddresses`)."""
    # The answer first: it is cheap, and rarely says so; a protocol check is not (every send asks).
    return (isinstance(result, errors.Permanent) and result.dead_address
            and isinstance(channel, channels_mod.DeadAddresses) and channel.reports_dead_addresses)
