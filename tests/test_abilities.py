"""What a channel declares it can do is what alertd asks of it (`alertd.channels`): an ability not
declared is never used, whatever attributes the channel happens to have."""

from __future__ import annotations

import dataclasses

import alertd_webhook as webhook
import pytest

from alertd import channels, dispatcher, errors, model
from tests import helpers


class HookPush(webhook.Webhook):
    """A push channel declaring no topics and no dead addresses; its `halt` is a plain attribute."""

    kind = model.Kind.PUSH
    halt = None


class Declaring(HookPush):
    sends_topics = True
    reports_dead_addresses = True

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.halted: list[str] = []

    async def halt(self, alert_id: str) -> None:
        self.halted.append(alert_id)


def push_channel(cls: type[HookPush] = HookPush) -> HookPush:
    settings = {"base_url": "http://127.0.0.1:9", "api_key": "k", "signing_secret": "s"}
    return cls(settings, channels.Context("http://127.0.0.1:9", "push"))


async def test_an_order_asking_for_topics_of_a_push_channel_without_them_is_refused(daemon):
    daemon.dispatcher.channels["push"] = push_channel()
    resp = await daemon.post("/v1/alerts", json=helpers.order(channels=["push"], topics=True))
    problem = await resp.json()
    assert (resp.status, problem["field"]) == (422, "topics"), problem
    resp = await daemon.post("/v1/alerts", json=helpers.order(channels=["sms"], topics=True))
    assert resp.status == 202, await resp.text()  # no push: no topic to send to


@pytest.mark.parametrize("cls", [HookPush, Declaring])
async def test_topics_dead_addresses_and_halts_are_asked_only_of_a_channel_declaring_them(cls):
    channel = push_channel(cls)
    declared = cls is Declaring
    d = dispatcher.Dispatcher(None, {"push": channel}, None)
    alert = helpers.alert("a-topics", model.Kind.PUSH)
    assert d.refuses_topics(dataclasses.replace(alert, topics=True)) is not declared
    assert not d.refuses_topics(alert)  # it asks for none
    gone = errors.Permanent("gone", code="UNREGISTERED", dead_address=True)
    assert dispatcher.dead(channel, gone) is declared  # undeclared, the address is not forgotten
    assert not dispatcher.dead(channel, errors.Permanent("too big", code="INVALID_ARGUMENT"))
    await d.halt("a-topics")  # an undeclared `halt` is never called
    assert isinstance(channel, channels.Halts) is declared
    assert not declared or channel.halted == ["a-topics"]
