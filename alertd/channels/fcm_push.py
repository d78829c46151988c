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

Classification of FCM's error codes (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode):

| FCM code                               | HTTP | alertd                                          |
|----------------------------------------|------|-------------------------------------------------|
| UNREGISTERED                           | 404  | Permanent, dead_address: the token is gone      |
| INVALID_ARGUMENT blaming the token     | 400  | Permanent, dead_address: it is no token at all  |
| INVALID_ARGUMENT, SENDER_ID_MISMATCH,  | 400, | Permanent: the same message can never succeed   |
| THIRD_PARTY_AUTH_ERROR, APNS_AUTH_ERROR| 403  |                                                 |
| QUOTA_EXCEEDED                         | 429  | Transient, retry_after ≥ 60 s (or Retry-After)  |
| UNAVAILABLE, INTERNAL, UNKNOWN, network| 503, | Transient, honouring Retry-After                |
| errors, HTTP/2 GOAWAY (UnknownError)   | 500  |                                                 |
| UNAUTHENTICATED, PERMISSION_DENIED,    | 401, | ChannelMisconfigured: an operator must act      |
| NOT_FOUND (no FCM detail)              | 403  |                                                 |

An INVALID_ARGUMENT blames the token when FCM says so (`bad_token`): a ``google.rpc.BadRequest``
field violation on the token field alone, or, without field violations, the error's message naming
an invalid registration token ("The registration token is not a valid FCM registration token", what
FCM answers for a token it cannot parse). Any other INVALID_ARGUMENT (a payload too big: "Android
message is too big") is this message's failure only, and the token stays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
import firebase_admin
import google.auth.credentials
import google.auth.transport.requests
import httpx
import structlog
from firebase_admin import credentials, exceptions, messaging

from alertd import channels, errors, model, pacing, settings

log = structlog.get_logger("alertd.channels.fcm")

QUOTA_PER_MINUTE = 600_000  # FCM's default per project
QUOTA_BACKOFF = 60.0  # FCM asks for at least a minute after QUOTA_EXCEEDED
REFRESH_MARGIN = 300.0  # refresh the OAuth token this long before it expires
REFRESH_RETRY = 30.0  # after a failed refresh
CRITICAL = frozenset({"extreme", "severe"})  # CAP severities that may break through silent mode
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
TOKEN_FIELDS = frozenset({"message.token", "message.fid"})
INVALID_TOKEN = re.compile(r"\b(not a valid|invalid) (fcm )?registration token\b", re.IGNORECASE)

PERMANENT = frozenset(
    {"INVALID_ARGUMENT", "SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"}
)
# NOT_FOUND without an UNREGISTERED detail: no such project or endpoint.
MISCONFIGURED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"})
_instances = itertools.count(1)


class _Anonymous(google.auth.credentials.AnonymousCredentials):
    # On a 401 firebase-admin's own httpx auth flow (the app's client, unused for sending) calls
    # refresh(); the stock AnonymousCredentials raises there. A no-op lets the 401 surface.
    def refresh(self, request: Any) -> None:
        pass


class AnonymousCredential(credentials.Base):
    """No OAuth at all: for the fake FCM server (tests, demo, benchmarks)."""

    def __init__(self) -> None:
        self._credential = _Anonymous()

    def get_credential(self) -> google.auth.credentials.Credentials:
        return self._credential


# -- decisions -----------------------------------------------------------------------------------


def google_error(exc: exceptions.FirebaseError) -> dict[str, Any]:
    """The ``error`` object of the failed response's body (empty when there is none)."""
    response = exc.http_response
    try:
        error = response.json().get("error") if response is not None else None
    except (ValueError, AttributeError):
        error = None
    return error if isinstance(error, dict) else {}


def _details(error: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict) and d.get("@type") == kind] if isinstance(details, list) else []


def fcm_code(exc: exceptions.FirebaseError) -> str:
    """The FCM error code of a failed send (from the FcmError detail), else Google's status."""
    if isinstance(exc, messaging.UnregisteredError):
        return "UNREGISTERED"
    for detail in _details(google_error(exc), _FCM_ERROR):
        return str(detail.get("errorCode"))
    return exc.code


def bad_token(exc: exceptions.FirebaseError) -> bool:
    """Whether FCM blames the registration token itself, not the message (see the module docstring):
    field violations, when there are any, must all be on the token; else the message names it."""
    error = google_error(exc)
    fields = [v.get("field") for d in _details(error, _BAD_REQUEST) for v in d.get("fieldViolations") or []
              if isinstance(v, dict)]
    if fields:
        return all(field in TOKEN_FIELDS for field in fields)
    return INVALID_TOKEN.search(str(error.get("message") or exc)) is not None


def retry_after(exc: exceptions.FirebaseError) -> float | None:
    """The Retry-After of the failed response, in seconds."""
    response = exc.http_response
    return channels.retry_after(response.headers.get("Retry-After") if response is not None else None, model.utcnow())


