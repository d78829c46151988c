"""The OpenAPI document's `components.schemas`, generated from the models the handlers use.

Request bodies are the pydantic classes that validate them (`orders.Order`, `audience.Subscriber`),
with the rules their validators check across fields, which pydantic cannot write; answers are the
views the handlers write them with (`web.views.ANSWERS`). Nothing here names a field.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal

import pydantic
from pydantic import json_schema

from alertd import audience, orders
from alertd.web import views

REF = "#/components/schemas/{model}"


@functools.cache  # the models do not change while alertd runs; `openapi.document` hands out copies
def components() -> dict[str, Any]:
    """Every schema the document refers to, by name: the models and those they hold."""
    models: list[tuple[type[pydantic.BaseModel], Literal["validation", "serialization"]]] = [
        (orders.Order, "validation"), (audience.Subscriber, "validation"), (orders.Issue, "validation"),
        (orders.Rejection, "validation"),
        *((view, "serialization") for view in views.ANSWERS),
    ]
    _, schema = json_schema.models_json_schema(models, ref_template=REF)
    defs = schema["$defs"]
    _closed_patterns(defs)
    _with_rules(defs["Order"], _ORDER_RULES, _ORDER_RULES_TEXT)
    _with_rules(defs["Area"], [_AREA_RULES], _AREA_RULES_TEXT)
    _with_rules(defs["Subscriber"], _SUBSCRIBER_RULES, _SUBSCRIBER_RULES_TEXT)
    return defs


def _with_rules(schema: dict[str, Any], rules: list[dict[str, Any]], text: str) -> None:
    schema["description"] = schema.get("description", "") + text
    schema["allOf"] = copy.deepcopy(rules)


def _closed_patterns(node: Any) -> None:
    """A dict keyed by a pattern refuses other keys, as pydantic does."""
    if isinstance(node, dict):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _closed_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _closed_patterns(value)


# -- what the validators add to the types pydantic writes ----------------------------------------

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

# audience.Subscriber._reachable and _located
_SUBSCRIBER_RULES = [
    {"anyOf": [_given("phone"), _given("push_token")]},
    {"oneOf": [_given("lat", "lon"), {"not": {"anyOf": [_given("lat"), _given("lon")]}}]},
]
_SUBSCRIBER_RULES_TEXT = " Give a `phone`, a `push_token` or both; `lat` and `lon` together or neither."
