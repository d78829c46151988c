"""A third-party channel, the example plugin package `examples/alertd-webhook` (installed by `make`,
registered by its entry point, its contract suite in its own tests): in the daemon, its provider's
reports, posted to ``POST /v1/receipts/{name}``, bring its deliveries to ``delivered`` (or
``failed``), on both stores."""

from __future__ import annotations

import json

import alertd_webhook as webhook
import pytest
from aiohttp import test_utils
from alertd_webhook import fake as fake_gateway

from alertd import app as app_mod, config, demo, testing
from tests import helpers

SECRET = "hook-signing-secret-93c1"  # distinctive: the contract looks for it in logs and reprs
API_KEY = "hook-api-key-4b7e"


@pytest.fixture
async def gateway():
    """The fake webhook gateway on 127.0.0.1, in the test's own loop."""
    async with fake_gateway.serve(SECRET) as url:
        yield url


# -- registered like a third party, in the daemon ----------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def daemon(request, tmp_path, fakes_url, gateway, pg_schema_url):
    """The daemon whose SMS go through the webhook plugin (pushes and sirens through the fakes)."""
    port = demo.free_port()
    store = pg_schema_url if request.param == "postgresql" else f"sqlite:///{tmp_path / 'alertd.db'}"
    toml = demo.config_toml(port, store, fakes_url)
    twilio = toml[toml.index("[channels.sms]"):toml.index("[channels.push]")]
    sms = (f'[channels.sms]\nplugin = "webhook"\napi_key = "{API_KEY}"\nsigning_secret = "{SECRET}"\n'
           f'base_url = "{gateway}"\n\n')
    path = tmp_path / "alertd.toml"
    path.write_text(toml.replace(twilio, sms))
    cfg = config.load(str(path), env={})
    assert cfg.channels["sms"].plugin == "webhook"
    clock = helpers.ManualClock()
    app = app_mod.build(cfg, clock=clock, run_workers=False)
    async with test_utils.TestClient(test_utils.TestServer(app, host="127.0.0.1", port=port)) as client:
        d = helpers.Daemon(client, clock, fakes_url)
        await d.populate()
        yield d


async def report(gateway: str, failed: list[str] = ()) -> list[int]:
    """The gateway reports every message it took; the statuses alertd answered."""
    control = testing.FakeControl(gateway, "webhook")
    return (await control._call("POST", "/_fake/webhook/report", {"failed": list(failed)}))["answers"]


async def test_the_gateways_reports_bring_deliveries_to_delivered_or_failed(daemon, gateway):
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    assert (await daemon.status(alert["id"]))["counts"]["sms"]["sent"] == 3
    took = await testing.FakeControl(gateway, "webhook").received()
    assert {t["callback_url"] for t in took} == {str(daemon.client.make_url("/v1/receipts/sms"))}
    assert {t["authorization"] for t in took} == {f"Bearer {API_KEY}"}
    assert await report(gateway, failed=["+33633445566"]) == [204, 204, 204]
    counts = (await daemon.status(alert["id"]))["counts"]["sms"]
    assert (counts["delivered"], counts["failed"]) == (2, 1)
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries?channel=sms&state=failed")).json()
    assert [d["target"] for d in page["deliveries"]] == ["p-ar"]


async def test_a_forged_report_changes_nothing(daemon, gateway):
    alert = await daemon.send(channels=["sms"])
    await daemon.drain()
    [first, *_] = await testing.FakeControl(gateway, "webhook").received()
    body = json.dumps({"id": first["id"], "status": "delivered"}).encode()
    for headers, status in (({}, 401), ({webhook.SIGNATURE: "0" * 64}, 403)):
        headers |= {"Content-Type": "application/json"}
        resp = await daemon.client.post("/v1/receipts/sms", data=body, headers=headers)
        assert resp.status == status and (await resp.json())["field"] == webhook.SIGNATURE
    assert (await daemon.status(alert["id"]))["counts"]["sms"]["delivered"] == 0


@pytest.mark.parametrize(("path", "why"), [("/v1/receipts/nowhere", "named"), ("/v1/receipts/push", "takes no")])
async def test_a_channel_that_takes_no_receipts_is_a_404_naming_the_channel(daemon, path, why):
    resp = await daemon.client.post(path, json={"id": "x", "status": "delivered"})
    problem = await resp.json()
    assert (resp.status, problem["field"]) == (404, "channel") and why in problem["detail"]
