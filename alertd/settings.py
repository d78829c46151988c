"""Typed settings: what the configuration (`config`) and the channel plugins share.

A section of the configuration is a pydantic model (a channel's: its plugin's ``settings`` model,
a `Channel` subclass) or a frozen pydantic dataclass, with unknown keys forbidden (but by `Open`). `validate` turns
a section's table into that value, or into problems, every one at once, each ``"<dotted.key>:
<reason>"``, an unknown key with "did you mean" the nearest field. Before validation, `resolve`
reads the secrets the table points at:

- ``<secret>_file = "/path"`` reads the file into ``<secret>``, a field typed `pydantic.SecretStr`;
- ``"credential:NAME"`` (any key) is ``$CREDENTIALS_DIRECTORY/NAME``, the systemd credential of
  ``LoadCredential=``: its content, or its path for a ``*_file`` key.

A problem never shows a secret's value: inputs are echoed only for fields that are not secrets.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import pydantic

from alertd import errors

CREDENTIAL_PREFIX = "credential:"
SECRET_KEYS = frozenset({"auth_token", "token", "receipt_token", "password", "api_key", "authorization"})


def is_secret(key: str) -> bool:
    """A secret by its name: how the keys a plugin does not declare are judged."""
    return key in SECRET_KEYS or key.startswith("secret") or key.endswith(("_secret", "_password"))


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax mode would read true as 1
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Positive = Annotated[float, pydantic.BeforeValidator(_not_bool), pydantic.Field(gt=0)]
PositiveInt = Annotated[int, pydantic.BeforeValidator(_not_bool), pydantic.Field(gt=0)]
NonNegative = Annotated[float, pydantic.BeforeValidator(_not_bool), pydantic.Field(ge=0)]


class Channel(pydantic.BaseModel):
    """The base of a plugin's settings model: every channel's `max_concurrency`, nothing unknown."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    max_concurrency: PositiveInt | None = None  # calls in flight; None: the plugin's default


class Open(Channel):
    """The settings of a plugin that declares no model of its own: any key, as given."""

    model_config = pydantic.ConfigDict(extra="allow")


# -- validation ------------------------------------------------------------------------------------


def parse(cls: type, table: Mapping[str, Any], where: str, env: Mapping[str, str] = os.environ) -> Any:
    """`cls` from `table`, secrets read; else `errors.ConfigError` with every problem."""
    values, problems = resolve(cls, table, where, env)
    value, found = validate(cls, values, where, reported=problems)
    if problems or found:
        raise errors.ConfigError(problems=problems + found)
    return value


def validate(cls: type, values: Mapping[str, Any], where: str, origins: Mapping[str, str] = types.MappingProxyType({}),
             reported: Iterable[str] = ()) -> tuple[Any, list[str]]:
    """`cls` (a model or pydantic dataclass) from `values`, or None and the problems. `origins`
    names the variable each dotted key came from; keys already `reported` are not reported again."""
    try:
        return pydantic.TypeAdapter(cls).validate_python(values), []
    except pydantic.ValidationError as exc:
        known = {_key(p) for p in reported}  # a secret file not read is not also "required"
        return None, [p for p in describe(exc, cls, where, origins) if _key(p) not in known]


def _key(problem: str) -> str:
    return problem.split(":", 1)[0].removesuffix("_file")


def describe(exc: pydantic.ValidationError, cls: type, where: str = "",
             origins: Mapping[str, str] = types.MappingProxyType({})) -> list[str]:
    """Each error of `exc` as ``"<dotted.key>: <reason>"``, under `where`."""
    found = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join([where, *loc] if where else loc) or where
        origin = f" (from ${origins[dotted]})" if dotted in origins else ""
        found.append(f"{dotted}: {reason(error, cls, loc)}{origin}")
    return found


def reason(error: Mapping[str, Any], cls: type, loc: list[str]) -> str:
    kind, ctx, parent = error["type"], error.get("ctx") or {}, _at(cls, loc[:-1])
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        near = difflib.get_close_matches(loc[-1], list(_fields(parent)), n=1) if parent else []
        return "unknown key" + (f"; did you mean `{near[0]}`?" if near else "")
    if kind == "missing":
        return "required"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    shown = "" if loc and _is_secret_field(parent, loc[-1]) else f", got {_short(error['input'])}"
    if kind == "greater_than":
        return ("must be positive" if ctx.get("gt") == 0 else f"must be greater than {ctx.get('gt')}") + shown
    if kind == "greater_than_equal":
        return ("must be zero or more" if ctx.get("ge") == 0 else f"must be {ctx.get('ge')} or more") + shown
    return EXPECTED.get(kind.removesuffix("_parsing").removesuffix("_type"), error["msg"]) + shown


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


