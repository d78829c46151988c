"""An alertd channel plugin, as an integrator writes one: SMS through a JSON webhook gateway that
reports each message's fate back to ``POST /v1/receipts/{name}``, signed with a shared secret.

It lives outside alertd and is registered like any plugin, by an entry point of the group
``alertd.channels`` (its ``pyproject.toml``). Its fake gateway, for its tests, is `alertd_webhook.fake`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import pydantic

from alertd import channels, errors, model, settings

SIGNATURE = "X-Hook-Signature"
STATES = {"sent": model.State.SENT, "delivered": model.State.DELIVERED, "failed": model.State.FAILED}


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Settings(settings.Channel):
    """Its `[channels.NAME]` section: checked by `alertd check-config`, secrets never shown."""

    base_url: str
    api_key: pydantic.SecretStr
    signing_secret: pydantic.SecretStr  # the gateway signs its reports with it
    timeout: settings.Positive = 5.0


class Webhook(channels.Base):
    """SMS through a JSON webhook gateway (`Settings`)."""

    kind = model.Kind.SMS
    address = model.Address.PHONE
    settings = Settings
    options: Settings
    receipt_alias: ClassVar[str | None] = None  # its reports come to /v1/receipts/<its name> alone

    def __init__(self, config: Mapping[str, Any] | Settings, context: channels.Context) -> None:
        super().__init__(config, context)
        o = self.options
        self.url = o.base_url.rstrip("/") + "/webhook/messages"
        self._api_key, self._secret = o.api_key.get_secret_value(), o.signing_secret.get_secret_value()
        self.timeout = o.timeout
        name = urllib.parse.quote(context.name, safe="")
        self.callback_url = f"{context.public_url.rstrip('/')}/v1/receipts/{name}"
        self.http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Webhook(name={self.context.name!r}, url={self.url!r})"

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                          headers={"Authorization": f"Bearer {self._api_key}"})

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    async def send(self, message: model.Message) -> model.Receipt:
        body = {"to": message.to, "text": message.body, "callback_url": self.callback_url}
        try:
            async with self.http.post(self.url, json=body) as resp:
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise errors.Transient(f"webhook gateway: {type(exc).__name__}", code=type(exc).__name__) from None
        if resp.status == 201:
            return model.Receipt(provider_id=str(answer["id"]))
        code = str(answer.get("error") or resp.status)
        if resp.status == 429 or resp.status >= 500:
            wait = channels.retry_after(resp.headers.get("Retry-After"), model.utcnow())
            raise errors.Transient(f"webhook gateway answered {resp.status}", code=code, retry_after=wait)
        raise errors.Permanent(f"webhook gateway refused the message: {code}", code=code)

    async def receipt(self, callback: channels.Callback) -> list[channels.Report]:
        """``{"id": ..., "status": "sent" | "delivered" | "failed", "error": ...}``, signed."""
        signature = callback.header(SIGNATURE)
        if not signature:
            raise errors.Unauthenticated("the gateway signs its reports", field=SIGNATURE)
        body = await callback.read()
        if not hmac.compare_digest(signature, sign(self._secret, body)):
            raise errors.Forbidden("the signature does not match", field=SIGNATURE)
        if callback.content_type != "application/json":
            raise errors.UnsupportedMediaType("the gateway posts application/json", field="Content-Type")
        try:
            report = json.loads(body)
            provider_id, state = str(report["id"]), STATES[report["status"]]
        except (ValueError, KeyError, TypeError):
            raise errors.BadRequest("a report is {\"id\", \"status\"}", field="body") from None
        failed = state is model.State.FAILED
        error = errors.Permanent(str(report.get("error", "failed")), code="failed") if failed else None
        return [channels.Status(provider_id, state, error)]
