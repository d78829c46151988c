"""Bad input gets the right status and a problem-details body naming the field; nothing changes."""

from __future__ import annotations

import pytest

from alertd import errors, model
from tests import helpers


async def nothing_happened(daemon) -> None:
    assert await daemon.store.list_alerts() == []
    await daemon.drain()
    assert await daemon.sms.received() == [] and await daemon.siren.received() == []


async def problem(resp, status: int, field: str | None = None) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == status and body["type"] and body["title"]
    assert "Traceback" not in str(body)
    if field is not None:
        assert body.get("field") == field, body
    return body


@pytest.mark.parametrize(
    "body, status, field",
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (helpers.order(colour="red"), 422, "colour"),
        (helpers.order(severity="Apocalyptic"), 422, "severity"),
        (helpers.order(expires="2020-01-01T00:00:00+00:00"), 422, "expires"),
        (helpers.order(area={"zones": ["XYZ"]}), 422, "area.zones.0"),
        (helpers.order(channels=[]), 422, "channels"),
        (helpers.order(template="no_such_template"), 422, "template"),
        (helpers.order(area={"zones": ["69123"]}), 403, "area.zones"),
        (helpers.order(area={"zones": ["*"]}), 403, "area.zones"),
    ],
)
async def test_bad_orders_are_refused_and_change_nothing(daemon, body, status, field):
    kw = {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    await problem(await daemon.post("/v1/alerts", **kw), status, field)
    await nothing_happened(daemon)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"event": "Inon\x00dation"}, "event"),
        ({"template": None, "texts": {"fr": {"headline": "Crue\x00", "instruction": "Montez."}}}, "texts.fr.headline"),
        ({"params": {"reason": "crue\x1b[31m"}}, "params.reason"),
        ({"area": {"zones": ["75056"], "description": "Paris\x7f"}}, "area.description"),
    ],
)
async def test_control_characters_never_reach_a_citizen(daemon, overrides, field):
    body = await problem(await daemon.post("/v1/alerts", json=helpers.order(**overrides)), 422, field)
    assert "control character" in body["errors"][0]["message"]
    await problem(await daemon.post("/v1/preview", json=helpers.order(**overrides)), 422, field)
    await nothing_happened(daemon)


async def test_line_breaks_and_tabs_in_a_text_are_kept(daemon):
    texts = {"fr": {"headline": "Crue", "instruction": "Montez\tdans les étages.\r\nN'utilisez pas la voiture."}}
    resp = await daemon.post("/v1/alerts", json=helpers.order(template=None, params={}, texts=texts))
    assert resp.status == 202, await resp.text()


async def test_outside_jurisdiction_names_the_zones_outside(daemon):
    body = await problem(
        await daemon.post("/v1/alerts", json=helpers.order(area={"zones": ["75056", "69123"]})), 403, "area.zones"
    )
    assert body["outside"] == ["69123"]
    await nothing_happened(daemon)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
)
async def test_missing_or_malformed_tokens_get_401(daemon, headers):
    resp = await daemon.client.post("/v1/alerts", json=helpers.order(), headers=headers)
    await problem(resp, 401)
    await nothing_happened(daemon)


