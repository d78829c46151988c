"""The channel plugin contract and its registry.

A channel is a class registered under the entry-point group ``alertd.channels``; alertd's own
built-ins register there exactly as a third party would (see ``pyproject.toml``). A channel takes its
configuration section and a `Context`, turns one rendered `model.Message` into one provider call,
and returns a `model.Receipt` or raises `errors.Transient` / `errors.Permanent` /
`errors.ChannelMisconfigured`. It never touches the store, the templates or the retry policy. The
dispatcher keeps up to `concurrency` calls of a channel in flight at once.

What a channel can do besides sending it declares, as one of the protocols below, checked with
`isinstance` by the dispatcher and the web layer, never looked up by name: `Halts` (it holds
messages before their call begins), `Receipts` (its provider reports back at
``POST /v1/receipts/{name}``), `Acknowledges` (each command is acknowledged, within a timeout),
`Heartbeats` (its gateway reports the health of the sirens it serves), `Topics` (a push channel that
sends to zone topics), `Senders` (it sends from several senders, each paced at its rate) and
`DeadAddresses` (its `errors.Permanent` may say the address is dead for good).
`alertd.testing.ChannelContract` tests each ability a channel declares.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import importlib.metadata
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import pydantic

from alertd import errors, model, pacing, settings as settings_mod, zones

GROUP = "alertd.channels"


@dataclasses.dataclass(frozen=True)
class Context:
    """What alertd hands a channel besides its own configuration section."""

    public_url: str  # where providers call back (Twilio status callbacks)
    name: str  # the channel's name in the configuration, e.g. "sms"
    # How many instances of the channel send at once (its sending processes): a provider's quota
    # for the channel as a whole is theirs to share.
    senders: int = 1


@runtime_checkable
class Channel(Protocol):
    # What it reaches: a built-in `model.Kind` or a kind of its own (`model.KIND_PATTERN`), the
    # word orders use; and what it sends to: a subscriber's phone or push token (a delivery per
    # subscriber who has one), a siren, or the area (one delivery per alert: `AreaBroadcast`).
    kind: str
    address: model.Address
    # The model of its configuration section: `config` validates `[channels.NAME]` with it, and
    # the channel is built with its instance (`settings.Channel` forbids unknown keys).
    settings: type[pydantic.BaseModel]
    # How many provider calls may be in flight at once; overridable by `max_concurrency`.
    concurrency: int

    def __init__(self, config: Any, context: Context) -> None:
        """Built with its section's settings (its `settings` model's instance, or a mapping)."""

    async def start(self) -> None:
        """Open clients; called once inside the running loop before any send."""

    async def send(self, message: model.Message) -> model.Receipt:
        """One provider call. Raises `errors.Transient` or `errors.Permanent`."""

    async def close(self) -> None:
        """Release clients; called once at shutdown."""


@runtime_checkable
class Halts(Protocol):
    """A channel that holds messages before their call begins (`channels.remote`)."""

    async def halt(self, alert_id: str) -> None:
        """Return once none of the alert's messages can still begin; those dropped are answered
        `errors.Halted` (the dispatcher records them cancelled)."""


@dataclasses.dataclass(frozen=True)
class Callback:
    """A provider's request to ``POST /v1/receipts/{name}``, as plain values: no web layer in a channel."""

    url: str  # as the provider called it: alertd's public URL with the path and query
    headers: Mapping[str, str]  # names in lower case
    content_type: str  # lower case, without parameters
    charset: str | None
    # The body, read when called: a channel that can tell its provider by the headers alone reads
    # nothing of what a stranger posts (a body too large is then 413 for its provider only).
    read: Callable[[], Awaitable[bytes]]

    @classmethod
    def of(cls, url: str, headers: Mapping[str, str], body: bytes, content_type: str,
           charset: str | None = None) -> Callback:
        """A callback whose body is already read."""
        async def read() -> bytes:
            return body
        return cls(url, {k.lower(): v for k, v in headers.items()}, content_type, charset, read)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclasses.dataclass(frozen=True)
class Status:
    """A provider's word on one message it accepted, as `Receipts.receipt` maps it."""

    provider_id: str
    state: model.State  # SENT, DELIVERED or FAILED
    error: errors.DeliveryError | None = None  # why it failed; a Transient one is retried under the policy
    # alertd's delivery id when the provider echoes it (a siren gateway's request_id): it must then be a
    # delivery of this channel, to `target`, or the receipt is refused.
    delivery_id: str | None = None
    target: str | None = None
    at: dt.datetime | None = None  # the provider's time for it
    word: str = ""  # the provider's own term ("activated"), kept as a siren's last acknowledgement
    field: str = dataclasses.field(default="", compare=False)  # where in the body ("3." for the fourth of a list)


Report = Status | model.Heartbeat


