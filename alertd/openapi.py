"""The OpenAPI 3.1 document of alertd's HTTP API.

Request bodies come from the pydantic classes in `orders`, so the schema is written once.
"""

from __future__ import annotations

import copy
from typing import Any

from alertd import audience, cap_check, model, orders, sirenstate
from alertd.web import alerts as web_alerts

_REF = "#/components/schemas/{model}"
CAP = "application/cap+xml"
PROBLEM = "application/problem+json"


def document(public_url: str) -> dict[str, Any]:
    # A deep copy: callers may adjust their document without touching the shared parts.
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {
            "title": "alertd",
            "version": "1",
            "description": "Citizen-alert broadcasting: post an alert order, follow its deliveries "
            "over SMS, push and sirens.",
        },
        "servers": [{"url": public_url.rstrip("/")}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A crisis cell's token: `alertd_<token_id>_<secret>`.",
                }
            },
            "responses": {str(s): _problem_response(d) for s, d in _PROBLEMS.items()} | {"405": _NOT_ALLOWED},
        },
    })


# -- schemas -----------------------------------------------------------------------------------


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, schema in (("Order", order_schema(_REF)), ("Subscriber", subscriber_schema(_REF))):
        schemas |= schema.pop("$defs", {})
        schemas[name] = schema
    return schemas | {
        "Problem": _PROBLEM_SCHEMA,
        "Accepted": _object(
            id=_str("The alert's id."),
            identifier=_str("The CAP identifier."),
            state=_enum(model.AlertState),
            status_url=_str("Where to follow the alert.", format="uri"),
        ),
        "Alert": _ALERT,
        "Approval": _APPROVAL,
        # Flat, not `allOf` the alert: a client generator makes one class of it.
        "AlertStatus": _with(
            _ALERT, counts=_COUNTS, totals=_TOTALS, cancelled_by=_CANCELLED_BY,
            referenced_by={"type": "array", "items": {"type": "string"}, "description": "Later alerts naming this one."},
        ),
        "Cancelled": _with(
            _ALERT, cancelled_by=_CANCELLED_BY,
            stopped={"type": "integer", "description": "Deliveries dropped before they started."},
            siren_cancels={"type": "integer", "description": "Sirens told to stop."},
        ),
        "AlertList": _object(alerts={
            "type": "array", "items": _ref("Alert"),
            "description": "Newest first: of the `limit` newest (older than `before`), those of the caller's "
            "jurisdiction, so a page may hold fewer than `limit`, even none. The next page: `before` the last one's id.",
        }),
        "Delivery": _DELIVERY,
        "DeliveryPage": _object(
            deliveries={"type": "array", "items": _ref("Delivery")},
            next={"type": ["integer", "null"], "description": "Pass as `after` for the next page; null on the last."},
        ),
        "Messages": _object(messages={"type": "array", "items": _ref("Preview")}),
        "Sirens": _object(sirens={"type": "array", "items": _SIREN}),
        "Readiness": _object(
            ready={"type": "boolean"},
            problems={"type": "array", "items": {"type": "string"}, "description": "Why not ready."},
            queue={"type": ["integer", "null"], "description": "Deliveries pending or on the wire; null if the store "
                   "does not answer."},
            channels={"type": "object", "additionalProperties": _enum(model.Kind),
                      "description": "Each configured channel's kind, by name."},
        ),
        "Preview": _object(
            locale=_str(),
            channel=_str(),
            title=_str(),
            body=_str(),
            encoding={"type": "string", "examples": ["GSM-7", "UCS-2", "utf-8"]},
            segments={"type": "integer", "description": "SMS segments (1 for other channels)."},
            size={"type": "integer", "description": "Bytes of the payload."},
        ),
        "Imported": _object(imported={"type": "integer"}),
    }


def _str(description: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "string"} | ({"description": description} if description else {}) | extra