async def test_a_wrong_secret_gets_401(daemon):
    real = daemon.headers["issuer"]["Authorization"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    await problem(await daemon.client.post("/v1/alerts", json=helpers.order(), headers={"Authorization": forged}), 401)
    await nothing_happened(daemon)


async def test_an_operator_may_watch_but_not_send(daemon):
    await problem(await daemon.post("/v1/alerts", who="operator", json=helpers.order()), 403)
    await nothing_happened(daemon)
    resp = await daemon.get("/v1/alerts", who="operator")
    assert resp.status == 200


async def test_unknown_alert_gets_404(daemon):
    await problem(await daemon.get("/v1/alerts/does-not-exist"), 404)
    await problem(await daemon.post("/v1/alerts/does-not-exist/cancel"), 404)


async def test_bad_pagination_gets_400(daemon):
    alert = await daemon.send()
    await problem(await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?limit=abc"), 400, "limit")
    await problem(await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?state=lost"), 400, "state")


async def test_bad_subscribers_are_refused_whole(daemon):
    people = [
        {"id": "ok-1", "phone": "+33612345670", "locale": "fr", "zones": ["75056"]},
        {"id": "bad-1", "phone": "12", "locale": "fr", "zones": ["75056"]},
    ]
    await problem(await daemon.post("/v1/subscribers", who="admin", json=people), 422, "1.phone")
    with pytest.raises(errors.NotFound):
        await daemon.store.get_recipient("ok-1")


async def test_subscribers_outside_the_issuers_jurisdiction_are_refused(daemon):
    person = {"id": "lyonnais", "phone": "+33612345670", "zones": ["69123"]}
    await problem(await daemon.post("/v1/subscribers", json=person), 403, "zones")


async def test_an_unknown_route_is_a_problem_document(daemon):
    await problem(await daemon.client.get("/v1/nothing-here"), 404)


async def test_an_issuer_cannot_take_over_a_subscriber_of_another_cell(daemon):
    lyonnais = {"id": "p-lyon", "phone": "+33699999999", "locale": "fr", "zones": ["75056"]}
    await problem(await daemon.post("/v1/subscribers", json=lyonnais), 403, "zones")
    assert (await daemon.store.get_recipient("p-lyon")).phone == "+33644556677"


async def test_a_push_token_cannot_pose_as_a_topic(daemon):
    person = {"id": "p-x", "push_token": "zone-FR", "locale": "fr", "zones": ["75056"]}
    await problem(await daemon.post("/v1/subscribers", json=person), 422, "push_token")


async def test_a_reused_idempotency_key_with_another_order_is_refused(daemon):
    headers = {"Idempotency-Key": "k-1"}
    first = await daemon.post("/v1/alerts", json=helpers.order(status="exercise"), headers=headers)
    assert first.status == 202
    await problem(await daemon.post("/v1/alerts", json=helpers.order(), headers=headers), 422, "Idempotency-Key")
    assert len(await daemon.store.list_alerts()) == 1


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_an_idempotency_key_is_1_to_200_characters(daemon, key):
    resp = await daemon.post("/v1/alerts", json=helpers.order(), headers={"Idempotency-Key": key})
    await problem(resp, 400, "Idempotency-Key")
    await nothing_happened(daemon)
    longest = {"Idempotency-Key": "k" * 200}
    assert (await daemon.post("/v1/alerts", json=helpers.order(), headers=longest)).status == 202


async def test_deeply_nested_json_is_a_bad_request(daemon):
    body = b"[" * 100_000
    resp = await daemon.post("/v1/alerts", data=body, headers={"Content-Type": "application/json"})
    await problem(resp, 400)
    resp = await daemon.post("/v1/subscribers", who="admin", data=body, headers={"Content-Type": "application/json"})
    await problem(resp, 400)


async def test_a_cell_cannot_read_or_cancel_the_alerts_of_another(daemon):
    alert = await daemon.send()  # Paris, by the issuer of département 75
    plaintext = await helpers.add_token(daemon.store, model.Role.ISSUER, ["69"], cell="Préfecture du Rhône")
    lyon = helpers.auth_header(plaintext)
    for path in (f"/v1/alerts/{alert['id']}", f"/v1/alerts/{alert['id']}/deliveries"):
        await problem(await daemon.client.get(path, headers=lyon), 404)
    await problem(await daemon.client.post(f"/v1/alerts/{alert['id']}/cancel", headers=lyon), 404)
    listed = await (await daemon.client.get("/v1/alerts", headers=lyon)).json()
    assert listed["alerts"] == []
    assert (await daemon.status(alert["id"]))["state"] != "cancelled"


async def test_a_method_the_path_does_not_have_gets_405_naming_those_it_has(daemon):
    resp = await daemon.client.delete("/v1/alerts", headers=daemon.headers["admin"])
    await problem(resp, 405)
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == {"GET", "HEAD", "POST"}  # RFC 9110
    await nothing_happened(daemon)
