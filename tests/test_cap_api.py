"""CAP 1.2 through the API: in, out, round trip, lifecycle by CAP messages, the Atom feed."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from alertd import cap
from tests import helpers

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CORPUS = Path(__file__).parent / "cap"
SENT = "2026-11-26T11:00:00+01:00"  # the test clock's now, in Paris time
EXPIRES = "2026-11-26T14:00:00+01:00"


def document(identifier="FR-75-0001", msg_type="Alert", status="Actual", scope="Public", references="",
             infos=None, extra="") -> bytes:
    refs = f"<references>{references}</references>" if references else ""
    infos = infos if infos is not None else INFO_FR + INFO_EN
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP_NS}">
  <identifier>{identifier}</identifier>
  <sender>prefecture-75@interieur.gouv.fr</sender>
  <sent>{SENT}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>{scope}</scope>{extra}{refs}{infos}
</alert>""".encode()


def info(language, headline, instruction, area="<geocode><valueName>INSEE</valueName><value>75056</value></geocode>",
         parameters=""):
    return f"""
  <info>
    <language>{language}</language>
    <category>Met</category>
    <event>Inondation</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <expires>{EXPIRES}</expires>
    <headline>{headline}</headline>
    <description>La Seine déborde.</description>
    <instruction>{instruction}</instruction>{parameters}
    <area><areaDesc>Paris</areaDesc>{area}</area>
  </info>"""


INFO_FR = info("fr-FR", "Crue de la Seine", "Montez dans les étages.")
INFO_EN = info("en-US", "Seine flood", "Go to upper floors.")
CHANNELS = "<parameter><valueName>channels</valueName><value>sms siren</value></parameter>"


async def post_cap(daemon, body: bytes, who="issuer"):
    return await daemon.post("/v1/alerts", who=who, data=body, headers={"Content-Type": "application/cap+xml"})


async def accepted(daemon, body: bytes) -> dict:
    resp = await post_cap(daemon, body)
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def test_a_cap_alert_reaches_each_citizen_in_their_language(daemon):
    sent = await accepted(daemon, document())
    await daemon.drain()
    sms = {r["to"]: r["body"] for r in await daemon.sms.received()}
    assert "Crue de la Seine" in sms["+33612345678"] and "Seine flood" in sms["+33622334455"]
    assert "Crue de la Seine" in sms["+33633445566"]  # Arabic has no info: the first language, French
    alert = await daemon.status(sent["id"])
    assert alert["identifier"] == "FR-75-0001" and alert["sender"] == "prefecture-75@interieur.gouv.fr"
    assert alert["sent"] == "2026-11-26T10:00:00+00:00" and alert["area"]["zones"] == ["75056"]
    assert alert["channels"] == ["sms", "push", "siren"]  # all configured: the document names none
    assert alert["state"] == "completed"


async def test_the_same_order_in_cap_and_json_makes_the_same_alert(daemon):
    from_cap = await daemon.status((await accepted(daemon, document(infos=info("fr", "Crue", "Montez.", parameters=CHANNELS))))["id"])
    order = helpers.order(identifier="FR-75-0002", channels=["sms", "siren"], template=None, params={}, locale="fr",
                          texts={"fr": {"headline": "Crue", "instruction": "Montez.", "description": "La Seine déborde."}},
                          expires=EXPIRES, event="Inondation", area={"zones": ["75056"], "description": "Paris"})
    from_json = await daemon.status((await daemon.send(**order))["id"])
    different = {"id", "identifier", "sender", "counts", "totals", "state"}
    assert {k: v for k, v in from_cap.items() if k not in different} == {
        k: v for k, v in from_json.items() if k not in different
    }


# Names the corpus's templates as this deployment's (the corpus is about CAP, not our templates).
OUR_TEMPLATES = {b">inondation<": b">shelter_in_place<", b">confinement<": b">shelter_in_place<", b">canicule<": b">shelter_in_place<"}


@pytest.mark.parametrize("name", ["crue-paris-fr.xml", "multilingue-crue.xml", "exercice-seveso.xml",
                                  "ressources-canicule.xml", "test-sirenes.xml"])