def _nullable_str(description: str = "", **extra: Any) -> dict[str, Any]:
    return _str(description, **extra) | {"type": ["string", "null"]}


def _enum(values: type) -> dict[str, Any]:
    return {"type": "string", "enum": [v.value for v in values]}


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=name)}


def _with(schema: dict[str, Any], **properties: Any) -> dict[str, Any]:
    """An object schema with more (required) properties."""
    return _object(**properties) | {
        "properties": schema["properties"] | properties, "required": schema["required"] + list(properties),
    }


# -- the order: what its validators add to the types pydantic writes ----------------------------

_WHOLE = ("event", "urgency", "severity", "certainty", "area", "channels")  # orders.Order._complete
_GIVEN = {"not": {"type": "null"}}


def _given(*names: str) -> dict[str, Any]:
    return {"required": list(names), "properties": {n: _GIVEN for n in names}}


def _msg_type(*values: str) -> dict[str, Any]:
    return {"required": ["msg_type"], "properties": {"msg_type": {"enum": list(values)}}}


_ORDER_RULES = [
    {  # orders.Order._complete and _template_or_texts
        "if": _msg_type("cancel"),
        "then": {"not": _given("template", "texts")},
        "else": {"allOf": [_given(*_WHOLE), {"oneOf": [_given("template"), _given("texts")]}]},
    },
    {"if": _msg_type("update", "cancel"),
     "then": {"required": ["references"], "properties": {"references": {"minItems": 1}}}},
]
_ORDER_RULES_TEXT = (
    " An alert or an update gives `event`, `urgency`, `severity`, `certainty`, `area` and `channels` (none "
    "null) and exactly one of `template` and `texts`; a cancel may leave them out or null, and gives at most "
    "one of `template` and `texts`. An update or a cancel names at least one of `references`."
)


# orders.Area._somewhere
_AREA_RULES = {"anyOf": [
    {"required": [name], "properties": {name: {"minItems": 1}}} for name in ("zones", "polygons", "circles")
]}
_AREA_RULES_TEXT = " At least one zone, polygon or circle."


def order_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The order's schema, admitting exactly what `orders.parse` accepts: pydantic's, with the rules
    the order's validators check across fields, and dicts keyed by a pattern refusing other keys
    (as pydantic does)."""
    schema = orders.schema(ref_template)
    _closed_patterns(schema)
    area = schema["$defs"]["Area"]
    area |= copy.deepcopy(_AREA_RULES) | {"description": area.get("description", "") + _AREA_RULES_TEXT}
    description = schema.get("description", "") + _ORDER_RULES_TEXT
    return schema | {"description": description, "allOf": copy.deepcopy(_ORDER_RULES)}


# audience.Subscriber._reachable and _located
_SUBSCRIBER_RULES = [
    {"anyOf": [_given("phone"), _given("push_token")]},
    {"oneOf": [_given("lat", "lon"), {"not": {"anyOf": [_given("lat"), _given("lon")]}}]},
]
_SUBSCRIBER_RULES_TEXT = " Give a `phone`, a `push_token` or both; `lat` and `lon` together or neither."


def subscriber_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The subscriber's schema with the rules its validators check across fields."""
    schema = audience.subscriber_schema(ref_template)
    description = schema.get("description", "") + _SUBSCRIBER_RULES_TEXT
    return schema | {"description": description, "allOf": copy.deepcopy(_SUBSCRIBER_RULES)}


def _closed_patterns(node: Any) -> None:
    if isinstance(node, dict):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _closed_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _closed_patterns(value)


