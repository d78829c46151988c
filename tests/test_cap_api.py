"""CAP 1.2 through the API: in, out, round trip, lifecycle by CAP messages, the Atom feed."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from lxml import etree

from alertd import cap
from tests import helpers

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CORPUS = Path(__file__).parent / "cap"
SENT = "2026-11-26T11:00:00+01:00"  # the test clock's now, in Paris time
EXPIRES = "2026-11-26T14:00:00+01:00"


@pytest.fixture
def alerts_settings() -> str:
    """tests/cap holds documents sent in 2030, years after the test clock: no skew refuses them here."""
    return "cap_sent_skew_hours = 100000"


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


def published(name: str) -> bytes:
    """A valid document of tests/cap, for the national cell: the Paris prefecture's are re-signed by
    COGIC (a sender belongs to one cell, and Paris's is the issuer's; they draw shapes, which only a
    boundless cell may)."""
    paris = f"<sender>{helpers.PARIS_SENDER}</sender>".encode()
    return (CORPUS / "valid" / name).read_bytes().replace(paris, f"<sender>{helpers.NATIONAL_SENDER}</sender>".encode())


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
    sent = await accepted(daemon, document(infos=info("fr", "Crue", "Montez.", parameters=CHANNELS)))
    from_cap = await daemon.status(sent["id"])
    order = helpers.order(identifier="FR-75-0002", channels=["sms", "siren"], template=None, params={}, locale="fr",
                          category="Met",
                          texts={"fr": {"headline": "Crue", "instruction": "Montez.",
                                        "description": "La Seine déborde."}},
                          expires=EXPIRES, event="Inondation", area={"zones": ["75056"], "description": "Paris"})
    from_json = await daemon.status((await daemon.send(**order))["id"])
    different = {"id", "identifier", "sender", "counts", "totals", "state"}
    assert {k: v for k, v in from_cap.items() if k not in different} == {
        k: v for k, v in from_json.items() if k not in different
    }


# Names the corpus's templates as this deployment's (the corpus is about CAP, not our templates).
OUR_TEMPLATES = {b">inondation<": b">shelter_in_place<", b">confinement<": b">shelter_in_place<",
                 b">canicule<": b">shelter_in_place<"}


@pytest.mark.parametrize("name", ["crue-paris-fr.xml", "multilingue-crue.xml", "exercice-seveso.xml",
                                  "ressources-canicule.xml", "test-sirenes.xml"])
async def test_round_trip_cap_in_store_cap_out(daemon, name):
    original = published(name)
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
    # The sender is the cell's (its id, for the cells tests make).
    assert (doc.identifier, doc.sender, doc.sent) == ("FR-75-JSON", "prefecture-test-75", helpers.START)
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


async def test_a_cap_document_over_its_limit_is_413_and_nothing_is_kept(daemon):
    resp = await post_cap(daemon, document() + b"<!--" + b"x" * cap.MAX_BYTES + b"-->")
    problem = await resp.json()
    assert resp.status == 413 and problem["status"] == 413 and problem["type"].endswith("/too-large")
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
    infos = info("fr", "Évacuez Paris", "Partez.") + info("fr", "Restez", "Restez.", area=lyon)
    resp = await post_cap(daemon, document(infos=infos))
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


# -- documents as public publishers write them ------------------------------------------------------

# Each dates `effective` before `sent`, as those publishers do; written after their feeds (tests/cap/valid).
PUBLISHED = ["eccc-orages-montreal-en-fr-ca.xml", "bom-canicule-sydney-en-au.xml",
             "ipaws-evacuation-miami-dade-en-es-419.xml", "dwd-gewitter-muenchen-de-en.xml",
             "meteoalarm-vent-finistere-fr-en.xml", "effective-before-sent.xml"]


@pytest.mark.parametrize("name", PUBLISHED)
async def test_a_publisher_s_document_is_accepted_and_given_back_as_received(daemon, name):
    original = published(name)
    resp = await post_cap(daemon, original, who="admin")
    assert resp.status == 202, await resp.text()
    alert_id = (await resp.json())["id"]
    daemon.clock.advance(3600)  # given back as sent, never re-dated
    out = await daemon.client.get(f"/v1/alerts/{alert_id}.xml", headers=daemon.headers["admin"])
    assert elements(await out.read()) == elements(original)


def located(id_, locale, phone, lat, lon):
    return {"id": id_, "phone": phone, "locale": locale, "zones": ["75056"], "lat": lat, "lon": lon}


async def test_each_reader_gets_the_text_closest_to_their_language(daemon):
    resp = await daemon.post("/v1/subscribers", who="admin", json=[
        located("mtl-en", "en-CA", "+33655000011", 45.55, -73.7),
        located("mtl-fr", "fr-CA", "+33655000012", 45.55, -73.7),
        located("mtl-fr-fr", "fr", "+33655000013", 45.56, -73.7),
        located("mia-es", "es-419", "+33655000021", 25.8, -80.2),
        located("mia-mx", "es-MX", "+33655000022", 25.8, -80.2),
        located("mia-zh", "zh-Hant-TW", "+33655000023", 25.8, -80.2),
    ])
    assert resp.status == 200, await resp.text()
    for name in ("eccc-orages-montreal-en-fr-ca.xml", "ipaws-evacuation-miami-dade-en-es-419.xml"):
        resp = await post_cap(daemon, published(name), who="admin")  # shapes: a boundless token
        assert resp.status == 202, await resp.text()
    await daemon.drain()
    sms = {r["to"]: r["body"] for r in await daemon.sms.received()}
    assert sms["+33655000011"].startswith("severe thunderstorm warning in effect. Take cover")
    assert sms["+33655000012"].startswith("alerte d'orages violents en vigueur. Mettez-vous à l'abri")
    assert sms["+33655000013"] == sms["+33655000012"]  # French: the Canadian French text
    assert sms["+33655000021"].startswith("Orden de evacuación para la Zona A. Salga de la Zona A ahora.")
    assert sms["+33655000022"] == sms["+33655000021"]
    assert sms["+33655000023"].startswith("Evacuation order for Zone A.")  # no Chinese: the first info


async def test_a_cap_alert_already_past_is_refused_saying_so(daemon):
    body = document(infos=info("fr", "Crue", "Montez.")).replace(EXPIRES.encode(), b"2026-11-26T10:30:00+01:00")
    resp = await post_cap(daemon, body)
    assert resp.status == 422
    problem = (await resp.json())["errors"][0]
    assert problem["field"] == "/alert/info[1]/expires"
    assert "expired at 2026-11-26T10:30:00+01:00" in problem["message"] and "already past" in problem["message"]


async def test_a_json_order_in_an_extended_language_tag(daemon):
    await daemon.post("/v1/subscribers", who="admin", json=[
        {"id": "p-419", "phone": "+33655000031", "locale": "es-419", "zones": ["75056"]},
    ])
    sent = await daemon.send(template=None, params={}, locale="es-419", channels=["sms"], texts={
        "es-419": {"headline": "Inundación", "instruction": "Suba a los pisos altos."},
        "fr-CA": {"headline": "Inondation", "instruction": "Montez à l'étage."},
    })
    await daemon.drain()
    sms = {r["to"]: r["body"] for r in await daemon.sms.received()}
    assert sms["+33655000031"] == "Inundación. Suba a los pisos altos."
    assert sms["+33612345678"] == "Inondation. Montez à l'étage."  # fr: the closest text, fr-CA
    doc = cap.parse(await (await daemon.client.get(f"/v1/alerts/{sent['id']}.xml")).read())
    assert [i.language for i in doc.infos] == ["es-419", "fr-CA"]


# -- CAP out of a template alert -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def xsd():
    return etree.XMLSchema(etree.parse(str(CORPUS / "CAP-v1.2.xsd")))


async def test_a_template_alert_comes_out_with_its_words_in_each_locale(daemon, xsd):
    params = {"reason": "crue de la Seine", "place": "Paris"}
    sent = await daemon.send(identifier="FR-75-TPL", category="Met", params=params)
    await daemon.drain()
    resp = await daemon.client.get(f"/v1/alerts/{sent['id']}.xml")
    xml = await resp.read()
    xsd.assertValid(etree.fromstring(xml))
    doc = cap.parse(xml)
    assert [i.language for i in doc.infos] == ["fr", "ar", "en", "es"]  # the order's locale first
    pushes = {p["to"]: (p["title"], p["body"]) for p in await daemon.push.received()}
    words = {i.language: (i.headline, i.description) for i in doc.infos}
    assert words["fr"] == pushes["tok-fr-000001"] and words["es"] == pushes["tok-es-000002"]  # what people got
    assert words["en"][0] == "Shelter in place now - Paris" and "crue de la Seine." in words["en"][1]
    assert all(i.categories == ("Met",) and i.event == "Inondation" for i in doc.infos)
    assert all(("template", "shelter_in_place") in i.parameters for i in doc.infos)
    assert cap.parse(cap.dumps(doc)) == doc
    daemon.clock.advance(3600)
    assert await (await daemon.client.get(f"/v1/alerts/{sent['id']}.xml")).read() == xml  # never re-dated


async def test_the_category_comes_from_the_order_or_the_document(daemon):
    default = await daemon.send(identifier="FR-75-DEF")
    xml = await (await daemon.client.get(f"/v1/alerts/{default['id']}.xml")).read()
    assert {i.categories for i in cap.parse(xml).infos} == {("Safety",)}
    resp = await daemon.post("/v1/alerts", json=helpers.order(category="Weather"))
    assert resp.status == 422 and (await resp.json())["field"] == "category"
    resp = await post_cap(daemon, published("crue-paris-fr.xml").replace(
        b">inondation<", b">shelter_in_place<"), who="admin")
    from_cap = await resp.json()
    assert (await daemon.status(from_cap["id"]))["category"] == "Met"
    xml = await (await daemon.client.get(f"/v1/alerts/{from_cap['id']}.xml")).read()
    assert cap.parse(xml).infos[0].categories == ("Met", "Safety")
