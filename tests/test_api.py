"""The whole path of an alert through the HTTP API, on SQLite, with the real clients and the fakes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys

from twilio import request_validator

from alertd import demo, lane
from tests import helpers


async def test_an_alert_reaches_every_targeted_citizen_in_their_language(daemon):
    accepted = await daemon.send()
    assert accepted["state"] == "planning" and accepted["status_url"].endswith(accepted["id"])
    await daemon.drain()

    sms = {r["to"]: r["body"] for r in await daemon.sms.received()}
    assert set(sms) == {"+33612345678", "+33622334455", "+33633445566"}  # Lyon is outside the area
    push = {r["to"] for r in await daemon.push.received()}
    assert push == {"tok-fr-000001", "tok-es-000002"}  # the fake refuses dead-tok-ar: UNREGISTERED
    sirens = await daemon.siren.received()
    assert [(s["to"], s["command"]) for s in sirens] == [("siren-paris-1", "activate")]
    # each in their own language: the English speaker's text is not the French one
    assert sms["+33622334455"] != sms["+33612345678"]
    preview = await (await daemon.post("/v1/preview", json=helpers.order())).json()
    by_locale = {(m["locale"], m["channel"]): m["body"] for m in preview["messages"]}
    assert sms["+33622334455"] == by_locale[("en", "sms")]
    assert sms["+33633445566"] == by_locale[("ar", "sms")]

    status = await daemon.status(accepted["id"])
    assert status["state"] == "completed"
    assert status["counts"]["sms"]["sent"] == 3
    assert status["counts"]["push"]["sent"] == 2 and status["counts"]["push"]["failed"] == 1
    assert status["counts"]["siren"]["sent"] == 1


async def test_unregistered_push_token_is_marked_dead_and_never_used_again(daemon):
    first = await daemon.send(channels=["push"])
    await daemon.drain()
    failed = await (await daemon.get(f"/v1/alerts/{first['id']}/deliveries?state=failed")).json()
    assert [d["target"] for d in failed["deliveries"]] == ["p-ar"]
    assert "UNREGISTERED" in failed["deliveries"][0]["last_error"]
    assert (await daemon.store.get_recipient("p-ar")).push_token_dead

    second = await daemon.send(channels=["push"], identifier="second-alert")
    await daemon.drain()
    counts = (await daemon.status(second["id"]))["counts"]["push"]
    assert sum(counts.values()) == 2 and counts["sent"] == 2


async def test_a_repeated_post_returns_the_first_alert(daemon):
    headers = {"Idempotency-Key": "crue-2026-11-26"}
    first = await daemon.post("/v1/alerts", json=helpers.order(), headers=headers)
    again = await daemon.post("/v1/alerts", json=helpers.order(), headers=headers)
    assert (await first.json())["id"] == (await again.json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    by_identifier = [await daemon.send(identifier="same-order") for _ in range(2)]
    assert by_identifier[0]["id"] == by_identifier[1]["id"]
    await daemon.drain()
    assert len(await daemon.sms.received()) == 3 * 2  # two alerts, not four


async def test_transient_failures_are_retried_with_backoff_honouring_retry_after(daemon):
    await daemon.sms.fail(status=429, code=20429, retry_after=30, times=1, to="+33612345678")
    alert = await daemon.send(channels=["sms"])
    started = daemon.clock.now
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?channel=sms")).json()
    retried = next(d for d in page["deliveries"] if d["target"] == "p-fr")
    assert retried["state"] == "sent" and retried["attempts"] == 2
    assert "20429" in retried["last_error"]
    assert daemon.clock.now - started >= dt.timedelta(seconds=30)  # Retry-After was honoured


async def test_permanent_failures_are_not_retried(daemon):
    await daemon.sms.fail(status=400, code=21211, times=None, to="+33622334455")
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?state=failed")).json()
    [failed] = page["deliveries"]
    assert failed["target"] == "p-en" and failed["attempts"] == 1 and "21211" in failed["last_error"]


async def test_retries_stop_when_the_alert_expires(daemon):
    await daemon.sms.fail(status=503, times=None, to="+33612345678")
    expires = helpers.START + dt.timedelta(minutes=1)
    alert = await daemon.send(channels=["sms"], expires=expires.isoformat())
    await daemon.drain()
    counts = (await daemon.status(alert["id"]))["counts"]["sms"]
    assert counts["expired"] == 1 and counts["sent"] == 2
    assert daemon.clock.now < expires + dt.timedelta(minutes=1)


def signed(url: str, form: dict[str, str], token: str = demo.AUTH_TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": request_validator.RequestValidator(token).compute_signature(url, form)}


async def test_twilio_receipts_are_checked_and_never_move_a_delivery_backwards(daemon):
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries")).json()
    sid = next(d for d in page["deliveries"] if d["target"] == "p-fr")["provider_id"]
    url = f"{daemon.client.make_url('/v1/receipts/twilio')}"
    delivered = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": demo.ACCOUNT_SID}

    forged = await daemon.client.post("/v1/receipts/twilio", data=delivered, headers=signed(url, delivered, "wrong"))
    unsigned = await daemon.client.post("/v1/receipts/twilio", data=delivered)
    assert forged.status == unsigned.status == 403
    assert (await daemon.status(alert["id"]))["counts"]["sms"]["delivered"] == 0

    ok = await daemon.client.post("/v1/receipts/twilio", data=delivered, headers=signed(url, delivered))
    assert ok.status == 204
    late = {"MessageSid": sid, "MessageStatus": "sent", "AccountSid": demo.ACCOUNT_SID}
    assert (await daemon.client.post("/v1/receipts/twilio", data=late, headers=signed(url, late))).status == 204
    again = await daemon.client.post("/v1/receipts/twilio", data=delivered, headers=signed(url, delivered))
    assert again.status == 204
    counts = (await daemon.status(alert["id"]))["counts"]["sms"]
    assert counts["delivered"] == 1 and counts["sent"] == 2


async def test_a_failed_receipt_records_twilios_error_code(daemon):
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries")).json()
    sid = page["deliveries"][0]["provider_id"]
    url = f"{daemon.client.make_url('/v1/receipts/twilio')}"
    form = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30006"}  # a landline
    assert (await daemon.client.post("/v1/receipts/twilio", data=form, headers=signed(url, form))).status == 204
    failed = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?state=failed")).json()
    assert "30006" in failed["deliveries"][0]["last_error"]


async def test_the_fake_twilio_status_callbacks_reach_the_daemon(daemon):
    await daemon.sms._call("POST", "/_fake/twilio/callbacks", {"enabled": True, "final": "delivered"})
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)
    while dt.datetime.now() < deadline:  # callbacks come from another process, on its own schedule
        counts = (await daemon.status(alert["id"]))["counts"]["sms"]
        if counts["delivered"] == 3:
            break
        await asyncio.sleep(0.02)  # the fake's callbacks are another process's work, not ours to drain
    assert counts["delivered"] == 3


async def test_cancel_stops_pending_deliveries_and_silences_the_sirens(daemon):
    alert = await daemon.send()
    # one siren batch goes out before the cancel; the rest of the fan-out must not start
    await daemon.dispatcher.planned()
    await lane.Lane(daemon.dispatcher, "siren").run(until_idle=True)
    resp = await daemon.post(f"/v1/alerts/{alert['id']}/cancel")
    assert resp.status == 200, await resp.text()
    await daemon.drain()
    status = await daemon.status(alert["id"])
    assert status["state"] == "cancelled"
    assert status["counts"]["sms"]["cancelled"] == 3 and status["counts"]["sms"]["sent"] == 0
    assert await daemon.sms.received() == []
    commands = [(s["to"], s["command"]) for s in await daemon.siren.received()]
    assert commands == [("siren-paris-1", "activate"), ("siren-paris-1", "cancel")]


async def test_deliveries_are_paginated_and_filtered(daemon):
    alert = await daemon.send()
    await daemon.drain()
    seen, after = [], 0
    while True:
        page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?limit=2&after={after}")).json()
        seen += page["deliveries"]
        if page["next"] is None:
            break
        after = page["next"]
    assert len(seen) == 7 and len({d["id"] for d in seen}) == 7
    assert all(d["address"].startswith("…") for d in seen if d["kind"] != "siren")  # masked
    sms = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?channel=sms")).json()
    assert {d["channel"] for d in sms["deliveries"]} == {"sms"}


async def test_draft_alerts_are_stored_and_never_sent(daemon):
    alert = await daemon.send(status="draft")
    await daemon.drain()
    assert (await daemon.status(alert["id"]))["state"] == "draft"
    assert await daemon.sms.received() == []


async def test_the_openapi_document_describes_the_orders(daemon):
    resp = await daemon.client.get("/v1/openapi.json")
    doc = await resp.json()
    assert "/v1/alerts" in doc["paths"] and "post" in doc["paths"]["/v1/alerts"]
    assert "Order" in str(doc["components"]["schemas"])


async def test_alertd_send_and_status_from_the_command_line(daemon, tmp_path):
    order = tmp_path / "order.json"
    order.write_text(json.dumps(helpers.order(channels=["siren"])))
    token = daemon.headers["issuer"]["Authorization"].split()[1]
    url = str(daemon.client.make_url("/"))
    sent = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "alertd.cli", "send", str(order), "--url", url, "--token", token],
        capture_output=True, text=True, timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    alert_id = json.loads(sent.stdout)["id"]
    await daemon.drain()
    shown = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "alertd.cli", "status", alert_id, "--url", url, "--token", token],
        capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert alert_id in shown.stdout and "siren" in shown.stdout and "completed" in shown.stdout


async def test_a_cancel_during_planning_stays_a_cancel(daemon):
    alert = await daemon.send()
    resp = await daemon.post(f"/v1/alerts/{alert['id']}/cancel")  # planning may still be under way
    assert resp.status == 200
    await daemon.drain()
    status = await daemon.status(alert["id"])
    assert status["state"] == "cancelled"
    assert status["counts"].get("sms", {}).get("sent", 0) == 0 and await daemon.sms.received() == []


async def test_readiness_reports_the_store_the_channels_and_the_queue(daemon):
    await daemon.send(channels=["sms"])
    await daemon.dispatcher.planned()
    ready = await (await daemon.client.get("/readyz")).json()
    assert ready["ready"] is True and ready["queue"] == 3
    assert ready["channels"] == {"sms": "sms", "push": "push", "siren": "siren"}
    await daemon.drain()
    assert (await (await daemon.client.get("/readyz")).json())["queue"] == 0


async def test_a_handset_unreachable_for_a_while_gets_the_alert_again(daemon):
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries")).json()
    first = next(d for d in page["deliveries"] if d["target"] == "p-fr")
    url = f"{daemon.client.make_url('/v1/receipts/twilio')}"
    form = {"MessageSid": first["provider_id"], "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert (await daemon.client.post("/v1/receipts/twilio", data=form, headers=signed(url, form))).status == 204
    again = {"MessageSid": first["provider_id"], "MessageStatus": "failed", "ErrorCode": "30003"}
    await daemon.client.post("/v1/receipts/twilio", data=again, headers=signed(url, again))  # a late copy
    await daemon.drain()
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries")).json()
    retried = next(d for d in page["deliveries"] if d["target"] == "p-fr")
    assert retried["state"] == "sent" and retried["attempts"] == 2
    assert retried["provider_id"] != first["provider_id"] and "30003" in retried["last_error"]
    assert [r["to"] for r in await daemon.sms.received()].count("+33612345678") == 2