_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": _str("A stable URI naming the kind of problem.", format="uri-reference"),
        "title": _str(),
        "status": {"type": "integer"},
        "detail": _str(),
        "field": _nullable_str("The dotted path of the field at fault, e.g. `area.zones.0`."),
        "errors": {
            "type": "array",
            "items": _object(field=_nullable_str(), message=_str()),
            "maxItems": cap_check.MAX_PROBLEMS,
            "description": f"The validation errors, in the order found: the first {cap_check.MAX_PROBLEMS} "
            "(`more_errors` counts the others).",
        },
        "more_errors": {
            "type": "integer", "minimum": 1,
            "description": f"How many errors were found beyond the {cap_check.MAX_PROBLEMS} listed; absent if none.",
        },
        "outside": {"type": "array", "items": {"type": "string"}, "description": "Zones outside jurisdiction."},
    },
    "required": ["type", "title", "status"],
}

_ALERT = _object(
    id=_str(),
    identifier=_str(),
    sender=_str("CAP sender: the issuing cell's name made CAP-safe, or the CAP document's own."),
    cell=_str("The crisis cell whose token issued it."),
    sent=_str(format="date-time"),
    status=_enum(model.Status),
    msg_type=_enum(model.MsgType),
    references={"type": "array", "items": _object(
        sender=_str(), identifier=_str(), sent=_str(format="date-time"), id=_nullable_str("The alert in this store."),
    ), "description": "The earlier alerts this one updates or cancels."},
    event=_str(),
    urgency=_str(),
    severity=_str(),
    certainty=_str(),
    expires=_nullable_str(format="date-time"),
    area=_ref("Area"),
    channels={"type": "array", "items": _enum(model.Kind)},
    template=_nullable_str(),
    params={"type": "object"},
    texts={"type": "object", "additionalProperties": _ref("Text")},
    locale=_nullable_str(),
    category=_str("CAP category of the event.", examples=["Met", "Safety"]),
    topics={"type": "boolean"},
    state=_enum(model.AlertState),
    cancelled_at=_nullable_str(format="date-time"),
    cell_name=_str("The issuing cell's display name."),
    created_by=_nullable_str("The user who ordered it."),
    approval={"oneOf": [{"type": "null"}, _ref("Approval")],
              "description": "The second person's part, when the cell asks for one: what they are (were) shown."},
)

_NULLABLE_TIME = _nullable_str(format="date-time")
_APPROVAL = _object(
    requested_by=_str("Who ordered it (the first person)."), requested_cell=_str(),
    requested_at=_str(format="date-time"),
    expires_at=_str("Not approved by then, it is never sent (state `approval_expired`).", format="date-time"),
    digest=_str("SHA-256 of the messages, area and audience shown to the approver."),
    content_digest=_str("SHA-256 of the messages and area: planning checks it again, and refuses anything else."),
    messages={"type": "array", "items": _ref("Preview"), "description": "Every locale × channel, as rendered."},
    area=_ref("Area"),
    audience={"type": "object", "additionalProperties": {"type": "integer"},
              "description": "Messages per channel its planning would write, as counted when shown."},
    approved_by=_nullable_str(), approved_cell=_nullable_str(), approved_at=_NULLABLE_TIME,
    rejected_by=_nullable_str(), rejected_cell=_nullable_str(), rejected_at=_NULLABLE_TIME,
    reason=_nullable_str("Why it was rejected."),
)

_NUMBER = {"type": ["number", "null"]}
_SIREN_STATE = {"type": "string", "enum": list(sirenstate.STATES),
                "description": "The siren's state: the first that holds, in this order."}
_SIREN = _object(
    id=_str(), zone=_str(), label=_str(), lat=_NUMBER, lon=_NUMBER, status=_SIREN_STATE,
    last=_object(
        alert_id=_str(), command=_nullable_str("activate or cancel"), state=_enum(model.State),
        error=_nullable_str(), at=_nullable_str(format="date-time"),
    ) | {"type": ["object", "null"], "description": "The command shown beside it (in an alert: that alert's latest)."},
    health=_object(
        siren_id=_str(), zone=_str(), label=_str(), lat=_NUMBER, lon=_NUMBER, state=_SIREN_STATE,
        last_heartbeat=_nullable_str("When alertd last heard from it.", format="date-time"),
        silent={"type": "boolean", "description": "Not heard from within the heartbeat timeout."},
        battery=_NUMBER, mains={"type": ["boolean", "null"]}, fault={"type": "boolean"}, sabotage={"type": "boolean"},
        last_ack={"enum": ["activated", "failed", "busy", None]}, last_ack_at=_nullable_str(format="date-time"),
    ),
)

