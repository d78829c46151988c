"""How long the next send of a channel, or of one of its senders, must wait: token buckets.

Pure decisions in virtual time (seconds of `time.monotonic`): the dispatcher acts on them (it
sleeps), the FCM channel keeps its project quota with the same bucket. A bucket is GCRA: `due` is
when it would be empty again; up to `burst` sends may go at once after a quiet spell, then one
every 1/`rate` seconds. The dispatcher's buckets have a burst of one, its turns are taken one at
a time and a send that began late pushes the next one back (`began`): a provider that counts its
rate per second (Twilio's 20429, a siren gateway's) sees no more than `rate` begun in any second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Bucket:
    rate: float  # sends per second
    burst: float = 1.0
    due: float = 0.0
    paused_until: float = 0.0  # after a provider said "too many" (FCM's QUOTA_EXCEEDED)

    @classmethod
    def per_minute(cls, quota: float) -> Bucket:
        return cls(rate=quota / 60, burst=max(1.0, quota / 60))


def take(bucket: Bucket, now: float) -> tuple[Bucket, float]:
    """The bucket with one more send let through at its earliest, and how long that send must
    wait from `now`."""
    interval = 1 / bucket.rate
    at = max(now, bucket.paused_until, bucket.due - (bucket.burst - 1) * interval)
    return dataclasses.replace(bucket, due=max(bucket.due, at) + interval), at - now


def pause(bucket: Bucket, now: float, seconds: float) -> Bucket:
    return dataclasses.replace(bucket, paused_until=max(bucket.paused_until, now + seconds))


@dataclasses.dataclass(frozen=True)
class Sender:
    """One of a channel's senders (an SMS `from`) and its own rate."""

    name: str
    rate: float


def pick(buckets: Sequence[Bucket], now: float) -> tuple[int, Bucket, float]:
    """The sender whose turn comes first (least loaded; the first of equals, so equal senders take
    turns), its bucket after this send, and how long the send waits."""
    taken = [take(bucket, now) for bucket in buckets]
    best = min(range(len(taken)), key=lambda i: taken[i][1])
    return best, *taken[best]


@dataclasses.dataclass(frozen=True)
class Pacer:
    """A channel's pace: one bucket over the whole channel, or one per sender (then `senders`
    names them, in the same order). No bucket at all: the channel is not paced."""

    buckets: tuple[Bucket, ...] = ()
    senders: tuple[str, ...] = ()

    @classmethod
    def of(cls, rate: float | None, senders: Sequence[Sender] = ()) -> Pacer:
        if senders:
            return cls(tuple(Bucket(s.rate) for s in senders), tuple(s.name for s in senders))
        return cls((Bucket(rate),) if rate else ())


def turn(pacer: Pacer, now: float) -> tuple[Pacer, float, str]:
    """The pacer after one more send, how long that send waits, and its sender ("" when the
    channel has no senders of its own)."""
    if not pacer.buckets:
        return pacer, 0.0, ""
    i, bucket, wait = pick(pacer.buckets, now)
    buckets = pacer.buckets[:i] + (bucket,) + pacer.buckets[i + 1:]
    return dataclasses.replace(pacer, buckets=buckets), wait, pacer.senders[i] if pacer.senders else ""


def began(pacer: Pacer, sender: str, at: float) -> Pacer:
    """The pacer once the send its last turn let through began at `at`, maybe later than its turn
    (a busy event loop): the next send of that bucket waits a whole interval from `at`."""
    if not pacer.buckets:
        return pacer
    i = pacer.senders.index(sender) if sender else 0
    bucket = pacer.buckets[i]
    bucket = dataclasses.replace(bucket, due=max(bucket.due, at + 1 / bucket.rate))
    return dataclasses.replace(pacer, buckets=pacer.buckets[:i] + (bucket,) + pacer.buckets[i + 1:])
