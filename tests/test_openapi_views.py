"""The document's schemas are the handlers' models: every component is generated from a class the
API reads or writes with (pydantic names it after the class), every one is used, and every answer
model is some operation's answer. A schema written by hand beside the handlers, or a view no
handler answers with, fails here; a field of an answer missing from its schema (or the reverse)
fails the conformance test (tests/test_openapi_conformance.py), which checks real answers against
these closed schemas.
"""

from __future__ import annotations

import enum
from typing import Any

import pydantic

from alertd import audience, model, openapi, orders
from alertd.web import views

DOC = openapi.document("http://127.0.0.1:8080")
SCHEMAS = DOC["components"]["schemas"]
PREFIX = "#/components/schemas/"
MODULES = (views, orders, audience, model)  # where the classes the API speaks in live


def refs(node: Any) -> set[str]:
    """The component names `node` refers to."""
    if isinstance(node, dict):
        own = {node["$ref"].removeprefix(PREFIX)} if str(node.get("$ref", "")).startswith(PREFIX) else set()
        return own.union(*(refs(v) for v in node.values()))
    return set().union(*(refs(v) for v in node)) if isinstance(node, list) else set()


def reachable() -> set[str]:
    """Every component the paths refer to, directly or through other components."""
    found, todo = set(), refs(DOC["paths"]) | refs(DOC["components"]["responses"])
    while todo:
        name = todo.pop()
        found.add(name)
        todo |= refs(SCHEMAS[name]) - found
    return found


def answered() -> set[str]:
    """The components an operation answers with (a 2xx body, a problem, or a shared response)."""
    responses = [r for item in DOC["paths"].values() for op in item.values() if isinstance(op, dict)
                 for r in op.get("responses", {}).values()]
    return refs(responses + list(DOC["components"]["responses"].values()))


def source(name: str) -> type:
    found = [getattr(m, name) for m in MODULES if isinstance(getattr(m, name, None), type)]
    found = [c for c in found if issubclass(c, (pydantic.BaseModel, enum.Enum))]
    assert found, f"component {name}: no model or enum of that name: written by hand?"
    return found[0]


def test_every_component_is_a_model_the_api_reads_or_writes_with():
    for name, schema in SCHEMAS.items():
        cls = source(name)
        assert schema.get("title") == cls.__name__, f"{name}: not pydantic's schema of {cls.__qualname__}"


def test_every_component_is_used_and_every_answer_model_answers():
    assert set(SCHEMAS) - reachable() == set(), "components no path uses"
    assert {v.__name__ for v in views.ANSWERS} - answered() == set(), "answer models no operation answers with"
    assert {"Order", "Subscriber"} <= reachable()


def test_a_view_and_its_schema_name_the_same_fields():
    """What `answer` writes of a view is what its component lists, every field required unless the
    view leaves it out when unknown (a problem's)."""
    for view in views.ANSWERS:
        schema = SCHEMAS[view.__name__]
        assert set(schema["properties"]) == set(view.model_fields), view.__name__
        required = {n for n, f in view.model_fields.items() if f.is_required()}
        assert set(schema.get("required", [])) == required, view.__name__
    assert SCHEMAS["Problem"]["required"] == ["type", "title", "status"]