_CANCELLED_BY = {
    "type": ["object", "null"],
    "description": "Who cancelled it first (from the audit log); null unless cancelled.",
    "properties": {"cell": _str(), "at": _str(format="date-time")},
    "required": ["cell", "at"],
}

_COUNTS = {
    "type": "object",
    "description": "Deliveries per channel and state, e.g. {\"sms\": {\"sent\": 10, \"pending\": 2}}.",
    "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
}
_TOTALS = {
    "type": "object",
    "description": "Deliveries per state over every channel.",
    "additionalProperties": {"type": "integer"},
}

_DELIVERY = _object(
    id={"type": "integer"},
    channel=_str("The configured channel's name."),
    kind=_enum(model.Kind),
    target=_str("Recipient id, siren id or topic."),
    address=_str("Masked phone number or push token; siren id."),
    locale=_str(),
    state=_enum(model.State),
    attempts={"type": "integer"},
    next_at=_nullable_str("When it is tried again, if it is waiting.", format="date-time"),
    last_error=_nullable_str(),
    provider_id=_nullable_str(),
    command=_nullable_str("A siren command: activate or cancel."),
    updated_at=_nullable_str(format="date-time"),
)


# -- paths -------------------------------------------------------------------------------------

_PROBLEMS = {
    400: "The body is malformed.",
    401: "A valid bearer token is required.",
    403: "The token may not do that, or the area leaves its jurisdiction.",
    404: "No such resource.",
    409: "The resource is not in a state that allows this.",
    413: "The body is larger than 4 MiB.",  # app.build's client_max_size
    415: "The body is not declared as a media type this operation reads (`Content-Type`): "
    "`application/json`, or for an alert or a preview also CAP 1.2 (`application/cap+xml`).",
    422: "The order is not valid; `field` and `errors` say where.",
}
_TOO_LARGE = {"413": {"$ref": "#/components/responses/413"}}


def _problem_response(description: str, **headers: Any) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}} | (
        {"headers": headers} if headers else {}
    )


def _header(description: str, schema: dict[str, Any] | None = None, required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


# Answered on every path for a method it does not have (RFC 9110 15.5.6); no operation to hang it on.
_NOT_ALLOWED = _problem_response(
    "The path has no such method.", Allow=_header("The methods the path has, e.g. `GET, HEAD`.")
)


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, responses: dict[int, Any], *problems: int, **extra: Any) -> dict[str, Any]:
    problems += (413,) if "requestBody" in extra else ()
    refs = {str(s): {"$ref": f"#/components/responses/{s}"} for s in sorted({401, *problems})}
    return {"summary": summary, "responses": {str(s): r for s, r in responses.items()} | refs} | extra


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _body(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"required": True, "content": {media: {"schema": schema}}}


_SIREN_RECEIPT = {"oneOf": [
    _object(type={"const": "ack"}, command_id=_str(), siren_id=_str(), request_id=_str(),
            result={"enum": ["activated", "failed", "busy"]}, reason=_str(), at=_str(format="date-time"))
    | {"required": ["type", "command_id", "siren_id", "request_id", "result", "at"]},
    _object(type={"const": "heartbeat"}, siren_id=_str(), at=_str(format="date-time"), mains={"type": "boolean"},
            battery={"type": "number", "minimum": 0, "maximum": 1}, fault={"type": "boolean"},
            sabotage={"type": "boolean"})
    | {"required": ["type", "siren_id", "at"]},
]}
_ALERT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PUBLIC = {"security": []}
_SUBSCRIBERS = {"type": "array", "items": _ref("Subscriber"), "maxItems": audience.MAX_SUBSCRIBERS}