async def test_round_trip_cap_in_store_cap_out(daemon, name):
    original = (CORPUS / "valid" / name).read_bytes()
    for theirs, ours in OUR_TEMPLATES.items():
        original = original.replace(theirs, ours)
    resp = await post_cap(daemon, original, who="admin")
    assert resp.status == 202, await resp.text()
    out = await daemon.client.get(f"/v1/alerts/{(await resp.json())['id']}.xml", headers=daemon.headers["admin"])
    assert out.status == 200 and out.content_type == "application/cap+xml"
    returned = await out.read()
    assert cap.parse(returned) == cap.parse(original)
    assert elements(returned) == elements(original)  # every element, its text, in order


def elements(xml: bytes) -> list[tuple[str, str]]:
    return [(e.tag, (e.text or "").strip()) for e in ET.fromstring(xml).iter()]


async def test_a_json_alert_comes_out_as_valid_cap(daemon):
    sent = await daemon.send(identifier="FR-75-JSON", area={"zones": ["75056"], "polygons": [], "circles": []})
    out = await daemon.client.get(f"/v1/alerts/{sent['id']}.xml")  # public and actual: no token needed
    xml = await out.read()
    doc = cap.parse(xml)
    assert (doc.identifier, doc.sender, doc.sent) == ("FR-75-JSON", "prefecture-test", helpers.START)
    assert b"<sent>2026-11-26T10:00:00-00:00</sent>" in xml  # CAP 1.2 spells UTC -00:00
    assert doc.infos[0].parameters[0] == ("template", "shelter_in_place")
    assert doc.infos[0].areas[0].geocodes == (("INSEE", "75056"),)


async def test_an_invalid_document_lists_every_violation_and_stores_nothing(daemon):
    body = document(identifier="bad id", status="Real").replace(SENT.encode(), b"2026-11-26T10:00:00Z")
    resp = await post_cap(daemon, body)
    assert resp.status == 422
    fields = {e["field"] for e in (await resp.json())["errors"]}
    assert {"/alert/identifier", "/alert/status", "/alert/sent"} <= fields
    assert (await (await daemon.get("/v1/alerts")).json())["alerts"] == []


@pytest.mark.parametrize("name", ["bomb.xml", "xxe.xml", "dtd-external.xml"])
async def test_hostile_xml_is_refused_fast(daemon, name):
    started = time.perf_counter()
    resp = await post_cap(daemon, (CORPUS / "invalid" / name).read_bytes())
    assert resp.status == 400 and time.perf_counter() - started < 0.5
    assert (await (await daemon.get("/v1/alerts")).json())["alerts"] == []


@pytest.mark.parametrize("change, field", [
    ({"scope": "Restricted", "extra": "<restriction>Services only</restriction>"}, "/alert/scope"),
    ({"infos": info("fr", "x", "y", area="<geocode><valueName>EMMA_ID</valueName><value>FR123</value></geocode>")},
     "/alert/info[1]/area"),
    ({"infos": info("fr", "x", "y", area="<geocode><valueName>INSEE</valueName><value>99999</value></geocode>")},
     "/alert/info[1]/area[1]/geocode[1]/value"),
])
async def test_what_alertd_cannot_broadcast_is_refused(daemon, change, field):
    resp = await post_cap(daemon, document(**change))
    assert resp.status == 422, await resp.text()
    assert field in {e["field"] for e in (await resp.json())["errors"]}


async def test_cap_update_and_cancel_carry_the_alert_through_its_life(daemon):
    first = await accepted(daemon, document(infos=info("fr", "Crue", "Montez.", parameters=CHANNELS)))
    triplet = f"prefecture-75@interieur.gouv.fr,FR-75-0001,{SENT}"
    update = await accepted(daemon, document("FR-75-0001-U", "Update", references=triplet,
                                             infos=info("fr", "Crue aggravée", "Évacuez.", parameters=CHANNELS)))
    await daemon.drain()
    assert {r["body"] for r in await daemon.sms.received()} == {"Crue aggravée. Évacuez."}
    assert (await daemon.status(first["id"]))["state"] == "updated"
    cancel = await accepted(daemon, document(
        "FR-75-0001-C", "Cancel", infos="",
        references=f"{triplet} prefecture-75@interieur.gouv.fr,FR-75-0001-U,{SENT}",
    ))
    await daemon.drain()
    assert (await daemon.status(update["id"]))["state"] == "cancelled"
    chain = await daemon.status(cancel["id"])
    assert [r["id"] for r in chain["references"]] == [first["id"], update["id"]]
    assert (await daemon.status(first["id"]))["referenced_by"] == [update["id"], cancel["id"]]
    commands = [s["command"] for s in await daemon.siren.received()]
    assert commands.count("cancel") == 1


