"""The siren channel: commands to a siren gateway over alertd's siren-gateway protocol.

The protocol (JSON over HTTP, bearer token) is documented in `alertd.fakes.siren`, the fake gateway
that tests and demos use. One delivery is one command to one siren: ``message.to`` is the siren id,
``message.command`` the verb (activate, cancel, test, silent_test), ``message.body`` the
optional voice text. The delivery id travels as the gateway's idempotency key (``request_id``), so
a delivery sent twice (at-least-once dispatch) does not sound a siren twice. The gateway's
``command_id`` is the receipt.

Configuration::

    [channels.siren]
    plugin = "siren-http"
    base_url = "http://127.0.0.1:8900/siren"
    token = "…"                  # bearer token for the gateway (the caller resolves files)
    timeout = 5                  # seconds per request
    max_concurrency = 50         # commands in flight
    pattern_activate = "saip_alert"
    pattern_cancel = "saip_end"
    pattern_test = "saip_test"   # also used for silent tests
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp

from alertd import channels, errors, model

# The pattern setting each command reads, and its default (French SAIP signals).
PATTERN_SETTING = {
    "activate": ("pattern_activate", "saip_alert"),
    "cancel": ("pattern_cancel", "saip_end"),
    "test": ("pattern_test", "saip_test"),
    "silent_test": ("pattern_test", "saip_test"),
}

# Statuses worth retrying besides 5xx: the siren is busy (409) or the gateway is overloaded.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
MISCONFIGURED_STATUSES = frozenset({401, 403})


def classify(status: int, error: str | None, retry_after: float | None) -> errors.DeliveryError:
    """What a gateway's non-2xx answer means for the delivery.

    409 busy, 408, 425, 429, 5xx → transient (Retry-After honoured); 401 / 403 → the channel is
    misconfigured (its token); anything else (404 unknown siren, 422 fault, 400 …) → permanent.
    """
    code = error or f"http_{status}"
    message = f"siren gateway answered HTTP {status} ({code})"
    if status in MISCONFIGURED_STATUSES:
        return errors.ChannelMisconfigured(message + "; check the channel's token", code=code)
    if status in TRANSIENT_STATUSES or status >= 500:
        return errors.Transient(message, code=code, retry_after=retry_after)
    return errors.Permanent(message, code=code)


def patterns(config: Mapping[str, Any]) -> dict[str, str]:
    """The signal pattern of each command, from the channel's configuration."""
    return {cmd: str(config.get(key, default)) for cmd, (key, default) in PATTERN_SETTING.items()}


def command_body(message: model.Message, pattern: str) -> dict[str, Any]:
    body = {
        "command": message.command,
        "pattern": pattern,
        "alert_id": message.alert_id,
        "request_id": str(message.delivery_id),
    }
    return body | ({"text": message.body} if message.body else {})


class SirenHTTP(channels.Base):
    """Siren commands over HTTP to a gateway speaking alertd's siren-gateway protocol."""

    kind = model.Kind.SIREN

    def __init__(self, config: Mapping[str, Any], context: channels.Context) -> None:
        super().__init__(config, context)
        missing = [key for key in ("base_url", "token") if not config.get(key)]
        if missing:
            raise errors.ConfigError(
                problems=[f"channel {context.name!r}: {key} is required" for key in missing]
            )
        self.base_url = str(config["base_url"]).rstrip("/")
        self.timeout = float(config.get("timeout", 5))
        self.patterns = patterns(config)
        self._token = str(config["token"])
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"SirenHTTP(name={self.context.name!r}, base_url={self.base_url!r})"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
            headers={"Authorization": f"Bearer {self._token}"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, message: model.Message) -> model.Receipt:
        pattern = self.patterns.get(message.command)
        if pattern is None:
            raise errors.Permanent(
                f"a siren cannot {message.command!r}; commands: {', '.join(PATTERN_SETTING)}",
                code="unsupported_command",
            )
        url = self._siren_url(message.to) + "/commands"
        answer = await self._call("POST", url, "command_id", json=command_body(message, pattern))
        return model.Receipt(provider_id=str(answer["command_id"]))

    async def siren_state(self, siren_id: str) -> str:
        """The siren's last known state as the gateway reports it (ready, activated, fault …)."""
        return str((await self._call("GET", self._siren_url(siren_id), "state"))["state"])

    def _siren_url(self, siren_id: str) -> str:
        return f"{self.base_url}/v1/sirens/{urllib.parse.quote(siren_id, safe='')}"

    async def _call(self, method: str, url: str, want: str, **kwargs: Any) -> dict[str, Any]:
        """One gateway request: its JSON answer (holding `want`), or a classified failure."""
        try:
            async with self._session.request(method, url, allow_redirects=False, **kwargs) as resp:
                body = await _json_or_none(resp)
                if _is_2xx(resp.status) and isinstance(body, dict) and want in body:
                    return body
                raise _failure(resp, body)
        except TimeoutError as exc:
            raise errors.Transient(
                f"siren gateway timed out after {self.timeout}s", code="timeout"
            ) from exc
        except aiohttp.ClientError as exc:
            raise errors.Transient(f"siren gateway unreachable: {exc}", code="network") from exc


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


def _failure(resp: aiohttp.ClientResponse, body: Any) -> errors.DeliveryError:
    if _is_2xx(resp.status):  # accepted but unreadable; the request_id makes a retry safe
        return errors.Transient("siren gateway sent an unreadable answer", code="bad_answer")
    error = body.get("error") if isinstance(body, dict) else None
    retry_after = channels.retry_after(resp.headers.get("Retry-After"), model.utcnow())
    return classify(resp.status, str(error) if error else None, retry_after)
