"""The configuration: one TOML file, then `ALERTD_<SECTION>__<KEY>` environment overrides.

pydantic-settings reads the tables (`config_sources`: the TOML file, systemd credentials, then the
variables, nested with ``__``, any case); each section is then validated by its typed model
(`Server` …, and each ``[channels.NAME]`` by its plugin's ``settings`` model) with
`settings.validate`. `load` returns a frozen `Config` or raises `errors.ConfigError` carrying every
problem of every section at once, each as ``"<dotted.key>: <reason>"`` (an unknown key with "did you
mean"); `check` returns the same list. Secrets stay out of the file (`settings.resolve`):

- ``auth_token_file = "/etc/alertd/twilio-token"`` reads the file into ``auth_token`` (a secret the
  plugin declares; other ``*_file`` keys are paths kept as they are);
- ``auth_token = "credential:twilio-token"`` reads ``$CREDENTIALS_DIRECTORY/twilio-token``, the
  systemd credential loaded by ``LoadCredential=``; on a ``*_file`` key it gives that file's path;
- a credential named like a variable, ``alertd_channels__sms__auth_token`` (any case), is that key's
  value, as the variable would be (pydantic-settings' secrets source on ``$CREDENTIALS_DIRECTORY``).

Environment values are strings, converted to the type the model expects (pydantic's lax mode: a
TOML ``"500"`` reads as 500 too).
"""

from __future__ import annotations

import dataclasses
import difflib
import marshal
import os
import pathlib
import types
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any

import pydantic

from alertd import channels as channels_mod, config_sources, errors, model, settings

ENV_PREFIX = config_sources.ENV_PREFIX
STORE_SCHEMES = ("sqlite", "postgresql", "postgres")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
MAX_PROCESSES = 64  # sending processes per channel: more than the cores of any machine this runs on
# Plugins that must send from the daemon's process, and why.
IN_DAEMON = {
    "siren-http": "a gateway's acknowledgements and heartbeats are checked by the daemon's own client",
    "cbc": "it sends one message per alert: there is nothing to share out",
}

PACKAGE = pathlib.Path(__file__).resolve().parent
# The example configuration, shipped with alertd (config/alertd.toml in the repository links to it).
EXAMPLE = PACKAGE / "examples" / "alertd.toml"


def default_templates() -> str:
    """The templates shipped inside the package."""
    return str(PACKAGE / "templates")


# -- checks of single values -----------------------------------------------------------------------


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:8080, got {value!r}")
    return value


def _http_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


