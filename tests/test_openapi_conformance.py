"""The OpenAPI document is the API: every operation it names is called for real on the daemon, and
each answer's status must be documented for that operation, its content type one the document
gives, its body valid against the documented schema (no undocumented field either) and every
header the document promises present. A route served but not documented, or documented but not
served, fails too; so does a documented answer no request here ever got, unless it is named in
`NOT_EXERCISED` with the reason. SQLite alone: the document does not depend on the store.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any
from xml.etree import ElementTree as ET

import jsonschema
import pytest
import referencing
import referencing.jsonschema
from prometheus_client import parser as prometheus_parser
from prometheus_client.openmetrics import parser as openmetrics_parser
from twilio import request_validator

from alertd import audience, demo, errors, model, orders, people, web as web_mod
from tests import helpers, test_cap_identity as cap_identity

pytestmark = pytest.mark.parametrize("daemon", ["sqlite"], indirect=True)

DOC_URI = "https://alertd.invalid/v1/openapi.json"
METHODS = ("get", "put", "post", "delete", "patch")
NOT_API = "/console"  # the operators' web page and its assets: HTML for a browser, not API
OPENMETRICS = "application/openmetrics-text"
NOT_EXERCISED = {
    # (method, path, status): why no request here gets that answer
    ("post", "/v1/receipts/siren", "409"): "a `busy` ack racing the send of its own command",
    ("post", "/v1/receipts/{channel}", "409"): "a `busy` ack racing the send of its own command",
    ("get", "/v1/alerts/{id}/messages", "422"): "a stored alert whose template was removed since",
    ("get", "/v1/alerts/{id}/events", "429"): "tests/test_events.py holds every stream of a token open",
}
NOWHERE = "no-such-alert"


# -- the document, as jsonschema sees it ---------------------------------------------------------


def _absolute(node: Any) -> Any:
    """Local `$ref`s made to point into the document, wherever the schema is validated from."""
    if isinstance(node, dict):
        return {k: DOC_URI + v if k == "$ref" and v.startswith("#") else _absolute(v) for k, v in node.items()}
    return [_absolute(v) for v in node] if isinstance(node, list) else node


def _closed(node: Any) -> Any:
    """Every object schema that lists its properties refuses others: an answer carrying a field the
    document does not name is drift too. A rule on some properties of an object (no `type` of its
    own, as in `anyOf`) stays open: it speaks of those alone. (A schema built with `allOf` of
    objects would need `unevaluatedProperties` instead; the document has none in its answers.)"""
    if isinstance(node, list):
        return [_closed(v) for v in node]
    if not isinstance(node, dict):
        return node
    closed = {k: v if k in ("if", "then", "else", "not") else _closed(v) for k, v in node.items()}
    types = node.get("type", ())
    is_object = "object" in (types if isinstance(types, list) else [types])
    open_ = not {"additionalProperties", "patternProperties", "unevaluatedProperties"} & set(node)
    if is_object and "properties" in node and open_:
        closed["additionalProperties"] = False
    return closed


def _registry(doc: dict) -> referencing.Registry:
    resource = referencing.Resource(contents=doc, specification=referencing.jsonschema.DRAFT202012)
    return referencing.Registry().with_resource(DOC_URI, resource)


def schema_errors(registry: referencing.Registry, schema: dict, value: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        _absolute(schema), registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message}" for e in validator.iter_errors(value)]


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def served(app) -> set[tuple[str, str]]:
    """Every method and path the daemon routes (HEAD comes with each GET and is not documented)."""
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()}
    return {(m, p) for m, p in routes if m != "head" and not p.startswith(NOT_API)}


# -- checking real answers -----------------------------------------------------------------------


def _check_cap(text: str) -> None:
    assert ET.fromstring(text.encode()).tag == "{urn:oasis:names:tc:emergency:cap:1.2}alert"


def _check_atom(text: str) -> None:
    assert ET.fromstring(text.encode()).tag == "{http://www.w3.org/2005/Atom}feed"


def _check_sse(text: str) -> None:
    events = [block.splitlines() for block in text.split("\n\n") if block]
    for lines in events:
        for line in lines:
            field, _, value = line.partition(": ")
            assert field in ("", "event", "id", "data", "retry"), line
            if field == "data":
                json.loads(value)
    names = [line.removeprefix("event: ") for lines in events for line in lines if line.startswith("event: ")]
    assert set(names) <= {"snapshot", "progress", "end"} and names[-1] == "end", names


def _check_prometheus(text: str) -> None:
    assert list(prometheus_parser.text_string_to_metric_families(text))


def _check_openmetrics(text: str) -> None:
    assert list(openmetrics_parser.text_string_to_metric_families(text))


FORMATS = {
    "application/cap+xml": _check_cap, "application/atom+xml": _check_atom, "text/event-stream": _check_sse,
    "text/plain": _check_prometheus, OPENMETRICS: _check_openmetrics,
}


class Conformance:
    """Calls the daemon and checks each answer against the document it served."""

    def __init__(self, daemon, doc: dict) -> None:
        self.daemon, self.doc = daemon, doc
        self.strict = _registry(_closed(copy.deepcopy(doc)))
        self.seen: set[tuple[str, str, str]] = set()

    async def call(self, method: str, path: str, status: int, *, who: str | None = None, id: str = "",
                   channel: str = "sms", query: str = "", headers: dict | None = None, **kw) -> tuple[Any, Any]:
        """`method` `path` (a path of the document, `{id}` filled with `id`, `{channel}` with
        `channel`) answering `status`; the answer, checked, and its body (JSON decoded, or text)."""
        url = path.replace("{id}", id).replace("{channel}", channel) + (f"?{query}" if query else "")
        headers = (self.daemon.headers[who] if who else {}) | (headers or {})
        async with asyncio.timeout(30):
            resp = await self.daemon.client.request(method.upper(), url, headers=headers, **kw)
            raw = await resp.read()
        assert resp.status == status, f"{method.upper()} {url} -> {resp.status}, not {status}: {raw[:500]!r}"
        return resp, self.check(method, path, resp, raw, url)

    def check(self, method: str, path: str, resp, raw: bytes, url: str | None = None) -> Any:
        """The answer `resp` (its `status`, `headers`, `content_type` and `charset`) and its body
        `raw` to `method` `path` (of the document), checked; the body, JSON decoded or text."""
        where = f"{method.upper()} {url or path} -> {resp.status}"
        spec = self.response(method, path, resp.status, where)
        self.headers(spec, resp, where)
        body = self.content(spec, resp, raw, where)
        self.seen.add((method, path, str(resp.status)))
        return body

    def response(self, method: str, path: str, status: int, where: str) -> dict:
        item = self.doc["paths"][path]
        if method not in item:  # no operation to document it on: the document's shared 405
            assert status == 405, f"{where}: {method.upper()} is not documented on {path}"
            return self.doc["components"]["responses"]["405"]
        spec = item[method]["responses"].get(str(status))
        assert spec is not None, f"{where}: not documented (documented: {sorted(item[method]['responses'])})"
        if "$ref" in spec:
            spec = self.doc["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
        return spec

    def headers(self, spec: dict, resp, where: str) -> None:
        for name, header in spec.get("headers", {}).items():
            if header.get("required"):
                assert name in resp.headers, f"{where}: no {name} header (documented)"
            if name in resp.headers:
                value = resp.headers[name]
                value = int(value) if header["schema"].get("type") == "integer" else value
                assert not schema_errors(self.strict, header["schema"], value), f"{where}: {name}: {value}"

    def content(self, spec: dict, resp, raw: bytes, where: str) -> Any:
        documented = spec.get("content")
        if not documented:
            assert raw == b"", f"{where}: documented without a body, answered {raw[:200]!r}"
            return None
        media = resp.content_type
        assert media in documented, f"{where}: answered {media}, documented {sorted(documented)}"
        text = raw.decode(resp.charset or "utf-8")
        body = json.loads(text) if media.endswith("json") else text
        problems = schema_errors(self.strict, documented[media]["schema"], body)
        assert not problems, f"{where}: the body is not the documented {media}: {problems}"
        if media == "application/problem+json":
            assert body["status"] == resp.status, where
        if media in FORMATS:
            FORMATS[media](text)
        return body

    def request_errors(self, method: str, path: str, body: Any) -> list[str]:
        schema = self.doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        return schema_errors(_registry(self.doc), schema, body)


@pytest.fixture
async def conformance(daemon) -> Conformance:
    resp = await daemon.client.get("/v1/openapi.json")
    assert resp.status == 200
    return Conformance(daemon, await resp.json())


# -- the routes --------------------------------------------------------------------------------


async def test_the_document_names_every_route_the_daemon_serves_and_only_those(daemon, conformance):
    documented, routed = operations(conformance.doc), served(daemon.app)
    assert routed - documented == set(), "served, not documented"
    assert documented - routed == set(), "documented, not served"


async def test_every_operation_answers_as_documented(daemon, conformance):
    c = conformance
    await c.call("get", "/v1/openapi.json", 200)
    alert_id, draft_id = await successes(c)
    await refusals(c, alert_id, draft_id)
    await two_people(c)
    await pages(c, alert_id)
    for method, path in sorted(operations(c.doc)):
        await unauthenticated(c, method, path)
        await unknown_alert(c, method, path)
    for path in c.doc["paths"]:
        await wrong_method(c, path)
    await daemon.store.close()
    await c.call("get", "/readyz", 503)

    answered = {(m, p) for m, p, s in c.seen if s.startswith("2")}
    assert operations(c.doc) - answered == set(), "never answered with success"
    documented = {(m, p, s) for m, p in operations(c.doc) for s in c.doc["paths"][p][m]["responses"]}
    assert documented - c.seen == set(NOT_EXERCISED), "documented, never answered"


async def successes(c: Conformance) -> tuple[str, str]:
    """Each operation answering with success; the alert (completed, then cancelled) and the draft
    (approved) they made."""
    d = c.daemon
    await c.call("get", "/healthz", 200)
    await c.call("get", "/readyz", 200)
    person = {"id": "p-new", "phone": "+33612345670", "locale": "fr", "zones": [helpers.PARIS]}
    await c.call("post", "/v1/subscribers", 200, who="admin", json=person)
    await c.call("post", "/v1/preview", 200, who="issuer", json=helpers.order())
    key = {"Idempotency-Key": "conformance-1"}
    _, accepted = await c.call("post", "/v1/alerts", 202, who="issuer", json=helpers.order(), headers=key)
    replay, _ = await c.call("post", "/v1/alerts", 202, who="issuer", json=helpers.order(), headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    alert_id = accepted["id"]
    await settle(d)
    for path in ("/v1/alerts/{id}", "/v1/alerts/{id}/messages", "/v1/alerts/{id}/sirens", "/v1/alerts/{id}/events"):
        await c.call("get", path, 200, who="operator", id=alert_id)
    await c.call("get", "/v1/alerts/{id}.xml", 200, id=alert_id)  # public and actual: no token
    await c.call("get", "/v1/alerts/{id}/deliveries", 200, who="operator", id=alert_id, query="limit=2")
    sms = await (await d.get(f"/v1/alerts/{alert_id}/deliveries?channel=sms")).json()
    await twilio(c, {"MessageSid": sms["deliveries"][0]["provider_id"], "MessageStatus": "delivered"}, 204)
    sent = {"MessageSid": sms["deliveries"][1]["provider_id"], "MessageStatus": "delivered"}
    await twilio(c, sent, 204, path="/v1/receipts/{channel}")  # the channel's own path: its name
    beat = {"type": "heartbeat", "siren_id": "siren-paris-1", "at": helpers.START.isoformat()}
    await c.call("post", "/v1/receipts/siren", 204, headers=gateway(), json=beat)
    for path in ("/v1/alerts", "/v1/sirens", "/v1/me"):
        await c.call("get", path, 200, who="operator")
    await c.call("get", "/v1/audit", 200, who="admin")
    await c.call("get", "/v1/feed.atom", 200)
    await c.call("get", "/metrics", 200)
    await c.call("get", "/metrics", 200, headers={"Accept": OPENMETRICS})
    await c.call("post", "/v1/alerts/{id}/cancel", 200, who="issuer", id=alert_id)
    await settle(d)  # its event stream ends cancelled
    _, draft = await c.call("post", "/v1/alerts", 202, who="issuer", json=helpers.order(status="draft"))
    await c.call("post", "/v1/alerts/{id}/approve", 202, who="issuer", id=draft["id"], json={"status": "exercise"})
    return alert_id, draft["id"]


async def refusals(c: Conformance, alert_id: str, draft_id: str) -> None:
    """The main error answers: malformed, forbidden, in conflict, invalid."""
    _, fresh = await c.call("post", "/v1/alerts", 202, who="issuer", json=helpers.order(status="draft"))
    not_json = {"data": b"{not json", "headers": {"Content-Type": "application/json"}}
    for path, who in (("/v1/alerts", "issuer"), ("/v1/preview", "issuer"), ("/v1/subscribers", "admin")):
        await c.call("post", path, 400, who=who, **not_json)
    await c.call("post", "/v1/receipts/siren", 400, data=b"{not json", headers=gateway())
    await c.call("post", "/v1/alerts/{id}/approve", 400, who="issuer", id=fresh["id"], **not_json)
    await c.call("get", "/v1/alerts/{id}/deliveries", 400, who="operator", id=alert_id, query="state=lost")
    await c.call("get", "/v1/alerts/{id}/events", 400, who="operator", id=alert_id, headers={"Last-Event-ID": "x"})
    await twilio(c, {"MessageStatus": "delivered"}, 400)
    await twilio(c, {"MessageStatus": "delivered"}, 400, path="/v1/receipts/{channel}")
    await c.call("post", "/v1/receipts/{channel}", 401, channel="siren", json={"type": "heartbeat"})
    for nothing in ("nowhere", "push"):  # no such channel; one whose provider never reports back
        await c.call("post", "/v1/receipts/{channel}", 404, channel=nothing, data={"MessageSid": "SM0"})
    await c.call("get", "/v1/alerts/{id}.xml", 401, id=draft_id)  # an exercise is not public
    await twilio(c, {"MessageSid": "SM0", "MessageStatus": "delivered"}, 403, signature="forged")
    await c.call("post", "/v1/receipts/twilio", 415, json={"MessageSid": "SM0", "MessageStatus": "delivered"})
    await c.call("post", "/v1/receipts/{channel}", 415, json={"MessageSid": "SM0", "MessageStatus": "delivered"})
    await twilio(c, {"MessageSid": "SM0", "MessageStatus": "delivered"}, 403, signature="forged",
                 path="/v1/receipts/{channel}")
    as_text = {"data": json.dumps(helpers.order()).encode(), "headers": {"Content-Type": "text/plain"}}
    for path, who in (("/v1/alerts", "issuer"), ("/v1/preview", "issuer"), ("/v1/subscribers", "admin")):
        await c.call("post", path, 415, who=who, **as_text)
    await c.call("post", "/v1/alerts/{id}/approve", 415, who="issuer", id=fresh["id"], **as_text)

    lyon = helpers.order(area={"zones": [helpers.LYON]})
    await c.call("post", "/v1/alerts", 403, who="operator", json=helpers.order())
    await c.call("post", "/v1/preview", 403, who="issuer", json=lyon)
    await c.call("post", "/v1/preview", 403, who="operator", json=helpers.order())  # may not send
    await c.call("post", "/v1/subscribers", 403, who="issuer", json=helpers.PEOPLE[-1])
    await c.call("get", "/v1/audit", 403, who="operator")
    await c.call("post", "/v1/alerts/{id}/cancel", 403, who="operator", id=alert_id)
    await c.call("post", "/v1/alerts/{id}/approve", 403, who="operator", id=fresh["id"])
    await c.call("post", "/v1/receipts/siren", 403, who="issuer", json={"type": "heartbeat"})
    await outside_drawn(c)

    await c.call("post", "/v1/alerts/{id}/approve", 409, who="issuer", id=draft_id)  # approved already
    cap_body = {"headers": {"Content-Type": "application/cap+xml"}}
    await c.call("post", "/v1/alerts", 202, who="issuer", data=cap_identity.document("FR-75-CONF"), **cap_body)
    reused = cap_identity.document("FR-75-CONF", headline="Autre crue")  # the same identifier, another message
    await c.call("post", "/v1/alerts", 409, who="issuer", data=reused, **cap_body)
    slow = helpers.auth_header(await helpers.add_token(c.daemon.store, model.Role.ISSUER, ["75"], cell="Mairie",
                                                       rate=people.Rate(per_minute=1, burst=1)))
    await c.call("post", "/v1/alerts", 202, json=helpers.order(), headers=slow)
    await c.call("post", "/v1/alerts", 429, json=helpers.order(), headers=slow)  # the cell's rate

    bad = helpers.order(severity="Apocalyptic")
    await c.call("post", "/v1/alerts", 422, who="issuer", json=bad)
    await c.call("post", "/v1/preview", 422, who="issuer", json=bad)
    await c.call("post", "/v1/subscribers", 422, who="admin", json={"id": "p-x", "zones": [helpers.PARIS]})
    await c.call("post", "/v1/alerts/{id}/approve", 422, who="issuer", id=fresh["id"], json={"status": "draft"})
    unknown = {"type": "heartbeat", "siren_id": "siren-nowhere", "at": helpers.START.isoformat()}
    await c.call("post", "/v1/receipts/siren", 422, headers=gateway(), json=unknown)
    await c.call("post", "/v1/receipts/{channel}", 422, channel="siren", headers=gateway(), json=unknown)
    await too_large(c, fresh["id"])


PARIS_BOX = ((48.80, 2.22), (48.80, 2.47), (48.92, 2.47), (48.92, 2.22), (48.80, 2.22))
LEAVING = [[48.85, 2.40], [48.85, 2.52], [48.87, 2.52], [48.87, 2.40], [48.85, 2.40]]  # east of 2.47


async def outside_drawn(c: Conformance) -> None:
    """A drawn area leaving a drawn jurisdiction: the problem shows the part outside, as documented."""
    drawn = helpers.auth_header(await helpers.add_token(c.daemon.store, model.Role.ISSUER, ["75"], cell="Dessin",
                                                        boundary=(PARIS_BOX,)))
    leaving = helpers.order(area={"polygons": [LEAVING]})
    _, problem = await c.call("post", "/v1/preview", 403, json=leaving, headers=drawn)
    assert problem["field"] == "area.polygons" and problem["outside_area"]["area_km2"] > 0


async def two_people(c: Conformance) -> None:
    """An alert awaiting a second person, its approval, a rejection and a cancel awaiting approval."""
    d = c.daemon
    await helpers.add_cell(d.store, "pref-75", ["75"], name="Préfecture de police")
    for name, role in (("alice", model.Role.ISSUER), ("bruno", model.Role.APPROVER), ("carla", model.Role.APPROVER)):
        d.headers[name] = helpers.auth_header(await helpers.add_person(d.store, name, "pref-75", role))
    _, waiting = await c.call("post", "/v1/alerts", 202, who="alice", json=helpers.order())
    assert waiting["state"] == "awaiting_approval"
    await c.call("get", "/v1/alerts/{id}", 200, who="operator", id=waiting["id"])
    await c.call("post", "/v1/alerts/{id}/approve", 403, who="alice", id=waiting["id"])  # her own
    await c.call("post", "/v1/alerts/{id}/reject", 403, who="operator", id=waiting["id"], json={"reason": "no"})
    await c.call("post", "/v1/alerts/{id}/reject", 400, who="bruno", id=waiting["id"], data=b"{not json",
                 headers={"Content-Type": "application/json"})
    await c.call("post", "/v1/alerts/{id}/reject", 415, who="bruno", id=waiting["id"], data=b"{}",
                 headers={"Content-Type": "text/plain"})
    await c.call("post", "/v1/alerts/{id}/reject", 422, who="bruno", id=waiting["id"], json={})
    await c.call("post", "/v1/alerts/{id}/approve", 202, who="bruno", id=waiting["id"])
    await c.call("post", "/v1/alerts/{id}/reject", 409, who="bruno", id=waiting["id"], json={"reason": "late"})
    await settle(d)
    _, cancel = await c.call("post", "/v1/alerts/{id}/cancel", 202, who="alice", id=waiting["id"])
    await c.call("get", "/v1/alerts/{id}/messages", 200, who="operator", id=cancel["id"])
    await c.call("post", "/v1/alerts/{id}/reject", 200, who="carla", id=cancel["id"], json={"reason": "still needed"})


async def too_large(c: Conformance, draft_id: str) -> None:
    """Every body past the daemon's limit is refused whole, by whoever may post it."""
    huge = b"[" + b"0," * (2 * 1024 * 1024) + b"0]"  # 4 MiB and more
    for method, path in sorted(operations(c.doc)):
        if body := c.doc["paths"][path][method].get("requestBody"):
            caller = gateway() if path == "/v1/receipts/siren" else c.daemon.headers["admin"]
            headers = caller | {"Content-Type": next(iter(body["content"]))}
            await c.call(method, path, 413, id=draft_id, data=huge, headers=headers)


