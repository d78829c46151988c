"""`POST /v1/preview` and an alert awaiting approval say how long and how much before anything is sent
(issue 12, point 5), on both stores, with the configured SMS rate and price; `alertd preview`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from alertd import cli, render
from tests import helpers, test_approval


@pytest.fixture
def sms_settings() -> str:
    return 'rate = 2\nprice_per_segment = 0.05\ncurrency = "EUR"'


async def test_a_preview_says_how_long_and_how_much_per_channel(daemon):
    resp = await daemon.post("/v1/preview", json=helpers.order(template="evacuate"))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    shown = answer["estimate"]
    # The Paris subscribers with a phone read French, English and Arabic: each gets its locale's SMS.
    texts = {m["locale"]: m["body"] for m in answer["messages"] if m["channel"] == "sms"}
    segments = sum(render.sms_segments(texts[locale]) for locale in ("fr", "en", "ar"))
    assert segments > 3 and render.sms_encoding(texts["ar"]) == "UCS-2"  # Arabic: UCS-2, in several parts
    sms = shown["channels"]["sms"]
    assert (sms["recipients"], sms["messages"], sms["segments"]) == (3, 3, segments)
    assert (sms["rate"], sms["rate_is_default"], sms["seconds_to_last"]) == (2.0, False, segments / 2)
    assert sms["cost"] == {"amount": round(segments * 0.05, 2), "currency": "EUR"}
    push, siren = shown["channels"]["push"], shown["channels"]["siren"]
    assert (push["recipients"], push["segments"], push["rate"], push["cost"]) == (3, None, 10_000.0, None)
    assert (siren["recipients"], siren["seconds_to_last"]) == (1, None)
    warned = [(w["code"], w["channel"]) for w in shown["warnings"]]
    assert warned == [("default-rate", "push"), ("rate-unknown", "siren")]
    assert await daemon.sms.received() == []  # a preview sends nothing


async def test_a_preview_warns_when_the_fan_out_would_end_after_the_alert_expires(daemon):
    expires = helpers.START + dt.timedelta(seconds=1)  # three SMS at 2 a second take longer
    resp = await daemon.post("/v1/preview", json=helpers.order(expires=expires.isoformat(), channels=["sms"]))
    assert resp.status == 200, await resp.text()
    (warning,) = (await resp.json())["estimate"]["warnings"]
    assert (warning["code"], warning["channel"]) == ("ends-after-expiry", "sms")
    assert "later than the alert expires" in warning["detail"]


async def test_the_approver_sees_the_estimate_until_the_alert_is_decided(daemon):
    await test_approval.cells(daemon)
    waiting = await test_approval.order(daemon, channels=["sms", "push"])
    shown = await daemon.status(waiting["id"])
    assert shown["state"] == "awaiting_approval"
    estimate = shown["estimate"]["channels"]
    assert {kind: line["recipients"] for kind, line in estimate.items()} == shown["approval"]["audience"]
    assert estimate["sms"]["cost"]["currency"] == "EUR" and estimate["sms"]["seconds_to_last"] > 0
    assert (await test_approval.approve(daemon, waiting["id"], "bruno")).status == 202
    assert (await daemon.status(waiting["id"]))["estimate"] is None


async def test_alertd_preview_prints_a_table_or_the_raw_answer(daemon, tmp_path, capsys):
    path = tmp_path / "order.json"
    path.write_text(json.dumps(helpers.order(channels=["sms", "siren"])), encoding="utf-8")
    argv = ["preview", "--url", f"http://127.0.0.1:{daemon.client.port}",
            "--token", daemon.headers["issuer"]["Authorization"].split()[1], str(path)]
    assert await asyncio.to_thread(cli.main, argv) == 0
    table = capsys.readouterr().out
    assert "channel" in table and "EUR" in table and "unknown" in table
    assert "rate-unknown" in table  # the siren's warning
    assert await asyncio.to_thread(cli.main, [*argv, "--json"]) == 0
    out = capsys.readouterr().out
    answer = json.loads(out[out.index("{\n"):])  # the daemon, in this process, may log before it
    assert answer["estimate"]["channels"]["sms"]["recipients"] == 3
    assert await daemon.sms.received() == []


async def test_alertd_preview_of_a_bad_order_prints_the_problem_and_fails(daemon, tmp_path, capsys):
    path = tmp_path / "order.json"
    path.write_text(json.dumps(helpers.order(channels=["fax"])), encoding="utf-8")
    argv = ["preview", "--url", f"http://127.0.0.1:{daemon.client.port}",
            "--token", daemon.headers["issuer"]["Authorization"].split()[1], str(path)]
    assert await asyncio.to_thread(cli.main, argv) == 1
    err = capsys.readouterr().err
    assert "channels" in err and "Traceback" not in err
