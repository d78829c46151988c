"""The OpenAPI 3.1 document of alertd's HTTP API.

Its schemas are generated from the models the handlers use (`openapi_schemas`): the order and the
subscriber that validate requests, the views that write answers. The paths table stays explicit:
methods, parameters, status codes and which schema each one carries.
"""

from __future__ import annotations

import copy
from typing import Any

from alertd import audience, openapi_schemas
from alertd.web import alerts as web_alerts

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
            "schemas": openapi_schemas.components(),
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


# -- paths -------------------------------------------------------------------------------------


def _str(description: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "string"} | ({"description": description} if description else {}) | extra


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": openapi_schemas.REF.format(model=name)}


_PROBLEMS = {
    400: "The body is malformed.",
    401: "A valid bearer token is required.",
    403: "The token may not do that, or the area leaves its jurisdiction.",
    404: "No such resource.",
    409: "The resource is not in a state that allows this.",
    413: "The body is larger than 4 MiB (a CAP document: 1 MB).",  # app.build's client_max_size, cap.MAX_BYTES
    415: "The body is not declared as a media type this operation reads (`Content-Type`): "
    "`application/json`, or for an alert or a preview also CAP 1.2 (`application/cap+xml`).",
    422: "The request is not valid; `field` and `errors` say where.",
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
_PUBLIC: dict[str, list[Any]] = {"security": []}  # no bearer token asked
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
                _query("after", {"type": "integer", "minimum": 0},
                       "As `Last-Event-ID`, for a client that cannot set it."),
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
            {200: _json("The caller.", _ref("Me"))},
        )},
        "/v1/audit": {"get": _op(
            "The audit log, newest first (admin): who did what, when, from which address. Read only. A national "
            "cell's admin reads every cell's entries, another admin its own cell's only (another `cell`: 403).",
            {200: _json("A page of entries.", _ref("AuditPage"))},
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
            requestBody=_body(_ref("Rejection")),
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
            requestBody={"required": False, "content": {"application/json": {"schema": _ref("Issue")}}},
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
            "The process is alive.", {200: _json("Alive.", _ref("Alive"))},
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
        {200: _json("One message per locale and channel.", _ref("Previewed"))},
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
            _query("state", _ref("State"), "Only deliveries in this state."),
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
