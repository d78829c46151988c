"""The channel contract suite, for alertd's built-ins and for third-party channel plugins.

Subclass `ChannelContract` in a pytest module and provide three fixtures:

- ``channel``: an async fixture yielding a *started* channel pointed at your fake server;
- ``fake``: a `FakeControl` for that fake (or your own object with the same methods);
- ``permanent_failure``: the failure rule (a dict for `FakeControl.fail`) that your provider
  answers for an address that can never be reached.

and override `address(i)` to return a valid address for the i-th message.

The fake servers follow one control convention, so one suite serves every channel:
``GET /_fake/{provider}/received`` lists what was received (each item has at least ``to`` and
``body``), ``POST /_fake/{provider}/failures`` queues a failure rule (``status``, ``code``,
``retry_after``, ``times``, ``to``, ``delay``), ``POST /_fake/reset`` forgets everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import aiohttp
import pytest

from alertd import errors, model


@dataclasses.dataclass
class FakeControl:
    """Talks to the control endpoints of a fake provider server."""

    base_url: str
    provider: str  # "twilio", "fcm" or "siren"

    async def _call(self, method: str, path: str, payload: Any = None) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.base_url + path, json=payload) as resp:
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
