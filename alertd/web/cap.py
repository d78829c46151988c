"""Alerts out as CAP 1.2, and the Atom feed that aggregators (and other alertd instances) follow.

Public actual alerts are public information: the feed and their CAP documents need no token, as
a public-warning feed must be readable by anyone who relays it. Everything else (exercises, tests,
drafts) needs a token that may read the alert.
"""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from aiohttp import web

from alertd import cap, model, web as web_mod
from alertd.cap import alert as cap_alert
from alertd.web import alerts

routes = web.RouteTableDef()

ATOM = "http://www.w3.org/2005/Atom"
CAP_TYPE = "application/cap+xml"
FEED_SIZE = 200


# Alerts no longer in force: replaced by an update, stopped by a cancel (the Update and Cancel
# messages themselves are in the feed), ran out, or never released (`model.UNRELEASED`).
NOT_IN_FORCE = frozenset({model.AlertState.UPDATED, model.AlertState.CANCELLED, model.AlertState.EXPIRED})


def _public(alert: model.Alert) -> bool:
    """Anyone may read it: an actual alert released (not an exercise, a test, a draft, nor one still
    awaiting, refused or denied its second person)."""
    return alert.status is model.Status.ACTUAL and alert.state not in model.UNRELEASED


def _in_force(alert: model.Alert, now) -> bool:
    return _public(alert) and alert.state not in NOT_IN_FORCE and not alert.is_expired(now)


async def document(app: web.Application, alert: model.Alert) -> cap.Document:
    """The alert as CAP: the document it came as, or one made from its JSON order, with a template
    alert's words rendered by the dispatcher's own renderer."""
    kept = await app[web_mod.STORE].alert_cap(alert.id)
    if kept:
        return cap.Document.from_json(json.loads(kept))
    return cap_alert.to_document(alert, app[web_mod.RENDERER].cap_texts(alert))


@routes.get("/v1/alerts/{id}.xml")
async def show(request: web.Request) -> web.Response:
    store = request.app[web_mod.STORE]
    alert = await store.get_alert(request.match_info["id"])
    if not _public(alert):
        _, alert = await alerts._readable(request)
    body = cap.dumps(await document(request.app, alert))
    return web.Response(body=body, content_type=CAP_TYPE, charset="utf-8")


@routes.get("/v1/feed.atom")
async def feed(request: web.Request) -> web.Response:
    """Public, actual alerts in force, newest first, each linking its CAP document."""
    now = web_mod.now(request)
    store = request.app[web_mod.STORE]
    base = request.app[web_mod.SETTINGS].public_url.rstrip("/")
    shown = [a for a in await store.list_alerts(FEED_SIZE) if _in_force(a, now)]
    root = ET.Element("feed", xmlns=ATOM)  # unqualified names under a default namespace attribute
    _text(root, "id", f"{base}/v1/feed.atom")
    _text(root, "title", "alertd: alerts in force")
    _text(root, "updated", max((a.sent for a in shown), default=now).isoformat())
    ET.SubElement(root, "link", rel="self", href=f"{base}/v1/feed.atom")
    for alert in shown:
        _entry(root, alert, base)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")


def _entry(root: ET.Element, alert: model.Alert, base: str) -> None:
    entry = ET.SubElement(root, "entry")
    _text(entry, "id", f"urn:cap:{alert.sender}:{alert.identifier}")
    headline = next((t.headline for t in alert.texts.values() if t.headline), None)
    _text(entry, "title", f"{alert.event}: {headline}" if headline else f"{alert.event} ({alert.msg_type.value})")
    _text(entry, "updated", alert.sent.isoformat())
    _text(entry, "summary", alert.area.description or ", ".join(alert.area.zones))
    author = ET.SubElement(entry, "author")
    _text(author, "name", alert.cell or alert.sender)
    ET.SubElement(entry, "link", rel="alternate", type=CAP_TYPE, href=f"{base}/v1/alerts/{alert.id}.xml")


def _text(parent: ET.Element, name: str, text: str) -> None:
    ET.SubElement(parent, name).text = text
