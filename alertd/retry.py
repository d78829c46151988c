"""The retry policy: one pure function decides, the dispatcher carries the decision out.

alertd is the only decision maker on retries: the client libraries' own retries are disabled, so a
provider failure is counted once and bounded here by attempts and by the alert's `expires`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from alertd import errors, model


@dataclasses.dataclass(frozen=True)
class Policy:
    max_attempts: int = 8
    base: float = 2.0  # seconds before the second attempt
    cap: float = 300.0  # no wait longer than this between attempts, unless the provider asks


@dataclasses.dataclass(frozen=True)
class RetryAt:
    at: dt.datetime
    reason: str


@dataclasses.dataclass(frozen=True)
class GiveUp:
    state: model.State  # failed or expired
    reason: str


def backoff(policy: Policy, attempts: int, jitter: float) -> float:
    """Exponential backoff with "equal jitter": between half and all of base * 2^(attempts-1)."""
    ceiling = min(policy.cap, policy.base * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + ceiling / 2 * jitter


def describe(error: errors.DeliveryError) -> str:
    return f"{error.code}: {error.message}" if error.code else error.message


def decide(
    policy: Policy,
    delivery: model.Delivery,
    error: errors.DeliveryError,
    now: dt.datetime,
    expires: dt.datetime | None,
    jitter: float,
) -> RetryAt | GiveUp:
    """What to do after `delivery` (already counted in `attempts`) failed with `error`.

    `jitter` is a number in [0, 1) drawn by the caller, which keeps this function pure.
    """
    reason = describe(error)
    if isinstance(error, errors.Permanent):
        return GiveUp(model.State.FAILED, reason)
    if isinstance(error, errors.ChannelMisconfigured):
        # The operator must fix the channel; the citizen keeps their place until the alert expires.
        return _retry_before_expiry(now + dt.timedelta(seconds=policy.cap), expires, reason)
    if delivery.attempts >= policy.max_attempts:
        return GiveUp(model.State.FAILED, f"gave up after {delivery.attempts} attempts: {reason}")
    wait = backoff(policy, delivery.attempts, jitter)
    retry_after = error.retry_after if isinstance(error, errors.Transient) else None
    if retry_after is not None:
        wait = max(wait, float(retry_after))
    return _retry_before_expiry(now + dt.timedelta(seconds=wait), expires, reason)


def _retry_before_expiry(at: dt.datetime, expires: dt.datetime | None, reason: str) -> RetryAt | GiveUp:
    if expires is not None and at >= expires:
        return GiveUp(model.State.EXPIRED, f"alert expires before the next attempt: {reason}")
    return RetryAt(at, reason)