async def test_the_feed_lists_public_actual_unexpired_alerts(daemon):
    actual = await accepted(daemon, document())
    await daemon.send(status="exercise", identifier="EX-1")
    await daemon.send(status="draft", identifier="DR-1")
    await daemon.send(identifier="SOON", expires=(helpers.START + dt.timedelta(minutes=5)).isoformat())
    daemon.clock.advance(600)
    resp = await daemon.client.get("/v1/feed.atom")  # no token: a public feed
    assert resp.status == 200 and resp.content_type == "application/atom+xml"
    feed = ET.fromstring(await resp.read())
    assert feed.tag == "{http://www.w3.org/2005/Atom}feed"
    atom = "{http://www.w3.org/2005/Atom}"
    links = [e.find(f"{atom}link").get("href") for e in feed.iter(f"{atom}entry")]
    assert links == [f"http://127.0.0.1:{daemon.client.port}/v1/alerts/{actual['id']}.xml"]
    assert (await daemon.client.get(links[0].split(str(daemon.client.port))[1])).status == 200


async def test_a_non_public_cap_document_needs_a_token(daemon):
    exercise = await daemon.send(status="exercise")
    assert (await daemon.client.get(f"/v1/alerts/{exercise['id']}.xml")).status == 401
    resp = await daemon.client.get(f"/v1/alerts/{exercise['id']}.xml", headers=daemon.headers["operator"])
    assert resp.status == 200 and cap.parse(await resp.read()).status == "Exercise"


async def test_the_feed_leaves_out_what_an_update_replaced(daemon):
    first = await daemon.status((await daemon.send(identifier="FIRST"))["id"])
    ref = {"sender": first["sender"], "identifier": first["identifier"], "sent": first["sent"]}
    update = await daemon.send(msg_type="update", references=[ref], identifier="SECOND")
    await daemon.drain()
    feed = ET.fromstring(await (await daemon.client.get("/v1/feed.atom")).read())
    atom = "{http://www.w3.org/2005/Atom}"
    assert [e.find(f"{atom}link").get("href").rsplit("/", 1)[1] for e in feed.iter(f"{atom}entry")] == [
        f"{update['id']}.xml"
    ]
    assert (await daemon.client.get(f"/v1/alerts/{first['id']}.xml")).status == 200  # still public, not in force


async def test_two_infos_in_one_language_are_refused(daemon):
    lyon = "<geocode><valueName>INSEE</valueName><value>69123</value></geocode>"
    resp = await post_cap(daemon, document(infos=info("fr", "Évacuez Paris", "Partez.") + info("fr", "Restez", "Restez.", area=lyon)))
    assert resp.status == 422 and (await resp.json())["field"] == "/alert/info[2]/language"


async def test_each_recipient_gets_the_text_of_their_own_language_first(daemon):
    await daemon.post("/v1/subscribers", who="admin", json=[
        {"id": "p-de", "phone": "+33655000009", "locale": "de", "zones": ["75056"]}
    ])
    await accepted(daemon, document(infos=info("fr", "Crue", "Montez.", parameters=CHANNELS)
                                    + info("de", "Hochwasser", "Gehen Sie nach oben.", parameters=CHANNELS)))
    await daemon.drain()
    sms = {r["to"]: r["body"] for r in await daemon.sms.received()}
    assert "Hochwasser" in sms["+33655000009"] and "Crue" in sms["+33612345678"]


async def test_an_info_with_only_a_description_is_sent(daemon):
    body = document(infos=info("fr", "x", "y", parameters=CHANNELS)).replace(b"<headline>x</headline>", b"").replace(
        b"<instruction>y</instruction>", b"")
    await accepted(daemon, body)
    await daemon.drain()
    assert all("La Seine déborde" in r["body"] or "Inondation" in r["body"] for r in await daemon.sms.received())


async def test_a_reference_problem_is_located_by_xpath(daemon):
    triplet = f"prefecture-75@interieur.gouv.fr,NOPE,{SENT}"
    resp = await post_cap(daemon, document("FR-75-U", "Update", references=triplet))
    assert resp.status == 422 and (await resp.json())["field"] == "/alert/references"