def _store_url(value: str) -> str:
    scheme, sep, _ = value.partition("://")  # the rest may hold a password: never echoed
    if not sep or scheme not in STORE_SCHEMES:
        raise ValueError(f"unsupported store URL scheme {scheme!r}; expected sqlite:// or postgresql://")
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _one_of(choices: tuple[str, ...]):
    def check(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return pydantic.AfterValidator(check)


def _names(value: Any) -> Any:
    """A comma-separated ALERTD_* value as a list."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


Listen = Annotated[str, pydantic.AfterValidator(_listen)]
HttpUrl = Annotated[str, pydantic.AfterValidator(_http_url)]
Names = Annotated[tuple[str, ...], pydantic.BeforeValidator(_names)]  # a TOML list of strings
Positive = settings.Positive
PositiveInt = settings.PositiveInt


# -- the schema ----------------------------------------------------------------------------------

frozen_section = pydantic.dataclasses.dataclass(frozen=True, config=pydantic.ConfigDict(extra="forbid"))


@frozen_section
class Server:
    listen: Listen = "127.0.0.1:8080"
    public_url: HttpUrl = "http://127.0.0.1:8080"  # where providers call back, as they see us
    display_timezone: Annotated[str, pydantic.AfterValidator(_timezone)] = "Europe/Paris"
    # What idle and slow clients may hold (seconds, connections): see the example configuration.
    keepalive_timeout: Positive = 15.0
    header_timeout: Positive = 10.0
    body_timeout: Positive = 60.0
    max_connections: PositiveInt = 1000
    max_streams_per_token: PositiveInt = 20


@frozen_section
class Store:
    url: Annotated[str, pydantic.AfterValidator(_store_url)] = "sqlite:///alertd.db"

    def __repr__(self) -> str:  # a PostgreSQL URL may carry a password
        return f"Store(url={hide_password(self.url)!r})"


@frozen_section
class Render:
    templates: str = dataclasses.field(default_factory=default_templates)
    default_locale: str = "fr"
    sms_max_segments: PositiveInt = 3
    push_max_bytes: PositiveInt = 4096


@frozen_section
class Dispatcher:
    batch_size: PositiveInt = 500
    lease_seconds: Positive = 60.0
    max_attempts: PositiveInt = 8
    backoff_base: Positive = 2.0
    backoff_max: Positive = 300.0
    plan_chunk: PositiveInt = 1000  # rows per planning transaction: short, so other writers wait little
    # Failover between channels of a kind (`health.Rules`): failing after this many failed calls in
    # a row over at least `failover_after` seconds; tried again after `failover_cooldown` seconds.
    failover_failures: PositiveInt = 5
    failover_after: settings.NonNegative = 30.0
    failover_cooldown: Positive = 60.0
    failover_slow: Positive | None = None  # a call slower than this (seconds) counts as failed


@frozen_section
class Alerts:
    # CAP status `test` and `system` go to these subscribers (and sirens, by id) only.
    test_recipients: Names = ()
    # A CAP document sent more than this many hours before or after now is refused (a stale replay,
    # or a sending system's wrong clock); JSON orders are sent as of their arrival.
    cap_sent_skew_hours: Positive = 24.0


@frozen_section
class Log:
    level: Annotated[str, _one_of(LOG_LEVELS)] = "info"
    format: Annotated[str, _one_of(LOG_FORMATS)] = "auto"


@frozen_section
class Systemd:
    watchdog: bool = True


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    plugin: str
    settings: pydantic.BaseModel  # validated by the plugin's `settings` model
    processes: int = 0  # sending processes of its own (channels.remote); 0: in the daemon's process
    # The section as given, secrets read and without `plugin` and `processes`: what a sending
    # process is handed (through `marshal`), to validate it again.
    table: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}), repr=False)
    pace: Pace = dataclasses.field(default_factory=lambda: Pace())  # its rate and prices (below)


SECTIONS: dict[str, type] = {
    "server": Server, "store": Store, "render": Render, "dispatcher": Dispatcher, "alerts": Alerts, "log": Log,
    "systemd": Systemd,
}


@dataclasses.dataclass(frozen=True)
class Config:
    server: Server = dataclasses.field(default_factory=Server)
    store: Store = dataclasses.field(default_factory=Store)
    render: Render = dataclasses.field(default_factory=Render)
    dispatcher: Dispatcher = dataclasses.field(default_factory=Dispatcher)
    alerts: Alerts = dataclasses.field(default_factory=Alerts)
    channels: Mapping[str, ChannelConfig] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    log: Log = dataclasses.field(default_factory=Log)
    systemd: Systemd = dataclasses.field(default_factory=Systemd)

    def redacted(self) -> dict[str, Any]:
        """The configuration for display: secrets are "***"."""
        shown: dict[str, Any] = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        shown["store"]["url"] = hide_password(self.store.url)
        shown["channels"] = {
            name: {"plugin": c.plugin, "processes": c.processes, **settings.shown(c.settings),
                   "pace": dataclasses.asdict(c.pace)}
            for name, c in self.channels.items()
        }
        return shown


def hide_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


# -- loading -------------------------------------------------------------------------------------


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Config:
    """The configuration in `path` (defaults when None) with `env`'s overrides."""
    cfg, problems = _parse(path, env)
    if problems:
        raise errors.ConfigError(problems=problems)
    return cfg


def check(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> list[str]:
    """Every problem of the configuration, or an empty list."""
    return _parse(path, env)[1]


def _parse(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Config, list[str]]:
    raw, problems = config_sources.read(path, env)
    origins = config_sources.origins(env)
    sections = {}
    for name, cls in SECTIONS.items():
        value, found = _section(cls, raw.get(name, {}), name, env, origins)
        sections[name], problems = value or cls(), problems + found
    chans, found = _channels(raw.get("channels", {}), env, origins)
    problems += found + _templates(sections["render"])
    return Config(channels=chans, **sections), problems


def _section(cls: type, table: Any, where: str, env: Mapping[str, str], origins: Mapping[str, str]):
    if not isinstance(table, dict):
        return None, [f"{where}: expected a table"]
    values, problems = settings.resolve(cls, table, where, env)
    value, found = settings.validate(cls, values, where, origins, problems)
    return value, problems + found


def _templates(render: Render) -> list[str]:
    """What the daemon would refuse to start with, default folder included: no folder, no template
    in it, none for the default locale."""
    root = pathlib.Path(render.templates)
    if not root.is_dir():
        return [f"render.templates: no such directory: {str(root)!r}"]
    kinds = [kind.value for kind in model.Kind]
    locales = sorted({path.parent.name for kind in kinds for path in root.glob(f"[!_.]*/[!_]*.{kind}.j2")})
    if not locales:
        return [f"render.templates: {root} holds no templates (<locale>/<name>.<{'|'.join(kinds)}>.j2)"]
    if render.default_locale not in locales:
        return [f"render.default_locale: no templates for {render.default_locale!r} in {root} "
                f"(locales there: {', '.join(locales)})"]
    return []


# -- channels --------------------------------------------------------------------------------------


def _channels(table: Any, env: Mapping[str, str], origins: Mapping[str, str]):
    if not isinstance(table, dict):
        return types.MappingProxyType({}), ["channels: expected a table of channels, e.g. [channels.sms]"]
    built, problems = {}, []
    for name, section in table.items():
        channel, found = _channel(f"channels.{name}", section, env, origins)
        problems += found
        if channel is not None:
            built[name] = channel
    return types.MappingProxyType(built), problems


def _channel(where: str, section: Any, env: Mapping[str, str],
             origins: Mapping[str, str]) -> tuple[ChannelConfig | None, list[str]]:
    """One `[channels.NAME]` section, validated by its plugin's settings model."""
    if not isinstance(section, dict):
        return None, [f"{where}: expected a table"]
    table = dict(section)
    name, problems = table.pop("plugin", None), list[str]()
    plugin = _plugin(where, name, problems)
    processes = _processes(where, table.pop("processes", 0), problems)
    if plugin is None:
        return None, problems
    if processes and name in IN_DAEMON:
        problems.append(f"{where}.processes: {name} sends from the daemon's process: {IN_DAEMON[name]}")
    pace, found = _pace(where, name, {key: table.pop(key) for key in PACE_KEYS if key in table}, origins)
    values, more = settings.resolve(plugin.settings, table, where, env)
    problems += found + more + (_portable(where, values) if processes else [])
    value, found = settings.validate(plugin.settings, values, where, origins, problems)
    problems += found
    if value is None or pace is None:
        return None, problems
    pace = pace.with_default(name, values)
    return ChannelConfig(name, value, processes, types.MappingProxyType(values), pace), problems


def _plugin(where: str, name: Any, problems: list[str]) -> type[channels_mod.Channel] | None:
    installed = sorted(channels_mod.available())
    listed = ", ".join(installed) or "none"
    if name is None:
        problems.append(f"{where}.plugin: required; installed plugins: {listed}")
    elif not isinstance(name, str) or name not in installed:
        near = difflib.get_close_matches(str(name), installed, n=1)
        hint = f"; did you mean `{near[0]}`?" if near else ""
        problems.append(f"{where}.plugin: unknown plugin {name!r}{hint} (installed plugins: {listed})")
    else:
        try:
            return channels_mod.load(name)
        except Exception as exc:  # a third party's import error is a configuration problem, not a traceback
            problems.append(f"{where}.plugin: cannot load plugin {name!r}: {type(exc).__name__}: {exc}")
    return None


def _processes(where: str, value: Any, problems: list[str]) -> int:
    try:
        count = int(value)
        if isinstance(value, (bool, float)) or not 0 <= count <= MAX_PROCESSES:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{where}.processes: expected a whole number from 0 to {MAX_PROCESSES}, not {value!r}")
        return 0
    return count


def _portable(where: str, values: Mapping[str, Any]) -> list[str]:
    """The settings a sending process receives travel through `marshal`: no TOML dates."""
    problems = []
    for key, value in values.items():
        try:
            marshal.dumps(value)
        except ValueError:
            problems.append(f"{where}.{key}: with `processes`, give a string, number, boolean, list or table")
    return problems


# -- a channel's pace and prices (issue 12): forecasts now (`estimate`), the dispatcher's pacing later --

# What providers document (PROVIDERS.md), for a channel whose `rate` is not given: Twilio sends about
# 10 segments a second from one alphanumeric or international sender (a Messaging Service's pool or
# a short code sends more: give `rate`); FCM takes 600,000 messages a minute per project, or the
# channel's own `quota_per_minute`. Siren gateways document none: their rate stays unknown.
DEFAULT_RATES = {"twilio": 10.0, "fcm": 600_000 / 60}
PACE_KEYS = ("rate", "price_per_segment", "price_per_message", "currency")


def _currency(value: str) -> str:
    code = value.strip().upper()
    if not (len(code) == 3 and code.isascii() and code.isalpha()):
        raise ValueError(f"expected an ISO 4217 currency code such as EUR, got {value!r}")
    return code


@pydantic.dataclasses.dataclass(frozen=True, config=pydantic.ConfigDict(extra="forbid"))
class Pace:
    """How fast a channel sends, and what it costs: every key optional, never passed to its plugin."""

    rate: settings.Positive | None = None  # messages a second over the whole channel (SMS: segments)
    price_per_segment: settings.NonNegative | None = None  # SMS
    price_per_message: settings.NonNegative | None = None
    currency: Annotated[str, pydantic.AfterValidator(_currency)] | None = None  # ISO 4217, e.g. "EUR"
    rate_is_default: bool = False  # the provider's documented rate, not one the operator gave

    def with_default(self, plugin: str, values: Mapping[str, Any]) -> Pace:
        """With the provider's documented rate when none is given."""
        if self.rate is not None:
            return self
        rate = DEFAULT_RATES.get(plugin)
        if plugin == "fcm" and isinstance(quota := values.get("quota_per_minute"), (int, float)):
            rate = float(quota) / 60
        return self if rate is None else dataclasses.replace(self, rate=rate, rate_is_default=True)


def _pace(where: str, plugin: str, given: dict[str, Any], origins: Mapping[str, str]) -> tuple[Pace | None, list[str]]:
    pace, problems = settings.validate(Pace, given, where, origins)
    if "currency" not in given and ("price_per_segment" in given or "price_per_message" in given):
        problems.append(f"{where}.currency: required with a price (ISO 4217, e.g. EUR)")
    return (None if problems else pace), problems
