"""The audit log's entries: who did what, when, from where, and the hash chain that links them.

Each entry carries the SHA-256 of its content and of the previous entry's hash (`chained`), so an
entry changed or removed behind alertd's back (in the database itself) breaks the chain. The store
(`alertd.store.audit`) appends them and walks the chain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from alertd import model

GENESIS = "0" * 64


@dataclasses.dataclass(frozen=True)
class Entry:
    """One thing someone did. `subject` is what it was done to (an alert id, a token id…)."""

    cell: str  # the cell's id (its display name in entries from before cells were records)
    # created (an order: alert, update or cancel), updated and cancelled (the alert replaced or
    # stopped), token_created, subscribers_imported, sirens_imported
    action: str
    at: dt.datetime
    token_id: str | None = None
    subject: str | None = None
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    address: str | None = None  # the client's IP address, or "local" for the command line
    user: str | None = None  # the user's name (None in entries from before users existed, and locally)
    id: int | None = None
    hash: str | None = None

    def content(self) -> str:
        """What the hash covers: every fact of the entry, in a fixed form."""
        facts = [self.at.isoformat(), self.cell, self.token_id, self.action, self.subject, dict(self.detail),
                 self.address]
        if self.user is not None:  # so that the entries written before users existed still verify
            facts.append({"user": self.user})
        return json.dumps(facts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Entry:
        return cls(
            id=row["id"], at=model.to_utc(row["at"]), cell=row["cell"], token_id=row["token_id"],
            user=row["user_name"], action=row["action"], subject=row["subject"], detail=json.loads(row["detail"]),
            address=row["address"], hash=row["hash"],
        )


def chained(prev_hash: str, entry: Entry) -> str:
    return hashlib.sha256((prev_hash + entry.content()).encode()).hexdigest()
