"""The channel plugin contract and its registry.

A channel is a class registered under the entry-point group ``alertd.channels``; alertd's own
built-ins register there exactly as a third party would (see ``pyproject.toml``). A channel takes its
configuration section and a `Context`, turns one rendered `model.Message` into one provider call,
and returns a `model.Receipt` or raises `errors.Transient` / `errors.Permanent` /
`errors.ChannelMisconfigured`. It never touches the store, the templates or the retry policy. The
dispatcher keeps up to `concurrency` calls of a channel in flight at once. A channel that holds
messages before their call begins (`channels.remote`) also offers ``async halt(alert_id)``: return
once none of the alert's is still to begin, answering those with `errors.Halted`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import importlib.metadata
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import pydantic

from alertd import errors, model, settings as settings_mod

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
    kind: ClassVar[str]
    address: ClassVar[model.Address]
    # The model of its configuration section: `config` validates `[channels.NAME]` with it, and
    # the channel is built with its instance (`settings.Channel` forbids unknown keys).
    settings: ClassVar[type[pydantic.BaseModel]]
    # How many provider calls may be in flight at once; overridable by `max_concurrency`.
    concurrency: int

    async def start(self) -> None:
        """Open clients; called once inside the running loop before any send."""

    async def send(self, message: model.Message) -> model.Receipt:
        """One provider call. Raises `errors.Transient` or `errors.Permanent`."""

    async def close(self) -> None:
        """Release clients; called once at shutdown."""


class Base:
    """Convenience base: keeps the settings and context, reads `max_concurrency`.

    Built with its `settings` model's instance, or with a mapping it validates (raising
    `errors.ConfigError`): `options` is the instance, `config` the same as a plain mapping."""

    kind: ClassVar[str]
    address: ClassVar[model.Address]
    settings: ClassVar[type[pydantic.BaseModel]] = settings_mod.Open
    default_concurrency: ClassVar[int] = 50

    def __init__(self, config: Mapping[str, Any] | pydantic.BaseModel, context: Context) -> None:
        given = isinstance(config, self.settings)
        self.options = config if given else settings_mod.parse(self.settings, config, f"channels.{context.name}")
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
