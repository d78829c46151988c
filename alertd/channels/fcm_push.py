"""Push notifications through Firebase Cloud Messaging (HTTP v1), firebase-admin doing the rest.

firebase-admin holds the credential and refreshes its OAuth token, builds and validates each
message and encodes it as the HTTP v1 JSON body, and names each failure (`exceptions.FirebaseError`
and its FCM subclasses, from the answer's status and body, as its own send path does). The POSTs
themselves (`messages:send`, one per token or topic: `zone-<code>` or `/topics/<name>`) go through
one aiohttp session, pooled keep-alive HTTP/1.1 with up to `max_concurrency` connections:
firebase-admin's `send_each_async` spends some 3 ms of CPU per message in httpx/httpcore, aiohttp
about 0.3 ms with the encoding (measured with bench/fcm_ceiling.py; the fake speaks no HTTP/2).
Facts about the library this relies on are in PROVIDERS.md.

The project's quota (`quota_per_minute`, FCM's 600,000 by default) is kept with a token bucket
(`pacing.Bucket`: a second of quota may go at once, then the rate). A QUOTA_EXCEEDED pauses the whole
channel for its Retry-After, at least a minute: meanwhile every message is answered transient with
the time left (code ``quota_paused``), without a call. A message whose turn lies further than
`timeout` ahead is answered the same way (code ``quota_paced``) instead of holding a sender that
long. Both are alertd's own answers, FCM not asked: under their own codes in the error metrics.

The classification of FCM's error codes is `fcm_client.classify`'s (its module docstring); what
touches firebase-admin, google-auth and httpx is in `fcm_client`, imported when the channel starts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import structlog

from alertd import channels, errors, model, pacing, settings

if TYPE_CHECKING:
    import firebase_admin

log = structlog.get_logger("alertd.channels.fcm")

QUOTA_PER_MINUTE = 600_000  # FCM's default per project
REFRESH_MARGIN = 300.0  # refresh the OAuth token this long before it expires
REFRESH_RETRY = 30.0  # after a failed refresh
_instances = itertools.count(1)


# -- decisions -----------------------------------------------------------------------------------


def refresh_delay(expiry: dt.datetime | None, now: dt.datetime) -> float:
    """Seconds until the OAuth token should be refreshed (google-auth's expiry is naive UTC)."""
    if expiry is None:
        return REFRESH_RETRY
    expiry = expiry.replace(tzinfo=dt.UTC)
    return max(0.0, (expiry - now).total_seconds() - REFRESH_MARGIN)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, NO_PROXY …), if any."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def held(bucket: pacing.Bucket, now: float, wait: float) -> errors.Transient:
    """The answer for a message that would wait `wait` s for its turn: sent again later."""
    if bucket.paused_until > now:
        return errors.Transient(f"FCM answered QUOTA_EXCEEDED: the channel pauses for {wait:.0f} s",
                                code="quota_paused", retry_after=wait)
    return errors.Transient(f"the FCM quota of {bucket.rate * 60:.0f} a minute is used up for {wait:.0f} s",
                            code="quota_paced", retry_after=wait)


# -- the channel ---------------------------------------------------------------------------------


class Settings(settings.Channel):
    project_id: str
    # The service account's JSON key, a path (a systemd credential's with "credential:NAME"), opened
    # by firebase-admin; none: no OAuth at all, for the fake.
    service_account_file: str | None = None
    base_url: str | None = None
    timeout: settings.Positive = 10.0
    quota_per_minute: settings.Positive = QUOTA_PER_MINUTE


