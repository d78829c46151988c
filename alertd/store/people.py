"""Cells, users and their bearer tokens in the store (mixed into `base.SQLStore`).

A cell's CAP senders are rows of `cell_senders`, so that no two cells ever sign with the same
sender, whatever the instance that writes them. Rows become `people` values here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from alertd import errors, model, people
from alertd.store import mixin

MIGRATION = (9, (
    """CREATE TABLE cells (id TEXT PRIMARY KEY, name TEXT NOT NULL, zones TEXT NOT NULL, senders TEXT NOT NULL,
        boundary TEXT, approval TEXT NOT NULL, approval_minutes INTEGER NOT NULL,
        rate_per_minute DOUBLE PRECISION NOT NULL, rate_burst INTEGER NOT NULL, created_at {time} NOT NULL)""",
    "CREATE TABLE cell_senders (sender TEXT PRIMARY KEY, cell_id TEXT NOT NULL REFERENCES cells (id))",
    """CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        cell_id TEXT NOT NULL REFERENCES cells (id), roles TEXT NOT NULL,
        machine BOOLEAN NOT NULL DEFAULT FALSE, trusted BOOLEAN NOT NULL DEFAULT FALSE,
        disabled BOOLEAN NOT NULL DEFAULT FALSE, created_at {time} NOT NULL)""",
    "CREATE INDEX users_cell ON users (cell_id)",
    # Rebuilt, not altered (SQLite cannot drop a NOT NULL): the columns of a token from before users
    # existed (cell, role, zones, boundary) stay, nullable, for `migrate_old_tokens` to read.
    """CREATE TABLE tokens_v9 (id TEXT PRIMARY KEY, user_id TEXT REFERENCES users (id),
        secret_hash TEXT NOT NULL UNIQUE, created_at {time} NOT NULL, expires_at {time},
        revoked BOOLEAN NOT NULL DEFAULT FALSE, cell TEXT, role TEXT, zones TEXT, boundary TEXT)""",
    """INSERT INTO tokens_v9 (id, secret_hash, created_at, revoked, cell, role, zones, boundary)
        SELECT id, secret_hash, created_at, revoked, cell, role, zones, boundary FROM tokens""",
    "DROP TABLE tokens",
    "ALTER TABLE tokens_v9 RENAME TO tokens",
    "CREATE INDEX tokens_user ON tokens (user_id)",
    "ALTER TABLE audit ADD COLUMN user_name TEXT",
))

TOKEN_COLUMNS = ("id", "user_id", "secret_hash", "created_at", "expires_at", "revoked")
USER_COLUMNS = ("id", "name", "cell_id", "roles", "machine", "trusted", "disabled", "created_at")
CELL_COLUMNS = ("id", "name", "zones", "senders", "boundary", "approval", "approval_minutes", "rate_per_minute",
                "rate_burst", "created_at")
# A token, its user and the user's cell in one read: each table's columns under its own prefix.
CALLER = "SELECT {} FROM tokens t JOIN users u ON u.id = t.user_id JOIN cells c ON c.id = u.cell_id".format(
    ", ".join([f"t.{c} AS t_{c}" for c in TOKEN_COLUMNS] + [f"u.{c} AS u_{c}" for c in USER_COLUMNS]
              + [f"c.{c} AS c_{c}" for c in CELL_COLUMNS])
)
INSERT_CELL = f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
INSERT_USER = f"INSERT INTO users ({', '.join(USER_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
INSERT_TOKEN = f"INSERT INTO tokens ({', '.join(TOKEN_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6)"


# -- rows and values ------------------------------------------------------------------------------


def _rings(text: str | None) -> tuple[model.Ring, ...]:
    return tuple(tuple(tuple(p) for p in ring) for ring in json.loads(text or "[]"))


def _part(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The columns of one table of a joined row, unprefixed."""
    return {key[len(prefix):]: row[key] for key in row.keys() if key.startswith(prefix)}


