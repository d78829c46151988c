"""SMS through Twilio's Messages API, with the real `twilio` library's async client.

Configuration (`Settings`): ``account_sid``, ``auth_token`` (or ``auth_token_file``),
``from`` or ``messaging_service_sid``, optional ``base_url`` (another address for the API, e.g. the
fake), ``timeout`` (s, default 10), ``max_concurrency`` (default 100), ``status_callback = false``
to ask for no status callbacks.

Twilio posts each message's status to ``/v1/receipts/<the channel's name>`` (the older
``/v1/receipts/twilio`` still works); `TwilioSMS.receipt` checks the signature with this channel's
auth token and maps the status (`channels.Receipts`).
"""

from __future__ import annotations

import base64
import contextvars
import re
import urllib.parse
from typing import Any, ClassVar

import aiohttp
import pydantic
import structlog
from twilio import request_validator, rest
from twilio.base import exceptions as twilio_exceptions
from twilio.http import async_http_client, response as twilio_response

from alertd import channels, errors, model, settings

log = structlog.get_logger("alertd.channels.twilio")

# How alertd treats Twilio's error codes (https://www.twilio.com/docs/api/errors/<code>).
CODES: dict[int, tuple[type[errors.DeliveryError], str]] = {
    20003: (errors.ChannelMisconfigured, "authentication failed: check account_sid and auth_token"),
    20429: (errors.Transient, "too many requests: back off"),
    21611: (errors.Transient, "the sender's queue is full: slow down"),
    30001: (errors.Transient, "queue overflow: slow down"),
    30003: (errors.Transient, "unreachable destination handset"),
    30036: (errors.Transient, "validity period expired: re-send while the alert is valid"),
    21211: (errors.Permanent, "invalid 'To' phone number"),
    21610: (errors.Permanent, "the recipient replied STOP"),
    21614: (errors.Permanent, "'To' is not a mobile number"),
    21635: (errors.Permanent, "'To' cannot receive SMS (landline)"),
    30006: (errors.Permanent, "landline or unreachable carrier"),
}

FORM = "application/x-www-form-urlencoded"  # what Twilio posts, and all it posts
SID = re.compile(r"[A-Za-z0-9]{1,64}")  # Twilio's are two letters and 32 hex digits

# The Retry-After of the last Twilio response in this task: the library drops response headers
# when it raises, and each concurrent send runs in its own task, hence its own context.
_retry_after: contextvars.ContextVar[float | None] = contextvars.ContextVar("twilio_retry_after", default=None)


def classify(status: int, code: int | None, retry_after: float | None) -> errors.DeliveryError:
    """The delivery error for a Twilio error answer: its code first, else its HTTP status."""
    kind, why = CODES.get(code, (None, "")) if code else (None, "")
    if kind is None:
        kind, why = by_status(status)
    if kind is errors.ChannelMisconfigured:
        code = code or 20003
    text = str(code or status)
    message = f"Twilio {text}: {why}"
    if kind is errors.Transient:
        return errors.Transient(message, code=text, retry_after=retry_after)
    return kind(message, code=text)


def by_status(status: int) -> tuple[type[errors.DeliveryError], str]:
    if status == 401:
        return errors.ChannelMisconfigured, "authentication failed: check account_sid and auth_token"
    if status == 429 or status >= 500:
        return errors.Transient, f"HTTP {status} from Twilio"
    return errors.Permanent, f"HTTP {status}: request refused"


def twilio_status_to_state(status: str) -> model.State | None:
    """The delivery state a status callback's MessageStatus means; None while still in flight."""
    return STATES.get(status)


STATES = {
    "sent": model.State.SENT,
    "delivered": model.State.DELIVERED,
    "read": model.State.DELIVERED,
    "undelivered": model.State.FAILED,
    "failed": model.State.FAILED,
}


class HttpClient(async_http_client.AsyncTwilioHttpClient):
    """Twilio's async client on our own session, sent to `base_url`, honouring `timeout`."""

    def __init__(self, base_url: str | None, timeout: float, limit: int) -> None:
        super().__init__(pool_connections=False, timeout=timeout)  # no retries: alertd owns them
        self.base = urllib.parse.urlsplit(base_url) if base_url else None
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    def rewrite(self, url: str) -> str:
        if self.base is None:
            return url
        parts = urllib.parse.urlsplit(url)
        path = self.base.path.rstrip("/") + parts.path
        return urllib.parse.urlunsplit((self.base.scheme, self.base.netloc, path, parts.query, ""))

    async def request(self, method: str, url: str, params: Any = None, data: Any = None,
                      headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None,
                      timeout: float | None = None, allow_redirects: bool = False) -> twilio_response.Response:
        if auth is not None:  # as a header: aiohttp 3.14 deprecates BasicAuth objects
            headers = dict(headers or {}, Authorization=basic_auth(*auth))
        # The library passes timeout=None, which aiohttp reads as "no timeout at all".
        response = await super().request(method, self.rewrite(url), params, data, headers, None,
                                         timeout or self.timeout, allow_redirects)
        _retry_after.set(channels.retry_after(response.headers.get("Retry-After"), model.utcnow()))
        return response


def basic_auth(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode("latin1")).decode("ascii")


