"""An alert's place in its chain: the earlier alerts an update replaces or a cancel stops.

Plain decisions on values; the web layer looks the referenced alerts up in the store and hands
them here. The rules are CAP 1.2's (references name earlier alerts, never the alert itself or a
later one) plus alertd's own: an update or a cancel keeps its alerts' status, so no exercise
replaces or stops an actual alert, nor the other way round; and drafts are not in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from alertd import errors, model

# What a cancel may leave out and takes from the first alert it stops.
INHERITED = ("event", "urgency", "severity", "certainty", "area", "channels")
CANCEL_TEMPLATE = "all_clear"


def resolve(alert: model.Alert, found: Sequence[model.Alert | None]) -> model.Alert:
    """`alert` with each reference bound to the stored alert `found` for it (same order), or
    `errors.Invalid` naming every reference at fault."""
    problems = [
        {"field": f"references.{i}", "message": message}
        for i, (ref, earlier) in enumerate(zip(alert.references, found, strict=True))
        if (message := _problem(alert, ref, earlier))
    ]
    if problems:
        raise errors.Invalid(f"{problems[0]['field']}: {problems[0]['message']}", field=problems[0]["field"],
                             errors=problems)
    refs = tuple(dataclasses.replace(r, alert_id=e.id) for r, e in zip(alert.references, found, strict=True) if e)
    return dataclasses.replace(alert, references=refs)


def _problem(alert: model.Alert, ref: model.Reference, earlier: model.Alert | None) -> str | None:
    if (ref.sender, ref.identifier) == (alert.sender, alert.identifier):
        return "an alert cannot reference itself"
    if ref.sent > alert.sent:
        return "references a later alert"
    if earlier is None or abs((earlier.sent - ref.sent).total_seconds()) >= 1:
        return f"no alert {ref.identifier!r} of {ref.sender!r} sent at {ref.sent.isoformat()}"
    if alert.msg_type is model.MsgType.ALERT:
        return None
    if earlier.state is model.AlertState.DRAFT:
        return "a draft is not in force: approve it, or leave it unapproved"
    if alert.msg_type is model.MsgType.UPDATE and earlier.state is model.AlertState.CANCELLED:
        return "a cancelled alert cannot be updated"
    # A draft update or cancel is checked again, with the status it is issued as, at its approval.
    if alert.status is not model.Status.DRAFT and earlier.status is not alert.status:
        return f"the referenced alert's status is {earlier.status.value}, this one's {alert.status.value}"
    return None


def complete(alert: model.Alert, earlier: Sequence[model.Alert]) -> model.Alert:
    """A cancel with what it left out taken from the first alert it stops, and its default text."""
    if alert.msg_type is not model.MsgType.CANCEL or not earlier:
        return alert
    first = earlier[0]
    missing = {
        name: getattr(first, name)
        for name in INHERITED
        if getattr(alert, name) in (None, (), model.Area())
    }
    if "channels" in missing:  # over the very channels the order named, if it named them
        missing["via"] = first.via
    if alert.template is None and not alert.texts:
        missing["template"] = CANCEL_TEMPLATE
        missing["params"] = dict(first.params) | dict(alert.params)
    if alert.locale is None:
        missing["locale"] = first.locale
    return dataclasses.replace(alert, **missing)
