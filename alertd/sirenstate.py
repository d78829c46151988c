"""A siren's one state, as operators and monitoring see it, decided here and nowhere else.

`GET /v1/sirens`, `GET /v1/alerts/{id}/sirens` (hence the console's sirens page and alert page) and
the `alertd_sirens` metric all show what `decide` says; the console only displays it.

Two things are known of a siren: what became of the **last command** alertd gave it (its latest
siren delivery, whatever the alert), and its **health** as its gateway last reported it in a
heartbeat (fault, sabotage) and when alertd last heard from it. The last command comes first: it is
what the centre asked for, and a heartbeat saying "no fault" does not say that the siren sounded
(or stopped). So a failed command stays failed until a later command to the siren succeeds; a
heartbeat does not clear it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from alertd import model

# Every state, in order of precedence: the first that holds is the siren's state.
STATES = ("failed", "retrying", "commanded", "no_heartbeat", "sabotage", "fault", "activated", "ready")
OPEN = frozenset({model.State.PENDING, model.State.SENDING})
REACHED = frozenset({model.State.SENT, model.State.DELIVERED})


@dataclasses.dataclass(frozen=True)
class Health:
    """What the gateway's heartbeats say of a siren (`alertd.store.sirens` keeps them)."""

    heard_at: dt.datetime | None = None  # when alertd last heard from it (alertd's clock)
    fault: bool = False
    sabotage: bool = False


@dataclasses.dataclass(frozen=True)
class SirenState:
    """A siren as operators see it: where it is, its state (`decide`), its last reported
    health, and the last command the state was decided from."""

    siren_id: str
    zone: str
    label: str
    lat: float | None
    lon: float | None
    state: str  # one of `STATES`
    last_heartbeat: dt.datetime | None  # when alertd last heard from it (alertd's clock)
    silent: bool = False  # not heard from within the heartbeat timeout (`silent`)
    battery: float | None = None
    mains: bool | None = None
    fault: bool = False
    sabotage: bool = False
    last_ack: str | None = None  # activated | failed | busy
    last_ack_at: dt.datetime | None = None
    last_command: model.Delivery | None = None


def silent(health: Health, now: dt.datetime, stale_after: dt.timedelta | None) -> bool:
    """Not heard from for `stale_after` (or never). `stale_after` None: the gateway sends no
    heartbeats, so silence means nothing."""
    if stale_after is None:
        return False
    return health.heard_at is None or health.heard_at <= now - stale_after


def decide(
    last: model.Delivery | None, health: Health, now: dt.datetime, stale_after: dt.timedelta | None
) -> str:
    """The siren's state: the first that holds, in this order (`STATES`).

    ============  ===================================================================================
    failed        its last command failed: an activation that did not sound (acknowledged
                  ``failed``, never acknowledged within ``ack_timeout``, refused by the gateway or
                  given up after its retries), a cancel that did not stop it. Until a later command
                  to it succeeds, whatever its heartbeats say.
    retrying      its last command failed in a way that may pass (HTTP 5xx, busy, timeout,
                  unreachable gateway) and waits for, or is in, another try.
    commanded     its last command is on its way, first try.
    no_heartbeat  heartbeats are on and it has not been heard from within ``heartbeat_timeout``
                  (or ever): nothing else is known to hold.
    sabotage      its last heartbeat reports tampering.
    fault         its last heartbeat reports a fault.
    activated     its last command is an activation the gateway accepted (sent) or acknowledged
                  (delivered): it sounds the alert until a cancel stops it.
    ready         none of the above: healthy and quiet (never commanded, stopped, tested, or its
                  last command was dropped before it was sent: cancelled, expired). A test plays
                  one short cycle, so one that went through leaves the siren ready.
    ============  ===================================================================================

    A failed or unfinished command outranks every health report; health outranks "activated",
    since a siren that reports a fault or went silent may have stopped sounding.
    """
    if last is not None and last.state is model.State.FAILED:
        return "failed"
    if last is not None and last.state in OPEN:
        return "retrying" if last.last_error else "commanded"
    if silent(health, now, stale_after):
        return "no_heartbeat"
    if health.sabotage:
        return "sabotage"
    if health.fault:
        return "fault"
    if last is not None and last.state in REACHED and last.command == "activate":
        return "activated"
    return "ready"