async def pages(c: Conformance, alert_id: str) -> None:
    """Each documented integer bound of a query parameter is the API's: the bound is accepted, one
    past it refused."""
    for path, item in c.doc["paths"].items():
        for param in item.get("get", {}).get("parameters", []):
            schema = param["schema"]
            if param["in"] != "query" or schema.get("type") != "integer":
                continue
            for bound, step in (("minimum", -1), ("maximum", 1)):
                if bound in schema:
                    name, value = param["name"], schema[bound]
                    await c.call("get", path, 200, who="admin", id=alert_id, query=f"{name}={value}")
                    await c.call("get", path, 400, who="admin", id=alert_id, query=f"{name}={value + step}")


async def unauthenticated(c: Conformance, method: str, path: str) -> None:
    """Without a token, an operation that requires one answers 401."""
    op = c.doc["paths"][path][method]
    security = op.get("security", c.doc["security"])
    if security and {} not in security:  # `{}`: a token is optional (public CAP)
        await c.call(method, path, 401, id=NOWHERE, json={})


async def unknown_alert(c: Conformance, method: str, path: str) -> None:
    if "{id}" in path:
        await c.call(method, path, 404, who="admin", id=NOWHERE)


async def wrong_method(c: Conformance, path: str) -> None:
    """A method a path does not have answers 405, naming those it has in `Allow` (RFC 9110)."""
    documented = {m.upper() for m in c.doc["paths"][path] if m in METHODS}
    wrong = next(m for m in ("delete", "put", "patch") if m.upper() not in documented)
    resp, _ = await c.call(wrong, path, 405, who="admin", id=NOWHERE)
    allowed = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed - {"HEAD"} == documented, (path, resp.headers["Allow"])


