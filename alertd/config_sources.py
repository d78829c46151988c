"""Where the configuration's tables come from, read by pydantic-settings' sources, lowest first:
the TOML file (`TomlConfigSettingsSource`), systemd credentials named like variables
(`NestedSecretsSettingsSource` on ``$CREDENTIALS_DIRECTORY``), ``ALERTD_<SECTION>__<KEY>`` variables
(`EnvSettingsSource`, nested with ``__``, any case). Each source gives raw tables, merged key by key;
`config` validates each section with its own model.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic_settings

ENV_PREFIX = "ALERTD_"


class Sources(pydantic_settings.BaseSettings):
    """The sections pydantic-settings reads (`config.SECTIONS` and `channels`), each a raw table."""

    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False, extra="ignore",
    )

    server: dict[str, Any] = {}
    store: dict[str, Any] = {}
    render: dict[str, Any] = {}
    dispatcher: dict[str, Any] = {}
    alerts: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    log: dict[str, Any] = {}
    systemd: dict[str, Any] = {}


class _Environment(pydantic_settings.EnvSettingsSource):
    """pydantic-settings' environment source, reading the mapping it is given (tests pass their own)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.given = env
        super().__init__(Sources)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self.given.items()}


def read(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The file's tables with the credentials' and variables' values merged in, and what was wrong."""
    toml, problems = {}, strays(env)
    if path is not None:
        try:
            with open(path, "rb"):
                pass  # the TOML source takes a missing file for an empty one
            toml = pydantic_settings.TomlConfigSettingsSource(Sources, toml_file=os.fspath(path))()
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror}")
        except ValueError as exc:  # tomllib.TOMLDecodeError
            problems.append(f"{path}: not valid TOML: {exc}")
    problems += [unknown(key, "section") for key in toml if key not in Sources.model_fields]
    return _merged(_merged(toml, _credentials(env, problems)), _variables(env, problems)), problems


def _variables(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """What pydantic-settings reads from the ALERTD_* variables; a section given whole must be JSON."""
    usable = {}
    for var, value in env.items():
        section = var[len(ENV_PREFIX):].lower()
        if var.upper().startswith(ENV_PREFIX) and section in Sources.model_fields and not _json_table(value):
            problems.append(f"{section}: ${var} must be a JSON table; give its keys as ${var}__<KEY>")
        else:
            usable[var] = value
    return _Environment(usable)()


def _json_table(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _credentials(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The systemd credentials named like variables (`alertd_channels__sms__auth_token`): each the
    value of that key, below the variables, above the file."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    try:
        return pydantic_settings.NestedSecretsSettingsSource(
            pydantic_settings.SecretsSettingsSource(Sources),
            secrets_dir=directory, secrets_prefix=ENV_PREFIX, secrets_dir_missing="ok",
        )()
    except pydantic_settings.SettingsError as exc:
        problems.append(f"$CREDENTIALS_DIRECTORY: {exc}")
        return {}


def _merged(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, Mapping) else value
    return merged


def strays(env: Mapping[str, str]) -> list[str]:
    """ALERTD_<SECTION>__<KEY> variables naming no section, which pydantic-settings would pass over."""
    return [
        unknown(section, "section") + f" (from ${var})"
        for var, section in ((var, var[len(ENV_PREFIX):].partition("__")[0].lower()) for var in sorted(env))
        if var.upper().startswith(ENV_PREFIX) and "__" in var and section not in Sources.model_fields
    ]


def origins(env: Mapping[str, str]) -> dict[str, str]:
    """The variable each dotted key was given by."""
    return {
        ".".join(var[len(ENV_PREFIX):].lower().split("__")): var
        for var in env if var.upper().startswith(ENV_PREFIX) and "__" in var
    }


def unknown(key: str, what: str, known: Iterable[str] = Sources.model_fields) -> str:
    near = difflib.get_close_matches(key, list(known), n=1)
    return f"{key}: unknown {what}" + (f"; did you mean `{near[0]}`?" if near else "")
