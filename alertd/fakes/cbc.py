"""A fake Cell Broadcast Centre speaking osmo-cbc's ECBE REST interface, under ``/cbc``.

``POST /cbc/api/ecbe/v1/message`` takes a `cbc_message` as osmo-cbc reads it (`src/rest_api.c`):
``cbe_name``, ``repetition_period`` (1-4095) and ``scope`` {``scope_plmn``} are required,
``category`` and ``num_of_bcast`` optional; ``smscb_message`` needs ``serial_nr``
({``serial_nr_encoded``} or {``serial_nr_decoded``}), ``message_id`` (0-65535) and ``payload``
({``payload_encoded``: ``dcs``, 1 to 15 ``pages`` of at most 82 octets in hex} or
{``payload_decoded``: ``character_set``, ``data_utf8``}). It answers ``201 Created``, ``400`` with
the reason as text, or ``409 Could not allocate`` while a message of that ``message_id`` exists.
``DELETE /cbc/api/ecbe/v1/message/{message_id}`` answers ``200 OK``, or ``404 Unknown message ID``.

Control: ``GET /_fake/cbc/received`` lists the messages created (``to`` is the message id as
text, ``body`` the decoded text, ``pages`` their count, ``body_json`` what was posted),
``GET /_fake/cbc/deleted`` the identifiers deleted, ``GET /_fake/cbc/active`` those broadcasting.
Failure rules (`alertd.fakes.common`) are keyed by the message id as text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from alertd import cbs
from alertd.fakes import common

API = "/cbc/api/ecbe/v1/message"


@dataclasses.dataclass
class CBC(common.Provider):
    """The provider's record, plus the messages broadcasting and those deleted."""

    active: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    deleted: list[int] = dataclasses.field(default_factory=list)

    def reset(self) -> None:
        super().reset()
        self.active.clear()
        self.deleted.clear()


def setup(app: web.Application) -> None:
    """Mount the CBC under ``/cbc``; must run after `common.add_control_routes`."""
    app[common.PROVIDERS]["cbc"] = CBC("cbc")
    app.router.add_post(API, _create)
    app.router.add_delete(API + "/{message_id}", _delete)
    app.router.add_get("/_fake/cbc/deleted", _deleted)
    app.router.add_get("/_fake/cbc/active", _active)


async def _deleted(request: web.Request) -> web.Response:
    return web.json_response(_cbc(request).deleted)


async def _active(request: web.Request) -> web.Response:
    return web.json_response(sorted(_cbc(request).active))


def _cbc(request: web.Request) -> CBC:
    cbc = common.provider(request.app, "cbc")
    assert isinstance(cbc, CBC), "mounted by `setup`"
    return cbc


def invalid(body: Any) -> str | None:
    """Why osmo-cbc would refuse the body (its own words), or None."""
    if not isinstance(body, dict):
        return "REST: No JSON Body"
    if not isinstance(body.get("cbe_name"), str):
        return "CBCMSG 'cbe_name' is mandatory"
    if body.get("category", "normal") not in ("normal", "high_priority", "background"):
        return "CBCMSG 'category' unknown"
    if not _int_in(body.get("repetition_period"), 0, 4095):
        return "CBCMSG 'repetiton_period' out of range"
    if not _int_in(body.get("num_of_bcast", 0), 0, 65535):
        return "CBCMSG 'num_of_bcast' out of range"
    if not isinstance(body.get("scope"), dict) or "scope_plmn" not in body["scope"]:
        return "CBCMSG only 'scope_plmn' supported"
    return _invalid_smscb(body.get("smscb_message"))


def _invalid_smscb(msg: Any) -> str | None:
    if not isinstance(msg, dict):
        return "CBCMSG 'smscb_message' is mandatory"
    serial = msg.get("serial_nr")
    if not isinstance(serial, dict) or not ("serial_nr_encoded" in serial or "serial_nr_decoded" in serial):
        return "Either 'serial_nr_encoded' or 'serial_nr_decoded' are mandatory"
    if not _int_in(msg.get("message_id"), 0, 65535):
        return "message_id out of range"
    payload = msg.get("payload")
    if not isinstance(payload, dict):
        return "'payload' must be JSON object"
    if "payload_encoded" in payload:
        return _invalid_pages(payload["payload_encoded"])
    decoded = payload.get("payload_decoded")
    if not isinstance(decoded, dict) or "data_utf8" not in decoded or "character_set" not in decoded:
        return "Currently 'character_set' is mandatory"
    return None


def _invalid_pages(encoded: Any) -> str | None:
    if not isinstance(encoded, dict) or not _int_in(encoded.get("dcs"), 0, 255):
        return "'dcs' out of range"
    pages = encoded.get("pages")
    if not isinstance(pages, list):
        return "'pages' absent or not an array"
    if not 1 <= len(pages) <= cbs.MAX_PAGES:
        return "'pages' array size out of range"
    if not all(isinstance(p, str) and len(p) <= 2 * cbs.PAGE_OCTETS and _is_hex(p) for p in pages):
        return "'pages' actual data array must contain strings up to 82 hex nibbles"
    return None


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _text(payload: dict[str, Any]) -> tuple[str, int]:
    if "payload_encoded" in payload:
        encoded = payload["payload_encoded"]
        pages = [bytes.fromhex(p) for p in encoded["pages"]]
        return cbs.text_of(encoded["dcs"], pages), len(pages)
    return payload["payload_decoded"]["data_utf8"], 0


async def _create(request: web.Request) -> web.Response:
    cbc = _cbc(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    problem = invalid(body)
    if problem:
        return web.Response(status=400, text=problem)
    message_id = body["smscb_message"]["message_id"]
    rule = await cbc.rule_for(str(message_id))
    if rule is not None:
        headers = {"Retry-After": str(int(rule.retry_after))} if rule.retry_after is not None else {}
        return web.Response(status=rule.status, text=str(rule.code or "refused"), headers=headers)
    if message_id in cbc.active:
        return web.Response(status=409, text="Could not allocate")
    text, pages = _text(body["smscb_message"]["payload"])
    cbc.active[message_id] = body
    cbc.record(to=str(message_id), body=text, pages=pages, message_id=message_id, body_json=body)
    return web.Response(status=201, text="Created")


async def _delete(request: web.Request) -> web.Response:
    cbc = _cbc(request)
    try:
        message_id = int(request.match_info["message_id"])
    except ValueError:
        return web.Response(status=400)
    rule = await cbc.rule_for(str(message_id))
    if rule is not None:
        return web.Response(status=rule.status, text=str(rule.code or "refused"))
    if cbc.active.pop(message_id, None) is None:
        return web.Response(status=404, text="Unknown message ID")
    cbc.deleted.append(message_id)
    return web.Response(status=200, text="OK")