def cell_from_row(row: Mapping[str, Any]) -> people.Cell:
    return people.Cell(
        id=row["id"], name=row["name"], zones=tuple(json.loads(row["zones"])),
        senders=tuple(json.loads(row["senders"])), created_at=model.to_utc(row["created_at"]),
        boundary=_rings(row["boundary"]),
        approval={k: people.Approval(v) for k, v in json.loads(row["approval"]).items()},
        approval_minutes=row["approval_minutes"], rate=people.Rate(row["rate_per_minute"], row["rate_burst"]),
    )


def user_from_row(row: Mapping[str, Any]) -> people.User:
    return people.User(
        id=row["id"], cell=row["cell_id"], name=row["name"],
        roles=frozenset(model.Role(r) for r in json.loads(row["roles"])), created_at=model.to_utc(row["created_at"]),
        machine=bool(row["machine"]), trusted=bool(row["trusted"]), disabled=bool(row["disabled"]),
    )


def token_from_row(row: Mapping[str, Any]) -> people.Token:
    return people.Token(
        id=row["id"], user=row["user_id"], secret_hash=row["secret_hash"], created_at=model.to_utc(row["created_at"]),
        expires_at=model.to_utc(row["expires_at"]), revoked=bool(row["revoked"]),
    )


def caller_from_row(row: Mapping[str, Any]) -> people.Caller:
    return people.Caller(
        token_from_row(_part(row, "t_")), user_from_row(_part(row, "u_")), cell_from_row(_part(row, "c_"))
    )


def cell_values(cell: people.Cell, instant) -> tuple[Any, ...]:
    """The `INSERT_CELL` parameters of a cell; `instant` is the dialect's."""
    boundary = json.dumps([[list(p) for p in ring] for ring in cell.boundary]) if cell.boundary else None
    approval = json.dumps({k: people.Approval(v).value for k, v in cell.approval.items()})
    return (cell.id, cell.name, json.dumps(list(cell.zones)), json.dumps(list(cell.senders)), boundary, approval,
            cell.approval_minutes, float(cell.rate.per_minute), int(cell.rate.burst), instant(cell.created_at))


def no_cell(cell_id: str) -> errors.NotFound:
    return errors.NotFound(f"no cell {cell_id!r}", resource="cell", id=cell_id, field="cell")


def no_user(name: str) -> errors.NotFound:
    return errors.NotFound(f"no user {name!r}", resource="user", id=name, field="user")