def _paths() -> dict[str, Any]:
    one = [_ALERT_ID]
    return {
        "/v1/alerts": {"post": _post_alert(), "get": _list_alerts()},
        "/v1/alerts/{id}": {"parameters": one, "get": _get_alert()},
        "/v1/alerts/{id}/deliveries": {"parameters": one, "get": _deliveries()},
        "/v1/alerts/{id}/messages": {"parameters": one, "get": _op(
            "The alert's text in each locale over each of its channels: for an alert that needs a second person, "
            "exactly those put before the approver; otherwise rendered now (drafts too).",
            {200: _json("One message per locale and channel.", _ref("Messages"))},
            404, 422,
        )},
        "/v1/alerts/{id}.xml": {"parameters": one, "get": _op(
            "The alert as CAP 1.2, as it was sent (never re-dated). Public actual alerts need no token.",
            {200: {"description": "A CAP 1.2 alert.", "content": {CAP: {"schema": {"type": "string"}}}}}, 404,
            security=[{}, {"bearer": []}],  # a token only for what is not public
        )},
        "/v1/alerts/{id}/events": {"parameters": one, "get": _op(
            "Live progress as Server-Sent Events: a `snapshot` (alert and counts), then one `progress` event per "
            "change of state or counts (coalesced to a few per second), ending with the final state. Resume with "
            "`Last-Event-ID` (or `?after=<seq>`; `after=0` replays the whole history): nothing is missed or repeated.",
            {200: {"description": "An event stream.", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
             429: _problem_response(
                 "The token already holds `server.max_streams_per_token` event streams (20 by default): close one, "
                 "or ask again after `Retry-After` seconds.",
                 **{"Retry-After": _header("Seconds to wait.", {"type": "integer", "minimum": 0})},
             )},
            400, 404,
            parameters=[
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string", "pattern": "^[0-9]+$"},
                 "description": "The `id` of the last event received: the stream goes on after it."},
                _query("after", {"type": "integer", "minimum": 0}, "As `Last-Event-ID`, for a client that cannot set it."),
            ],
        )},
        "/v1/alerts/{id}/sirens": {"parameters": one, "get": _op(
            "The alert's sirens with their last command's status.",
            {200: _json("Sirens.", _ref("Sirens"))}, 404,
        )},
        "/v1/sirens": {"get": _op(
            "Every siren of the caller's jurisdiction with its last known status and health.",
            {200: _json("Sirens.", _ref("Sirens"))},
        )},
        "/v1/me": {"get": _op(
            "Who the caller is: the token, its user, the user's cell (id and name), roles and zones.",
            {200: _json("The caller.", _object(
                token_id=_str(), cell=_str("The cell's id."), cell_name=_str(), user=_str("The user's name."),
                roles={"type": "array", "items": _enum(model.Role)},
                zones={"type": "array", "items": {"type": "string"}},
                expires_at=_nullable_str("When the token stops working.", format="date-time"),
            ))},
        )},
        "/v1/audit": {"get": _op(
            "The audit log, newest first (admin): who did what, when, from which address. Read only. A national "
            "cell's admin reads every cell's entries, another admin its own cell's only (another `cell`: 403).",
            {200: _json("A page of entries.", _object(entries={"type": "array", "items": _object(
                id={"type": "integer"}, at=_str(format="date-time"), cell=_str(), token_id=_nullable_str(),
                user=_nullable_str("The user's name."), action=_str(), subject=_nullable_str(), detail={"type": "object"}, address=_nullable_str(),
            )}, next={"type": ["integer", "null"]}))},
            400, 403,
            parameters=[
                _query("limit", _page(100), "Page size."),
                _query("before", {"type": "integer", "minimum": 1}, "Cursor from the previous page's `next`."),
                _query("cell", {"type": "string"}, "Only this cell's entries."),
                _query("action", {"type": "string"}, "Only this action (created, cancelled, updated…)."),
                _query("subject", {"type": "string"}, "Only entries about this alert or token."),
            ],
        )},
        "/metrics": {"get": _public(
            "Prometheus metrics: no personal data; keep it behind your firewall or proxy. The Prometheus "
            "text format, or OpenMetrics when `Accept` asks for `application/openmetrics-text`.",
            {200: {"description": "Metrics.", "content": {
                media: {"schema": {"type": "string"}} for media in ("text/plain", "application/openmetrics-text")
            }}},
        )},
        "/v1/feed.atom": {"get": _public(
            "Public, actual, unexpired alerts as an Atom feed, each entry linking its CAP document.",
            {200: {"description": "Atom 1.0.", "content": {"application/atom+xml": {"schema": {"type": "string"}}}}},
        )},
        "/v1/alerts/{id}/cancel": {"parameters": one, "post": _cancel()},
        "/v1/alerts/{id}/reject": {"parameters": one, "post": _op(
            "End an alert awaiting approval, with a reason (an approver, or its creator withdrawing it): state "
            "`rejected`, never sent; audited as `rejected`.",
            {200: _json("The rejected alert.", _ref("Alert"))},
            400, 403, 404, 409, 415, 422,
            requestBody=_body(_object(reason=_str("Why (at most 1000 characters).", maxLength=1000, minLength=1))),
        )},
        "/v1/alerts/{id}/approve": {"parameters": one, "post": _op(
            "Release an alert awaiting a second person: an approver of its cell (or of a cell covering its area) "
            "other than its creator (403 `self-approval` for the creator, 403 for a non-approver whatever the "
            "state). 409 when the request expired (state `approval_expired`), or when what it would send changed "
            "since it was shown (`approval-changed`: the request is renewed, read it again). Or issue a draft as of "
            "now (issuer or admin; an approver other than its author when the cell asks a second person for that "
            "status). Audited as `approved`, naming both people. A body, if any, is `application/json`.",
            {202: _json("Accepted: the fan-out is under way.", _ref("Accepted"))},
            400, 403, 404, 409, 415, 422,
            requestBody={"required": False, "content": {"application/json": {"schema": _object(
                status={"enum": ["actual", "exercise", "test", "system"], "default": "actual"},
            ) | {"required": []}}}},
        )},
        "/v1/preview": {"post": _preview()},
        "/v1/subscribers": {"post": _subscribers()},
        "/v1/receipts/twilio": {"post": _twilio_receipts()},
        "/v1/receipts/{channel}": {"post": _channel_receipts()},
        "/v1/receipts/siren": {"post": {
            "summary": "Siren gateway acknowledgements (activated, failed, busy) and heartbeats (mains, battery, "
            "fault, sabotage); one object or a list. Authenticated by the gateway's own receipt token.",
            "security": [{"bearer": []}],
            "requestBody": _body({"oneOf": [_SIREN_RECEIPT, {"type": "array", "items": _SIREN_RECEIPT,
                                                              "minItems": 1, "maxItems": 10000}]}),
            "responses": {
                "204": {"description": "Recorded."}, "400": _problem_response("Malformed."),
                "401": _problem_response("No gateway token."), "403": _problem_response("Not a gateway's token."),
                "409": _problem_response(
                    "A `busy` ack for a command not yet recorded as sent: post it again after `Retry-After` seconds.",
                    **{"Retry-After": _header("Seconds to wait.", {"type": "integer", "minimum": 0})},
                ),
                "422": _problem_response("A field is not valid, or the siren is unknown; `errors` says which."),
            } | _TOO_LARGE,
        }},
        "/v1/openapi.json": {"get": _public("This document.", {200: _json("OpenAPI 3.1.", {"type": "object"})})},
        "/healthz": {"get": _public(
            "The process is alive.", {200: _json("Alive.", _object(status={"const": "alive"}))},
        )},
        "/readyz": {
            "get": _public(
                "The store answers and channels are loaded.",
                {200: _json("Ready.", _ref("Readiness")), 503: _json("Not ready: see `problems`.", _ref("Readiness"))},
            )
        },
    }


