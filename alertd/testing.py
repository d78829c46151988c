"""The channel contract suite, for alertd's built-ins and for third-party channel plugins.

Subclass `ChannelContract` in a pytest module and provide these fixtures:

- ``channel``: an async fixture yielding a *started* channel pointed at your fake server, with a
  short send timeout: a second, or give ``send_timeout``, that timeout in seconds (default 1);
- ``fake``: a `FakeControl` for that fake (or your own object with the same methods);
- ``permanent_failure``: the failure rule (a dict for `FakeControl.fail`) that your provider
  answers for an address that can never be reached;
- ``secrets``: the secret values of the channel's settings, none of which may show in its `repr`
  or its logs (by default, those of ``channel.config`` its settings model types `SecretStr`, or named like secrets);

and override `address(i)` to return a valid address for the i-th message.

Each ability a channel declares (`alertd.channels`: `Halts`, `Receipts`, `Acknowledges`,
`Heartbeats`, `Topics`, `DeadAddresses`) is tested too. A channel declaring `Receipts` provides
``delivered_callback``: a function of a provider id returning the `channels.Callback` its provider
would post to say that message was delivered. One declaring `DeadAddresses` may give
``dead_address_failure``, the rule for an address dead for good (default: ``permanent_failure``).

The fake servers follow one control convention, so one suite serves every channel:
``GET /_fake/{provider}/received`` lists what was received (each item has at least ``to`` and
``body``), ``POST /_fake/{provider}/failures`` queues a failure rule (``status``, ``code``,
``retry_after``, ``times``, ``to``, ``delay``), ``POST /_fake/reset`` forgets everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from typing import Any

import aiohttp
import pytest
import structlog

from alertd import channels, errors, model, pacing, settings, zones


@dataclasses.dataclass
class FakeControl:
    """Talks to the control endpoints of a fake provider server."""

    base_url: str
    provider: str  # "twilio", "fcm" or "siren"

    async def _call(self, method: str, path: str, payload: Any = None) -> Any:
        url = self.base_url + path
        async with aiohttp.ClientSession() as session, session.request(method, url, json=payload) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def received(self) -> list[dict[str, Any]]:
        return await self._call("GET", f"/_fake/{self.provider}/received")

    async def fail(self, **rule: Any) -> None:
        """Queue a failure: status, code, retry_after (s), times (None = always), to, delay (s)."""
        await self._call("POST", f"/_fake/{self.provider}/failures", rule)

    async def callbacks(self) -> dict[str, Any]:
        """Twilio only: the status callbacks the fake posted, and whether alertd accepted each."""
        return await self._call("GET", f"/_fake/{self.provider}/callbacks")

    async def reset(self) -> None:
        await self._call("POST", "/_fake/reset")


class ChannelContract:
    """Behaviour every channel plugin must show. Subclass it; see the module docstring."""

    def address(self, i: int) -> str:
        raise NotImplementedError

    def message(self, i: int, body: str = "Mise à l'abri immédiate") -> model.Message:
        return model.Message(
            delivery_id=i,
            alert_id="contract-alert",
            kind=self.kind,
            to=self.address(i),
            body=body,
            title="Alerte",
            locale="fr",
            command="activate" if self.kind is model.Kind.SIREN else "send",
        )

    @pytest.fixture(autouse=True)
    async def _reset_fake(self, fake):
        await fake.reset()
        yield

    @pytest.fixture(autouse=True)
    def _kind(self, channel):
        self.kind = channel.kind

    def test_declares_kind_and_concurrency(self, channel):
        assert isinstance(channel.kind, str) and re.fullmatch(model.KIND_PATTERN, channel.kind)
        assert isinstance(channel.address, model.Address)
        assert channel.concurrency >= 1

    async def test_send_returns_receipt_and_reaches_the_fake(self, channel, fake):
        receipt = await channel.send(self.message(1))
        assert isinstance(receipt, model.Receipt) and receipt.provider_id
        received = await fake.received()
        assert [r["to"] for r in received] == [self.address(1)]

    async def test_unavailable_provider_is_transient_with_retry_after(self, channel, fake):
        await fake.fail(status=503, retry_after=7, times=1)
        with pytest.raises(errors.Transient) as caught:
            await channel.send(self.message(1))
        assert caught.value.retry_after == pytest.approx(7, abs=1)
        assert await channel.send(self.message(2))  # the fault passed: the next one goes through

    async def test_unreachable_address_is_permanent(self, channel, fake, permanent_failure):
        await fake.fail(**permanent_failure, to=self.address(3), times=None)
        with pytest.raises(errors.Permanent) as caught:
            await channel.send(self.message(3))
        assert caught.value.code

    async def test_concurrent_sends_each_get_their_own_outcome(self, channel, fake, permanent_failure):
        await fake.fail(**permanent_failure, to=self.address(2), times=None)
        results = await asyncio.gather(*(channel.send(self.message(i)) for i in range(5)), return_exceptions=True)
        assert isinstance(results[2], errors.Permanent)
        assert all(isinstance(r, model.Receipt) for i, r in enumerate(results) if i != 2)
        ids = [r.provider_id for r in results if isinstance(r, model.Receipt)]
        assert len(set(ids)) == 4  # every accepted message has its own provider id

    # -- what every channel promises besides sending ----------------------------------------------

    @pytest.fixture
    def send_timeout(self) -> float:
        return 1.0

    @pytest.fixture
    def secrets(self, channel) -> list[str]:
        if not isinstance(channel, channels.Base):
            return []
        secret = settings.secrets(type(channel).settings, channel.config)  # declared SecretStr, or named like one
        return [str(v) for k, v in channel.config.items() if k in secret and v]

    async def test_a_send_slower_than_the_timeout_is_transient(self, channel, fake, send_timeout):
        await fake.fail(status=503, delay=send_timeout + 2, times=1)  # answers long after the timeout
        started = time.monotonic()
        with pytest.raises(errors.Transient):
            await channel.send(self.message(1))
        assert time.monotonic() - started < send_timeout + 1.5  # gave up; did not wait for the answer

    async def test_no_secret_in_its_repr_or_its_logs(self, channel, fake, permanent_failure, secrets, caplog,
                                                     request):
        await fake.fail(**permanent_failure, to=self.address(2), times=None)
        await fake.fail(status=503, retry_after=1, to=self.address(3), times=1)
        caplog.set_level(logging.DEBUG)
        with structlog.testing.capture_logs() as logged:
            results = await asyncio.gather(*(channel.send(self.message(i)) for i in (1, 2, 3)), return_exceptions=True)
            if isinstance(channel, channels.Receipts):
                forged = request.getfixturevalue("delivered_callback")("forged1")
                with pytest.raises((errors.Unauthenticated, errors.Forbidden)):
                    await channel.receipt(dataclasses.replace(forged, headers={}))
        said = [repr(channel), str(channel), caplog.text, *map(repr, logged), *map(repr, results)]
        leaked = [s for s in secrets if any(s in text for text in said)]
        assert not leaked, f"{len(leaked)} secret(s) shown in the channel's repr, logs or errors"

    async def test_halt_returns_and_the_channel_sends_on(self, channel: channels.Channel, fake: FakeControl) -> None:
        if not isinstance(channel, channels.Halts):
            return  # it begins every call it is handed: nothing to halt
        await asyncio.wait_for(channel.halt("contract-alert"), 5)
        other = dataclasses.replace(self.message(2), alert_id="contract-other")
        assert isinstance(await channel.send(other), model.Receipt)  # only the halted alert is dropped
        with pytest.raises(errors.Halted):  # the halted alert's messages are not sent
            await channel.send(self.message(1))
        assert [r["to"] for r in await fake.received()] == [self.address(2)]

    async def test_a_receipt_from_its_provider_maps_to_a_state_and_a_forged_one_is_refused(self, channel, request):
        if not isinstance(channel, channels.Receipts):
            assert not hasattr(channel, "receipt"), "half declared: `receipt` without `receipt_alias`"
            return
        assert channel.receipt_alias is None or isinstance(channel.receipt_alias, str)
        callback = request.getfixturevalue("delivered_callback")("contract1")
        reports = await channel.receipt(callback)
        statuses = [r for r in reports if isinstance(r, channels.Status)]
        assert [(s.provider_id, s.state) for s in statuses] == [("contract1", model.State.DELIVERED)]
        for forged in (dataclasses.replace(callback, headers={}),
                       dataclasses.replace(callback, headers={k: "forged" for k in callback.headers})):
            with pytest.raises((errors.Unauthenticated, errors.Forbidden)):
                await channel.receipt(forged)

    def test_acknowledgements_and_heartbeats_are_declared_with_their_timeouts(self, channel):
        timeouts = []
        if isinstance(channel, channels.Acknowledges):
            timeouts.append(channel.ack_timeout)
        if isinstance(channel, channels.Heartbeats):
            timeouts.append(channel.heartbeat_timeout)
            zones = channel.zones
            assert zones is None or (isinstance(zones, tuple) and all(isinstance(z, str) for z in zones))
        assert all(t is None or t > 0 for t in timeouts)  # None: the provider was not asked to

    async def test_a_topic_send_reaches_the_topic(self, channel: channels.Channel, fake: FakeControl) -> None:
        topic = zones.topic("75056")
        message = dataclasses.replace(self.message(1), to=topic, command="topic")
        if not isinstance(channel, channels.Topics):
            return  # the planner sends it no topic, and an order asking for topics is refused
        assert channel.sends_topics is True and self.kind is model.Kind.PUSH
        assert isinstance(await channel.send(message), model.Receipt)
        [received] = await fake.received()
        assert received["to"].endswith(topic)

    async def test_a_message_goes_from_the_sender_the_dispatcher_named(self, channel: channels.Channel, fake):
        if not (isinstance(channel, channels.Senders) and channel.senders):
            return  # paced as one, at the channel's `rate`
        assert all(isinstance(s, pacing.Sender) and s.name and s.rate > 0 for s in channel.senders)
        for i, sender in enumerate(channel.senders):
            assert isinstance(await channel.send(dataclasses.replace(self.message(i), sender=sender.name)),
                              model.Receipt)
        assert [r["from"] for r in await fake.received()] == [s.name for s in channel.senders]

    async def test_a_dead_address_is_said_only_by_a_channel_declaring_it(self, channel, fake, permanent_failure,
                                                                          request):
        declared = isinstance(channel, channels.DeadAddresses) and channel.reports_dead_addresses
        rule = request.getfixturevalue("dead_address_failure") if declared else permanent_failure
        await fake.fail(**rule, to=self.address(4), times=None)
        with pytest.raises(errors.Permanent) as caught:
            await channel.send(self.message(4))
        assert caught.value.dead_address is declared  # undeclared, the dispatcher would never hear it

    @pytest.fixture
    def dead_address_failure(self, permanent_failure):
        return permanent_failure
