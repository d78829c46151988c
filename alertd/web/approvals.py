"""The two-person rule at the API: an order that waits for a second person, its approval, its
rejection, and cancels (which follow the same rule, or the cell's `cancel` setting for its own).

An approver sees what the request keeps (`GET /v1/alerts/{id}` and `/messages`); the approval is
taken only while alertd would still send exactly that (else the request is renewed: 409), and the
planner checks the messages and area once more before anything is written (`planner._as_approved`).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import structlog
from aiohttp import web

from alertd import approval, auth, errors, lifecycle, model, orders, people, planner, render, web as web_mod
from alertd.web import alerts, views

log = structlog.get_logger("alertd.web.approvals")
routes = web.RouteTableDef()


async def ask(
    request: web.Request, caller: people.Caller, alert: model.Alert, rendered: list[render.Rendered],
) -> tuple[model.Alert, dict[str, Any]]:
    """The alert as it is to be stored (awaiting a second person, with the request, if its cell
    asks for one) and what the audit says of that."""
    own = await _cancel_of_own(request, caller, alert)
    if caller.approval_for(alert.status, cancel_of_own=own) is people.Approval.NONE:
        return alert, {"approval": "none", "approval_reason": approval.why_none(caller, alert.status, own)}
    record = approval.request(alert, rendered, await _reach(request, alert), caller, web_mod.now(request))
    return dataclasses.replace(alert, state=model.AlertState.AWAITING_APPROVAL, approval=record), \
        {"approval": "required", "expires_at": record.expires_at.isoformat()}


async def _cancel_of_own(request: web.Request, caller: people.Caller, alert: model.Alert) -> bool:
    """A cancel of alerts the caller's own cell sent (it stops harm: the cell may let it go at once)."""
    if alert.msg_type is not model.MsgType.CANCEL:
        return False
    store = request.app[web_mod.STORE]
    ids = [r.alert_id for r in alert.references if r.alert_id]
    cells = [(await store.get_alert(i)).cell for i in ids]
    return bool(cells) and all(cell == caller.cell for cell in cells)


async def _reach(request: web.Request, alert: model.Alert) -> dict[str, int]:
    dispatcher = request.app[web_mod.DISPATCHER]
    route = planner.routes(alert, dispatcher.kinds())
    return await planner.reach(request.app[web_mod.STORE], alert, route, dispatcher.settings.test_recipients,
                               dispatcher.broadcasts())


async def _render(request: web.Request, caller: people.Caller, alert: model.Alert) -> list[render.Rendered]:
    """Every message of the alert, rendered now, after the order's checks of its area and channels."""
    kinds = request.app[web_mod.DISPATCHER].kinds()
    return await alerts.off_loop(_weight(alert.area), alerts._check, caller, alert, kinds,
                                 request.app[web_mod.RENDERER], request.app[web_mod.DISPATCHER].broadcasts())


async def _fresh(request: web.Request, caller: people.Caller, alert: model.Alert) -> model.Approval:
    """What the alert would send now, as a request: to compare with what the approver saw."""
    rendered = await _render(request, caller, alert)
    return approval.request(alert, rendered, await _reach(request, alert), caller, web_mod.now(request))


@routes.post("/v1/alerts/{id}/approve")
async def approve(request: web.Request) -> web.Response:
    """Release an alert awaiting a second person (an approver other than its creator), or issue a
    draft (as `actual` unless the body says `{"status": "exercise"}`, or test, system)."""
    caller, alert = await alerts._readable(request)
    if alert.state is model.AlertState.DRAFT:
        return await _issue(request, caller, alert)
    if alert.approval is None:  # never awaited a second person: only a draft could have been issued
        auth.require_role(caller, model.Role.ISSUER, model.Role.ADMIN, model.Role.APPROVER)
    else:  # the role before the state: a non-approver learns nothing more of the request
        approval.check_approver(caller, None)
    if alert.state is not model.AlertState.AWAITING_APPROVAL or alert.approval is None:
        raise errors.Conflict(f"alert {alert.id!r} is {alert.state.value}, not awaiting approval", field="state")
    approval.check_approver(caller, alert.approval.requested_by)
    await _refuse_expired(request, alert.approval)
    fresh = await _fresh(request, caller, alert)
    if fresh.digest != alert.approval.digest:
        await _renew(request, caller, alert, alert.approval, fresh)
    released = dataclasses.replace(alert, state=model.AlertState.PLANNING,
                                   approval=approval.approved(alert.approval, caller, web_mod.now(request)))
    entry = _entry(request, caller, "approved", released, requested_by=alert.approval.requested_by,
                   requested_cell=alert.approval.requested_cell, digest=alert.approval.digest)
    if not await request.app[web_mod.STORE].move_alert(alert.id, model.AlertState.AWAITING_APPROVAL, released, entry):
        raise errors.Conflict(f"alert {alert.id!r} is no longer awaiting approval", field="state")
    await _release(request, caller, released)
    return views.answer(alerts._summary(request, released), status=202)