def _get_alert() -> dict[str, Any]:
    return _op("An alert and its delivery counts.", {200: _json("The alert.", _ref("AlertStatus"))}, 404)


def _cancel() -> dict[str, Any]:
    return _op(
        "Cancel an alert: pending deliveries are dropped, sirens are told to stop. Cancelling it again "
        "answers the same, with nothing more to stop.",
        {200: _json("The cancelled alert.", _ref("Cancelled")),
         202: _json("The cell asks a second person for this cancel: a CAP Cancel of it, awaiting approval; "
                    "the alert stays in force until that is approved.", _ref("Alert"))},
        403, 404,
    )


def _preview() -> dict[str, Any]:
    return _op(
        "Render an order (JSON or CAP 1.2, as `POST /v1/alerts` takes it) without sending it, with every check "
        "of `POST /v1/alerts`: for those who may send (issuer or admin; any other role gets 403).",
        {200: _json("One message per locale and channel.", _ref("Messages"))},
        400, 403, 415, 422,
        requestBody=_order_body(),
    )


def _order_body() -> dict[str, Any]:
    return {"required": True, "content": {
        "application/json": {"schema": _ref("Order")},
        CAP: {"schema": {"type": "string", "description": "A CAP 1.2 <alert> (Public; Alert, Update or Cancel)."}},
    }}


