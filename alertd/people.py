"""Crisis cells, the people and machine clients who act for them, and their bearer tokens: values.

A cell is a record with a stable id (a slug such as `pref-69`): visibility, idempotency, references
and the audit are keyed by that id, never by the display name, so two cells named alike share
nothing. A user (a person, or a named machine client such as a crisis-management system posting
CAP) belongs to one cell and holds roles; every bearer token belongs to a user and expires.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Mapping

from alertd import model, zones

CELL_ID = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
USER_NAME = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}"
PERSON_TOKEN_DAYS = 90  # a person's token expires after this unless told otherwise
MACHINE_TOKEN_DAYS = 365


class Approval(enum.StrEnum):
    """Whether an alert of a cell waits for a second person before anything is planned or sent."""

    REQUIRED = "required"
    NONE = "none"


# What a cell's orders need, by CAP status, and for a cancel of an alert the cell itself sent.
# An actual alert waits for a second person; an exercise, test or system message does not.
DEFAULT_APPROVAL: Mapping[str, Approval] = {
    model.Status.ACTUAL.value: Approval.REQUIRED,
    model.Status.EXERCISE.value: Approval.NONE,
    model.Status.TEST.value: Approval.NONE,
    model.Status.SYSTEM.value: Approval.NONE,
    "cancel": Approval.REQUIRED,
}
APPROVAL_KEYS = tuple(DEFAULT_APPROVAL)
APPROVAL_MINUTES = 15  # an approval request not answered in this time is never sent


@dataclasses.dataclass(frozen=True)
class Rate:
    """How many orders a cell may post: a token bucket of `burst` orders refilled at `per_minute`."""

    per_minute: float = 60.0
    burst: int = 20


@dataclasses.dataclass(frozen=True)
class Cell:
    id: str  # CELL_ID
    name: str  # as people call it; not unique
    zones: tuple[str, ...]  # INSEE commune codes, département codes, or "*" (national)
    senders: tuple[str, ...]  # the CAP senders it may use; the first signs its JSON orders
    created_at: dt.datetime
    boundary: tuple[model.Ring, ...] = ()  # the jurisdiction's outline, for areas drawn as shapes
    approval: Mapping[str, Approval] = dataclasses.field(default_factory=lambda: dict(DEFAULT_APPROVAL))
    approval_minutes: int = APPROVAL_MINUTES
    rate: Rate = Rate()

    @property
    def national(self) -> bool:
        return zones.NATIONAL in self.zones


@dataclasses.dataclass(frozen=True)
class User:
    """A user: a person, or a named machine client of a cell. `name` is unique (a login)."""

    id: str
    cell: str  # the cell's id
    name: str
    roles: frozenset[model.Role]
    created_at: dt.datetime
    machine: bool = False  # a machine client (e.g. a crisis-management system posting CAP)
    trusted: bool = False  # a machine client whose alerts need no second person (the audit says so)
    disabled: bool = False


@dataclasses.dataclass(frozen=True)
class Token:
    """A bearer token's record. Only the hash of the secret is ever stored."""

    id: str
    user: str  # the user's id
    secret_hash: str
    created_at: dt.datetime
    expires_at: dt.datetime | None  # None only for a token migrated from before users existed
    revoked: bool = False

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who makes a request: a token, the user it belongs to and that user's cell, flattened for the
    decisions (`auth`) and the audit. `cell` is the cell's id."""

    token: Token
    account: User
    unit: Cell

    @property
    def id(self) -> str:
        """The token's id (streams and audit entries are counted per token)."""
        return self.token.id

    @property
    def cell(self) -> str:
        return self.unit.id

    @property
    def cell_name(self) -> str:
        return self.unit.name

    @property
    def user(self) -> str:
        return self.account.name

    @property
    def roles(self) -> frozenset[model.Role]:
        return self.account.roles

    @property
    def zones(self) -> tuple[str, ...]:
        return self.unit.zones

    @property
    def boundary(self) -> tuple[model.Ring, ...]:
        return self.unit.boundary

    def may(self, *roles: model.Role) -> bool:
        return not self.account.roles.isdisjoint(roles)

    @property
    def sender(self) -> str:
        """The CAP sender of the cell's JSON orders."""
        return self.unit.senders[0]

    def approval_for(self, status: model.Status, cancel_of_own: bool = False) -> Approval:
        """What an order of this status from this caller needs. A trusted machine client needs no
        second person; a cancel of the cell's own alert follows the cell's `cancel` setting."""
        if self.account.trusted:
            return Approval.NONE
        key = "cancel" if cancel_of_own else status.value
        return Approval(self.unit.approval.get(key, DEFAULT_APPROVAL.get(key, Approval.REQUIRED)))


def slug(name: str) -> str:
    """A cell id made from a display name: `Préfecture du Rhône` → `prefecture-du-rhone`."""
    return model.cap_sender(name).replace("@", "-").replace(".", "-").replace("_", "-").strip("-")[:64] or "cell"


def valid_cell_id(value: str) -> bool:
    return re.fullmatch(CELL_ID, value) is not None


def valid_user_name(value: str) -> bool:
    return re.fullmatch(USER_NAME, value) is not None
