"""Which deliveries go first: a delivery's priority, decided from its alert when it is planned.

Lower goes first. Each lane claims by (priority, next_at, id), so a new urgent alert overtakes a
fan-out under way, and the older fan-out resumes once the urgent one is out. The order:

1. siren commands (a siren's activation or its cancel), whatever the alert;
2. then by CAP urgency × severity: the sum of their places below (Immediate/Extreme first), an
   equal sum going to the more urgent;
3. at equal urgency and severity, a national alert (zone `*`) before a local one;
4. an update or a cancel before the alert(s) it replaces: it takes the best place among its own and
   theirs, just ahead of theirs.
"""

from __future__ import annotations

from collections.abc import Iterable

from alertd import model

URGENCY = ("Immediate", "Expected", "Future", "Unknown", "Past")
SEVERITY = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
SIREN = 0
# For the deliveries planned before priorities existed: an ordinary local alert of unknown
# urgency and severity (`rank` of such an alert).
DEFAULT = 184


def standing(alert: model.Alert) -> int:
    """The alert's place as a fresh alert, from 0 (national, Immediate, Extreme) on."""
    urgency = _place(URGENCY, alert.urgency)
    severity = _place(SEVERITY, alert.severity)
    local = 0 if model.NATIONAL in alert.area.zones else 1
    return ((urgency + severity) * (len(URGENCY) + 1) + urgency) * 2 + local


def rank(alert: model.Alert, kind: model.Kind, replaces: Iterable[model.Alert] = ()) -> int:
    """The priority of the alert's deliveries of `kind`; `replaces` are the alerts an update or a
    cancel replaces (their pending deliveries go after its own)."""
    if kind is model.Kind.SIREN:
        return SIREN
    if alert.msg_type is model.MsgType.ALERT:
        return 2 + 2 * standing(alert)
    return 1 + 2 * min([standing(alert), *(standing(a) for a in replaces)])


def ranks(alert: model.Alert, replaces: Iterable[model.Alert] = ()) -> dict[model.Kind, int]:
    """`rank` for every kind."""
    replaced = list(replaces)
    return {kind: rank(alert, kind, replaced) for kind in model.Kind}


def _place(order: tuple[str, ...], value: str) -> int:
    """A value's place in the CAP order, case aside; one CAP does not know goes last."""
    folded = [v.lower() for v in order]
    return folded.index(value.lower()) if value.lower() in folded else len(order)