class PeopleStore(mixin.Base):
    """The cell, user and token methods of `base.SQLStore` (mixed in), over its `_tx` and `_fetch`."""

    # -- cells --------------------------------------------------------------------------------------
    async def add_cell(self, cell: people.Cell) -> None:
        async with self._tx() as conn:
            if await conn.fetch("SELECT 1 FROM cells WHERE id = $1", cell.id):
                raise errors.Conflict(f"a cell {cell.id!r} exists already", field="id")
            await self._check_senders(conn, cell)
            await conn.execute(INSERT_CELL, *cell_values(cell, self._t))
            await self._write_senders(conn, cell)

    async def update_cell(self, cell: people.Cell) -> None:
        async with self._tx() as conn:
            if not await conn.fetch("SELECT 1 FROM cells WHERE id = $1 {row_lock}", cell.id):
                raise no_cell(cell.id)
            await self._check_senders(conn, cell)
            await conn.execute(
                "UPDATE cells SET name = $2, zones = $3, senders = $4, boundary = $5, approval = $6,"
                " approval_minutes = $7, rate_per_minute = $8, rate_burst = $9 WHERE id = $1",
                *cell_values(cell, self._t)[:9],
            )
            await conn.execute("DELETE FROM cell_senders WHERE cell_id = $1", cell.id)
            await self._write_senders(conn, cell)

    @staticmethod
    async def _check_senders(conn: Any, cell: people.Cell) -> None:
        taken = await conn.fetch(
            "SELECT sender, cell_id FROM cell_senders WHERE sender IN (SELECT value FROM {each}($1)) AND cell_id <> $2",
            json.dumps(list(cell.senders)), cell.id,
        )
        if taken:
            names = ", ".join(f"{r['sender']} ({r['cell_id']})" for r in taken)
            raise errors.Conflict(f"senders of another cell: {names}", field="senders")

    @staticmethod
    async def _write_senders(conn: Any, cell: people.Cell) -> None:
        await conn.executemany(
            "INSERT INTO cell_senders (sender, cell_id) VALUES ($1, $2)",
            [(s, cell.id) for s in dict.fromkeys(cell.senders)],
        )

    async def get_cell(self, cell_id: str) -> people.Cell:
        rows = await self._fetch("SELECT * FROM cells WHERE id = $1", cell_id)
        if not rows:
            raise no_cell(cell_id)
        return cell_from_row(rows[0])

    async def list_cells(self) -> list[people.Cell]:
        return [cell_from_row(r) for r in await self._fetch("SELECT * FROM cells ORDER BY id")]

    # -- users --------------------------------------------------------------------------------------
    async def add_user(self, user: people.User) -> None:
        async with self._tx() as conn:
            if await conn.fetch("SELECT 1 FROM users WHERE name = $1", user.name):
                raise errors.Conflict(f"a user {user.name!r} exists already", field="name")
            if not await conn.fetch("SELECT 1 FROM cells WHERE id = $1", user.cell):
                raise no_cell(user.cell)
            await conn.execute(
                INSERT_USER, user.id, user.name, user.cell, json.dumps(sorted(r.value for r in user.roles)),
                user.machine, user.trusted, user.disabled, self._t(user.created_at),
            )

    async def get_user(self, name: str) -> people.User:
        rows = await self._fetch("SELECT * FROM users WHERE name = $1", name)
        if not rows:
            raise no_user(name)
        return user_from_row(rows[0])

    async def list_users(self, cell: str | None = None) -> list[people.User]:
        if cell is None:
            rows = await self._fetch("SELECT * FROM users ORDER BY name")
        else:
            rows = await self._fetch("SELECT * FROM users WHERE cell_id = $1 ORDER BY name", cell)
        return [user_from_row(r) for r in rows]

    async def disable_user(self, name: str) -> people.User:
        if not await self._execute("UPDATE users SET disabled = TRUE WHERE name = $1", name):
            raise no_user(name)
        return await self.get_user(name)

    # -- tokens -------------------------------------------------------------------------------------
    async def add_token(self, token: people.Token) -> None:
        async with self._tx() as conn:
            if not await conn.fetch("SELECT 1 FROM users WHERE id = $1", token.user):
                raise errors.NotFound(f"no user with id {token.user!r}", resource="user", id=token.user)
            await conn.execute(
                INSERT_TOKEN, token.id, token.user, token.secret_hash, self._t(token.created_at),
                self._t(token.expires_at), token.revoked,
            )

    async def list_tokens(self, user: str | None = None) -> list[people.Token]:
        if user is None:
            rows = await self._fetch(f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens ORDER BY created_at, id")
        else:
            rows = await self._fetch(
                f"SELECT {', '.join('t.' + c for c in TOKEN_COLUMNS)} FROM tokens t JOIN users u ON u.id = t.user_id"
                " WHERE u.name = $1 ORDER BY t.created_at, t.id", user,
            )
        return [token_from_row(r) for r in rows]

    async def revoke_token(self, token_id: str) -> bool:
        return await self._execute("UPDATE tokens SET revoked = TRUE WHERE id = $1 AND NOT revoked", token_id) > 0

    async def caller_by_hash(self, secret_hash: str) -> people.Caller | None:
        rows = await self._brief_fetch(CALLER + " WHERE t.secret_hash = $1", secret_hash)
        return caller_from_row(rows[0]) if rows else None
