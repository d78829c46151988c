"""A CAP message's identity belongs to the cell that posts it: its sender is one of the cell's, its
triplet (sender, identifier, sent) names one message, and its `sent` is close to now."""

from __future__ import annotations

import re

import pytest

from alertd import config, demo, errors, model
from tests import helpers, test_test_alerts as testers

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
PARIS_AREA = "<geocode><valueName>INSEE</valueName><value>75056</value></geocode>"
LYON_AREA = "<geocode><valueName>INSEE</valueName><value>69123</value></geocode>"
NOW = "2026-11-26T11:00:00+01:00"  # the test clock's now, in Paris time
PARIS_PHONES = ["+33612345678", "+33622334455", "+33633445566"]  # the subscribers of 75056 with a phone


def document(identifier="FR-75-0001", sender=helpers.PARIS_SENDER, sent=NOW, msg_type="Alert", status="Actual",
             references="", headline="Crue de la Seine", area=PARIS_AREA, infos=True) -> bytes:
    refs = f"<references>{references}</references>" if references else ""
    info = f"""
  <info>
    <language>fr-FR</language>
    <category>Met</category>
    <event>Inondation</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <expires>2026-11-27T14:00:00+01:00</expires>
    <headline>{headline}</headline>
    <instruction>Montez dans les étages.</instruction>
    <parameter><valueName>channels</valueName><value>sms</value></parameter>
    <area><areaDesc>Paris</areaDesc>{area}</area>
  </info>""" if infos else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP_NS}">
  <identifier>{identifier}</identifier>
  <sender>{sender}</sender>
  <sent>{sent}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>{refs}{info}
