"""`alertd cell|user|token …`: crisis cells, the people and machine clients who act for them, and
their bearer tokens, kept in the daemon's store and managed from this machine's command line.
Every change is appended to the audit log."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys

from alertd import auth, cli_base, errors, model, people

NEVER = "never"  # `--expires never`: a machine client's token that does not expire


def register(sub) -> None:
    """Add the `cell`, `user` and `token` commands to the `alertd` parser's subcommands."""
    cell = _group(sub, "cell", "Manage crisis cells: their zones, CAP senders, approval policy and rate.")
    _cell_options(_action(cell, "add", cell_add, "Create a cell."), adding=True)
    _cell_options(_action(cell, "set", cell_set, "Change a cell: only the options given."), adding=False)
    _action(cell, "list", cell_list, "List the cells.")
    _action(cell, "show", cell_show, "Show everything about a cell, its users too.").add_argument("id")

    user = _group(sub, "user", "Manage users: people, and machine clients, of a cell.")
    c = _action(user, "add", user_add, "Create a user of a cell.")
    c.add_argument("name")
    c.add_argument("--cell", required=True, help="the cell's id")
    c.add_argument("--role", dest="roles", action="append", required=True, choices=[r.value for r in model.Role],
                   help="a role the user holds (repeat for several)")
    c.add_argument("--machine", action="store_true", help="a machine client (e.g. a system posting CAP), not a person")
    c.add_argument("--trusted", action="store_true",
                   help="with --machine: its alerts need no second person (the audit says so)")
    _action(user, "list", user_list, "List the users.").add_argument("--cell", help="only this cell's")
    _action(user, "disable", user_disable, "Disable a user: its tokens stop working at once.").add_argument("name")

    token = _group(sub, "token", "Manage bearer tokens.")
    c = _action(token, "create", token_create, "Create a user's token; it is printed once, only its hash is kept.")
    c.add_argument("--user", required=True, help="the user's name")
    c.add_argument("--expires", type=_expiry, metavar="DURATION|never",
                   help=f"e.g. 30d or 12h (default {people.PERSON_TOKEN_DAYS}d for a person, "
                        f"{people.MACHINE_TOKEN_DAYS}d for a machine client; never: machine clients only)")
    listing = _action(token, "list", token_list, "List tokens (never their secrets).")
    listing.add_argument("--user", help="only this user's")
    _action(token, "revoke", token_revoke, "Revoke a token: it stops working at once.").add_argument("id")


def _group(sub, name: str, help: str):
    return sub.add_parser(name, help=help, description=help).add_subparsers(metavar="ACTION")


def _action(group, name: str, func, help: str) -> argparse.ArgumentParser:
    c = group.add_parser(name, help=help, description=help)
    c.set_defaults(func=func)
    cli_base.config_arg(c)
    return c


def _cell_options(c: argparse.ArgumentParser, adding: bool) -> None:
    c.add_argument("id", help="a slug such as pref-69" if adding else "the cell's id")
    c.add_argument("--name", required=adding, help="the display name, e.g. 'Préfecture du Rhône'")
    c.add_argument("--zones", required=adding, type=_zones,
                   help="INSEE commune or département codes, comma-separated, or '*'")
    c.add_argument("--sender", dest="senders", action="append", metavar="SENDER",
                   help="a CAP sender the cell uses (repeat; the first signs its JSON orders; default: the id)")
    c.add_argument("--boundary", metavar="FILE.geojson",
                   help="the jurisdiction's outline (GeoJSON Polygon or MultiPolygon): lets the cell draw areas")
    choices = [a.value for a in people.Approval]
    for key in people.APPROVAL_KEYS:
        what = "a cancel of the cell's own alert" if key == "cancel" else f"an alert of status {key}"
        flag = "--approval" if key == model.Status.ACTUAL.value else f"--{key}-approval"
        c.add_argument(flag, dest=f"approval_{key}", choices=choices, help=f"whether {what} waits for a second person")
    c.add_argument("--approval-minutes", type=_positive(int), metavar="N",
                   help="an approval request not answered in N minutes is never sent "
                        f"(default {people.APPROVAL_MINUTES})")
    c.add_argument("--orders-per-minute", type=_positive(float), metavar="N", help="the cell's order rate (default 60)")
    c.add_argument("--burst", type=_positive(int), metavar="N", help="orders it may post at once (default 20)")


def _zones(text: str) -> tuple[str, ...]:
    return tuple(z.strip() for z in text.split(",") if z.strip())


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _expiry(text: str) -> dt.timedelta | str:
    if text.strip().lower() == NEVER:
        return NEVER
    try:
        return cli_base.duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30d or 12h, or never, not {text!r}") from None


def _run(args, work):
    """`work(store)` on the daemon's store named by the command's configuration."""
    return asyncio.run(cli_base.with_store(cli_base.load(args), work))


# -- cells -----------------------------------------------------------------------------------------


