"""The two-person rule's decisions: what an approver is shown, its digests, and who may approve.

What is approved is what is sent: at the request, alertd keeps the rendered messages (every locale
× channel), the area and the audience counts, and their digest. An approval is taken only while
those are still what alertd would send (else the request is renewed and shown again), and planning
checks the messages and the area once more (`content_digest`) before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from alertd import errors, model, people, render


def message(r: render.Rendered) -> dict[str, Any]:
    """A rendered message as the API shows it (previews, `/messages`, the approval record)."""
    return {
        "locale": r.locale, "channel": str(r.kind), "title": r.title, "body": r.body,
        "encoding": r.encoding, "segments": r.segments, "size": r.size,
    }


def _sha256(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def content_digest(messages: Sequence[Mapping[str, Any]], area: model.Area) -> str:
    return _sha256([dict(m) for m in messages], area.to_json())


def digest(messages: Sequence[Mapping[str, Any]], area: model.Area, audience: Mapping[str, int]) -> str:
    return _sha256([dict(m) for m in messages], area.to_json(), dict(audience))


def request(
    alert: model.Alert, rendered: Sequence[render.Rendered], audience: Mapping[str, int], caller: people.Caller,
    now: dt.datetime,
) -> model.Approval:
    """The approval request for `alert` as ordered by `caller`, open for the cell's minutes."""
    messages = tuple(message(r) for r in rendered)
    return model.Approval(
        requested_by=caller.user, requested_cell=caller.cell, requested_at=now,
        expires_at=now + dt.timedelta(minutes=caller.unit.approval_minutes),
        digest=digest(messages, alert.area, audience), content_digest=content_digest(messages, alert.area),
        messages=messages, area=alert.area, audience=dict(audience),
    )


def renewed(old: model.Approval, fresh: model.Approval) -> model.Approval:
    """`fresh`'s content under `old`'s request (who asked, when, until when)."""
    return dataclasses.replace(
        fresh, requested_by=old.requested_by, requested_cell=old.requested_cell, requested_at=old.requested_at,
        expires_at=old.expires_at,
    )


def approved(record: model.Approval, caller: people.Caller, now: dt.datetime) -> model.Approval:
    return dataclasses.replace(record, approved_by=caller.user, approved_cell=caller.cell, approved_at=now)


def rejected(record: model.Approval, caller: people.Caller, now: dt.datetime, reason: str) -> model.Approval:
    return dataclasses.replace(record, rejected_by=caller.user, rejected_cell=caller.cell, rejected_at=now,
                               reason=reason)


def expired(record: model.Approval, now: dt.datetime) -> bool:
    return now >= record.expires_at


def check_approver(caller: people.Caller, requested_by: str | None) -> None:
    """An approver, and not the person who asked: the second person of the rule."""
    if not caller.may(model.Role.APPROVER):
        raise errors.Forbidden(
            f"approving an alert takes the {model.Role.APPROVER.value} role", field="role",
        )
    if requested_by is not None and caller.user == requested_by:
        raise errors.SelfApproval(field="approved_by")


def why_none(caller: people.Caller, status: model.Status, cancel_of_own: bool) -> str:
    """Why an order went without a second person, for the audit."""
    if caller.account.trusted:
        return "trusted machine client"
    return f"cell setting for {'cancel' if cancel_of_own else status.value}"