def _entry(request: web.Request, caller: people.Caller, action: str, alert: model.Alert, **detail: Any):
    return web_mod.audit_entry(request, caller, action, alert.id, status=alert.status.value,
                               msg_type=alert.msg_type.value, **detail)


async def _refuse_expired(request: web.Request, record: model.Approval) -> None:
    now = web_mod.now(request)
    if not approval.expired(record, now):
        return
    for alert_id in await request.app[web_mod.STORE].expire_approvals(now):
        request.app[web_mod.RECORDER].touch(alert_id)
    raise errors.ApprovalExpired(field="state", expires_at=record.expires_at.isoformat())


async def _renew(
    request: web.Request, caller: people.Caller, alert: model.Alert, shown: model.Approval, fresh: model.Approval,
) -> None:
    """Show the approver what would be sent now, instead of what they approved (`shown`): never send that."""
    record = approval.renewed(shown, fresh)
    entry = _entry(request, caller, "approval_renewed", alert, digest=record.digest, was=shown.digest)
    await request.app[web_mod.STORE].move_alert(
        alert.id, model.AlertState.AWAITING_APPROVAL, dataclasses.replace(alert, approval=record), entry,
    )
    log.warning("approval refused: the alert changed since it was shown", alert_id=alert.id, cell=caller.cell)
    raise errors.ApprovalChanged(field="digest", digest=record.digest)


async def _release(request: web.Request, caller: people.Caller, alert: model.Alert) -> None:
    if alert.msg_type is not model.MsgType.ALERT:
        await alerts._stop_earlier(request, caller, alert)
    request.app[web_mod.DISPATCHER].submit(alert)
    log.info("alert approved", alert_id=alert.id, cell=caller.cell, status=alert.status.value)


async def _issue(request: web.Request, caller: people.Caller, draft: model.Alert) -> web.Response:
    """A draft issued as of now. When the caller's cell asks a second person for alerts of that
    status, the caller must be an approver other than the draft's author: their issue is the approval."""
    auth.require_role(caller, model.Role.ISSUER, model.Role.ADMIN, model.Role.APPROVER)  # before its body
    now = web_mod.now(request)
    alert = dataclasses.replace(draft, status=await _issued_status(request), sent=now,
                                state=model.AlertState.PLANNING)
    own = await _cancel_of_own(request, caller, alert)
    required = caller.approval_for(alert.status, cancel_of_own=own) is people.Approval.REQUIRED
    if required:
        approval.check_approver(caller, draft.created_by)
    if alert.is_expired(now):
        raise errors.Conflict("the draft expired before it was approved", field="expires")
    alert = await alerts._chain(request, caller, alert)  # its references, checked again as issued
    detail: dict[str, Any] = {"drafted_by": draft.cell, "approval": "required" if required else "none"}
    if required:
        record = await _fresh(request, caller, alert)
        alert = dataclasses.replace(alert, approval=approval.approved(
            dataclasses.replace(record, requested_by=draft.created_by or "", requested_cell=draft.cell), caller, now))
        detail |= {"requested_by": draft.created_by, "digest": record.digest}
    else:
        await _render(request, caller, alert)  # every message still renders
        detail["approval_reason"] = approval.why_none(caller, alert.status, own)
    if not await request.app[web_mod.STORE].issue_draft(alert, _entry(request, caller, "approved", alert, **detail)):
        raise errors.Conflict(f"alert {draft.id!r} is no longer a draft", field="state")
    await _release(request, caller, alert)
    return views.answer(alerts._summary(request, alert), status=202)


def _weight(area: model.Area) -> int:
    """About the bytes of the order that drew `area`: what its checks cost."""
    return 20 * (sum(len(ring) for ring in area.polygons) + len(area.circles))



async def _issued_status(request: web.Request) -> model.Status:
    body = await request.read()
    if body.strip():
        alerts.json_body(request)
    return model.Status(orders.parse_issue(body).status)


