"""Per-cell limits on orders: a token bucket per cell, a plain decision.

Each cell's bucket holds at most `rate.burst` orders and refills at `rate.per_minute`; an order
takes one, or is refused with the time until one is there. The buckets are per instance: behind a
load balancer of n instances a cell may post up to n times its rate (the dispatcher's fair sharing,
`alertd.fair`, still keeps it from delaying other cells). A bucket that has refilled is the same
as no bucket, so it is forgotten: memory stays bounded by the cells that posted lately.
"""

from __future__ import annotations

import dataclasses

from alertd import people

SWEEP_EVERY = 1024  # takes between two looks for full buckets to forget


@dataclasses.dataclass(frozen=True)
class Bucket:
    tokens: float  # orders available at `at`
    at: float  # monotonic seconds

    def level(self, rate: people.Rate, now: float) -> float:
        """The orders available at `now`, refilled since `at`, never above the burst."""
        return min(float(rate.burst), self.tokens + max(0.0, now - self.at) * rate.per_minute / 60.0)


def returned(bucket: Bucket, rate: people.Rate, now: float) -> Bucket:
    """The bucket with an order given back (one refused after it was admitted), never above the burst."""
    return Bucket(min(float(rate.burst), bucket.level(rate, now) + 1.0), now)


def decide(bucket: Bucket | None, rate: people.Rate, now: float) -> tuple[Bucket, float | None]:
    """The bucket after one order at `now`, and None if it is admitted, else the seconds until one
    order is available (the bucket is then unchanged: a refused order takes nothing)."""
    tokens = float(rate.burst) if bucket is None else bucket.level(rate, now)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), None
    if rate.per_minute <= 0:
        return Bucket(tokens, now), float("inf")
    return Bucket(tokens, now), (1.0 - tokens) * 60.0 / rate.per_minute


class Quota:
    """The buckets of this instance, by cell id."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[Bucket, people.Rate]] = {}
        self._takes = 0

    def take(self, cell_id: str, rate: people.Rate, now: float) -> float | None:
        """One order of `cell_id` at `now` (monotonic seconds): None when admitted, else the
        seconds until one order is available."""
        held = self._buckets.get(cell_id)
        bucket, wait = decide(held[0] if held else None, rate, now)
        self._buckets[cell_id] = (bucket, rate)
        self._takes += 1
        if self._takes % SWEEP_EVERY == 0:
            self._forget_full(now)
        return wait

    def give_back(self, cell_id: str, rate: people.Rate, now: float) -> None:
        """The order `take` admitted was refused (bad input, a conflict): it does not count."""
        if held := self._buckets.get(cell_id):
            self._buckets[cell_id] = (returned(held[0], rate, now), rate)

    def __len__(self) -> int:
        """The cells with a bucket remembered."""
        return len(self._buckets)

    def _forget_full(self, now: float) -> None:
        full = [c for c, (b, rate) in self._buckets.items() if b.level(rate, now) >= rate.burst]
        for cell_id in full:
            del self._buckets[cell_id]
