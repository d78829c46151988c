"""The role × route × jurisdiction matrix: every operation of the OpenAPI document, called by every
kind of caller, each answer asserted (status, problem details, conformance to the document, and that
it shows nothing of another cell's).

The callers: no token, a malformed one, a revoked, an expired, a disabled user's; each role of cell
A (zone 69); cells of zone 75 (issuer, admin); a cell bearing A's very name over zone 75; and a
national cell. A route of the document that `ROUTES` does not name fails the test, so a new route
cannot go untested: add one line to `ROUTES` (see `Route`). SQLite alone: one daemon, a few seconds.

What may send is called last: until then the fakes must have received nothing more than the setup
sent, whatever was refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from alertd import auth, model, web as web_mod, zones
from tests import helpers
from tests.test_openapi_conformance import METHODS, Conformance, settle

pytestmark = pytest.mark.parametrize("daemon", ["sqlite"], indirect=True)

Role = model.Role
CELL_A, CELL_B, NATIONAL = "Préfecture du Rhône", "Préfecture de police", "COGIC"
LYON_ZONE = "69123"  # helpers.PEOPLE's p-lyon and helpers.SIRENS' siren-lyon-1 are there
ANY = frozenset(Role)  # any valid token
SENDERS = frozenset({Role.ISSUER, Role.ADMIN})


@dataclasses.dataclass(frozen=True)
class Caller:
    name: str
    header: dict[str, str]
    roles: frozenset[Role] = frozenset()  # none: the token does not authenticate
    cell: str | None = None
    sees_a: bool = False  # cell A's jurisdiction lies in its own (A itself, the national cell)
    national: bool = False


@dataclasses.dataclass(frozen=True)
class Route:
    """What one operation answers each caller, on cell A's objects.

    `op` is "METHOD /path" as the document writes it; `may` the roles that succeed (`ANY`: any valid
    token; None: public, no token needed), answering `ok`; a valid token without those roles gets
    403, none 401. `on` names the object of cell A put in the path: "alert" (actual, completed),
    "draft", or "new draft" (a fresh draft for each call); a caller whose jurisdiction does not cover
    cell A's gets 404 there, before any role is checked: not even the object's existence. `send`
    gives the request's other arguments (body, headers); `area`: its body targets cell A's zone, which a
    caller of another jurisdiction may not (403). `sends`: a success may reach a provider (it
    is called after the rest). `expect(caller)`, when given, overrides the rule for that route.
    """

    op: str
    may: frozenset[Role] | None = ANY
    ok: int = 200
    on: str | None = None
    send: Callable[[], dict[str, Any]] = dict
    area: bool = False
    sends: bool = False
    expect: Callable[[Caller], int] | None = None

    def status(self, caller: Caller) -> int:
        if self.expect is not None:
            return self.expect(caller)
        if self.may is None:
            return self.ok
        if not caller.roles:
            return 401
        if self.on and not caller.sees_a:
            return 404
        if not caller.roles & self.may:
            return 403
        return 403 if self.area and not caller.sees_a else self.ok


def a_order(**fields) -> dict[str, Any]:
    return {"json": helpers.order(area={"zones": [LYON_ZONE], "description": "Lyon"}, **fields)}


def subscriber() -> dict[str, Any]:
    return {"json": {"id": "p-lyon-2", "phone": "+33655667788", "locale": "fr", "zones": [LYON_ZONE]}}


def twilio_unsigned() -> dict[str, Any]:
    return {"data": {"MessageSid": "SM0", "MessageStatus": "delivered"}}


def heartbeat() -> dict[str, Any]:
    return {"json": {"type": "heartbeat", "siren_id": "siren-lyon-1", "at": helpers.START.isoformat()}}


def gateway_only(caller: Caller) -> int:
    """A siren gateway's route: no bearer token is 401, any token but a gateway's 403."""
    return 401 if not caller.header else 403


ROUTES = [
    Route("GET /healthz", None),
    Route("GET /readyz", None),
    Route("GET /metrics", None),
    Route("GET /v1/openapi.json", None),
    Route("GET /v1/feed.atom", None),
    Route("GET /v1/alerts/{id}.xml", None, on="alert"),  # an actual alert is public information
    Route("GET /v1/alerts/{id}.xml", on="draft"),
    Route("GET /v1/me"),
    Route("GET /v1/sirens"),
    Route("GET /v1/alerts"),
    Route("GET /v1/alerts/{id}", on="alert"),
    Route("GET /v1/alerts/{id}", on="draft"),
    Route("GET /v1/alerts/{id}/messages", on="alert"),
    Route("GET /v1/alerts/{id}/deliveries", on="alert"),
    Route("GET /v1/alerts/{id}/sirens", on="alert"),
    Route("GET /v1/alerts/{id}/events", on="alert"),
    Route("GET /v1/audit", frozenset({Role.ADMIN})),
    Route("POST /v1/preview", SENDERS, send=a_order, area=True),
    Route("POST /v1/subscribers", SENDERS, send=subscriber, area=True),
    Route("POST /v1/receipts/twilio", expect=lambda caller: 403, send=twilio_unsigned),  # Twilio signs, or 403
    Route("POST /v1/receipts/{channel}", expect=lambda caller: 403, send=twilio_unsigned),  # as "sms": Twilio's
    Route("POST /v1/receipts/siren", expect=gateway_only, send=heartbeat),
    Route("POST /v1/alerts", SENDERS, 202, send=a_order, area=True, sends=True),
    Route("POST /v1/alerts/{id}/approve", SENDERS | {Role.APPROVER}, 202, on="new draft", sends=True),
    Route("POST /v1/alerts/{id}/cancel", SENDERS, on="alert", sends=True),
    # A draft awaits no approval: whoever may reject hears that it is not awaiting one (409).
    Route("POST /v1/alerts/{id}/reject", frozenset({Role.APPROVER, Role.ADMIN}), 409, on="new draft",
          send=lambda: {"json": {"reason": "wrong area"}}),
]
NOT_YET_DOCUMENTED: set[str] = set()


@dataclasses.dataclass
class World:
    """Cell A's objects, another cell's alert, and every caller."""

    alert: str
    draft: str
    b_alert: str  # of the cell of zone 75
    a_cell: str  # cell A's id
    callers: list[Caller]
    new_draft: Callable[[], Any]

    def a_ids(self) -> set[str]:
        return {self.alert, self.draft}


async def token_of(daemon, role: Role, codes: list[str], cell: str) -> Caller:
    header = helpers.auth_header(await helpers.add_token(daemon.store, role, codes, cell=cell))
    found = await daemon.store.caller_by_hash(auth.parse_bearer(header["Authorization"])[1])
    sees_a = any(zones.within(LYON_ZONE, z) for z in codes)
    name = f"{role.value} of {cell} ({','.join(codes)})"
    return Caller(name, header, frozenset({role}), found.cell, sees_a, zones.NATIONAL in codes)


async def refused_tokens(daemon, cell_id: str) -> list[Caller]:
    """Callers whose token does not authenticate: none, malformed, revoked, expired, disabled."""
    db = daemon.store
    revoked = (await token_of(daemon, Role.ISSUER, ["69"], CELL_A)).header
    await db.revoke_token(auth.parse_bearer(revoked["Authorization"])[0])
    user = auth.new_user("expired-issuer", cell_id, [Role.ISSUER], helpers.START)
    await db.add_user(user)
    expired, token = auth.new_token(user, helpers.START - dt.timedelta(days=2), dt.timedelta(hours=1))
    await db.add_token(token)
    disabled = await helpers.add_person(db, "disabled-admin", cell_id, Role.ADMIN)
    await db.disable_user("disabled-admin")
    return [
        Caller("no token", {}), Caller("malformed token", {"Authorization": "Bearer not-a-token"}),
        Caller("revoked token", revoked), Caller("expired token", helpers.auth_header(expired)),
        Caller("disabled user", helpers.auth_header(disabled)),
    ]


async def world(daemon) -> World:
    issuer = await token_of(daemon, Role.ISSUER, ["69"], CELL_A)
    callers = [issuer] + [await token_of(daemon, r, ["69"], CELL_A) for r in (Role.APPROVER, Role.OPERATOR)]
    callers += [await token_of(daemon, Role.ADMIN, ["69"], CELL_A)]
    b_caller = await token_of(daemon, Role.ISSUER, ["75"], CELL_B)
    callers += [b_caller, await token_of(daemon, Role.ADMIN, ["75"], CELL_B)]
    callers += [await token_of(daemon, r, ["75"], CELL_A) for r in (Role.ISSUER, Role.ADMIN)]  # A's very name
    callers += [await token_of(daemon, r, ["*"], NATIONAL) for r in (Role.OPERATOR, Role.ADMIN)]
    callers = await refused_tokens(daemon, issuer.cell) + callers

    async def post(header: dict[str, str], order: dict[str, Any]) -> str:
        resp = await daemon.client.post("/v1/alerts", headers=header, **order)
        assert resp.status == 202, await resp.text()
        return (await resp.json())["id"]

    alert = await post(issuer.header, a_order())
    b_alert = await post(b_caller.header, {"json": helpers.order()})
    draft = await post(issuer.header, a_order(status="draft"))
    await settle(daemon)
    return World(alert, draft, b_alert, issuer.cell, callers, lambda: post(issuer.header, a_order(status="draft")))


async def test_every_route_answers_every_caller_as_its_role_and_jurisdiction_allow(daemon):
    doc = await (await daemon.client.get("/v1/openapi.json")).json()
    documented = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item if m in METHODS}
    named = {r.op for r in ROUTES}
    assert documented - named == set(), "routes of the document the matrix does not check: add them to ROUTES"
    assert named - documented <= NOT_YET_DOCUMENTED, "ROUTES names routes the document does not have"
    routes = [r for r in ROUTES if r.op in documented]
    w = await world(daemon)
    c = Conformance(daemon, doc)
    cells = [(r, caller) for r in routes for caller in w.callers]
    sending = [(r, caller) for r, caller in cells if r.sends and r.status(caller) < 300]
    before = await received(daemon)
    for route, caller in cells:
        if (route, caller) not in sending:
            await answer(c, w, route, caller)
    await settle(daemon)
    assert await received(daemon) == before, "a caller that may not send reached a provider"
    for route, caller in sending:
        await answer(c, w, route, caller)
    await settle(daemon)
    assert await received(daemon) != before, "what may send reached no provider"
    helpers.REPORT.append(f"role matrix: {len(cells)} answers ({len(routes)} routes × {len(w.callers)} callers)")


async def received(daemon) -> dict[str, int]:
    return {fake.provider: len(await fake.received()) for fake in (daemon.sms, daemon.push, daemon.siren)}


async def answer(c: Conformance, w: World, route: Route, caller: Caller) -> None:
    method, path = route.op.split(" ", 1)
    expected = route.status(caller)
    fresh = route.on == "new draft" and expected < 300  # the others are refused the one draft
    target = await w.new_draft() if fresh else {"alert": w.alert, None: ""}.get(route.on, w.draft)
    url = path.replace("{id}", target).replace("{channel}", "sms")
    async with asyncio.timeout(30):
        resp = await c.daemon.client.request(method, url, headers=caller.header, **route.send())
        raw = await resp.read()
    where = f"{route.op} ({route.on or 'no object'}) by {caller.name}"
    assert resp.status == expected, f"{where}: {resp.status}, not {expected}: {raw[:300]!r}"
    body = c.check(method.lower(), path, resp, raw, url)
    if resp.status >= 400:
        assert resp.content_type == web_mod.PROBLEM_JSON and body["status"] == resp.status, where
    if resp.status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), where
    if route.may is not None and caller.roles:
        nothing_of_others(w, caller, raw.decode(errors="replace"), where, asked=target)
    if resp.status == 200 and route.op in SHOWS:
        SHOWS[route.op](w, caller, body, where)


def nothing_of_others(w: World, caller: Caller, text: str, where: str, asked: str) -> None:
    """An answer to a token shows nothing of a cell whose jurisdiction the token's does not cover
    (but the id it asked for, which a 404 may repeat)."""
    hidden = set() if caller.national else ({w.b_alert} if caller.sees_a else w.a_ids() | {w.a_cell})
    assert not [h for h in hidden - {asked} if h in text], f"{where}: shows another cell's {hidden}"


def shows_alerts(w: World, caller: Caller, body: dict, where: str) -> None:
    ids = {a["id"] for a in body["alerts"]}
    if caller.sees_a:
        assert w.a_ids() <= ids, where
    if caller.national:
        assert w.b_alert in ids, where


def shows_sirens(w: World, caller: Caller, body: dict, where: str) -> None:
    zones = {s["zone"] for s in body["sirens"]}
    assert (helpers.LYON in zones) == caller.sees_a, where


def shows_me(w: World, caller: Caller, body: dict, where: str) -> None:
    assert body["cell"] == caller.cell and set(body["roles"]) == {r.value for r in caller.roles}, where


def shows_audit(w: World, caller: Caller, body: dict, where: str) -> None:
    cells = {e["cell"] for e in body["entries"]}
    assert (w.a_cell in cells) == caller.sees_a, where


SHOWS = {"GET /v1/alerts": shows_alerts, "GET /v1/sirens": shows_sirens, "GET /v1/me": shows_me,
         "GET /v1/audit": shows_audit}
