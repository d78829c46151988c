"""What the `alertd` commands share: the configuration, the daemon's store (opened only when it
exists), files and durations named on the command line, and the audit entry of a local action."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re

from alertd import audit, auth, config, errors, logs, model, store as store_mod
from alertd.store import sqlite as sqlite_store


def load(args) -> config.Config:
    cfg = config.load(args.config)
    logs.configure(cfg.log.level, cfg.log.format)
    return cfg


def config_arg(c: argparse.ArgumentParser) -> None:
    c.add_argument("--config", "-c", default=os.environ.get("ALERTD_CONFIG"), help="TOML file")


async def with_store(cfg: config.Config, work):
    """`work(store)` on the daemon's existing store: only `serve` (and `demo`) create one, so a
    token or an import never lands in a store the daemon will not read."""
    if not await _store_exists(cfg.store.url):
        raise errors.StoreError(f"no alertd store at {_place(cfg.store.url)}: `alertd serve` creates it; give "
                                "the daemon's configuration with --config or $ALERTD_CONFIG")
    db = store_mod.open_store(cfg.store.url)
    await db.open()
    try:
        return await work(db)
    finally:
        await db.close()


def _is_sqlite(url: str) -> bool:
    return url.split(":", 1)[0].lower() == "sqlite"


def _place(url: str) -> str:
    """Where a store is, for a person: a SQLite path relative to the current folder made absolute."""
    return os.path.abspath(sqlite_store.path_of(url)) if _is_sqlite(url) else config.hide_password(url)


async def _store_exists(url: str) -> bool:
    """Whether `url` holds an alertd store, looked at without creating anything."""
    if _is_sqlite(url):
        path = sqlite_store.path_of(url)
        return os.path.isfile(path) and os.path.getsize(path) > 0
    import asyncpg

    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise errors.StoreError(f"PostgreSQL store unreachable: {exc}") from None
    try:
        return await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    finally:
        await conn.close()


def read(path: str) -> bytes:
    """A file named on the command line: one missing or unreadable is a one-line error."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.AlertdError(f"{path}: cannot read: {exc.strerror}") from None


def boundary(path: str) -> tuple[model.Ring, ...]:
    try:
        data = json.loads(read(path).decode("utf-8-sig"))
    except ValueError as exc:  # UnicodeDecodeError is one
        raise errors.Invalid(f"{path}: not JSON: {exc}", field="boundary") from None
    return auth.boundary_from_geojson(data)


def local_entry(action: str, subject: str | None, **detail) -> audit.Entry:
    """An audit entry for what someone did on this machine's command line (no token: the OS user)."""
    return audit.Entry(cell=f"local:{getpass.getuser()}", action=action, at=model.utcnow(), subject=subject,
                       detail=detail, address="local")


_DURATION = re.compile(r"(?:(?P<days>\d+)d)?(?:(?P<hours>\d+)h)?(?:(?P<minutes>\d+)m)?(?:(?P<seconds>\d+)s)?")


def duration(text: str) -> dt.timedelta:
    """`2h`, `90m`, `1h30m`, `1d`, `45s`: a positive span of time."""
    match = _DURATION.fullmatch(text.strip())
    span = dt.timedelta(**{k: int(v) for k, v in match.groupdict().items() if v}) if match else dt.timedelta()
    if span <= dt.timedelta():
        raise argparse.ArgumentTypeError(f"expected a duration such as 2h, 90m or 1h30m, not {text!r}")
    return span
