"""Orders and subscribers as a crisis cell or an importer sends them, and the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import openapi_spec_validator
import pytest
from aiohttp import web as aiohttp_web

from alertd import audience, errors, model, openapi, orders, web as web_mod

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def order(**changes: Any) -> dict[str, Any]:
    body = {
        "status": "actual",
        "event": "Inondation",
        "urgency": "Immediate",
        "severity": "Severe",
        "certainty": "Observed",
        "expires": "2030-06-01T20:00:00+02:00",
        "area": {"zones": ["75056", "92"], "description": "Paris et Hauts-de-Seine"},
        "channels": ["sms", "push"],
        "template": "shelter_in_place",
        "params": {"place": "Paris", "level": 3, "ratio": 0.5, "drill": False},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def parse(body: Any) -> orders.Order:
    return orders.parse(json.dumps(body).encode(), NOW)


def invalid(body: Any) -> errors.Invalid:
    with pytest.raises(errors.Invalid) as caught:
        parse(body)
    assert caught.value.status == 422
    return caught.value


# -- valid orders ------------------------------------------------------------------------------


def test_template_order_keeps_its_params_as_typed_data():
    parsed = parse(order())
    assert parsed.template == "shelter_in_place"
    assert parsed.params == {"place": "Paris", "level": 3, "ratio": 0.5, "drill": False}
    assert parsed.expires == dt.datetime(2030, 6, 1, 18, 0, tzinfo=dt.UTC)
    assert parsed.texts is None


def test_free_texts_in_several_locales():
    texts = {
        "fr": {"headline": "  Inondation  ", "instruction": "Montez dans les étages."},
        "en": {"headline": "Flood"},
        "ar": {"headline": "فيضان", "instruction": "اصعدوا إلى الطوابق العليا"},
        "fr-FR": {"headline": "Crue"},
    }
    parsed = parse(order(template=..., params=..., texts=texts, locale="fr"))
    assert set(parsed.texts) == {"fr", "en", "ar", "fr-FR"}
    assert parsed.texts["fr"].headline == "Inondation"
    assert parsed.texts["en"].instruction == ""
    assert parsed.locale == "fr"


def test_schema_example_is_a_valid_order():
    for example in orders.schema()["examples"]:
        orders.parse(json.dumps(example).encode(), dt.datetime(2029, 1, 1, tzinfo=dt.UTC))


# -- bad orders --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"status": "real"}, "status"),
        ({"urgency": "immediate"}, "urgency"),
        ({"channels": ["sms", "fax machine"]}, "channels.1"),
        ({"channels": ["sms", "sms"]}, "channels"),
        ({"channels": []}, "channels"),
        ({"expires": "2030-06-01T11:59:00Z"}, "expires"),
        ({"expires": "2030-06-01T20:00:00"}, "expires"),
        ({"area": {"zones": []}}, "area"),
        ({"area": {"polygons": [[[48.85, 2.33], [48.86, 2.34], [48.85, 2.33]]]}}, "area.polygons.0"),
        ({"area": {"polygons": [[[48.85, 200], [48.86, 2.34], [48.86, 2.33], [48.85, 200]]]}}, "area.polygons.0.0.1"),
        ({"area": {"circles": [{"lat": 48.85, "lon": 2.35, "radius_km": -1}]}}, "area.circles.0.radius_km"),
        ({"area": {"zones": ["75056", "20"]}}, "area.zones.1"),
        ({"area": {"zones": ["7505"]}}, "area.zones.0"),
        ({"area": {"zones": ["97705"]}}, "area.zones.0"),
        ({"area": {"zones": ["75"], "radius": 3}}, "area.radius"),
        ({"identifier": "FR 75,1"}, "identifier"),
        ({"event": ""}, "event"),
        ({"texts": {"fr": {"headline": "x"}}}, "texts"),
        ({"template": ...}, "texts"),
        ({"params": {f"p{i}": i for i in range(51)}}, "params"),
        ({"params": {"place": "x" * 501}}, "params.place"),
        ({"params": {"place": {"nested": "object"}}}, "params.place"),
        ({"params": {"{{ evil }}": 1}}, "params.{{ evil }}"),
        ({"template": ..., "texts": {"french": {"headline": "x"}}}, "texts.french"),
        ({"template": ..., "texts": {"fr": {"headline": "x" * 201}}}, "texts.fr.headline"),
        ({"msg_type": "cancel"}, "references"),
        ({"msg_type": "replace"}, "msg_type"),
        ({"event": None}, "event"),
        ({"references": [{"sender": "a b", "identifier": "x", "sent": "2030-01-01T00:00:00+01:00"}]},
         "references.0.sender"),
    ],
)
def test_bad_order_names_the_field(changes, field):
    assert invalid(order(**changes)).field == field


def test_every_error_is_reported_and_unknown_fields_by_name():
    problem = invalid(order(colour="red", severity="Huge", area={"zones": ["75", "xx"]}))
    fields = {e["field"] for e in problem.errors}
    assert fields == {"colour", "severity", "area.zones.1"}
    assert {"field": "colour", "message": "unknown field"} in problem.errors
    assert "zone code" in next(e["message"] for e in problem.errors if e["field"] == "area.zones.1")


def test_expired_order_says_so():
    problem = invalid(order(expires="2030-06-01T11:00:00Z"))
    assert problem.errors == [{"field": "expires", "message": "must be in the future"}]


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b'{"params": {"x": NaN}}']
)
def test_malformed_or_non_object_body_is_a_bad_request(body):
    with pytest.raises(errors.BadRequest) as caught:
        orders.parse(body, NOW)
    assert caught.value.status == 400
    assert caught.value.field is None


# -- to_alert ----------------------------------------------------------------------------------


def test_to_alert_builds_the_frozen_alert():
    alert = orders.to_alert(
        parse(order(area={"zones": ["75056", "75056", "2A004"]}, topics=True)),
        alert_id="a1", cell="Préfecture de Paris", token_id="t1", now=NOW,
    )
    assert alert == model.Alert(
        id="a1",
        identifier="a1",
        sender="prefecture-de-paris",
        cell="Préfecture de Paris",
        sent=NOW,
        status=model.Status.ACTUAL,
        event="Inondation",
        urgency="Immediate",
        severity="Severe",
        certainty="Observed",
        expires=dt.datetime(2030, 6, 1, 18, 0, tzinfo=dt.UTC),
        area=model.Area(("75056", "2A004")),
        channels=(model.Kind.SMS, model.Kind.PUSH),
        template="shelter_in_place",
        params={"place": "Paris", "level": 3, "ratio": 0.5, "drill": False},
        topics=True,
        token_id="t1",
    )
    assert alert.expires.utcoffset() == dt.timedelta(0)
    assert model.Alert.from_json(alert.to_json(), token_id="t1") == alert


def test_to_alert_keeps_identifier_and_texts():
    parsed = parse(
        order(identifier="FR-75-0001", template=..., params=..., texts={"en": {"headline": "Flood"}}, locale="en")
    )
    alert = orders.to_alert(parsed, alert_id="a2", cell="c", token_id="t", now=NOW)
    assert alert.identifier == "FR-75-0001"
    assert alert.texts == {"en": model.Text("Flood", "")}
    assert alert.template is None and alert.locale == "en"


# -- subscribers -------------------------------------------------------------------------------


def subscribers(body: Any) -> list[model.Recipient]:
    return audience.parse_subscribers(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("06 12 34 56 78", "+33612345678"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("0690 12 34 56", "+590690123456"),
        ("0692 12 34 56", "+262692123456"),
        ("+44 7911 123456", "+447911123456"),
    ],
)
def test_phone_numbers_become_e164(raw, e164):
    assert audience.normalise_phone(raw) == e164


@pytest.mark.parametrize("raw", ["12", "06 12 34", "call me", "+33 0 00 00 00 00", ""])
def test_invalid_phone_numbers_are_refused(raw):
    with pytest.raises(errors.Invalid) as caught:
        audience.normalise_phone(raw)
    assert caught.value.field == "phone"
    assert not raw or raw not in caught.value.message  # personal data stays out of problems and logs


def test_one_subscriber_object():
    [recipient] = subscribers({"id": "c-1", "phone": "06 12 34 56 78", "zones": ["75056"]})
    assert recipient == model.Recipient(id="c-1", locale="fr", zones=("75056",), phone="+33612345678")


def test_a_list_of_subscribers():
    rows = [
        {"id": "c-1", "phone": "+33 6 12 34 56 78", "locale": "en", "zones": ["75056", "92"]},
        {"id": "c-2", "push_token": "fcm-token-2", "locale": "ar", "zones": ["2A004"]},
    ]
    assert subscribers(rows) == [
        model.Recipient(id="c-1", locale="en", zones=("75056", "92"), phone="+33612345678"),
        model.Recipient(id="c-2", locale="ar", zones=("2A004",), push_token="fcm-token-2"),
    ]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"id": "c-9", "phone": "06 12", "zones": ["75056"]}, "3.phone"),
        ({"id": "c-9", "zones": ["75056"]}, "3.push_token"),
        ({"id": "c 9", "phone": "0612345678", "zones": ["75056"]}, "3.id"),
        ({"id": "c-9", "phone": "0612345678", "zones": ["*"]}, "3.zones.0"),
        ({"id": "c-9", "phone": "0612345678", "zones": []}, "3.zones"),
        ({"id": "c-9", "phone": "0612345678", "zones": ["75"], "email": "x@y"}, "3.email"),
        ({"id": "c-0", "phone": "0612345678", "zones": ["75"]}, "3.id"),
    ],
)
def test_a_bad_row_is_reported_by_index(row, field):
    good = [{"id": f"c-{i}", "phone": f"06123456{i:02d}", "zones": ["75056"]} for i in range(3)]
    with pytest.raises(errors.Invalid) as caught:
        subscribers([*good, row])
    assert caught.value.field == field


def test_too_many_subscribers_in_one_body():
    rows = [{"id": f"c-{i}", "push_token": "t", "zones": ["75"]} for i in range(audience.MAX_SUBSCRIBERS + 1)]
    with pytest.raises(errors.Invalid) as caught:
        subscribers(rows)
    assert caught.value.field is None
    assert "10000" in caught.value.message
    assert len(subscribers(rows[:-1])) == audience.MAX_SUBSCRIBERS


def test_subscriber_body_must_be_an_object_or_list():
    with pytest.raises(errors.BadRequest):
        audience.parse_subscribers(b"42")


# -- OpenAPI -----------------------------------------------------------------------------------


def test_openapi_document_is_valid_and_built_from_the_order_schema():
    doc = openapi.document("http://127.0.0.1:8080/")
    openapi_spec_validator.validate(doc)
    schemas = doc["components"]["schemas"]
    order_schema = orders.schema("#/components/schemas/{model}")
    del order_schema["$defs"]
    # openapi closes the schema to exactly what the validators admit (tests/test_openapi_conformance.py)
    assert set(schemas["Order"]["properties"]) == set(order_schema["properties"])
    assert schemas["Order"]["properties"]["category"]["enum"] == list(orders.CATEGORIES)
    assert {"zones", "polygons", "circles"} <= set(schemas["Area"]["properties"])
    body = doc["paths"]["/v1/alerts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Order"}
    assert "Subscriber" in schemas
    assert doc["servers"] == [{"url": "http://127.0.0.1:8080"}]


def test_openapi_lists_every_route_with_problem_details():
    doc = openapi.document("http://x")
    served = {
        route.path for route in web_mod.routes()
        if isinstance(route, aiohttp_web.RouteDef) and not route.path.startswith("/console")
    }
    assert set(doc["paths"]) == served  # every route the daemon serves is documented, and only those
    post = doc["paths"]["/v1/alerts"]["post"]
    assert {"202", "400", "401", "403", "422"} <= set(post["responses"])  # the exact set: the conformance test
    assert post["parameters"][0]["name"] == "Idempotency-Key"
    problem = doc["components"]["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}
    properties = set(doc["components"]["schemas"]["Problem"]["properties"])
    assert {"type", "title", "status", "detail", "field", "errors"} <= properties
    assert doc["paths"]["/healthz"]["get"]["security"] == []


# -- language tags and category ----------------------------------------------------------------


@pytest.mark.parametrize("written, kept", [
    ("es-419", "es-419"), ("fr-CA", "fr-CA"), ("zh-Hant-TW", "zh-Hant-TW"), ("sr-Latn-RS", "sr-Latn-RS"),
    ("de-CH-1901", "de-CH-1901"), ("zh-hant-tw", "zh-Hant-TW"), ("FR_ca", "fr-CA"), ("EN", "en"),
])
def test_an_rfc_5646_language_tag_is_a_locale_kept_in_its_usual_case(written, kept):
    parsed = parse(order(template=..., params=..., texts={written: {"headline": "x"}}, locale=written))
    assert parsed.locale == kept and list(parsed.texts) == [kept]
    subscriber = audience.parse_subscribers(json.dumps(
        {"id": "c-1", "phone": "+33612345678", "locale": written, "zones": ["75056"]}).encode())
    assert subscriber[0].locale == kept


@pytest.mark.parametrize("written", ["français", "fr--CA", "fr-", "e", "fr-CAN-", "fr CA"])
def test_a_malformed_language_tag_is_refused_on_its_field(written):
    error = invalid(order(locale=written))
    assert error.field == "locale" and "RFC 5646" in error.message


def test_the_category_is_cap_s_and_safety_unless_given():
    assert parse(order()).category == "Safety"
    alert = orders.to_alert(parse(order(category="Met")), alert_id="a1", cell="Préfecture", token_id="t", now=NOW)
    assert alert.category == "Met" and model.Alert.from_json(alert.to_json()).category == "Met"
    error = invalid(order(category="Weather"))
    assert error.field == "category" and "Met" in error.message
    assert invalid(order(category=None)).field == "category"
