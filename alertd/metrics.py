"""Prometheus metrics: what this process did (counters, histograms) and what the store holds now
(gauges read at each scrape).

Every app has its own `CollectorRegistry`, never the global one, so that several apps in one process
(the tests) keep their own figures. Labels stay few-valued: channel names, states, status, provider
error codes; never an alert id or an address.

With several instances on one PostgreSQL store, the counters and histograms are each instance's own
(sum them across instances), while the store gauges are the same in every instance's scrape (take
their max, not their sum).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition
from prometheus_client.core import GaugeMetricFamily

from alertd import errors, model, sirenstate

SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ORDER_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
TRACKED = 1000  # alerts whose sends are followed; one that never completes (cancelled) ages out
CODES = 100  # distinct error codes per channel before the rest count as "other": a plugin may be loose

# One pass over the (channel, state, next_at) index, whatever the number of alerts.
DELIVERY_COUNTS = "SELECT channel, state, count(*) AS n FROM deliveries GROUP BY channel, state"
OPEN = frozenset({model.State.PENDING, model.State.SENDING})
SIREN_STATES = sirenstate.STATES
# Why a bearer token was refused: none given, not an alertd token, no such token (or a wrong
# secret), revoked, expired.
AUTH_FAILURES = ("missing", "malformed", "unknown", "revoked", "expired", "disabled")
# Why the server closed a connection itself: no complete request head in time, a body not received
# in time (answered 408), the one idle the longest closed to make room (at the cap, or out of file
# descriptors), a new one closed at the cap with every connection busy.
DROPS = ("head_timeout", "body_timeout", "evicted", "over_capacity")
SOURCES = 10  # distinct client addresses a tally names at most


@dataclasses.dataclass(frozen=True)
class Figures:
    """What the store holds at one scrape."""

    deliveries: Mapping[tuple[str, str], int]  # (channel, state): how many
    sirens: Mapping[str, int]  # siren state: how many
    seconds: float  # how long reading them took
    up: bool = True


async def read(store, now: dt.datetime, stale_after: dt.timedelta | None) -> Figures:
    """The store's figures for one scrape. `_fetch` is the SQL stores' internal reader: one
    GROUP BY here spares the `Store` protocol a method that only monitoring needs."""
    started = time.monotonic()
    try:
        rows = await store._fetch(DELIVERY_COUNTS)
        sirens = await store.siren_states(now, stale_after)
    except errors.StoreError:
        return Figures({}, {}, time.monotonic() - started, up=False)
    states: dict[str, int] = {}
    for siren in sirens:
        states[siren.state] = states.get(siren.state, 0) + 1
    deliveries = {(r["channel"], r["state"]): int(r["n"]) for r in rows}
    return Figures(deliveries, states, time.monotonic() - started)


class Observer:
    """What the dispatcher reports as it works; this one records nothing, so a dispatcher runs
    without metrics. `Metrics` records it."""

    def sent(
        self, channel: str, alert: model.Alert, seconds: float,
        result: model.Receipt | errors.DeliveryError, now: dt.datetime,
    ) -> None:
        """One provider call of `channel` for `alert` took `seconds` and ended with `result`."""

    def completed(self, alert_id: str) -> None:
        """Every delivery of the alert is settled."""

    def failed_later(self, channel: str, code: str | None) -> None:
        """The provider accepted a message, then reported it failed (a receipt, or no ack in time)."""


class Metrics(Observer):
    """The app's registry and its metrics; `exposition` renders them for one scrape."""

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels = tuple(channels)
        self.registry = CollectorRegistry()
        self.store = StoreCollector(self.channels)
        self.registry.register(self.store)
        self.orders = Counter(
            "alertd_orders", "Alert orders accepted (replays not counted).", ["status", "msg_type"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "alertd_send_duration_seconds", "Provider calls, by how long they took.", ["channel"],
            buckets=SEND_BUCKETS, registry=self.registry,
        )
        self.errors = Counter(
            "alertd_provider_errors", "Provider failures by error code: refused calls, and failures the "
            "provider reported later (undelivered receipts, siren failed or no ack in time).",
            ["channel", "code"], registry=self.registry,
        )
        self.first_send = self._order_histogram("first", "the first message of an alert went out")
        self.last_send = self._order_histogram("last", "the last message of a completed alert went out")
        self.auth_failures = Counter(
            "alertd_auth_failures", "Requests refused for want of a valid bearer token, by reason.", ["reason"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "alertd_connections_dropped", "Client connections the server closed itself, by reason.", ["reason"],
            registry=self.registry,
        )
        self.accept_errors = Counter(
            "alertd_accept_errors", "Connections that could not be accepted (out of file descriptors).",
            registry=self.registry,
        )
        self.connections = Gauge(
            "alertd_connections_open", "Client connections open now (the server's, not a test client's).",
            registry=self.registry,
        )
        self.streams_refused = Counter(
            "alertd_streams_refused", "Event streams refused: the token already held as many as allowed.",
            registry=self.registry,
        )
        self._codes: set[tuple[str, str]] = set()
        self._sends: dict[str, tuple[dt.datetime, dict[str, dt.datetime]]] = {}  # alert id: order, last sends
        self._zero()

    def _order_histogram(self, which: str, when: str) -> Histogram:
        return Histogram(
            f"alertd_order_to_{which}_send_seconds", f"Seconds from the order until {when}, per channel.",
            ["channel"], buckets=ORDER_BUCKETS, registry=self.registry,
        )

    def _zero(self) -> None:
        """Show every series that can be known in advance at 0, so rates start from the start."""
        for status in model.Status:
            for msg_type in model.MsgType:
                self.orders.labels(status.value, msg_type.value)
        for channel in self.channels:
            for histogram in (self.send_seconds, self.first_send, self.last_send):
                histogram.labels(channel)
        for reason in AUTH_FAILURES:
            self.auth_failures.labels(reason)
        for reason in DROPS:
            self.dropped.labels(reason)

    def accepted(self, alert: model.Alert, created: bool) -> None:
        """An order was answered with `alert`; only a `created` one is new."""
        if created:
            self.orders.labels(alert.status.value, alert.msg_type.value).inc()

    def sent(
        self, channel: str, alert: model.Alert, seconds: float,
        result: model.Receipt | errors.DeliveryError, now: dt.datetime,
    ) -> None:
        self.send_seconds.labels(channel).observe(seconds)
        if isinstance(result, errors.DeliveryError):
            self.errors.labels(channel, self._code(channel, result.code)).inc()
            return
        if alert.id not in self._sends:
            if len(self._sends) >= TRACKED:
                del self._sends[next(iter(self._sends))]
            self._sends[alert.id] = (alert.sent, {})
        ordered, last = self._sends[alert.id]
        if channel not in last:
            self.first_send.labels(channel).observe(_since(ordered, now))
        last[channel] = now

    def completed(self, alert_id: str) -> None:
        if (sends := self._sends.pop(alert_id, None)) is None:
            return
        ordered, last = sends
        for channel, at in last.items():
            self.last_send.labels(channel).observe(_since(ordered, at))

    def failed_later(self, channel: str, code: str | None) -> None:
        self.errors.labels(channel, self._code(channel, code)).inc()

    def _code(self, channel: str, code: str | None) -> str:
        code = str(code or "none")
        if (channel, code) not in self._codes:
            if sum(1 for c, _ in self._codes if c == channel) >= CODES:
                return "other"
            self._codes.add((channel, code))
        return code

    def exposition(self, figures: Figures, accept: str = "") -> tuple[bytes, str]:
        """The body and content type of a scrape with the store's `figures` (text format, or
        OpenMetrics when `accept` asks for it)."""
        encoder, content_type = exposition.choose_encoder(accept)
        self.store.figures = figures  # no await until encoded: a concurrent scrape cannot mix in
        return encoder(self.registry), content_type


class Tally:
    """Events of a kind that may come by the thousand (failed authentications, failed accepts),
    logged at most once per `interval` seconds: the first at once, the others of the interval summed
    into one line when it ends. `say(count, kinds, sources)` writes the line."""

    def __init__(self, interval: float, say: Callable[[int, dict[str, int], list[str]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.say, self.clock = interval, say, clock
        self.kinds: collections.Counter[str] = collections.Counter()
        self.sources: dict[str, None] = {}
        self.quiet_until = 0.0
        self._flush: asyncio.TimerHandle | None = None

    def add(self, kind: str, source: str | None = None) -> None:
        self.kinds[kind] += 1
        if source and len(self.sources) < SOURCES:
            self.sources[source] = None
        if self.clock() >= self.quiet_until:
            self.flush()
        elif self._flush is None:  # the interval's sum must be said even if nothing follows
            self._flush = asyncio.get_running_loop().call_later(self.quiet_until - self.clock(), self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self.kinds:
            self.say(sum(self.kinds.values()), dict(self.kinds), list(self.sources))
            self.quiet_until = self.clock() + self.interval
        self.kinds.clear()
        self.sources.clear()


def _since(start: dt.datetime, end: dt.datetime) -> float:
    return max(0.0, (end - start).total_seconds())  # a CAP order's `sent` is the issuer's clock


class StoreCollector:
    """The store's figures as gauges. Collecting never touches the store: the scrape handler reads
    the figures first (asynchronously) and hands them over."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels
        self.figures: Figures | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> list[GaugeMetricFamily]:
        families = self._families()
        if self.figures is not None:
            self._fill(self.figures, *families)
        return list(families)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("alertd_deliveries", "Deliveries in the store, all alerts, by channel and state.",
                              labels=["channel", "state"]),
            GaugeMetricFamily("alertd_queue_depth", "Deliveries pending or on the wire, by channel.",
                              labels=["channel"]),
            GaugeMetricFamily("alertd_sirens", "Sirens by last known state (heartbeats and last command).",
                              labels=["state"]),
            GaugeMetricFamily("alertd_store_up", "Whether this scrape could read the store."),
            GaugeMetricFamily("alertd_store_read_seconds", "How long this scrape took to read the store."),
        )

    def _fill(self, figures: Figures, deliveries, queue, sirens, up, read_seconds) -> None:
        up.add_metric([], 1.0 if figures.up else 0.0)
        read_seconds.add_metric([], figures.seconds)
        if not figures.up:
            return
        channels = sorted(set(self.channels) | {c for c, _ in figures.deliveries})
        for channel in channels:
            for state in model.State:
                deliveries.add_metric([channel, state.value], figures.deliveries.get((channel, state.value), 0))
            queue.add_metric([channel], sum(figures.deliveries.get((channel, s.value), 0) for s in OPEN))
        for siren_state in sorted(set(SIREN_STATES) | set(figures.sirens)):
            sirens.add_metric([siren_state], figures.sirens.get(siren_state, 0))
