"""The configuration: one TOML file, then `ALERTD_<SECTION>__<KEY>` environment overrides.

`load` returns a frozen `Config` or raises `errors.ConfigError` carrying every problem at once, each
as ``"<dotted.key>: <reason>"``; `check` returns the same list. Secrets stay out of the file:

- ``auth_token_file = "/etc/alertd/twilio-token"`` reads the file into ``auth_token`` (any secret key:
  auth_token, token, password, api_key, secret…; other ``*_file`` keys are paths kept as they are);
- ``auth_token = "credential:twilio-token"`` reads ``$CREDENTIALS_DIRECTORY/twilio-token``, the
  systemd credential loaded by ``LoadCredential=``; on a ``*_file`` key it gives that file's path.

Environment values are strings: they are coerced to the type the schema expects (int, float, bool),
or, inside a channel section, to the type of the value they replace (true/false for a new key).
"""

from __future__ import annotations

import dataclasses
import marshal
import os
import pathlib
import tomllib
import types
import typing
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from typing import Any

from alertd import channels as channels_mod, errors, model

ENV_PREFIX = "ALERTD_"
CREDENTIAL_PREFIX = "credential:"
STORE_SCHEMES = ("sqlite", "postgresql", "postgres")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
SECRET_KEYS = frozenset({"auth_token", "token", "receipt_token", "password", "api_key", "authorization"})
MAX_PROCESSES = 64  # sending processes per channel: more than the cores of any machine this runs on
# Plugins that must send from the daemon's process, and why.
IN_DAEMON = {
    "siren-http": "a gateway's acknowledgements and heartbeats are checked by the daemon's own client",
    "cbc": "it sends one message per alert: there is nothing to share out",
}
# What each built-in plugin cannot work without; several names mean "one of these".
REQUIRED = {
    "twilio": (("account_sid",), ("auth_token",), ("from", "messaging_service_sid")),
    "fcm": (("project_id",),),
    "siren-http": (("base_url",), ("token",)),
    "cbc": (("base_url",), ("zones",)),
}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
Names = tuple[str, ...]  # a TOML list of strings, or a comma-separated ALERTD_* value
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", Names: "a list of strings"}


PACKAGE = pathlib.Path(__file__).resolve().parent
# The example configuration, shipped with alertd (config/alertd.toml in the repository links to it).
EXAMPLE = PACKAGE / "examples" / "alertd.toml"


def default_templates() -> str:
    """The templates shipped inside the package."""
    return str(PACKAGE / "templates")


def is_secret(key: str) -> bool:
    return key in SECRET_KEYS or key.startswith("secret") or key.endswith(("_secret", "_password"))


# -- the schema ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Server:
    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"  # where providers call back, as they see us
    display_timezone: str = "Europe/Paris"
    # What idle and slow clients may hold (seconds, connections): see the example configuration.
    keepalive_timeout: float = 15.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000
    max_streams_per_token: int = 20


@dataclasses.dataclass(frozen=True)
class Store:
    url: str = "sqlite:///alertd.db"

    def __repr__(self) -> str:  # a PostgreSQL URL may carry a password
        return f"Store(url={hide_password(self.url)!r})"


@dataclasses.dataclass(frozen=True)
class Render:
    templates: str = dataclasses.field(default_factory=default_templates)
    default_locale: str = "fr"
    sms_max_segments: int = 3
    push_max_bytes: int = 4096


@dataclasses.dataclass(frozen=True)
class Dispatcher:
    batch_size: int = 500
    lease_seconds: float = 60.0
    max_attempts: int = 8
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    plan_chunk: int = 1000  # rows per planning transaction: short, so other writers wait little


@dataclasses.dataclass(frozen=True)
class Alerts:
    # CAP status `test` and `system` go to these subscribers (and sirens, by id) only.
    test_recipients: Names = ()
    # A CAP document sent more than this many hours before or after now is refused (a stale replay,
    # or a sending system's wrong clock); JSON orders are sent as of their arrival.
    cap_sent_skew_hours: float = 24.0


@dataclasses.dataclass(frozen=True)
class Log:
    level: str = "info"
    format: str = "auto"