def cell_add(args) -> int:
    shape = cli_base.boundary(args.boundary) if args.boundary else None  # a bad file: before the store

    async def work(db) -> people.Cell:
        cell = _cell(args, None, shape)
        await db.add_cell(cell)
        await db.add_audit(cli_base.local_entry("cell_created", cell.id, **_cell_detail(cell)))
        return cell

    print("created", *describe_cell(_run(args, work)), sep="\n")
    return 0


def cell_set(args) -> int:
    shape = cli_base.boundary(args.boundary) if args.boundary else None

    async def work(db) -> people.Cell:
        cell = _cell(args, await _cell_of(db, args.id), shape)
        await db.update_cell(cell)
        await db.add_audit(cli_base.local_entry("cell_updated", cell.id, **_cell_detail(cell)))
        return cell

    print("changed", *describe_cell(_run(args, work)), sep="\n")
    return 0


def _cell(args, base: people.Cell | None, shape: tuple[model.Ring, ...] | None) -> people.Cell:
    """The cell the options describe: `base` (a cell being changed) with what they change, validated."""
    def given(name: str, default):
        value = getattr(args, name)
        return default if value is None else value

    approval = dict(base.approval if base else people.DEFAULT_APPROVAL)
    approval |= {k: people.Approval(v) for k in people.APPROVAL_KEYS if (v := getattr(args, f"approval_{k}"))}
    rate = base.rate if base else people.Rate()
    return auth.new_cell(
        args.id, given("name", base and base.name), list(given("zones", base and base.zones)),
        base.created_at if base else model.utcnow(),
        senders=tuple(given("senders", base.senders if base else ())),
        boundary=shape if shape is not None else (base.boundary if base else ()),
        approval=approval,
        approval_minutes=given("approval_minutes", base.approval_minutes if base else people.APPROVAL_MINUTES),
        rate=people.Rate(given("orders_per_minute", rate.per_minute), given("burst", rate.burst)),
    )


def _cell_detail(cell: people.Cell) -> dict:
    return {"name": cell.name, "zones": list(cell.zones), "senders": list(cell.senders),
            "approval": {k: people.Approval(v).value for k, v in cell.approval.items()},
            "approval_minutes": cell.approval_minutes, "boundary_rings": len(cell.boundary),
            "orders_per_minute": cell.rate.per_minute, "burst": cell.rate.burst}


def describe_cell(cell: people.Cell) -> list[str]:
    approval = ", ".join(f"{k} {people.Approval(v).value}" for k, v in cell.approval.items())
    rings = len(cell.boundary)
    return [
        f"cell {cell.id}: {cell.name}",
        f"  zones     {', '.join(cell.zones)}",
        f"  senders   {', '.join(cell.senders)}",
        f"  boundary  {f'{rings} ring(s)' if rings else 'none (areas drawn as shapes are refused)'}",
        f"  approval  {approval}; a request unanswered for {cell.approval_minutes} min is never sent",
        f"  rate      {cell.rate.per_minute:g} orders/min, bursts of {cell.rate.burst}",
        f"  created   {_when(cell.created_at)}",
    ]


def cell_list(args) -> int:
    cells = _run(args, lambda db: db.list_cells())
    if not cells:
        print("no cells yet: `alertd cell add` makes one", file=sys.stderr)
        return 0
    print(f"{'ID':<24} {'NAME':<32} {'ZONES':<24} {'APPROVAL (actual)':<18} SENDERS")
    for c in cells:
        actual = people.Approval(c.approval.get(model.Status.ACTUAL.value, people.Approval.REQUIRED)).value
        print(f"{c.id:<24} {c.name:<32} {_clip(','.join(c.zones), 24):<24} {actual:<18} {','.join(c.senders)}")
    return 0


def cell_show(args) -> int:
    async def work(db):
        return await _cell_of(db, args.id), await db.list_users(args.id)

    cell, users = _run(args, work)
    print(*describe_cell(cell), sep="\n")
    print(f"  users     {len(users) or 'none yet: `alertd user add NAME --cell ' + cell.id + ' --role issuer`'}")
    for line in user_table(users):
        print("    " + line)
    return 0


# -- users -----------------------------------------------------------------------------------------


def user_add(args) -> int:
    if args.trusted and not args.machine:
        raise errors.Invalid("only a machine client may be trusted: add --machine", field="trusted")

    async def work(db) -> people.User:
        await _cell_of(db, args.cell)
        user = auth.new_user(args.name, args.cell, frozenset(model.Role(r) for r in args.roles), model.utcnow(),
                             machine=args.machine, trusted=args.trusted)
        await db.add_user(user)
        await db.add_audit(cli_base.local_entry("user_created", user.name, cell=user.cell, roles=_roles(user),
                                                machine=user.machine, trusted=user.trusted))
        return user

    user = _run(args, work)
    print(f"created {_kind(user)} {user.name} of cell {user.cell} ({_roles(user)}); "
          f"`alertd token create --user {user.name}` makes its token")
    return 0