def classify(exc: BaseException) -> errors.DeliveryError:
    """What a failed FCM send means for the delivery (see the table in the module docstring)."""
    if not isinstance(exc, exceptions.FirebaseError):
        return errors.Transient(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)  # as `channels.as_result`
    code = fcm_code(exc)
    text = f"FCM {code}: {exc}"
    if code == "UNREGISTERED" or (code == "INVALID_ARGUMENT" and bad_token(exc)):
        return errors.Permanent(text, code=code, dead_address=True)
    if code in PERMANENT:
        return errors.Permanent(text, code=code)
    if code in MISCONFIGURED:
        return errors.ChannelMisconfigured(text, code=code)
    wait = retry_after(exc)
    if code == "QUOTA_EXCEEDED":
        wait = max(wait or 0.0, QUOTA_BACKOFF)
    return errors.Transient(text, code=code, retry_after=wait)


def is_topic(message: model.Message) -> bool:
    """Topic sends are marked by the planner (command `topic`), never guessed from the address: a
    subscriber's push token must not be able to pose as a topic."""
    return message.command == "topic"


def build(message: model.Message) -> messaging.Message:
    """The firebase-admin message for one rendered alert message."""
    critical = message.data.get("severity", "").lower() in CRITICAL
    sound = messaging.CriticalSound("default", critical=True, volume=1.0) if critical else "default"
    target = {"topic": message.to.removeprefix("/topics/")} if is_topic(message) else {"fid": message.to}
    return messaging.Message(
        notification=messaging.Notification(title=message.title, body=message.body),
        data={"alert_id": message.alert_id, **message.data},
        android=messaging.AndroidConfig(priority="high"),
        apns=messaging.APNSConfig(
            headers={"apns-priority": "10"},
            payload=messaging.APNSPayload(aps=messaging.Aps(sound=sound)),
        ),
        **target,
    )


def encode(message: model.Message) -> dict[str, Any]:
    """The HTTP v1 JSON ``message`` for one rendered alert message, built and validated by
    firebase-admin (ValueError when it refuses it, a malformed topic name)."""
    return messaging._MessagingService.encode_message(build(message))


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


def http_failure(
    service: Any, url: str, status: int, headers: Mapping[str, str], content: bytes
) -> exceptions.FirebaseError:
    """The firebase-admin error for an FCM answer other than 200: the same type, code and
    `http_response` as its own send path gives (it reads the status and Google's error body)."""
    request = httpx.Request("POST", url)
    response = httpx.Response(status, headers=dict(headers), content=content, request=request)
    error = httpx.HTTPStatusError(f"FCM answered {status}", request=request, response=response)
    return service._handle_fcm_httpx_error(error)


def transport_failure(exc: BaseException) -> exceptions.FirebaseError:
    """The firebase-admin error for a call that got no answer, as its httpx path names them."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return exceptions.DeadlineExceededError(f"Timed out while making an API call: {exc}", cause=exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exceptions.UnavailableError(f"Failed to establish a connection: {exc}", cause=exc)
    return exceptions.UnknownError(f"Unknown error while making a remote service call: {exc}", cause=exc)


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
        path = self.options.service_account_file
        try:
            cred = credentials.Certificate(path) if path else AnonymousCredential()
        except (OSError, ValueError) as exc:
            where = f"channel {self.context.name!r}: service_account_file"
            raise errors.ConfigError(f"{where}: {exc}") from exc
        name = f"alertd-{self.context.name}-{next(_instances)}"
        options = {"projectId": self.project_id, "httpTimeout": self.timeout}
        self.app = firebase_admin.initialize_app(cred, options, name=name)
        self.service = messaging._get_messaging_service(self.app)
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
        # The token refresh is a blocking HTTP call in google-auth: run it off the event loop.
        await asyncio.to_thread(self.credential.refresh, google.auth.transport.requests.Request())

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
            await self.service._async_client.aclose()
            # delete_app closes the service with asyncio.run(), which cannot run inside our loop.
            await asyncio.to_thread(firebase_admin.delete_app, self.app)
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
        try:
            body = json.dumps({"message": encode(message)}, separators=(",", ":")).encode()
        except ValueError as exc:  # firebase-admin's validation: this message can never go
            return errors.Permanent(f"FCM refuses it: {exc}", code="INVALID_ARGUMENT")
        hold = await self._turn()
        if hold is not None:
            return hold
        try:
            status, headers, content = await self._post(body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return self._failed(message, classify(transport_failure(exc)))
        if status == 200:
            return model.Receipt(provider_id=json.loads(content)["name"])
        failure = classify(http_failure(self.service, self.url, status, headers, content))
        if failure.code == "QUOTA_EXCEEDED" and isinstance(failure, errors.Transient):
            self.bucket = pacing.pause(self.bucket, self.clock(), failure.retry_after or QUOTA_BACKOFF)
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
