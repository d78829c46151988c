"""Delivery receipts from providers: Twilio status callbacks.

Twilio signs each callback with the account's auth token over the public URL it called; a forged or
unsigned callback gets 403 and changes nothing. Callbacks repeat and arrive out of order: the store
only ever moves a delivery forward.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from twilio import request_validator

from alertd import errors, model, web as web_mod
from alertd.channels import twilio_sms

log = structlog.get_logger("alertd.web.receipts")
routes = web.RouteTableDef()


def _signed(settings: web_mod.Settings, request: web.Request, form: dict[str, str]) -> bool:
    # Behind a proxy the URL Twilio called is the public one, not the one we were reached at.
    url = settings.public_url.rstrip("/") + request.rel_url.path_qs
    signature = request.headers.get("X-Twilio-Signature", "")
    return bool(signature) and any(
        request_validator.RequestValidator(token).validate(url, form, signature)
        for token in settings.twilio_auth_tokens
    )


@routes.post("/v1/receipts/twilio")
async def twilio(request: web.Request) -> web.Response:
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    if not _signed(request.app[web_mod.SETTINGS], request, form):
        log.warning("twilio callback refused: bad signature", remote=request.remote)
        raise errors.Forbidden("the X-Twilio-Signature does not match", field="X-Twilio-Signature")
    sid, status = form.get("MessageSid"), form.get("MessageStatus", "")
    if not sid:
        raise errors.BadRequest("MessageSid is required", field="MessageSid")
    state = twilio_sms.twilio_status_to_state(status)
    if state is model.State.FAILED:
        moved = await request.app[web_mod.DISPATCHER].undelivered(sid, _error(form, status))
        log.info("twilio undelivered", provider_id=sid, code=form.get("ErrorCode"), moved_to=moved)
    elif state is not None:
        changed = await request.app[web_mod.STORE].apply_receipt(sid, state, None, web_mod.now(request))
        log.debug("twilio receipt", provider_id=sid, status=status, changed=changed)
    return web.Response(status=204)


def _error(form: dict[str, str], status: str) -> errors.DeliveryError:
    """What Twilio's ErrorCode means, from the channel's classification table."""
    code = form.get("ErrorCode", "")
    if not code.isdigit():
        return errors.Permanent(f"Twilio reported the message {status}", code=status)
    return twilio_sms.classify(400, int(code), None)