async def settle(daemon) -> None:
    """Every delivery carried out and every progress row written (a stream of the alert ends)."""
    recorder = daemon.app[web_mod.RECORDER]
    await recorder.flush()
    await daemon.dispatcher.planned()
    await recorder.flush()
    await daemon.drain()
    await recorder.flush()


def gateway() -> dict[str, str]:
    return {"Authorization": f"Bearer {demo.RECEIPT_TOKEN}"}


async def twilio(c: Conformance, form: dict[str, str], status: int, signature: str = demo.AUTH_TOKEN,
                 path: str = "/v1/receipts/twilio") -> None:
    url = str(c.daemon.client.make_url(path.replace("{channel}", "sms")))
    signed = request_validator.RequestValidator(signature).compute_signature(url, form)
    await c.call("post", path, status, data=form, headers={"X-Twilio-Signature": signed})


# -- the order schema is the validator ---------------------------------------------------------

REFERENCE = {"sender": "x", "identifier": "y", "sent": "2026-11-26T09:00:00Z"}
CANCEL = {"status": "actual", "msg_type": "cancel", "references": [REFERENCE]}
TEXTS = {"fr": {"headline": "Crue"}}


def _orders() -> list[tuple[str, dict]]:
    alert, update = helpers.order(), helpers.order(msg_type="update", references=[REFERENCE])
    cases = [(f"{kind} with {name}: null", base | {name: None})
             for kind, base in (("alert", alert), ("update", update), ("cancel", CANCEL))
             for name in orders.Order.model_fields]
    return cases + [
        ("alert without event", {k: v for k, v in alert.items() if k != "event"}),
        ("alert with an area of nothing", alert | {"area": {"description": "Paris"}}),
        ("alert with an area of empty lists", alert | {"area": {"zones": [], "polygons": [], "circles": []}}),
        ("alert with texts and template", alert | {"texts": TEXTS}),
        ("alert with texts, template null", alert | {"texts": TEXTS, "template": None}),
        ("alert with neither texts nor template", {k: v for k, v in alert.items() if k != "template"}),
        ("cancel with texts and template", CANCEL | {"texts": TEXTS, "template": "all_clear"}),
        ("cancel with texts", CANCEL | {"texts": TEXTS}),
        ("update without references", helpers.order(msg_type="update")),
        ("cancel with no references", CANCEL | {"references": []}),
        ("texts in an unknown locale form",
         alert | {"template": None, "texts": {"fr_FR!": {"headline": "Crue"}}}),
        ("texts in a locale written in lower case",
         alert | {"template": None, "texts": {"fr-ca": {"headline": "Crue"}}}),
        ("a fallback locale written with _", alert | {"locale": "fr_CA"}),
    ]


