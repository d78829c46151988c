"""Migration 9's data step: the tokens from before users existed become machine clients of cells.

An old token named its crisis cell by display name and carried its role, zones and boundary. Each
such name becomes a cell: id `people.slug(name)` (`-2`, `-3`… when taken), zones and boundary the
union of its tokens', and as sender the one its alerts were signed with (`model.cap_sender(name)`),
so that a CAP update or cancel of an old alert still finds it. Each token becomes the token of a
machine client (not trusted) of its cell holding the token's one role, and each stored alert's
`cell` the cell's id, the name kept as `cell_name`. Only tokens without a user and alerts without
`cell_name` are touched: on a fresh store, or one migrated already, it changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from alertd import model, people

log = structlog.get_logger("alertd.store")
BATCH = 500  # alerts read and rewritten at a time


@dataclasses.dataclass(frozen=True)
class OldToken:
    id: str
    cell: str  # the cell's display name
    role: model.Role
    zones: tuple[str, ...]
    boundary: tuple[model.Ring, ...]
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OldToken:
        return cls(
            id=row["id"], cell=row["cell"] or "", role=model.Role(row["role"]),
            zones=tuple(json.loads(row["zones"] or "[]")),
            boundary=tuple(tuple(tuple(p) for p in ring) for ring in json.loads(row["boundary"] or "[]")),
            created_at=model.to_utc(row["created_at"]),
        )


# -- decisions ------------------------------------------------------------------------------------


def free_id(name: str, taken: set[str]) -> str:
    """A cell id made from `name` that is not in `taken`."""
    base = people.slug(name)[:60].strip("-") or "cell"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def plan_cells(
    tokens: Iterable[OldToken], alert_zones: Mapping[str, Iterable[str]], taken_ids: set[str],
    taken_senders: set[str], now: dt.datetime,
) -> dict[str, people.Cell]:
    """The cell to make for each display name, by name: those of the tokens, then those only
    alerts name (`alert_zones`: their zones, by name)."""
    tokens = list(tokens)
    names = list(dict.fromkeys([t.cell for t in tokens] + list(alert_zones)))
    ids, senders, cells = set(taken_ids), set(taken_senders), {}
    for name in names:
        mine = [t for t in tokens if t.cell == name]
        cell_id = free_id(name, ids)
        sender = model.cap_sender(name)
        sender = sender if sender not in senders else cell_id
        ids.add(cell_id)
        senders.add(sender)
        zones = [z for t in mine for z in t.zones] or list(alert_zones.get(name, ()))
        cells[name] = people.Cell(
            id=cell_id, name=name, zones=tuple(dict.fromkeys(zones)), senders=(sender,),
            created_at=min((t.created_at for t in mine), default=now),
            boundary=tuple(dict.fromkeys(ring for t in mine for ring in t.boundary)),
        )
    return cells


def client(token: OldToken, cell: people.Cell) -> people.User:
    """The machine client an old token becomes: named after its cell, role and token."""
    return people.User(
        id=secrets.token_hex(8), cell=cell.id, name=f"{cell.id}.{token.role.value}.{token.id}",
        roles=frozenset({token.role}), created_at=token.created_at, machine=True, trusted=False,
    )


def rewritten(data: Mapping[str, Any], cells: Mapping[str, people.Cell]) -> dict[str, Any] | None:
    """An alert's stored JSON with its cell as the cell's id and the name as `cell_name` (None: unchanged)."""
    name = data.get("cell")
    if "cell_name" in data or not name or name not in cells:
        return None
    return {**data, "cell": cells[name].id, "cell_name": name}


# -- the step -------------------------------------------------------------------------------------


async def migrate_old_tokens(store: Any, conn: Any) -> None:
    """Run inside migration 9's transaction, on its connection."""
    from alertd.store import people as people_store  # the store's own module, not `alertd.people`

    tokens = [OldToken.from_row(r) for r in await conn.fetch(
        "SELECT * FROM tokens WHERE user_id IS NULL ORDER BY created_at, id")]
    named = await _alert_zones(conn)
    if not tokens and not named:
        return
    taken_ids = {r["id"] for r in await conn.fetch("SELECT id FROM cells")}
    taken_senders = {r["sender"] for r in await conn.fetch("SELECT sender FROM cell_senders")}
    cells = plan_cells(tokens, named, taken_ids, taken_senders, model.utcnow())
    for cell in cells.values():
        await conn.execute(people_store.INSERT_CELL, *people_store.cell_values(cell, store._t))
        await conn.execute("INSERT INTO cell_senders (sender, cell_id) VALUES ($1, $2)", cell.senders[0], cell.id)
    clients = []
    for token in tokens:
        user = client(token, cells[token.cell])
        await conn.execute(
            people_store.INSERT_USER, user.id, user.name, user.cell, json.dumps([token.role.value]), True, False,
            False, store._t(user.created_at),
        )
        await conn.execute("UPDATE tokens SET user_id = $2 WHERE id = $1", token.id, user.id)
        clients.append({"user": user.name, "token_id": token.id, "cell": user.cell, "role": token.role.value})
    alerts = await _rewrite_alerts(conn, cells)
    log.warning(
        "tokens from before users existed were migrated: each is now a machine client (not trusted) of a cell"
        " made from its cell name; alerts name the cell by id", alerts=alerts, clients=clients,
        cells=[{"id": c.id, "name": c.name, "zones": list(c.zones), "sender": c.senders[0]} for c in cells.values()],
    )


async def _alerts(conn: Any):
    """The stored alerts not yet migrated, as (seq, data), in batches."""
    after = 0
    while rows := await conn.fetch("SELECT seq, data FROM alerts WHERE seq > $1 ORDER BY seq LIMIT $2", after, BATCH):
        after = rows[-1]["seq"]
        for row in rows:
            data = json.loads(row["data"])
            if "cell_name" not in data and data.get("cell"):
                yield row["seq"], data


async def _alert_zones(conn: Any) -> dict[str, dict[str, None]]:
    """The zones of the alerts not yet migrated (in order, once each), by the cell name they carry."""
    named: dict[str, dict[str, None]] = {}
    async for _, data in _alerts(conn):
        named.setdefault(data["cell"], {}).update(dict.fromkeys((data.get("area") or {}).get("zones") or ()))
    return named


async def _rewrite_alerts(conn: Any, cells: Mapping[str, people.Cell]) -> int:
    count, batch = 0, []
    async for seq, data in _alerts(conn):
        if (new := rewritten(data, cells)) is not None:
            batch.append((seq, json.dumps(new)))
        if len(batch) >= BATCH:
            await conn.executemany("UPDATE alerts SET data = $2 WHERE seq = $1", batch)
            count, batch = count + len(batch), []
    await conn.executemany("UPDATE alerts SET data = $2 WHERE seq = $1", batch)
    return count + len(batch)