EXPECTED = {
    "int": "expected an integer", "int_from_float": "expected a whole number", "float": "expected a number",
    "bool": "expected true or false", "string": "expected a string", "list": "expected a list",
    "tuple": "expected a list", "dict": "expected a table", "model": "expected a table",
    "dataclass": "expected a table", "literal_error": "unexpected value",
}


def _fields(cls: type) -> Mapping[str, Any]:
    """The keys a section may hold, under their TOML names (`from`), and their types."""
    if dataclasses.is_dataclass(cls):
        return typing.get_type_hints(cls)
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        return {f.alias or name: f.annotation for name, f in cls.model_fields.items()}
    return {}


def _at(cls: type, loc: list[str]) -> type | None:
    """The model at `loc` inside `cls`, if it is one."""
    for part in loc:
        field = _fields(cls).get(part)
        if field is None:
            return None
        cls = field
    return cls


def _is_secret_field(cls: type | None, key: str) -> bool:
    annotation = _fields(cls).get(key) if cls is not None else None
    return is_secret(key) or (annotation is not None and pydantic.SecretStr in _members(annotation))


def _members(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation) + (annotation,)


def secrets(cls: type, table: Iterable[str]) -> frozenset[str]:
    """The keys among `table`'s that are secrets: fields typed SecretStr, and, where a model takes any
    key (`Open`), keys named like secrets."""
    declared = {key for key, annotation in _fields(cls).items() if pydantic.SecretStr in _members(annotation)}
    open_ = isinstance(cls, type) and issubclass(cls, pydantic.BaseModel) and cls.model_config.get("extra") == "allow"
    return frozenset(declared | ({key for key in table if is_secret(key)} if open_ else set()))


# -- secrets ---------------------------------------------------------------------------------------


def resolve(cls: type, table: Mapping[str, Any], where: str,
            env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """`table` with its credentials and secret files read, and the problems doing so."""
    keys = secrets(cls, {key.removesuffix("_file") for key in table})
    values, problems = {}, []
    for key, value in table.items():
        secret = key.removesuffix("_file") if key.endswith("_file") and key.removesuffix("_file") in keys else None
        try:
            value = credential(key, value, env)
            if secret and secret in table:
                raise ValueError(f"give {secret} or {key}, not both")
            values[secret or key] = read_secret(value) if secret else value
        except ValueError as exc:
            problems.append(f"{where}.{key}: {exc}")
    return values, problems


def credential(key: str, value: Any, env: Mapping[str, str]) -> Any:
    """`credential:NAME`: the systemd credential's path for a `*_file` key, else its content."""
    if not isinstance(value, str) or not value.startswith(CREDENTIAL_PREFIX):
        return value
    name = value.removeprefix(CREDENTIAL_PREFIX)
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not name or "/" in name:
        raise ValueError(f"not a credential name: {name!r}")
    if not directory:
        raise ValueError(f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit?)")
    path = os.path.join(directory, name)
    return path if key.endswith("_file") else read_secret(path)


def read_secret(path: Any) -> str:
    if not isinstance(path, str):
        raise ValueError(f"expected a file path, got {type(path).__name__}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path!r}: {exc.strerror}") from None


def plain(value: Any) -> Any:
    """A validated settings value as plain data (secrets revealed): for a plugin reading a mapping."""
    if isinstance(value, pydantic.BaseModel):
        return types.MappingProxyType({key: plain(v) for key, v in value.model_dump(by_alias=True).items()})
    if isinstance(value, pydantic.SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: plain(v) for key, v in value.items()}
    return value


def shown(value: Any) -> Any:
    """A validated settings value for display: secrets are "***"."""
    if isinstance(value, pydantic.BaseModel):
        value = value.model_dump(by_alias=True)
    if isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
        return "***"
    if isinstance(value, Mapping):
        return {key: "***" if is_secret(key) and v is not None else shown(v) for key, v in value.items()}
    return value
