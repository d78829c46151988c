"""Which deliveries go first: a delivery's priority, decided from its alert when it is planned.

Lower goes first. Each lane claims by (priority, next_at, id), so a new urgent alert overtakes a
fan-out under way, and the older fan-out resumes once the urgent one is out. The order:

1. siren commands (a siren's activation or its cancel), whatever the alert;
2. then by CAP urgency × severity: the sum of their places below (Immediate/Extreme first), an
   equal sum going to the more urgent;
3. at equal urgency and severity, a national alert (zone `*`) before a local one;
4. an update or a cancel before the alert(s) it replaces: it takes the best place among its own and
   theirs, just ahead of theirs;
5. at the same place, the alert of a cell that planned fewer alerts lately: one cell's flood does
   not delay another cell's alerts (`share`). This comes last, so it never reorders the above: a
   flooding cell's siren commands still go before any SMS, and its Extreme alerts before another
   cell's Minor ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from alertd import model, zones

URGENCY = ("Immediate", "Expected", "Future", "Unknown", "Past")
SEVERITY = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
# A cell's share levels (`share`): each place of points 1-4 spans this many ranks.
LEVELS = 16
WINDOW = 60.0  # seconds: a cell's alerts planned within this count against its share
SIREN = 0  # a siren command of a cell's first alert in the window, and every siren's cancel
# For the deliveries planned before priorities existed: an ordinary local alert of unknown
# urgency and severity (`rank` of such an alert).
DEFAULT = 184 * LEVELS


def standing(alert: model.Alert) -> int:
    """The alert's place as a fresh alert, from 0 (national, Immediate, Extreme) on."""
    urgency = _place(URGENCY, alert.urgency)
    severity = _place(SEVERITY, alert.severity)
    local = 0 if zones.NATIONAL in alert.area.zones else 1
    return ((urgency + severity) * (len(URGENCY) + 1) + urgency) * 2 + local


def share(nth: int) -> int:
    """The level of a cell's `nth` alert planned within `WINDOW` (1: its first), added to its
    deliveries' rank: 0 for the first, then one more each time the count doubles (2-3: 1, 4-7: 2,
    ..., at most LEVELS - 1). Another cell's first alert goes before a flooding cell's second, and a
    cell that sends a few alerts stays ahead of one that sends thousands."""
    return min(LEVELS - 1, max(1, nth).bit_length() - 1)


def rank(alert: model.Alert, kind: model.Kind, replaces: Iterable[model.Alert] = (), nth: int = 1) -> int:
    """The priority of the alert's deliveries of `kind`; `replaces` are the alerts an update or a
    cancel replaces (their pending deliveries go after its own); `nth`: see `share`."""
    if kind is model.Kind.SIREN:
        place = 0
    elif alert.msg_type is model.MsgType.ALERT:
        place = 2 + 2 * standing(alert)
    else:
        place = 1 + 2 * min([standing(alert), *(standing(a) for a in replaces)])
    return SIREN + place * LEVELS + share(nth)


def foremost(alert: model.Alert, nth: int = 1) -> int:
    """The rank of the alert's most urgent deliveries: its siren commands, if it asks for sirens
    (every other kind ranks alike)."""
    kind = model.Kind.SIREN if model.Kind.SIREN in alert.channels else model.Kind.SMS
    return rank(alert, kind, nth=nth)


def ranks(alert: model.Alert, replaces: Iterable[model.Alert] = ()) -> dict[str, int]:
    """`rank` for every built-in kind and every kind the alert asks for, for the first alert of its cell."""
    replaced = list(replaces)
    return {kind: rank(alert, kind, replaced) for kind in dict.fromkeys([*model.Kind, *alert.channels])}


def shared(ranks: Mapping[str, int], nth: int) -> dict[str, int]:
    """`ranks` (of a first alert) for the cell's `nth` alert within the window."""
    return {kind: value + share(nth) for kind, value in ranks.items()}


def _place(order: tuple[str, ...], value: str) -> int:
    """A value's place in the CAP order, case aside; one CAP does not know goes last."""
    folded = [v.lower() for v in order]
    return folded.index(value.lower()) if value.lower() in folded else len(order)