PERSON = {"id": "p-1", "phone": "+33612345678", "push_token": "tok-1", "zones": [helpers.PARIS],
          "lat": 48.8, "lon": 2.3}


def _subscribers() -> list[tuple[str, dict]]:
    without = {name: {k: v for k, v in PERSON.items() if k != name} for name in PERSON}
    return [(f"subscriber with {name}: null", PERSON | {name: None}) for name in PERSON] + [
        ("subscriber with neither phone nor push token",
         {k: v for k, v in without["phone"].items() if k != "push_token"}),
        ("subscriber with a null phone and push token", PERSON | {"phone": None, "push_token": None}),
        ("subscriber with lat and no lon", without["lon"]),
        ("subscriber with null lat and lon", PERSON | {"lat": None, "lon": None}),
    ]


def _accepts(parse, body: dict) -> bool:
    try:
        parse(json.dumps(body).encode())
    except errors.ProblemError:
        return False
    return True


async def test_the_order_and_subscriber_schemas_admit_exactly_what_the_validators_accept(conformance):
    cases = [(("/v1/alerts", lambda body: orders.parse(body, helpers.START)), _orders()),
             (("/v1/subscribers", audience.parse_subscribers), _subscribers())]
    differ = [
        f"{name}: the schema {'admits' if admitted else 'refuses'} it, the validator does not"
        for (path, parse), bodies in cases for name, body in bodies
        if (admitted := not conformance.request_errors("post", path, body)) != _accepts(parse, body)
    ]
    assert not differ, "\n".join(differ)
