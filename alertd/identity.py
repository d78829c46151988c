"""The identity of a message: who may sign it, and when a second post is the same message.

A CAP message is signed by its `<sender>`, which must be one of the posting cell's senders: a cell
never posts, updates or cancels under another's name, nor uses up another's identifiers. Its
triplet (sender, identifier, sent) names one message: posted again, it is the first alert (the
document's whitespace and attribute order do not matter: the orders are compared once read); the
same sender and identifier with other content, or another `sent`, is another message reusing an
identifier CAP says is unique per sender, and is refused. The `Idempotency-Key` header is therefore
ignored for CAP bodies. A JSON order is signed with its cell's first sender and keyed by that header
(or its identifier); its `sent` is when alertd received it.

Plain decisions on values; the web layer calls them around the store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from alertd import cap, errors, model, people

SENDER, IDENTIFIER, SENT = "/alert/sender", "/alert/identifier", "/alert/sent"  # where CAP problems point


def signed(
    caller: people.Caller, alert: model.Alert, is_cap: bool, now: dt.datetime, skew: dt.timedelta
) -> model.Alert:
    """The alert as the caller's cell signs it: a JSON order with the cell's first sender (a sender
    belongs to one cell, its id may not), a CAP document as it came once `check_document` passed."""
    if not is_cap:
        return dataclasses.replace(alert, sender=caller.sender)
    check_document(caller, alert, now, skew)
    return alert


def check_document(caller: people.Caller, alert: model.Alert, now: dt.datetime, skew: dt.timedelta) -> None:
    """Refuse a CAP document the caller's cell may not sign, or one sent more than `skew` from now
    (a stale or mistyped `sent` would otherwise pass for a new message)."""
    senders = caller.unit.senders
    if alert.sender not in senders:
        raise errors.ForeignSender(
            f"sender {alert.sender!r} is not one of your cell's CAP senders: {', '.join(senders)}",
            field=SENDER, sender=alert.sender,
        )
    if abs(alert.sent - now) > skew:
        raise errors.SentOutOfRange(
            f"sent {_time(alert.sent)} is more than {_hours(skew)} from now ({_time(now)}): "
            "check the sending system's clock", field=SENT,
        )


def key(alert: model.Alert, header: str | None, is_cap: bool) -> str:
    """What the store keys the alert by, with its sender: a CAP message's identifier (its `sent` is
    compared by `check_replay`), a JSON order's `Idempotency-Key` or else its identifier."""
    return alert.identifier if is_cap else header or alert.identifier


def check_replay(stored: model.Alert, alert: model.Alert, is_cap: bool) -> None:
    """Refuse a post whose key found `stored` unless it is the same order: replaying the first alert
    for a different one would silently drop the second."""
    if is_cap and stored.sent != alert.sent:
        raise errors.IdentifierReused(
            _reused(stored, f"(this message says {_time(alert.sent)})"), field=SENT, alert_id=stored.id
        )
    if order_of(stored) == order_of(alert):
        return
    if is_cap:
        raise errors.IdentifierReused(_reused(stored, "for a different message"), field=IDENTIFIER, alert_id=stored.id)
    raise errors.IdempotencyKeyReused(field="Idempotency-Key", alert_id=stored.id)


def order_of(alert: model.Alert) -> dict:
    """What the issuer asked for: the alert without what alertd gave it (id, time, state)."""
    mine = ("id", "identifier", "sent", "state", "cancelled_at", "cell_name", "created_by", "approval")
    return {k: v for k, v in alert.to_json().items() if k not in mine}


def _reused(stored: model.Alert, how: str) -> str:
    return (f"sender {stored.sender!r} already used identifier {stored.identifier!r} at {_time(stored.sent)} {how}; "
            "CAP identifiers are unique per sender: give this message a new identifier")


def _time(value: dt.datetime) -> str:
    return cap.format_time(model.to_utc(value))


def _hours(skew: dt.timedelta) -> str:
    return f"{skew.total_seconds() / 3600:g} h"