class FCMPush(channels.Base):
    kind = model.Kind.PUSH
    settings = Settings
    options: Settings
    address = model.Address.PUSH_TOKEN
    sends_topics: ClassVar[bool] = True  # `channels.Topics`: command "topic" goes to a topic
    reports_dead_addresses: ClassVar[bool] = True  # `channels.DeadAddresses`: UNREGISTERED, a token that is none
    # One keep-alive connection for each call in flight (HTTP/1.1 carries one at a time).
    default_concurrency = 100

    def __init__(self, config: Mapping[str, Any] | Settings, context: channels.Context) -> None:
        super().__init__(config, context)
        self.project_id = self.options.project_id
        self.timeout = self.options.timeout
        # Each sending process its share.
        self.bucket = pacing.Bucket.per_minute(self.options.quota_per_minute / context.senders)
        self.clock = time.monotonic  # the bucket's time; a test may move it
        self.app: firebase_admin.App | None = None
        self._http: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"FCMPush(name={self.context.name!r}, project_id={self.project_id!r})"

    async def start(self) -> None:
        from alertd.channels import fcm_client  # here, not above: see its docstring

        path = self.options.service_account_file
        try:
            cred = fcm_client.credential(path)
        except (OSError, ValueError) as exc:
            where = f"channel {self.context.name!r}: service_account_file"
            raise errors.ConfigError(f"{where}: {exc}") from exc
        name = f"alertd-{self.context.name}-{next(_instances)}"
        options = {"projectId": self.project_id, "httpTimeout": self.timeout}
        self.app, self.service = fcm_client.start(cred, options, name)
        if self.options.base_url:
            base = self.options.base_url.rstrip("/")
            self.service._fcm_url = f"{base}/v1/projects/{self.project_id}/messages:send"
        self.url = self.service._fcm_url
        self.credential = self.app.credential.get_credential()
        self.refreshable = bool(path)
        if path:
            await self._refresh()  # fail fast on a bad key, and keep the token off the send path
            self._refresher = asyncio.create_task(self._keep_token_fresh())
        self._http = self._session()

    def _session(self) -> aiohttp.ClientSession:
        # The pool wait is local queueing, not FCM being slow: only the socket has a timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        headers = {**self.service._fcm_headers, "Content-Type": "application/json; charset=UTF-8"}
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        # The environment's proxy (HTTPS_PROXY …) applies, as to the token refresh (requests),
        # looked up once: aiohttp's trust_env would look it up, and netrc, in a thread per request.
        # FCM sets no cookie worth keeping; a jar would only cost time on every answer.
        self.proxy = env_proxy(self.url)
        return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers,
                                     cookie_jar=aiohttp.DummyCookieJar())

    async def _refresh(self) -> None:
        from alertd.channels import fcm_client  # loaded by start()

        await asyncio.to_thread(fcm_client.refresh, self.credential)

    async def _refresh_once(self) -> None:
        """A refresh after a 401: the calls refused together share one."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _keep_token_fresh(self) -> None:
        while True:
            await asyncio.sleep(refresh_delay(self.credential.expiry, model.utcnow()))
            try:
                await self._refresh()
            except Exception as exc:  # the token endpoint may be down for a while; keep trying
                log.warning("fcm_token_refresh_failed", channel=self.context.name, error=str(exc))
                await asyncio.sleep(REFRESH_RETRY)

    async def close(self) -> None:
        for task in (self._refresher, self._refreshing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.app is not None:
            from alertd.channels import fcm_client  # loaded by start()

            await fcm_client.close(self.app, self.service)
            self.app = None

    async def send(self, message: model.Message) -> model.Receipt:
        result = await self._send_one(message)
        if isinstance(result, errors.DeliveryError):
            raise result
        return result

    async def send_batch(
        self, messages: Sequence[model.Message]
    ) -> list[model.Receipt | errors.DeliveryError]:
        """Each message's outcome, in order; the pool keeps `concurrency` of them in flight."""
        return list(await asyncio.gather(*(self._send_one(m) for m in messages)))

    async def _send_one(self, message: model.Message) -> model.Receipt | errors.DeliveryError:
        from alertd.channels import fcm_client  # loaded by start()

        try:
            body = json.dumps({"message": fcm_client.encode(message)}, separators=(",", ":")).encode()
        except ValueError as exc:  # firebase-admin's validation: this message can never go
            return errors.Permanent(f"FCM refuses it: {exc}", code="INVALID_ARGUMENT")
        hold = await self._turn()
        if hold is not None:
            return hold
        try:
            status, headers, content = await self._post(body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return self._failed(message, fcm_client.classify(fcm_client.transport_failure(exc)))
        if status == 200:
            return model.Receipt(provider_id=json.loads(content)["name"])
        failure = fcm_client.classify(fcm_client.http_failure(self.service, self.url, status, headers, content))
        if failure.code == "QUOTA_EXCEEDED" and isinstance(failure, errors.Transient):
            self.bucket = pacing.pause(self.bucket, self.clock(), failure.retry_after or fcm_client.QUOTA_BACKOFF)
        return self._failed(message, failure)

    async def _turn(self) -> errors.Transient | None:
        """Wait for this message's turn in the quota; the answer instead when it is too far off."""
        now = self.clock()
        bucket, wait = pacing.take(self.bucket, now)
        if wait > self.timeout:
            return held(self.bucket, now, wait)
        self.bucket = bucket
        if wait > 0:
            await asyncio.sleep(wait)  # pacing to the quota is the point
        return None

    async def _post(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """The POST; after a 401, once more with a fresh token (as firebase-admin's own client
        does) when the credential can be refreshed. A refresh that fails leaves the 401."""
        answer = await self._post_once(body)
        if answer[0] == 401 and self.refreshable:
            try:
                await self._refresh_once()
            except Exception as exc:
                log.warning("fcm_token_refresh_failed", channel=self.context.name, error=str(exc))
                return answer
            answer = await self._post_once(body)
        return answer

    async def _post_once(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        token = self.credential.token
        headers = {"Authorization": f"Bearer {token}"} if token else None
        assert self._http is not None, "send before start"
        async with self._http.post(self.url, data=body, headers=headers, proxy=self.proxy) as resp:
            return resp.status, resp.headers, await resp.read()

    def _failed(self, message: model.Message, failure: errors.DeliveryError) -> errors.DeliveryError:
        log.info(
            "fcm_send_failed",
            alert_id=message.alert_id,
            delivery_id=message.delivery_id,
            to=model.mask(message.to),
            code=failure.code,
        )
        return failure