@dataclasses.dataclass(frozen=True)
class Systemd:
    watchdog: bool = True


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    plugin: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    processes: int = 0  # sending processes of its own (channels.remote); 0: in the daemon's process

    def __repr__(self) -> str:
        return f"ChannelConfig(plugin={self.plugin!r}, settings={masked(self.settings)!r}, processes={self.processes})"


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
            name: {"plugin": c.plugin, "processes": c.processes, **masked(c.settings)}
            for name, c in self.channels.items()
        }
        return shown


def masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: "***" if is_secret(key) else masked(value) if isinstance(value, Mapping) else value
        for key, value in settings.items()
    }


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
    problems: list[str] = []
    raw = _read_toml(path, problems) if path is not None else {}
    _apply_env(raw, env, problems)
    sections = {
        name: _section(name, cls, raw.get(name, {}), env, problems) for name, cls in SECTIONS.items()
    }
    chans = _channels(raw.get("channels", {}), env, problems)
    problems += _templates(sections["render"])
    problems += [f"{key}: unknown section" for key in raw if key not in SECTIONS and key != "channels"]
    return Config(channels=chans, **sections), problems


def _read_toml(path: str | os.PathLike[str], problems: list[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
    return {}


class _FromEnv(str):
    """A string from an ALERTD_* variable, which may be coerced (unlike a TOML string)."""

    var: str
    replaced: Any

    def __new__(cls, value: str, var: str, replaced: Any) -> _FromEnv:
        self = super().__new__(cls, value)
        self.var, self.replaced = var, replaced
        return self


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    for var, value in sorted(env.items()):
        if not var.upper().startswith(ENV_PREFIX) or "__" not in var:
            continue  # ALERTD_CONFIG, ALERTD_TOKEN… are not overrides
        path = var[len(ENV_PREFIX):].lower().split("__")
        table: Any = raw if all(path) else None
        for part in path[:-1]:
            table = table.setdefault(part, {}) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            problems.append(f"{'.'.join(path)}: ${var} does not name a key inside a table")
        else:
            table[path[-1]] = _FromEnv(value, var, table.get(path[-1]))


# -- sections --------------------------------------------------------------------------------------


def _section(name: str, cls: type, table: Any, env: Mapping[str, str], problems: list[str]) -> Any:
    if not isinstance(table, dict):
        problems.append(f"{name}: expected a table")
        return cls()
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in table.items():
        if key not in hints:
            problems.append(f"{name}.{key}: unknown key")
            continue
        try:
            values[key] = _validated(f"{name}.{key}", _typed(hints[key], _expand(key, value, env)))
        except ValueError as exc:
            problems.append(f"{name}.{key}: {exc}")
    return cls(**values)


def _typed(expected: Any, value: Any) -> Any:
    if expected == Names:
        if isinstance(value, _FromEnv):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected {_TYPE_NAMES[Names]}, got {value!r}")
        return tuple(value)
    if isinstance(value, _FromEnv) and expected is not str:
        return _coerce(expected, value)
    accepted = (int, float) if expected is float else expected
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, accepted):
        raise ValueError(f"expected {_TYPE_NAMES[expected]}, got {type(value).__name__} {value!r}")
    return expected(value)


def _coerce(expected: type, value: _FromEnv) -> Any:
    text = value.strip().lower()
    try:
        if expected is bool:
            if text not in _TRUE + _FALSE:
                raise ValueError
            return text in _TRUE
        return expected(text)
    except ValueError:
        raise ValueError(f"expected {_TYPE_NAMES[expected]}, got {str(value)!r} from ${value.var}") from None


def _validated(where: str, value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
        raise ValueError(f"must be positive, got {value}")
    check = _CHECKS.get(where)
    if check:
        check(value)
    return value


def _listen(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:8080, got {value!r}")


def _http_url(value: str) -> None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")


def _store_url(value: str) -> None:
    scheme, sep, _ = value.partition("://")  # the rest may hold a password: never echoed
    if not sep or scheme not in STORE_SCHEMES:
        raise ValueError(f"unsupported store URL scheme {scheme!r}; expected sqlite:// or postgresql://")


def _timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None


def _one_of(choices: tuple[str, ...]):
    def check(value: str) -> None:
        if value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return check


_CHECKS = {
    "server.listen": _listen,
    "server.public_url": _http_url,
    "server.display_timezone": _timezone,
    "store.url": _store_url,
    "log.level": _one_of(LOG_LEVELS),
    "log.format": _one_of(LOG_FORMATS),
}


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


def _channels(table: Any, env: Mapping[str, str], problems: list[str]) -> Mapping[str, ChannelConfig]:
    if not isinstance(table, dict):
        problems.append("channels: expected a table of channels, e.g. [channels.sms]")
        return types.MappingProxyType({})
    installed = channels_mod.available()
    built = {}
    for name, section in table.items():
        where = f"channels.{name}"
        if not isinstance(section, dict):
            problems.append(f"{where}: expected a table")
            continue
        plugin = _plugin(where, section.get("plugin"), installed, problems)
        settings = _settings(where, section, env, problems)
        processes = _processes(where, settings.pop("processes", 0), problems)
        if processes and plugin in IN_DAEMON:
            problems.append(f"{where}.processes: {plugin} sends from the daemon's process: {IN_DAEMON[plugin]}")
        elif processes:
            problems += _portable(where, settings)
        if plugin:
            problems += _missing(where, plugin, section)
            built[name] = ChannelConfig(plugin, types.MappingProxyType(settings), processes)
    return types.MappingProxyType(built)


def _processes(where: str, value: Any, problems: list[str]) -> int:
    try:
        count = int(value)
        if isinstance(value, (bool, float)) or not 0 <= count <= MAX_PROCESSES:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{where}.processes: expected a whole number from 0 to {MAX_PROCESSES}, not {value!r}")
        return 0
    return count


def _portable(where: str, settings: Mapping[str, Any]) -> list[str]:
    """The settings a sending process receives travel through `marshal`: no TOML dates."""
    problems = []
    for key, value in settings.items():
        try:
            marshal.dumps(value)
        except ValueError:
            problems.append(f"{where}.{key}: with `processes`, give a string, number, boolean, list or table")
    return problems


def _plugin(where: str, plugin: Any, installed: Mapping[str, Any], problems: list[str]) -> str | None:
    names = ", ".join(sorted(installed)) or "none"
    if plugin is None:
        problems.append(f"{where}.plugin: required; installed plugins: {names}")
    elif not isinstance(plugin, str) or plugin not in installed:
        problems.append(f"{where}.plugin: unknown plugin {plugin!r}; installed plugins: {names}")
    else:
        return str(plugin)
    return None


def _settings(where: str, section: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> dict:
    settings: dict[str, Any] = {}
    for key, value in section.items():
        if key == "plugin":
            continue
        secret = key.removesuffix("_file") if key.endswith("_file") and is_secret(key[:-5]) else None
        try:
            value = _expand(key, _channel_value(value), env)
            if secret and secret in section:
                raise ValueError(f"give {secret} or {key}, not both")
            settings[secret or key] = _read_secret(value) if secret else value
        except ValueError as exc:
            problems.append(f"{where}.{key}: {exc}")
    return settings


def _channel_value(value: Any) -> Any:
    """An override takes the type of the value it replaces (`max_concurrency = 100`); a new key is
    a string, or a boolean when it reads true or false (`status_callback`)."""
    if not isinstance(value, _FromEnv):
        return value
    if isinstance(value.replaced, (bool, int, float)):
        return _coerce(type(value.replaced), value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return str(value)


def _missing(where: str, plugin: str, section: Mapping[str, Any]) -> list[str]:
    problems = []
    for names in REQUIRED.get(plugin, ()):
        if not any(name in section or f"{name}_file" in section for name in names):
            need = "required" if len(names) == 1 else f"one of {' or '.join(names)} is required"
            problems.append(f"{where}.{names[0]}: {need} by the {plugin} plugin")
    return problems


# -- secrets ---------------------------------------------------------------------------------------


def _expand(key: str, value: Any, env: Mapping[str, str]) -> Any:
    """`credential:NAME`: the systemd credential's path for a `*_file` key, else its content."""
    if not isinstance(value, str) or not value.startswith(CREDENTIAL_PREFIX):
        return value
    name = value.removeprefix(CREDENTIAL_PREFIX)
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not name or "/" in name:
        raise ValueError(f"not a credential name: {name!r}")
    if not directory:
        raise ValueError(
            f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit?)"
        )
    path = os.path.join(directory, name)
    return path if key.endswith("_file") else _read_secret(path)


def _read_secret(path: Any) -> str:
    if not isinstance(path, str):
        raise ValueError(f"expected a file path, got {type(path).__name__}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path!r}: {exc.strerror}") from None
