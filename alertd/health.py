"""Each channel's health, scored from its recent calls: pure decisions, the dispatcher acts.

A channel is failing once its provider kept failing (5xx, timeouts, connection errors: the
failures that may pass, `errors.Transient`; an account refused, `errors.ChannelMisconfigured`; a
call slower than `Rules.slow`) for `Rules.failures` calls in a row over at least `Rules.after`
seconds. A refusal of one message (a bad number) says the provider works. While failing, its
pending deliveries go to the next usable channel of its kind (configuration order is preference);
after `Rules.cooldown` seconds it is usable again for one more try, the probe: new alerts are
routed to it, and its first call decides: a success and it is healthy, a failure and it waits
another cool-down. Times are the dispatcher clock's seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from alertd import errors, model


@dataclasses.dataclass(frozen=True)
class Rules:
    failures: int = 5  # failed calls in a row ...
    after: float = 30.0  # ... over at least this many seconds: failing
    cooldown: float = 60.0  # seconds before a failing channel is tried again
    slow: float | None = None  # a call slower than this many seconds counts as failed


@dataclasses.dataclass(frozen=True)
class Health:
    streak: int = 0  # failed calls in a row
    since: float | None = None  # when the first of them ended
    failing_since: float | None = None  # when the channel was judged failing (or failed its probe)
    last_error: str = ""  # the latest failure, for the log and the deliveries moved


def failed(result: model.Receipt | errors.DeliveryError, seconds: float, rules: Rules) -> bool:
    """Whether this call's answer says the provider is failing."""
    if isinstance(result, (errors.Transient, errors.ChannelMisconfigured)):
        return True
    return rules.slow is not None and seconds > rules.slow


def note(health: Health, result: model.Receipt | errors.DeliveryError, seconds: float, now: float,
         rules: Rules) -> Health:
    """The health after one more call."""
    if not failed(result, seconds, rules):
        return Health()
    why = result.message if isinstance(result, errors.DeliveryError) else f"a call took {seconds:.1f} s"
    since = now if health.since is None else health.since
    streak = health.streak + 1
    failing = health.failing_since is not None or (streak >= rules.failures and now - since >= rules.after)
    return Health(streak, since, now if failing else None, why)


def usable(health: Health, now: float, rules: Rules) -> bool:
    """Whether the channel may carry deliveries: healthy, or failing and due for its probe."""
    return health.failing_since is None or now - health.failing_since >= rules.cooldown


def preferred(kinds: Mapping[str, str], usable_now: Mapping[str, bool]) -> dict[str, str]:
    """`kinds` (channel name: kind, in configuration order) with the usable channels first, so
    that the first channel of each kind (`planner.routes`) is the first usable one."""
    first = {name: kind for name, kind in kinds.items() if usable_now.get(name, True)}
    return first | {name: kind for name, kind in kinds.items() if name not in first}


def fallback(name: str, kinds: Mapping[str, str], usable_now: Mapping[str, bool]) -> str | None:
    """Where the pending deliveries of `name` go while it is not usable: the first usable channel of
    its kind among `kinds` (those that may stand in for each other), if any."""
    if usable_now.get(name, True) or name not in kinds:
        return None
    return next((other for other, kind in kinds.items()
                 if kind == kinds[name] and other != name and usable_now.get(other, True)), None)