class Settings(settings.Channel):
    account_sid: str
    auth_token: pydantic.SecretStr
    from_: str | None = pydantic.Field(None, alias="from")
    messaging_service_sid: str | None = None
    base_url: str | None = None
    timeout: settings.Positive = 10.0
    status_callback: bool = True

    @pydantic.model_validator(mode="after")
    def _a_sender(self) -> Settings:
        if not (self.from_ or self.messaging_service_sid):
            raise ValueError("one of from or messaging_service_sid is required by the twilio plugin")
        return self


class TwilioSMS(channels.Base):
    kind: ClassVar[str] = model.Kind.SMS
    address = model.Address.PHONE
    settings = Settings
    options: Settings
    default_concurrency: ClassVar[int] = 100
    receipt_alias: ClassVar[str | None] = "twilio"  # the status callbacks' path before it was the channel's name

    def __init__(self, config: Any, context: channels.Context) -> None:
        super().__init__(config, context)
        self.sender = sender(self.options)
        self.status_callback = status_callback(self.options, context)
        self.client: rest.Client | None = None

    async def start(self) -> None:
        o = self.options
        http = HttpClient(o.base_url, o.timeout, self.concurrency)
        self.client = rest.Client(o.account_sid, o.auth_token.get_secret_value(), http_client=http)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.http_client.close()
            self.client = None

    async def send(self, message: model.Message) -> model.Receipt:
        assert self.client is not None, "send before start"
        try:
            created = await self.client.messages.create_async(
                to=message.to, body=message.body, status_callback=self.status_callback, **self.sender
            )
        except twilio_exceptions.TwilioException as exc:
            raise self.refused(message, exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("twilio unreachable", alert_id=message.alert_id, error=type(exc).__name__)
            raise errors.Transient(f"Twilio unreachable: {type(exc).__name__}", code=type(exc).__name__) from exc
        return model.Receipt(provider_id=created.sid, status=created.status)

    def __repr__(self) -> str:  # the auth token stays out of logs and tracebacks
        return f"TwilioSMS(name={self.context.name!r}, account_sid={self.options.account_sid!r})"

    async def receipt(self, callback: channels.Callback) -> list[channels.Report]:
        """A status callback (`channels.Receipts`): signed with this account's auth token over the
        URL Twilio called, else 403 and nothing of it is taken."""
        form = await read_form(callback)
        signature = callback.header("X-Twilio-Signature")
        validator = request_validator.RequestValidator(self.options.auth_token.get_secret_value())
        if not (signature and validator.validate(callback.url, form, signature)):
            raise errors.Forbidden("the X-Twilio-Signature does not match", field="X-Twilio-Signature")
        sid, status = form.get("MessageSid"), form.get("MessageStatus", "")
        if not sid:
            raise errors.BadRequest("MessageSid is required", field="MessageSid")
        if not SID.fullmatch(sid):
            raise errors.BadRequest("MessageSid must be 1 to 64 letters and digits", field="MessageSid")
        state = twilio_status_to_state(status)
        if state is None:  # still in flight (queued, sending …)
            return []
        return [channels.Status(sid, state, undelivered(form, status) if state is model.State.FAILED else None)]

    def refused(self, message: model.Message, exc: twilio_exceptions.TwilioException) -> errors.DeliveryError:
        status, code = getattr(exc, "status", 500), getattr(exc, "code", None)
        error = classify(status, code if isinstance(code, int) else None, _retry_after.get())
        # Per-message refusals are the dispatcher's to record; a rejected account is the operator's.
        level = log.warning if isinstance(error, errors.ChannelMisconfigured) else log.debug
        level("twilio refused", alert_id=message.alert_id, delivery_id=message.delivery_id,
              to=model.mask(message.to), status=status, code=error.code, outcome=type(error).__name__)
        return error


async def read_form(callback: channels.Callback) -> dict[str, str]:
    """The callback's form, or a 4xx naming what cannot be read."""
    if callback.content_type != FORM:
        raise errors.UnsupportedMediaType(f"a Twilio callback is {FORM}", field="Content-Type")
    body = await callback.read()
    try:
        text = body.decode(callback.charset or "utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=callback.charset or "utf-8")
    except (ValueError, LookupError) as exc:  # bytes not of its charset, a charset unknown
        raise errors.BadRequest(f"the body cannot be read as a form: {exc}", field="body") from None
    return dict(pairs)  # a repeated field: its last value


def undelivered(form: dict[str, str], status: str) -> errors.DeliveryError:
    """What Twilio's ErrorCode means, from the classification table."""
    code = form.get("ErrorCode", "")
    if not (code.isascii() and code.isdigit() and len(code) <= 10):
        return errors.Permanent(f"Twilio reported the message {status}", code=status)
    return classify(400, int(code), None)


def sender(options: Settings) -> dict[str, str]:
    if options.from_:
        return {"from_": options.from_}
    assert options.messaging_service_sid  # one of the two: `Settings._a_sender`
    return {"messaging_service_sid": options.messaging_service_sid}


def status_callback(options: Settings, context: channels.Context) -> str | None:
    if not options.status_callback:
        return None
    return context.public_url.rstrip("/") + "/v1/receipts/" + urllib.parse.quote(context.name, safe="")
