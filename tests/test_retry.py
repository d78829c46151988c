"""The retry policy, as a pure function."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from alertd import errors, model, retry
from tests.helpers import START

POLICY = retry.Policy(max_attempts=5, base=2.0, cap=60.0)
DELIVERY = model.Delivery(1, "a", "sms", model.Kind.SMS, "r1", "+33612345678", "fr", model.State.SENDING, attempts=1)


def attempt(n: int) -> model.Delivery:
    return dataclasses.replace(DELIVERY, attempts=n)


def test_permanent_errors_give_up_at_once():
    decision = retry.decide(POLICY, attempt(1), errors.Permanent("no", code="21211"), START, None, 0.5)
    assert decision == retry.GiveUp(model.State.FAILED, "21211: no")


@pytest.mark.parametrize("n, low, high", [(1, 1, 2), (2, 2, 4), (3, 4, 8), (4, 8, 16)])
def test_backoff_doubles_with_jitter_between_half_and_all(n, low, high):
    waits = [
        (retry.decide(POLICY, attempt(n), errors.Transient("x"), START, None, j).at - START).total_seconds()
        for j in (0.0, 0.999)
    ]
    assert waits[0] == pytest.approx(low) and waits[1] == pytest.approx(high, rel=0.01)


def test_backoff_is_capped():
    assert retry.backoff(retry.Policy(max_attempts=99, base=2, cap=60), 30, 0.999) <= 60


def test_retry_after_is_honoured_when_longer_than_the_backoff():
    decision = retry.decide(POLICY, attempt(1), errors.Transient("slow", retry_after=90), START, None, 0.0)
    assert decision.at == START + dt.timedelta(seconds=90)


def test_attempts_are_bounded():
    decision = retry.decide(POLICY, attempt(5), errors.Transient("x"), START, None, 0.0)
    assert isinstance(decision, retry.GiveUp) and decision.state is model.State.FAILED
    assert "5 attempts" in decision.reason


def test_no_retry_after_the_alert_expires():
    expires = START + dt.timedelta(seconds=10)
    decision = retry.decide(POLICY, attempt(1), errors.Transient("x", retry_after=30), START, expires, 0.0)
    assert isinstance(decision, retry.GiveUp) and decision.state is model.State.EXPIRED


def test_a_misconfigured_channel_waits_without_failing_the_citizen():
    decision = retry.decide(POLICY, attempt(50), errors.ChannelMisconfigured(code="20003"), START, None, 0.0)
    assert isinstance(decision, retry.RetryAt) and decision.at == START + dt.timedelta(seconds=60)
