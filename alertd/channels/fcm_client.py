"""What the FCM channel (`fcm_push`) does with firebase-admin, google-auth and httpx.

`fcm_push.FCMPush` imports this module when it starts, never before: a daemon whose push channel
sends from processes of its own (`channels.remote`) builds the plugin without starting it, and so
never loads these libraries (some 16 MB of its memory).

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
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import firebase_admin
import google.auth.credentials
import google.auth.transport.requests
import httpx
from firebase_admin import credentials, exceptions, messaging

from alertd import channels, errors, model

QUOTA_BACKOFF = 60.0  # FCM asks for at least a minute after QUOTA_EXCEEDED
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


def credential(path: str | None) -> credentials.Base:
    """The service account's key at `path` (OSError, ValueError when it cannot be read); none: no OAuth."""
    return credentials.Certificate(path) if path else AnonymousCredential()


def start(cred: credentials.Base, options: Mapping[str, Any], name: str) -> tuple[firebase_admin.App, Any]:
    """A firebase-admin app and its messaging service."""
    app = firebase_admin.initialize_app(cred, dict(options), name=name)
    return app, messaging._get_messaging_service(app)


def refresh(credential: google.auth.credentials.Credentials) -> None:
    """A new OAuth token: a blocking HTTP call in google-auth (run it off the event loop)."""
    credential.refresh(google.auth.transport.requests.Request())


async def close(app: firebase_admin.App, service: Any) -> None:
    await service._async_client.aclose()
    # delete_app closes the service with asyncio.run(), which cannot run inside our loop.
    await asyncio.to_thread(firebase_admin.delete_app, app)