def user_list(args) -> int:
    async def work(db):
        if args.cell:
            await _cell_of(db, args.cell)
        return await db.list_users(args.cell)

    users = _run(args, work)
    if not users:
        print("no users yet: `alertd user add` makes one", file=sys.stderr)
    for line in user_table(users) if users else ():
        print(line)
    return 0


def user_table(users: list[people.User]) -> list[str]:
    lines = [f"{'NAME':<24} {'CELL':<24} {'ROLES':<24} {'KIND':<16} {'STATE':<9} CREATED"]
    for u in users:
        lines.append(f"{u.name:<24} {u.cell:<24} {_roles(u):<24} {_kind(u):<16} "
                     f"{'disabled' if u.disabled else 'active':<9} {_when(u.created_at)}")
    return lines


def user_disable(args) -> int:
    async def work(db) -> people.User:
        await _user_of(db, args.name)
        user = await db.disable_user(args.name)
        await db.add_audit(cli_base.local_entry("user_disabled", user.name, cell=user.cell))
        return user

    user = _run(args, work)
    print(f"disabled {user.name} of cell {user.cell}: its tokens no longer authenticate")
    return 0


def _roles(user: people.User) -> str:
    return ",".join(sorted(r.value for r in user.roles))


def _kind(user: people.User) -> str:
    return ("trusted machine" if user.trusted else "machine") if user.machine else "person"


# -- tokens ----------------------------------------------------------------------------------------


def token_create(args) -> int:
    async def work(db) -> tuple[str, people.Token, people.User]:
        user = await _user_of(db, args.user)
        if user.disabled:
            raise errors.Conflict(f"user {user.name} is disabled: it gets no new token", field="user")
        if args.expires == NEVER and not user.machine:
            raise errors.Invalid("a person's token expires: `--expires never` is for machine clients only",
                                 field="expires")
        plaintext, token = auth.new_token(user, model.utcnow(), None if args.expires == NEVER else args.expires)
        if args.expires == NEVER:
            token = dataclasses.replace(token, expires_at=None)
        await db.add_token(token)
        await db.add_audit(cli_base.local_entry("token_created", token.id, user=user.name, cell=user.cell,
                                                expires=token.expires_at and token.expires_at.isoformat()))
        return plaintext, token, user

    plaintext, token, user = _run(args, work)
    print(plaintext)
    print(f"token {token.id} for {user.name} of cell {user.cell}, expires {_expires(token)}; "
          "shown once, only its hash is stored", file=sys.stderr)
    return 0


def token_list(args) -> int:
    async def work(db):
        if args.user:
            await _user_of(db, args.user)
        return await db.list_tokens(args.user), {u.id: u for u in await db.list_users()}

    tokens, users = _run(args, work)
    if not tokens:
        print("no tokens yet: `alertd token create --user NAME` makes one", file=sys.stderr)
        return 0
    now = model.utcnow()
    print(f"{'ID':<18} {'USER':<24} {'CELL':<24} {'CREATED':<17} {'EXPIRES':<27} REVOKED")
    for t in tokens:
        user = users.get(t.user)
        expires = _expires(t) + (" (expired)" if t.expired(now) else "")
        print(f"{t.id:<18} {user.name if user else t.user:<24} {user.cell if user else '?':<24} "
              f"{_when(t.created_at):<17} {expires:<27} {'yes' if t.revoked else 'no'}")
    return 0


def token_revoke(args) -> int:
    async def work(db) -> bool:
        token = next((t for t in await db.list_tokens() if t.id == args.id), None)
        if token is None:
            raise errors.NotFound(f"no token {args.id}: `alertd token list` shows them", field="id")
        if not await db.revoke_token(token.id):
            return False
        user = next((u for u in await db.list_users() if u.id == token.user), None)
        await db.add_audit(cli_base.local_entry("token_revoked", token.id, user=user and user.name,
                                                cell=user and user.cell))
        return True

    if _run(args, work):
        print(f"revoked token {args.id}: it no longer authenticates")
    else:
        print(f"token {args.id} was already revoked", file=sys.stderr)
    return 0


def _expires(token: people.Token) -> str:
    return _when(token.expires_at) if token.expires_at else NEVER


# -- shared ----------------------------------------------------------------------------------------


async def _cell_of(db, cell_id: str) -> people.Cell:
    try:
        return await db.get_cell(cell_id)
    except errors.NotFound:
        raise errors.NotFound(f"no cell {cell_id!r}: `alertd cell list` shows them", field="cell") from None


async def _user_of(db, name: str) -> people.User:
    try:
        return await db.get_user(name)
    except errors.NotFound:
        raise errors.NotFound(f"no user {name!r}: `alertd user list` shows them", field="user") from None


def _when(at: dt.datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M}Z"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
