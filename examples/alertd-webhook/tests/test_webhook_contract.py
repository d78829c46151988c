"""The example plugin against alertd's channel contract suite (`alertd.testing.ChannelContract`):
every behaviour alertd relies on, each ability it declares (here: receipts), a send slower than its
timeout, and no secret in its `repr`, errors or logs. alertd's CI installs the package and runs this."""

from __future__ import annotations

import json

import alertd_webhook
import pytest
from alertd_webhook import fake as fake_gateway

from alertd import channels, testing

SECRET = "hook-signing-secret-93c1"  # distinctive: the contract looks for it in logs and reprs
API_KEY = "hook-api-key-4b7e"


@pytest.fixture
async def gateway():
    """The fake gateway on 127.0.0.1, in the test's own loop."""
    async with fake_gateway.serve(SECRET) as url:
        yield url


def signed(report: dict, url: str = "http://127.0.0.1:9/v1/receipts/sms") -> channels.Callback:
    body = json.dumps(report).encode()
    headers = {alertd_webhook.SIGNATURE: alertd_webhook.sign(SECRET, body)}
    return channels.Callback.of(url, headers, body, "application/json")


def test_alertd_finds_it_by_its_entry_point():
    assert channels.load("webhook") is alertd_webhook.Webhook


class TestWebhookContract(testing.ChannelContract):
    @pytest.fixture
    async def channel(self, gateway):
        settings = {"base_url": gateway, "api_key": API_KEY, "signing_secret": SECRET, "timeout": 1}
        chan = alertd_webhook.Webhook(settings, channels.Context("http://127.0.0.1:9", "sms"))
        await chan.start()
        yield chan
        await chan.close()

    @pytest.fixture
    def fake(self, gateway):
        return testing.FakeControl(gateway, "webhook")

    @pytest.fixture
    def permanent_failure(self):
        return {"status": 400, "code": "bad_number"}

    @pytest.fixture
    def delivered_callback(self):
        return lambda provider_id: signed({"id": provider_id, "status": "delivered"})

    def address(self, i: int) -> str:
        return f"+3361300{i:04d}"