def _page(default: int, most: int = web_alerts.MAX_PAGE) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": most, "default": default}


def _subscribers() -> dict[str, Any]:
    return _op(
        "Add or replace subscribers by id: one object or a list, as `application/json`.",
        {200: _json("How many were stored.", _ref("Imported"))},
        400, 403, 415, 422,
        requestBody=_body({"oneOf": [_ref("Subscriber"), _SUBSCRIBERS]}),
    )


def _public(summary: str, responses: dict[int, Any]) -> dict[str, Any]:
    return {"summary": summary, "responses": {str(s): r for s, r in responses.items()}} | _PUBLIC


def _post_alert() -> dict[str, Any]:
    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": web_alerts.MAX_KEY},
        "description": "Posting again with the same key (without one: the same `identifier`) returns the first "
        "alert instead of a second one; the same key with another order is refused (422). Ignored for a CAP "
        "document, whose key is its triplet (`<sender>`, `<identifier>`, `<sent>`).",
    }
    accepted = _json("Accepted: the fan-out is under way, or (state `awaiting_approval`) the cell asks a second "
                     "person for it: nothing is planned or sent until an approver releases it "
                     "(`POST /v1/alerts/{id}/approve`).", _ref("Accepted")) | {"headers": {
        "Location": _header("The alert's path."),
        "Idempotent-Replayed": _header("`true` when this is the first alert posted with the key, again.",
                                       {"const": "true"}, required=False),
    }}
    too_many = _problem_response(
        "The cell posted more orders than its rate lets through (a burst at once, then so many a minute): "
        "post again after `Retry-After` seconds.",
        **{"Retry-After": _header("Seconds to wait.", {"type": "integer", "minimum": 1})},
    )
    return _op(
        "Issue an alert: a JSON order (`application/json`) or a CAP 1.2 document (`application/cap+xml`; "
        "`application/xml` and `text/xml` are read as CAP too). A CAP document's `<sender>` must be one of the "
        "cell's senders; its triplet (`<sender>`, `<identifier>`, `<sent>`) is its identity: posted again, it "
        "answers the first alert.",
        {202: accepted, 429: too_many, 403: _problem_response(
            "The token may not send, the area leaves its jurisdiction (`outside-jurisdiction`), or a CAP "
            "document's `<sender>` is not one of the cell's senders (`foreign-sender`, field `/alert/sender`)."
        ), 409: _problem_response(
            "A CAP document reuses its sender's identifier for a different message (`identifier-reused`, field "
            "`/alert/identifier`) or with another `<sent>` (field `/alert/sent`)."
        ), 422: _problem_response(
            "The order is not valid; `field` and `errors` say where. Among others: an idempotency key already "
            "used for another JSON order (`idempotency-key-reused`), a CAP `<sent>` further from now than "
            "`[alerts] cap_sent_skew_hours` (`sent-out-of-range`, field `/alert/sent`)."
        )},
        400, 415,
        parameters=[key],
        requestBody=_order_body(),
    )