@runtime_checkable
class Receipts(Protocol):
    """A channel whose provider reports back: alertd serves ``POST /v1/receipts/{name}`` for it (and
    ``/v1/receipts/{receipt_alias}``, an older path shared by the channels declaring it)."""

    receipt_alias: ClassVar[str | None]

    async def receipt(self, callback: Callback) -> list[Report]:
        """Verify the callback (`errors.Unauthenticated` / `errors.Forbidden` when it is not the
        provider's: nothing of it is taken) and map it to reports; `errors.BadRequest`,
        `errors.UnsupportedMediaType` or `errors.Invalid` naming the field it cannot read."""


@runtime_checkable
class Acknowledges(Protocol):
    """A channel whose provider acknowledges each command: an `activate` still ``sent`` after
    `ack_timeout` seconds failed (housekeeping). None: acknowledgements are off."""

    ack_timeout: float | None


@runtime_checkable
class Heartbeats(Protocol):
    """A channel whose gateway reports its sirens' health (`Receipts`, as `model.Heartbeat`). A siren
    silent for `heartbeat_timeout` seconds is flagged (None: heartbeats are off). `zones`: the sirens
    it serves (`gateways_of`); None: every siren no other such channel claims."""

    heartbeat_timeout: float | None
    zones: tuple[str, ...] | None


@runtime_checkable
class Topics(Protocol):
    """A push channel that also sends to zone topics (`zones.topic`): a message with command
    ``topic`` whose `to` is the topic's name. Declared with ``sends_topics = True``."""

    sends_topics: ClassVar[bool]


@runtime_checkable
class Senders(Protocol):
    """A channel that sends from several senders (SMS `from` numbers or names), each at its own
    rate: the dispatcher paces each sender (`pacing`) and names the one a message goes from in
    `model.Message.sender`. Declared by a non-empty ``senders``."""

    senders: tuple[pacing.Sender, ...]


@runtime_checkable
class DeadAddresses(Protocol):
    """A channel whose `errors.Permanent(dead_address=True)` means the address is dead for good:
    the dispatcher leaves it out of later alerts. Declared with ``reports_dead_addresses = True``."""

    reports_dead_addresses: ClassVar[bool]


def gateways_of(siren: model.Siren, served: Mapping[str, tuple[str, ...] | None]) -> list[str]:
    """The `Heartbeats` channels that may serve `siren`, given each one's `zones`: those whose zones
    hold it, or when none does, those that name no zones. Exactly one: its gateway; none or several:
    it has none, and no gateway's report about it is taken."""
    claiming = [
        name for name, codes in served.items()
        if codes is not None and any(zones.within(siren.zone, zone) for zone in codes)
    ]
    return claiming or [name for name, codes in served.items() if codes is None]


class Base:
    """Convenience base: keeps the settings and context, reads `max_concurrency`.

    Built with its `settings` model's instance, or with a mapping it validates (raising
    `errors.ConfigError`): `options` is the instance, `config` the same as a plain mapping."""

    kind: ClassVar[str]
    address: ClassVar[model.Address]
    settings: ClassVar[type[settings_mod.Channel]] = settings_mod.Open
    default_concurrency: ClassVar[int] = 50
    receipt_alias: ClassVar[str | None] = None  # for `Receipts`
    options: settings_mod.Channel  # a plugin narrows it to its own model: `options: Settings`

    def __init__(self, config: Mapping[str, Any] | settings_mod.Channel, context: Context) -> None:
        if isinstance(config, self.settings):  # validated already, by `config` from its section
            self.options = config
        elif isinstance(config, Mapping):
            self.options = settings_mod.parse(self.settings, config, f"channels.{context.name}")
        else:
            raise errors.ConfigError(f"channels.{context.name}: settings of {type(config).__name__}, "
                                     f"not {self.settings.__name__}")
        self.config: Mapping[str, Any] = settings_mod.plain(self.options)
        self.context = context
        self.concurrency = self.options.max_concurrency or self.default_concurrency

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, message: model.Message) -> model.Receipt:
        raise NotImplementedError


@runtime_checkable
class AreaBroadcast(Channel, Protocol):
    """A channel whose one message reaches every phone of its `zones` (a cell broadcast): it
    carries only the alerts whose area covers all of them (`planner.covers`)."""

    zones: tuple[str, ...]


def as_result(result: Any) -> model.Receipt | errors.DeliveryError:
    """Anything a send may end with, as a receipt or a classified error.

    Unknown exceptions (a network drop, a timeout, a library bug) are transient: retrying is the
    safe answer for a warning that must get through, and `retry.decide` bounds the attempts.
    """
    if isinstance(result, (model.Receipt, errors.DeliveryError)):
        return result
    if isinstance(result, BaseException) and not isinstance(result, Exception):
        raise result  # CancelledError, KeyboardInterrupt: not ours to swallow
    return errors.Transient(f"{type(result).__name__}: {result}", code=type(result).__name__)


def retry_after(value: str | None, now: dt.datetime) -> float | None:
    """A Retry-After header as seconds from `now`: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = model.to_utc(email.utils.parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def available() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def load(plugin: str) -> type[Channel]:
    """The channel class registered under `plugin`."""
    found = available()
    if plugin not in found:
        raise errors.ConfigError(
            f"unknown channel plugin {plugin!r}; installed: {', '.join(sorted(found)) or 'none'}"
        )
    return found[plugin].load()
