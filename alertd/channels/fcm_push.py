"""Push notifications through Firebase Cloud Messaging (HTTP v1) with the real `firebase-admin`.

Per-token sends and topic sends (`zone-<code>` or `/topics/<name>` addresses) go through
`messaging.send_each_async`, up to 500 messages a call. Facts about the library this relies on are
in PROVIDERS.md.

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
import re
from collections.abc import Mapping, Sequence
from typing import Any

import firebase_admin
import google.auth.credentials
import google.auth.transport.requests
import httpx
import structlog
from firebase_admin import _http_client, _retry, credentials, exceptions, messaging

from alertd import channels, errors, model

log = structlog.get_logger("alertd.channels.fcm")

BATCH = 500  # send_each_async's limit
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
    # On a 401 firebase-admin's httpx auth flow calls refresh(); the stock AnonymousCredentials
    # raises there, which escapes asyncio.gather and fails the whole batch with one UnknownError
    # while its other requests are still in flight. A no-op lets the 401 surface per message.
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
        return channels.as_result(exc)
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


def refresh_delay(expiry: dt.datetime | None, now: dt.datetime) -> float:
    """Seconds until the OAuth token should be refreshed (google-auth's expiry is naive UTC)."""
    if expiry is None:
        return REFRESH_RETRY
    expiry = expiry.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (expiry - now).total_seconds() - REFRESH_MARGIN)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- the channel ---------------------------------------------------------------------------------


class FCMPush(channels.Base):
    kind = model.Kind.PUSH
    # httpx's pool holds 100 connections; more sends in flight queue in httpcore's pool, which
    # scans its queue for every request (quadratic: ~70 messages/s with 500 in flight, measured).
    default_concurrency = 100

    def __init__(self, config: Mapping[str, Any], context: channels.Context) -> None:
        super().__init__(config, context)
        if not config.get("project_id"):
            raise errors.ConfigError(f"channel {context.name!r}: project_id is required")
        self.project_id = config["project_id"]
        self.timeout = float(config.get("timeout", 10))
        self.app: firebase_admin.App | None = None
        self._refresher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"FCMPush(name={self.context.name!r}, project_id={self.project_id!r})"

    async def start(self) -> None:
        path = self.config.get("service_account_file")
        try:
            cred = credentials.Certificate(path) if path else AnonymousCredential()
        except (OSError, ValueError) as exc:
            where = f"channel {self.context.name!r}: service_account_file"
            raise errors.ConfigError(f"{where}: {exc}") from exc
        name = f"alertd-{self.context.name}-{next(_instances)}"
        options = {"projectId": self.project_id, "httpTimeout": self.timeout}
        self.app = firebase_admin.initialize_app(cred, options, name=name)
        service = messaging._get_messaging_service(self.app)
        if self.config.get("base_url"):
            base = str(self.config["base_url"]).rstrip("/")
            service._fcm_url = f"{base}/v1/projects/{self.project_id}/messages:send"
        await self._replace_async_client(service)
        if path:
            await self._refresh()  # fail fast on a bad key, and keep the token off the send path
            self._refresher = asyncio.create_task(self._keep_token_fresh())

    async def _replace_async_client(self, service: Any) -> None:
        # firebase-admin's async client mounts an HttpxRetryTransport that re-sends on 500/503 for
        # about 7 s (DEFAULT_HTTPX_RETRY_CONFIG: 4 retries, backoff 0.5). alertd's retry policy must
        # be the only one (it honours Retry-After and the alert's expiry), so the service gets a
        # client built through the library's own constructor with a zero-retry HttpxRetry: the
        # transport then returns the first response, whatever its status. No HTTP call is patched.
        stock = service._async_client
        # The pool timeout is lifted: up to 500 sends share ~100 connections, and waiting for one is
        # local queueing, not the provider being slow; each in-flight request keeps its timeout.
        service._async_client = _http_client.HttpxAsyncClient(
            credential=service._credential,
            timeout=httpx.Timeout(self.timeout, pool=None),
            retry_config=_retry.HttpxRetry(max_retries=0),
        )
        await stock.aclose()

    async def _refresh(self) -> None:
        # The token refresh is a blocking HTTP call in google-auth: run it off the event loop.
        credential = self.app.credential.get_credential()
        await asyncio.to_thread(credential.refresh, google.auth.transport.requests.Request())

    async def _keep_token_fresh(self) -> None:
        credential = self.app.credential.get_credential()
        while True:
            await asyncio.sleep(refresh_delay(credential.expiry, model.utcnow()))
            try:
                await self._refresh()
            except Exception as exc:  # the token endpoint may be down for a while; keep trying
                log.warning("fcm_token_refresh_failed", channel=self.context.name, error=str(exc))
                await asyncio.sleep(REFRESH_RETRY)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self.app is not None:
            await messaging._get_messaging_service(self.app)._async_client.aclose()
            # delete_app closes the service with asyncio.run(), which cannot run inside our loop.
            await asyncio.to_thread(firebase_admin.delete_app, self.app)
            self.app = None

    async def send(self, message: model.Message) -> model.Receipt:
        [result] = await self.send_batch([message])
        if isinstance(result, errors.DeliveryError):
            raise result
        return result

    async def send_batch(
        self, messages: Sequence[model.Message]
    ) -> list[model.Receipt | errors.DeliveryError]:
        results: list[model.Receipt | errors.DeliveryError] = []
        for chunk in chunks(messages, BATCH):
            results.extend(await self._send_chunk(chunk))
        return results

    async def _send_chunk(
        self, chunk: Sequence[model.Message]
    ) -> list[model.Receipt | errors.DeliveryError]:
        try:
            batch = await messaging.send_each_async([build(m) for m in chunk], app=self.app)
        except ValueError as exc:
            # firebase-admin validates the whole list before sending anything: one malformed
            # message (a bad topic name) would sink the others, so send them one by one.
            if len(chunk) == 1:
                return [errors.Permanent(f"FCM refuses it: {exc}", code="INVALID_ARGUMENT")]
            singles = await asyncio.gather(*(self._send_chunk([m]) for m in chunk))
            return [result for [result] in singles]
        except exceptions.FirebaseError as exc:
            # Raised for the whole call when something outside httpx fails (a token refresh
            # after a 401): every message shares the outcome.
            return [classify(exc) for _ in chunk]
        return [self._result(m, r) for m, r in zip(chunk, batch.responses, strict=True)]

    def _result(
        self, message: model.Message, response: messaging.SendResponse
    ) -> model.Receipt | errors.DeliveryError:
        if response.success:
            return model.Receipt(provider_id=response.message_id)
        failure = classify(response.exception)
        log.info(
            "fcm_send_failed",
            alert_id=message.alert_id,
            delivery_id=message.delivery_id,
            to=model.mask(message.to),
            code=failure.code,
        )
        return failure