def _list_alerts() -> dict[str, Any]:
    return _op(
        "Recent alerts, newest first.",
        {200: _json("A page of alerts.", _ref("AlertList"))},
        400,
        parameters=[
            _query("limit", _page(50, web_alerts.MAX_ALERTS), "Page size."),
            _query("before", {"type": "string"}, "An alert's id: only alerts older than it."),
        ],
    )


def _deliveries() -> dict[str, Any]:
    return _op(
        "An alert's deliveries, one page at a time.",
        {200: _json("A page of deliveries.", _ref("DeliveryPage"))},
        400, 404,
        parameters=[
            _query("channel", {"type": "string"}, "Only this configured channel."),
            _query("state", _enum(model.State), "Only deliveries in this state."),
            _query("after", {"type": "integer", "minimum": 0}, "Cursor from the previous page's `next`."),
            _query("limit", _page(100), "Page size."),
        ],
    )


def _channel_receipts() -> dict[str, Any]:
    channel = {"name": "channel", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "A configured channel's name (`[channels.<name>]`) whose plugin takes receipts."}
    early = _problem_response(
        "A transient failure reported before its send was recorded: post it again after `Retry-After` seconds.",
        **{"Retry-After": _header("Seconds to wait.", {"type": "integer", "minimum": 0})},
    )
    return {
        "summary": "A provider's report on what a channel sent (delivered, failed …), read and verified by that "
        "channel's plugin: a Twilio channel's status callbacks (signed with its auth token), a siren gateway's "
        "acknowledgements and heartbeats (as `/v1/receipts/siren`, with its receipt token), a third-party plugin's "
        "own callbacks. Its provider authenticates it, not a bearer token of alertd's.",
        "parameters": [channel],
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            "application/json": {"schema": {}},
        }},
        "responses": {
            "204": {"description": "Recorded."}, "400": _problem_response("Malformed; `field` says where."),
            "401": _problem_response("The provider's credentials are missing."),
            "403": _problem_response("Not the provider's: a bad signature or another token."),
            "404": _problem_response("No configured channel of that name, or one that takes no receipts."),
            "409": early,
            "415": _problem_response("Not a media type the channel's provider posts."),
            "422": _problem_response("A field is not valid, or names what this channel did not send or serve."),
        } | _TOO_LARGE,
    } | _PUBLIC


def _twilio_receipts() -> dict[str, Any]:
    signature = {
        "name": "X-Twilio-Signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "Twilio's HMAC-SHA1 signature of the URL and form.",
    }
    form = {
        "type": "object",
        "properties": {name: {"type": "string"} for name in ("MessageSid", "MessageStatus", "ErrorCode")},
        "required": ["MessageSid", "MessageStatus"],
    }
    return {
        "summary": "Twilio message status callbacks.",
        "parameters": [signature],
        "requestBody": _body(form, "application/x-www-form-urlencoded"),
        "responses": {
            "204": {"description": "Recorded."}, "400": _problem_response("No `MessageSid`."),
            "403": _problem_response("Bad signature."),
            "415": _problem_response("Not `application/x-www-form-urlencoded`."),
        } | _TOO_LARGE,
    } | _PUBLIC
