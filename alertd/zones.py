"""Zone codes: French administrative codes, the one way an area, a token's jurisdiction, a recipient
or a siren names a place.

A commune's INSEE code (5 characters, e.g. "75056", "2A004", "97105"), a département (2 characters,
or 3 overseas: "75", "2A", "971"), or "*" (the whole country, for a national authority).
"""

from __future__ import annotations

NATIONAL = "*"


def departement(zone: str) -> str | None:
    """The département a commune code lies in (None for anything that is not a commune code)."""
    if len(zone) != 5:
        return None
    return zone[:3] if zone[:2] in ("97", "98") else zone[:2]


def covering(zone: str) -> tuple[str, ...]:
    """Every zone code that contains `zone`, itself included: what a targeting by code matches."""
    dept = departement(zone)
    return (zone, dept) if dept else (zone,)


def topic(zone: str) -> str:
    """The push topic of a zone, which the citizens' apps subscribe to (FCM topic names allow no `*`)."""
    return "zone-FR" if zone == NATIONAL else f"zone-{zone}"


def within(inner: str, outer: str) -> bool:
    """Whether zone `inner` lies in zone `outer`."""
    return outer == NATIONAL or outer in covering(inner)


# The exact codes that exist: départements 01–95 (no 20: Corsica is 2A and 2B) and 971–976;
# communes are a département followed by 3 digits, or an overseas département by 2.
_DEPARTEMENT = r"(?:0[1-9]|1\d|2[1-9AB]|[3-8]\d|9[0-5]|97[1-6])"
_COMMUNE = r"(?:(?:0[1-9]|1\d|2[1-9AB]|[3-8]\d|9[0-5])\d{3}|97[1-6]\d{2})"
LOCAL_PATTERN = rf"^(?:{_DEPARTEMENT}|{_COMMUNE})$"
PATTERN = rf"^(?:\*|{_DEPARTEMENT}|{_COMMUNE})$"