@routes.post("/v1/alerts/{id}/reject")
async def reject(request: web.Request) -> web.Response:
    """End an alert awaiting approval, with a reason: by an approver or an admin (it stops an alert:
    the safe way), or by its creator withdrawing it."""
    caller, alert = await alerts._readable(request)
    requested_by = alert.approval.requested_by if alert.approval else None
    if caller.user != requested_by:
        auth.require_role(caller, model.Role.APPROVER, model.Role.ADMIN)
    alerts.json_body(request)
    reason = orders.parse_rejection(await request.read()).reason
    if alert.state is not model.AlertState.AWAITING_APPROVAL or alert.approval is None:
        raise errors.Conflict(f"alert {alert.id!r} is {alert.state.value}, not awaiting approval", field="state")
    ended = dataclasses.replace(alert, state=model.AlertState.REJECTED,
                                approval=approval.rejected(alert.approval, caller, web_mod.now(request), reason))
    entry = _entry(request, caller, "rejected", ended, reason=reason, requested_by=requested_by)
    if not await request.app[web_mod.STORE].move_alert(alert.id, model.AlertState.AWAITING_APPROVAL, ended, entry):
        raise errors.Conflict(f"alert {alert.id!r} is no longer awaiting approval", field="state")
    request.app[web_mod.RECORDER].touch(alert.id)  # its open streams hear it ended
    log.info("alert rejected", alert_id=alert.id, cell=caller.cell)
    return views.answer(views.Alert.of(ended))


@routes.post("/v1/alerts/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """Stop an alert at once, or, when the caller's cell asks a second person for that cancel,
    order a CAP Cancel of it that awaits approval (202); its approval performs the cancel."""
    caller, alert = await alerts._readable(request)
    auth.require_role(caller, model.Role.ISSUER, model.Role.ADMIN)
    own = alert.cell == caller.cell
    if alert.state in model.UNRELEASED or caller.approval_for(alert.status, cancel_of_own=own) is people.Approval.NONE:
        return await _cancel_now(request, caller, alert)
    order = _cancel_order(caller, alert, web_mod.now(request))
    record = await _fresh(request, caller, order)
    order = dataclasses.replace(order, approval=record)
    entry = _entry(request, caller, "created", order, references=[alert.id], approval="required",
                   expires_at=record.expires_at.isoformat())
    stored, _ = await request.app[web_mod.STORE].create_alert(order, order.identifier, None, entry)
    log.info("cancel awaiting approval", alert_id=stored.id, cancels=alert.id, cell=caller.cell)
    return views.answer(views.Alert.of(stored), status=202, headers={"Location": f"/v1/alerts/{stored.id}"})


def _cancel_order(caller: people.Caller, alert: model.Alert, now) -> model.Alert:
    """A CAP Cancel of `alert` by the caller's cell, awaiting approval; its texts those of a cancel."""
    new_id = uuid.uuid4().hex
    cancel = model.Alert(
        id=new_id, identifier=new_id, sender=caller.sender, sent=now, status=alert.status, event=alert.event,
        urgency=alert.urgency, severity=alert.severity, certainty=alert.certainty, area=model.Area(),
        channels=alert.channels, via=alert.via, msg_type=model.MsgType.CANCEL, cell=caller.cell,
        cell_name=caller.cell_name,
        references=(model.Reference(alert.sender, alert.identifier, alert.sent, alert.id),),
        created_by=caller.user, token_id=caller.id, state=model.AlertState.AWAITING_APPROVAL, category=alert.category,
    )
    return lifecycle.complete(cancel, [alert])


async def _cancel_now(request: web.Request, caller: people.Caller, alert: model.Alert) -> web.Response:
    store = request.app[web_mod.STORE]
    dispatcher = request.app[web_mod.DISPATCHER]
    await dispatcher.halt(alert.id)  # before the store: no call of ours begins after this line
    now = web_mod.now(request)
    own = alert.cell == caller.cell
    detail = {"approval": "none", "approval_reason": approval.why_none(caller, alert.status, own)}
    stopped = await store.cancel_alert(alert.id, now, web_mod.audit_entry(request, caller, "cancelled", alert.id,
                                                                          **detail))
    request.app[web_mod.RECORDER].touch(alert.id)  # a completed alert cancelled later: its streams hear of it
    sirens = await store.plan_siren_cancel(alert.id, now)
    dispatcher.wake()
    log.info("alert cancelled", alert_id=alert.id, cell=caller.cell, stopped=stopped, sirens=sirens)
    alert = await store.get_alert(alert.id)
    return views.answer(views.Cancelled.of(
        alert, stopped=stopped, siren_cancels=sirens, cancelled_by=await alerts._cancelled_by(store, alert),
    ))
