"""A siren's one state (`alertd.sirenstate.decide`): the last command first, then the heartbeats."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from alertd import model, sirenstate

NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)
STALE = dt.timedelta(seconds=300)
HEARD = sirenstate.Health(heard_at=NOW - dt.timedelta(seconds=10))
S = model.State


def command(state: model.State, verb: str = "activate", error: str | None = None) -> model.Delivery:
    return model.Delivery(
        id=1, alert_id="a1", channel="siren", kind=model.Kind.SIREN, target="s1", address="s1", locale="fr",
        state=state, attempts=0 if state is S.PENDING and not error else 1, last_error=error, command=verb,
        updated_at=NOW - dt.timedelta(seconds=5),
    )


HEALTH = {
    "healthy": HEARD,
    "silent": sirenstate.Health(heard_at=NOW - dt.timedelta(seconds=301)),
    "never heard": sirenstate.Health(),
    "sabotage": sirenstate.Health(heard_at=HEARD.heard_at, sabotage=True),
    "fault": sirenstate.Health(heard_at=HEARD.heard_at, fault=True),
    "fault and sabotage": sirenstate.Health(heard_at=HEARD.heard_at, fault=True, sabotage=True),
}
COMMANDS = {
    "none": None,
    "activation did not sound": command(S.FAILED, error="did not sound"),
    "cancel failed": command(S.FAILED, "cancel", error="siren gateway answered HTTP 422 (fault)"),
    "retry after HTTP 500": command(S.PENDING, error="siren gateway answered HTTP 500 (http_500)"),
    "retry being sent": command(S.SENDING, error="busy: executing another command"),
    "queued": command(S.PENDING),
    "being sent": command(S.SENDING),
    "activation sent": command(S.SENT),
    "activation acknowledged": command(S.DELIVERED),
    "cancel sent": command(S.SENT, "cancel"),
    "test sent": command(S.DELIVERED, "test"),
    "silent test sent": command(S.SENT, "silent_test"),
    "activation cancelled unsent": command(S.CANCELLED),
    "activation expired unsent": command(S.EXPIRED),
}
# What the last command alone says, or None: it leaves the state to the heartbeats.
BY_COMMAND = {
    "activation did not sound": "failed", "cancel failed": "failed",
    "retry after HTTP 500": "retrying", "retry being sent": "retrying",
    "queued": "commanded", "being sent": "commanded",
}
BY_HEALTH = {"silent": "no_heartbeat", "never heard": "no_heartbeat", "sabotage": "sabotage", "fault": "fault",
             "fault and sabotage": "sabotage"}
ACTIVATED = {"activation sent", "activation acknowledged"}


def expected(cmd: str, health: str) -> str:
    """The precedence, written out: command trouble, then health trouble, then activated, then ready."""
    return BY_COMMAND.get(cmd) or BY_HEALTH.get(health) or ("activated" if cmd in ACTIVATED else "ready")


@pytest.mark.parametrize("cmd, health", list(itertools.product(COMMANDS, HEALTH)))
def test_the_precedence_table(cmd, health):
    assert sirenstate.decide(COMMANDS[cmd], HEALTH[health], NOW, STALE) == expected(cmd, health)


@pytest.mark.parametrize("cmd", ["activation did not sound", "cancel failed", "retry after HTTP 500", "queued"])
def test_a_failed_or_unfinished_command_is_never_ready_whatever_the_heartbeats(cmd):
    later = sirenstate.Health(heard_at=NOW)  # a healthy heartbeat after the failure says nothing of it
    for health in (*HEALTH.values(), later):
        for stale in (STALE, None):
            assert sirenstate.decide(COMMANDS[cmd], health, NOW, stale) not in ("ready", "activated")


def test_without_heartbeats_silence_means_nothing():
    never = HEALTH["never heard"]
    assert sirenstate.decide(None, never, NOW, None) == "ready"
    assert sirenstate.decide(COMMANDS["activation sent"], never, NOW, None) == "activated"
    assert not sirenstate.silent(never, NOW, None) and sirenstate.silent(never, NOW, STALE)


def test_silence_starts_at_the_timeout():
    assert not sirenstate.silent(sirenstate.Health(heard_at=NOW - STALE + dt.timedelta(seconds=1)), NOW, STALE)
    assert sirenstate.silent(sirenstate.Health(heard_at=NOW - STALE), NOW, STALE)


def test_every_state_decided_is_listed_in_precedence_order():
    decided = {sirenstate.decide(c, h, NOW, STALE) for c in COMMANDS.values() for h in HEALTH.values()}
    assert decided == set(sirenstate.STATES)
    assert sirenstate.STATES.index("retrying") < sirenstate.STATES.index("no_heartbeat")
    assert sirenstate.STATES.index("fault") < sirenstate.STATES.index("activated") < sirenstate.STATES.index("ready")
