"""The one exception hierarchy of alertd.

Each class's docstring is its default message; the facts of a failure are attributes, so callers
decide on them instead of parsing text. The HTTP edge turns `ProblemError`s into RFC 9457 problem
details using `status`, `type` and `field`.
"""

from __future__ import annotations

from typing import Any


class AlertdError(Exception):
    """alertd failed."""

    def __init__(self, message: str | None = None, **facts: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        for name, value in facts.items():
            setattr(self, name, value)
        super().__init__(self.message)


# -- configuration -------------------------------------------------------------------------------


class ConfigError(AlertdError):
    """The configuration is not valid."""

    problems: list[str]

    def __init__(self, message: str | None = None, problems: list[str] | None = None) -> None:
        problems = problems or []
        super().__init__(message or "; ".join(problems) or None, problems=problems)


# -- HTTP-facing problems ------------------------------------------------------------------------


class ProblemError(AlertdError):
    """The request cannot be served."""

    status = 400
    type = "about:blank"
    field: str | None = None
    errors: list[dict[str, Any]] | None = None
    more_errors: int | None = None  # problems left out of `errors`, which lists the first ones


class BadRequest(ProblemError):
    """The request is malformed."""

    status = 400
    type = "https://alertd.example/problems/bad-request"


class TooLarge(BadRequest):
    """The body is larger than alertd accepts."""

    status = 413
    type = "https://alertd.example/problems/too-large"


class UnsupportedMediaType(ProblemError):
    """The body is not of a media type this endpoint reads."""

    status = 415
    type = "https://alertd.example/problems/unsupported-media-type"


class Invalid(ProblemError):
    """The request is not valid."""

    status = 422
    type = "https://alertd.example/problems/invalid"


class Unauthenticated(ProblemError):
    """A valid bearer token is required."""

    status = 401
    type = "https://alertd.example/problems/unauthenticated"


class Forbidden(ProblemError):
    """This token may not do that."""

    status = 403
    type = "https://alertd.example/problems/forbidden"


class OutsideJurisdiction(Forbidden):
    """The area leaves the caller's jurisdiction."""

    type = "https://alertd.example/problems/outside-jurisdiction"


class NotFound(ProblemError):
    """No such resource."""

    status = 404
    type = "https://alertd.example/problems/not-found"


class Conflict(ProblemError):
    """The resource is not in a state that allows this."""

    status = 409
    type = "https://alertd.example/problems/conflict"


class SelfApproval(Forbidden):
    """You created this alert; a second person must approve it."""

    type = "https://alertd.example/problems/self-approval"


class ApprovalExpired(Conflict):
    """Nobody approved the alert in time: it will never be sent."""

    type = "https://alertd.example/problems/approval-expired"


class ApprovalChanged(Conflict):
    """What the alert would send changed since it was put before you: read it again, then approve."""

    type = "https://alertd.example/problems/approval-changed"


class UnknownTemplate(Invalid):
    """No template by that name for that channel and locale."""

    type = "https://alertd.example/problems/unknown-template"


class IdempotencyKeyReused(Invalid):
    """This idempotency key (or identifier) was already used for a different order."""

    type = "https://alertd.example/problems/idempotency-key-reused"


class MessageTooLong(Invalid):
    """The rendered message exceeds the channel's limit."""

    limit: int  # the channel's most (segments, bytes, pages)
    pages: int  # cell broadcast only: the pages it takes

    type = "https://alertd.example/problems/message-too-long"


# -- delivery outcomes (raised by channels, decided on by retry.decide) --------------------------


class DeliveryError(AlertdError):
    """The provider did not accept the message."""

    code: str | None = None


class Transient(DeliveryError):
    """The provider failed for a reason that may pass; try again later."""

    retry_after: float | None = None  # seconds, as the provider asked

    def __init__(
        self, message: str | None = None, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code, retry_after=retry_after)


class Permanent(DeliveryError):
    """The provider refused the message for good; do not retry."""

    dead_address: bool = False  # the address is dead for good (`channels.DeadAddresses`)

    def __init__(
        self, message: str | None = None, *, code: str | None = None, dead_address: bool = False
    ) -> None:
        super().__init__(message, code=code, dead_address=dead_address)


class ChannelMisconfigured(DeliveryError):
    """The channel's credentials or settings are rejected by the provider; an operator must act.

    Not the recipient's fault: the delivery waits (until the alert expires) instead of failing."""


class Halted(DeliveryError):
    """The alert was cancelled before the call began: nothing was sent."""


# -- store ---------------------------------------------------------------------------------------


class StoreError(AlertdError):
    """The store failed."""


class UnsupportedStore(ConfigError):
    """No store for that URL scheme."""


class TooManyRequests(ProblemError):
    """Too many orders from this cell: try again later."""

    status = 429
    type = "https://alertd.example/problems/too-many-orders"
    retry_after: int = 1  # whole seconds until the caller may try again (the `Retry-After` header)


# -- the identity of a CAP message (alertd.identity) --------------------------------------------


class ForeignSender(Forbidden):
    """The CAP sender is not one of the caller's cell's senders."""

    type = "https://alertd.example/problems/foreign-sender"
    sender: str = ""


class IdentifierReused(Conflict):
    """This sender already used this CAP identifier for a different message; CAP identifiers are unique per sender."""

    type = "https://alertd.example/problems/identifier-reused"
    alert_id: str = ""  # the alert first stored under that sender and identifier


class SentOutOfRange(Invalid):
    """The CAP message's sent time is too far from now."""

    type = "https://alertd.example/problems/sent-out-of-range"
