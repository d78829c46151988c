"""An alert's whole life through the API: shapes, updates, cancels, exercises, tests, drafts, expiry."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from alertd import housekeeping, model
from tests import helpers

LYON = helpers.LYON
# The jurisdiction of the cell below, drawn: a box around Paris and the inner suburbs.
PARIS_BOX = ((48.80, 2.22), (48.80, 2.47), (48.92, 2.47), (48.92, 2.22), (48.80, 2.22))
SQUARE = [[48.85, 2.33], [48.85, 2.37], [48.87, 2.37], [48.87, 2.33], [48.85, 2.33]]
CIRCLE = {"lat": 48.83, "lon": 2.30, "radius_km": 1.0}
LOCATED = [
    {"id": "g-square", "phone": "+33655000001", "zones": ["92012"], "lat": 48.86, "lon": 2.35},
    {"id": "g-circle", "phone": "+33655000002", "zones": ["92012"], "lat": 48.831, "lon": 2.301},
    {"id": "g-out", "phone": "+33655000003", "zones": ["92012"], "lat": 48.89, "lon": 2.40},
    {"id": "g-both", "phone": "+33655000004", "zones": [LYON], "lat": 48.86, "lon": 2.34},  # zone and square
]


@pytest.fixture
async def drawn(daemon):
    """The daemon with located subscribers and sirens, and a cell whose jurisdiction is drawn."""
    resp = await daemon.post("/v1/subscribers", who="admin", json=LOCATED)
    assert resp.status == 200, await resp.text()
    await daemon.store.upsert_sirens([
        model.Siren("siren-square", "92012", "Square", 48.86, 2.35),
        model.Siren("siren-far", "92012", "Far", 48.89, 2.40),
    ])
    plaintext = await helpers.add_token(
        daemon.store, model.Role.ISSUER, ["75", "92", "69"], cell="Préfecture de police", boundary=(PARIS_BOX,)
    )
    daemon.headers["drawn"] = helpers.auth_header(plaintext)
    return daemon


async def sms_to(daemon) -> list[str]:
    return sorted(r["to"] for r in await daemon.sms.received())


def phone(subscriber_id: str) -> str:
    found = [p for p in helpers.PEOPLE + LOCATED if p["id"] == subscriber_id][0]["phone"]
    if found.startswith("+"):
        return "+" + "".join(c for c in found if c.isdigit())
    return "+33" + found.replace(" ", "")[1:]


# -- shapes ----------------------------------------------------------------------------------------


async def test_shapes_and_zones_target_each_inside_once(drawn):
    area = {"zones": [LYON], "polygons": [SQUARE], "circles": [CIRCLE], "description": "Centre"}
    resp = await drawn.post("/v1/alerts", who="drawn", json=helpers.order(area=area, channels=["sms", "siren"]))
    assert resp.status == 202, await resp.text()
    await drawn.drain()
    assert await sms_to(drawn) == sorted(phone(i) for i in ("p-lyon", "g-square", "g-circle", "g-both"))
    sirens = sorted(s["to"] for s in await drawn.siren.received())
    assert sirens == ["siren-lyon-1", "siren-square"]
    shown = await drawn.status((await resp.json())["id"])
    assert shown["area"]["polygons"] == [SQUARE] and shown["area"]["circles"] == [CIRCLE]


async def test_an_area_leaving_the_jurisdiction_is_refused_with_the_part_outside(drawn):
    leaving = [[48.85, 2.40], [48.85, 2.52], [48.87, 2.52], [48.87, 2.40], [48.85, 2.40]]  # east of 2.47
    resp = await drawn.post("/v1/alerts", who="drawn", json=helpers.order(area={"polygons": [leaving]}))
    assert resp.status == 403
    body = await resp.json()
    assert body["field"] == "area.polygons"
    (part,) = body["outside_area"]["polygons"]
    assert min(lon for _, lon in part) == pytest.approx(2.47, abs=1e-3)
    assert (await (await drawn.get("/v1/alerts")).json())["alerts"] == []


async def test_shapes_need_a_drawn_jurisdiction(drawn):
    resp = await drawn.post("/v1/alerts", json=helpers.order(area={"polygons": [SQUARE]}))  # zones "75" only
    assert resp.status == 403 and (await resp.json())["field"] == "area.polygons"
    resp = await drawn.post("/v1/alerts", who="admin", json=helpers.order(area={"polygons": [SQUARE]}))
    assert resp.status == 202  # a national authority may draw anywhere


async def test_too_many_polygons_is_a_clear_422(drawn):
    tiny = [[48.85, 2.33], [48.85, 2.3301], [48.8501, 2.3301], [48.85, 2.33]]
    resp = await drawn.post("/v1/alerts", who="drawn", json=helpers.order(area={"polygons": [tiny] * 1001}))
    assert resp.status == 422
    body = await resp.json()
    assert body["field"].startswith("area.polygons") and "1000" in body["detail"]


# -- updates and cancels ------------------------------------------------------------------------------


def ref(alert: dict) -> dict:
    return {"sender": alert["sender"], "identifier": alert["identifier"], "sent": alert["sent"]}


async def test_an_update_replaces_what_has_not_started(daemon):
    first = await daemon.status((await daemon.send(channels=["sms"]))["id"])
    update = await daemon.send(msg_type="update", references=[ref(first)], channels=["sms"], template="evacuate")
    await daemon.drain()
    bodies = [r["body"] for r in await daemon.sms.received()]
    assert len(bodies) == 3  # one message each, the update's
    evacuate = {m["body"] for m in (await (await daemon.get(f"/v1/alerts/{update['id']}/messages")).json())["messages"]}
    assert set(bodies) <= evacuate
    earlier = await daemon.status(first["id"])
    assert earlier["state"] == "updated" and earlier["counts"]["sms"]["cancelled"] == 3
    assert earlier["referenced_by"] == [update["id"]]
    replaced = await (await daemon.get(f"/v1/alerts/{first['id']}/deliveries")).json()
    assert {d["last_error"] for d in replaced["deliveries"]} == {f"replaced by {update['id']}"}
    later = await daemon.status(update["id"])
    assert [r["id"] for r in later["references"]] == [first["id"]] and later["state"] == "completed"


async def test_an_update_reaches_those_reached_and_those_newly_inside(daemon):
    issuer = await helpers.add_token(daemon.store, model.Role.ISSUER, ["75", "69"])
    daemon.headers["issuer"] = helpers.auth_header(issuer)
    first = await daemon.status((await daemon.send(channels=["sms"]))["id"])
    await daemon.drain()
    await daemon.sms.reset()
    await daemon.send(msg_type="update", references=[ref(first)], channels=["sms"], area={"zones": [LYON]})
    await daemon.drain()
    assert await sms_to(daemon) == sorted(phone(i) for i in ("p-fr", "p-en", "p-ar", "p-lyon"))


async def test_a_cancel_stops_and_tells_only_those_reached(daemon):
    await daemon.sms.fail(status=400, code=21211, to=phone("p-en"), times=None)
    first = await daemon.status((await daemon.send(channels=["sms", "siren"]))["id"])
    await daemon.drain()
    await daemon.sms.reset()
    await daemon.siren.reset()
    cancel = await daemon.send(msg_type="cancel", references=[ref(first)], event=None, area=None, channels=None,
                               template=None, params={})
    await daemon.drain()
    assert await sms_to(daemon) == sorted(phone(i) for i in ("p-fr", "p-ar"))  # p-en was never reached
    all_clear = (await (await daemon.get(f"/v1/alerts/{cancel['id']}/messages")).json())["messages"]
    assert {r["body"] for r in await daemon.sms.received()} <= {m["body"] for m in all_clear}
    assert [(s["to"], s["command"]) for s in await daemon.siren.received()] == [("siren-paris-1", "cancel")]
    assert (await daemon.status(first["id"]))["state"] == "cancelled"


async def test_a_cancel_before_the_fan_out_leaves_nothing_to_send(daemon):
    first = await daemon.status((await daemon.send(channels=["sms"]))["id"])
    await daemon.send(msg_type="cancel", references=[ref(first)])
    await daemon.drain()
    assert await daemon.sms.received() == []
    assert (await daemon.status(first["id"]))["counts"]["sms"]["cancelled"] == 3


@pytest.mark.parametrize("change, field_message", [
    ({"references": [{"sender": "prefecture-test-75", "identifier": "nope", "sent": helpers.START.isoformat()}]},
     "no alert"),
    ({"identifier": "self", "references": [{"sender": "prefecture-test-75", "identifier": "self",
                                           "sent": helpers.START.isoformat()}]}, "itself"),
    ({"status": "exercise"}, "status"),
])
async def test_bad_references_are_refused(daemon, change, field_message):
    first = await daemon.status((await daemon.send(channels=["sms"]))["id"])
    resp = await daemon.post("/v1/alerts", json=helpers.order(msg_type="update", references=[ref(first)]) | change)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["field"] == "references.0" and field_message in body["detail"]


async def test_a_reference_to_a_later_alert_is_refused(daemon):
    first = await daemon.status((await daemon.send(channels=["sms"]))["id"])
    later = ref(first) | {"sent": (helpers.START + dt.timedelta(hours=1)).isoformat()}
    resp = await daemon.post("/v1/alerts", json=helpers.order(msg_type="update", references=[later]))
    assert resp.status == 422 and "later" in (await resp.json())["detail"]


async def test_an_update_without_references_is_refused(daemon):
    resp = await daemon.post("/v1/alerts", json=helpers.order(msg_type="update"))
    assert resp.status == 422 and (await resp.json())["field"] == "references"


# -- exercises, tests, drafts, expiry ---------------------------------------------------------------


@pytest.mark.parametrize("area, who", [
    ({"zones": ["75056"]}, "issuer"),
    ({"zones": ["*"]}, "admin"),
    ({"polygons": [[[40.0, -5.0], [40.0, 9.0], [52.0, 9.0], [52.0, -5.0], [40.0, -5.0]]]}, "admin"),
])
async def test_an_exercise_reaches_participants_only(daemon, area, who):
    participants = [p | {"exercise": True, "lat": 48.86, "lon": 2.35} for p in helpers.PEOPLE if p["id"] == "p-fr"]
    others = [p | {"lat": 48.86, "lon": 2.35} for p in helpers.PEOPLE if p["id"] != "p-fr"]
    assert (await daemon.post("/v1/subscribers", who="admin", json=participants + others)).status == 200
    resp = await daemon.post("/v1/alerts", who=who, json=helpers.order(status="exercise", area=area, topics=True))
    assert resp.status == 202, await resp.text()
    await daemon.drain()
    sms, push = await daemon.sms.received(), await daemon.push.received()
    assert [r["to"] for r in sms] == ["+33612345678"] and [r["to"] for r in push] == ["tok-fr-000001"]
    assert sms[0]["body"].startswith("EXERCICE")
    assert {s["command"] for s in await daemon.siren.received()} <= {"silent_test"}


async def test_a_test_goes_to_the_test_recipients_only(daemon):
    settings = daemon.dispatcher.settings
    daemon.dispatcher.settings = dataclasses.replace(settings, test_recipients=("p-en", "siren-paris-1"))
    await daemon.send(status="test")
    await daemon.drain()
    assert await sms_to(daemon) == [phone("p-en")]
    assert [(s["to"], s["command"]) for s in await daemon.siren.received()] == [("siren-paris-1", "test")]


async def test_a_draft_is_rendered_on_demand_and_never_sent(daemon):
    draft = await daemon.send(status="draft")
    await daemon.drain()
    assert await daemon.sms.received() == [] and await daemon.siren.received() == []
    assert (await daemon.status(draft["id"]))["state"] == "draft"
    messages = (await (await daemon.get(f"/v1/alerts/{draft['id']}/messages")).json())["messages"]
    assert {(m["locale"], m["channel"]) for m in messages} >= {("fr", "sms"), ("ar", "push"), ("en", "siren")}


async def test_at_expiry_nothing_not_started_is_sent(daemon):
    sent = await daemon.send(expires=(helpers.START + dt.timedelta(minutes=10)).isoformat())
    daemon.clock.advance(601)
    await daemon.drain()
    assert await daemon.sms.received() == [] and await daemon.push.received() == []
    status = await daemon.status(sent["id"])
    assert status["state"] == "expired"
    assert status["totals"]["expired"] == sum(status["totals"].values()) > 0


async def test_an_update_silences_the_sirens_its_area_leaves_out(daemon):
    issuer = await helpers.add_token(daemon.store, model.Role.ISSUER, ["75", "69"])
    daemon.headers["issuer"] = helpers.auth_header(issuer)
    first = await daemon.status((await daemon.send(channels=["siren"], area={"zones": ["75056", LYON]}))["id"])
    await daemon.drain()
    await daemon.siren.reset()
    await daemon.send(msg_type="update", references=[ref(first)], channels=["siren"], area={"zones": [LYON]})
    await daemon.drain()
    assert sorted((s["to"], s["command"]) for s in await daemon.siren.received()) == [
        ("siren-lyon-1", "activate"), ("siren-paris-1", "cancel"),
    ]


async def test_a_completed_alert_stays_completed_when_it_expires(daemon):
    sent = await daemon.send(expires=(helpers.START + dt.timedelta(minutes=10)).isoformat())
    await daemon.drain()
    daemon.clock.advance(601)
    await housekeeping.run(daemon.dispatcher)
    assert (await daemon.status(sent["id"]))["state"] == "completed"


async def test_a_draft_approved_is_sent_as_of_the_approval(daemon):
    draft = await daemon.send(status="draft")
    daemon.clock.advance(60)
    approver = helpers.auth_header(await helpers.add_token(daemon.store, model.Role.ISSUER, ["75056"], cell="Mairie"))
    resp = await daemon.client.post(f"/v1/alerts/{draft['id']}/approve", headers=approver)
    assert resp.status == 202, await resp.text()
    await daemon.drain()
    assert len(await daemon.sms.received()) == 3
    alert = await daemon.status(draft["id"])
    assert alert["status"] == "actual" and alert["state"] == "completed"
    assert alert["sent"] == (helpers.START + dt.timedelta(seconds=60)).isoformat()
    entries = (await (await daemon.get(f"/v1/audit?subject={draft['id']}", who="admin")).json())["entries"]
    assert [(e["action"], e["cell"], e["user"]) for e in entries] == [
        ("approved", "mairie-75056", "issuer@mairie-75056"),
        ("created", "prefecture-test-75", "issuer@prefecture-test-75"),
    ]
    again = await daemon.client.post(f"/v1/alerts/{draft['id']}/approve", headers=approver)
    assert again.status == 409  # issued once


async def test_a_draft_may_be_approved_as_an_exercise_only_by_a_cell_covering_it(daemon):
    draft = await daemon.send(status="draft")
    lyon = helpers.auth_header(await helpers.add_token(daemon.store, model.Role.ISSUER, ["69"], cell="Lyon"))
    assert (await daemon.client.post(f"/v1/alerts/{draft['id']}/approve", headers=lyon)).status == 404
    operator = await daemon.post(f"/v1/alerts/{draft['id']}/approve", who="operator")
    assert operator.status == 403
    bad = await daemon.post(f"/v1/alerts/{draft['id']}/approve", json={"status": "draft"})
    assert bad.status == 422 and (await bad.json())["field"] == "status"
    resp = await daemon.post(f"/v1/alerts/{draft['id']}/approve", json={"status": "exercise"})
    assert resp.status == 202
    await daemon.drain()
    assert await daemon.sms.received() == []  # nobody takes part in exercises here
    assert (await daemon.status(draft["id"]))["status"] == "exercise"


async def test_no_exercise_stops_an_actual_alert_even_through_a_draft(daemon):
    first = await daemon.status((await daemon.send(channels=["sms"]))["id"])
    await daemon.drain()
    await daemon.sms.reset()
    draft = await daemon.send(msg_type="cancel", status="draft", references=[ref(first)])
    resp = await daemon.post(f"/v1/alerts/{draft['id']}/approve", json={"status": "exercise"})
    assert resp.status == 422 and (await resp.json())["field"] == "references.0"
    await daemon.drain()
    assert await daemon.sms.received() == [] and (await daemon.status(first["id"]))["state"] == "completed"
    assert (await daemon.post(f"/v1/alerts/{draft['id']}/approve")).status == 202  # as actual: it may
    await daemon.drain()
    assert len(await daemon.sms.received()) == 3


async def test_nothing_references_a_draft(daemon):
    draft = await daemon.status((await daemon.send(status="draft"))["id"])
    cancel = helpers.order(msg_type="cancel", status="draft", references=[ref(draft)])
    resp = await daemon.post("/v1/alerts", json=cancel)
    assert resp.status == 422 and "draft" in (await resp.json())["detail"]


async def test_a_cancel_after_an_update_stops_the_whole_incident(daemon):
    first = await daemon.status((await daemon.send(channels=["sms", "siren"]))["id"])
    await daemon.drain()
    update = await daemon.status((await daemon.send(msg_type="update", references=[ref(first)],
                                                   channels=["sms", "siren"], template="evacuate"))["id"])
    await daemon.sms.reset()
    await daemon.siren.reset()
    await daemon.send(msg_type="cancel", references=[ref(update)])  # before the update went out
    await daemon.drain()
    assert len(await daemon.sms.received()) == 3  # the all-clear, to everyone the first alert reached
    assert [(s["to"], s["command"]) for s in await daemon.siren.received()] == [("siren-paris-1", "cancel")]
    assert (await daemon.status(update["id"]))["state"] == "cancelled"
    assert (await daemon.status(first["id"]))["state"] == "updated"


async def test_an_exercise_cancel_reaches_only_those_still_taking_part(daemon):
    both = [p | {"exercise": True} for p in helpers.PEOPLE if p["id"] in ("p-fr", "p-en")]
    assert (await daemon.post("/v1/subscribers", who="admin", json=both)).status == 200
    first = await daemon.status((await daemon.send(status="exercise", channels=["sms"]))["id"])
    await daemon.drain()
    assert len(await daemon.sms.received()) == 2
    await daemon.sms.reset()
    left = [p for p in helpers.PEOPLE if p["id"] == "p-en"]  # no longer takes part
    assert (await daemon.post("/v1/subscribers", who="admin", json=left)).status == 200
    await daemon.send(status="exercise", msg_type="cancel", references=[ref(first)])
    await daemon.drain()
    assert await sms_to(daemon) == [phone("p-fr")]


async def test_an_exercise_update_reaches_participants_only(daemon):
    participant = [p | {"exercise": True} for p in helpers.PEOPLE if p["id"] == "p-fr"]
    assert (await daemon.post("/v1/subscribers", who="admin", json=participant)).status == 200
    first = await daemon.status((await daemon.send(status="exercise", channels=["sms", "push"]))["id"])
    await daemon.drain()
    await daemon.sms.reset()
    await daemon.push.reset()
    resp = await daemon.post("/v1/alerts", who="admin", json=helpers.order(
        status="exercise", msg_type="update", references=[ref(first)], channels=["sms", "push"],
        area={"zones": ["*"]}, topics=True,
    ))
    assert resp.status == 202, await resp.text()
    await daemon.drain()
    assert await sms_to(daemon) == [phone("p-fr")]
    assert [r["to"] for r in await daemon.push.received()] == ["tok-fr-000001"]  # and no topic