</alert>""".encode()


async def post_cap(daemon, body: bytes, who="issuer", path="/v1/alerts", headers=None):
    headers = {"Content-Type": "application/cap+xml"} | (headers or {})
    return await daemon.post(path, who=who, data=body, headers=headers)


async def stored(daemon) -> list[dict]:
    return (await (await daemon.get("/v1/alerts")).json())["alerts"]


async def sms_to(daemon) -> list[str]:
    await daemon.drain()
    return sorted(r["to"] for r in await daemon.sms.received())


async def problem(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    return await resp.json()


# -- the sender is the cell's ------------------------------------------------------------------------


async def test_a_document_signed_with_another_cells_sender_is_refused_and_nothing_is_stored(daemon):
    body = document(sender=helpers.NATIONAL_SENDER)  # the national cell's
    refused = await problem(await post_cap(daemon, body), 403)
    assert refused["type"] == errors.ForeignSender.type and refused["field"] == "/alert/sender"
    assert "'cogic@interieur.gouv.fr' is not one of your cell's CAP senders" in refused["detail"]
    assert refused["detail"].endswith(", ".join(helpers.ISSUER_SENDERS))  # its own senders, not another's
    assert "vigilance@meteo.fr" not in refused["detail"]
    assert (await post_cap(daemon, body, path="/v1/preview")).status == 403
    assert await stored(daemon) == [] and await sms_to(daemon) == []


async def test_another_cell_can_neither_update_cancel_nor_squat_a_cells_alerts(daemon):
    first = await problem(await post_cap(daemon, document()), 202)
    assert await sms_to(daemon) == PARIS_PHONES
    daemon.headers["sdis"] = helpers.auth_header(await helpers.add_token(
        daemon.store, model.Role.ISSUER, ["75"], cell="SDIS", senders=["sdis-test-75@interieur.gouv.fr"]))
    triplet = f"{helpers.PARIS_SENDER},FR-75-0001,{NOW}"
    for body in (document("FR-75-0001-U", msg_type="Update", references=triplet, headline="Fausse alerte"),
                 document("FR-75-0001-C", msg_type="Cancel", references=triplet, infos=False),
                 document("FR-75-0002", headline="Squat")):
        refused = await problem(await post_cap(daemon, body, who="sdis"), 403)
        assert refused["field"] == "/alert/sender"
    assert [a["id"] for a in await stored(daemon)] == [first["id"]]
    assert (await daemon.status(first["id"]))["state"] == "completed" and await sms_to(daemon) == PARIS_PHONES
    # Paris's next identifier is still Paris's.
    assert (await post_cap(daemon, document("FR-75-0002"))).status == 202


# -- the triplet names one message ---------------------------------------------------------------------


async def test_the_same_message_posted_again_is_the_first_alert_whatever_its_whitespace(daemon):
    body = document()
    first = await problem(await post_cap(daemon, body), 202)
    assert await sms_to(daemon) == PARIS_PHONES
    squeezed = re.sub(rb">\s+<", b"><", body).replace(b"<alert ", b"<alert  xmlns:x='urn:x' ")
    again = await post_cap(daemon, squeezed)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == first["id"]
    assert len(await stored(daemon)) == 1 and await sms_to(daemon) == PARIS_PHONES  # sent once


async def test_the_same_identifier_with_other_content_is_refused_saying_why(daemon):
    first = await problem(await post_cap(daemon, document()), 202)
    refused = await problem(await post_cap(daemon, document(headline="Crue de la Marne")), 409)
    assert refused["type"] == "https://alertd.example/problems/identifier-reused"
    assert refused["field"] == "/alert/identifier"
    assert refused["detail"] == (
        "sender 'prefecture-75@interieur.gouv.fr' already used identifier 'FR-75-0001' at 2026-11-26T10:00:00-00:00 "
        "for a different message; CAP identifiers are unique per sender: give this message a new identifier"
    )
    assert [a["id"] for a in await stored(daemon)] == [first["id"]]
    assert await sms_to(daemon) == PARIS_PHONES  # the first message only


async def test_the_same_identifier_sent_at_another_time_is_refused(daemon):
    await problem(await post_cap(daemon, document()), 202)
    refused = await problem(await post_cap(daemon, document(sent="2026-11-26T11:05:00+01:00")), 409)
    assert refused["type"] == errors.IdentifierReused.type and refused["field"] == "/alert/sent"
    assert "(this message says 2026-11-26T10:05:00-00:00)" in refused["detail"]
    assert len(await stored(daemon)) == 1


async def test_the_idempotency_key_header_is_ignored_for_cap(daemon):
    key = {"Idempotency-Key": "K-1"}
    first = await problem(await post_cap(daemon, document(), headers=key), 202)
    other = await post_cap(daemon, document("FR-75-0002", headline="Autre crue"), headers=key)
    assert other.status == 202 and "Idempotent-Replayed" not in other.headers  # its own identifier: a new alert
    again = await post_cap(daemon, document(), headers={"Idempotency-Key": "K-2"})
    assert again.headers.get("Idempotent-Replayed") == "true" and (await again.json())["id"] == first["id"]
    assert len(await stored(daemon)) == 2


# -- sent is close to now -----------------------------------------------------------------------------------


async def test_a_document_sent_more_than_a_day_from_now_is_refused(daemon):
    for sent in ("2026-11-25T09:59:00+01:00", "2026-11-27T12:01:00+01:00"):  # 25 h 01 before, 25 h 01 after
        refused = await problem(await post_cap(daemon, document(sent=sent)), 422)
        assert refused["type"] == errors.SentOutOfRange.type and refused["field"] == "/alert/sent"
        assert "is more than 24 h from now (2026-11-26T10:00:00-00:00)" in refused["detail"]
    assert await stored(daemon) == []
    assert (await post_cap(daemon, document(sent="2026-11-25T12:00:00+01:00"))).status == 202  # 23 h before


def test_the_skew_is_configured_and_must_be_positive(tmp_path):
    path = helpers.write_config(tmp_path, "http://127.0.0.1:9", demo.free_port(), alerts="cap_sent_skew_hours = 2.5")
    assert config.load(str(path), env={}).alerts.cap_sent_skew_hours == 2.5
    assert config.load(str(path), env={"ALERTD_ALERTS__CAP_SENT_SKEW_HOURS": "48"}).alerts.cap_sent_skew_hours == 48
    path = helpers.write_config(tmp_path, "http://127.0.0.1:9", demo.free_port(), alerts="cap_sent_skew_hours = 0")
    with pytest.raises(errors.ConfigError) as refused:
        config.load(str(path), env={})
    assert "alerts.cap_sent_skew_hours: must be positive, got 0" in refused.value.problems


# -- a test reaches only test recipients inside the caller's jurisdiction ----------------------------


async def test_a_cap_test_reaches_only_the_test_recipients_of_the_callers_jurisdiction(daemon):
    testers.with_testers(daemon, *testers.TESTERS)  # testers in Paris and in Lyon
    assert (await post_cap(daemon, document(status="Test"))).status == 202
    assert await testers.reached(daemon) == (["+33622334455"], [], [])  # Paris's tester only, by SMS
    # An area reaching Lyon's tester leaves Paris's jurisdiction: refused, nobody reached.
    refused = await problem(await post_cap(daemon, document("FR-75-T2", status="System", area=LYON_AREA)), 403)
    assert refused["type"] == errors.OutsideJurisdiction.type
    assert await testers.reached(daemon) == (["+33622334455"], [], [])


async def test_a_json_order_is_signed_with_its_cells_first_sender(daemon):
    daemon.headers["sdis"] = helpers.auth_header(await helpers.add_token(
        daemon.store, model.Role.ISSUER, ["75"], cell="SDIS", senders=["sdis-test-75@interieur.gouv.fr", "sdis-bis"]))
    resp = await daemon.post("/v1/alerts", who="sdis", json=helpers.order(identifier="SDIS-1"))
    alert = await daemon.status((await problem(resp, 202))["id"])
    assert (alert["cell"], alert["sender"]) == ("sdis-75", "sdis-test-75@interieur.gouv.fr")  # not its id
    # So a CAP update of it, signed with the same sender, finds it.
    triplet = f"sdis-test-75@interieur.gouv.fr,SDIS-1,{NOW}"
    update = document("SDIS-1-U", sender="sdis-test-75@interieur.gouv.fr", msg_type="Update", references=triplet)
    assert (await post_cap(daemon, update, who="sdis")).status == 202
    await daemon.drain()
    assert (await daemon.status(alert["id"]))["state"] == "updated"
