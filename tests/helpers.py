"""Test helpers: a clock the test moves, and a daemon built on the fakes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from alertd import auth, config, demo, errors, model, people, testing, web as web_mod

START = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)

# Figures a test wants whoever runs the suite to see; printed at the end of the run (conftest).
REPORT: list[str] = []


@dataclasses.dataclass
class ManualClock:
    now: dt.datetime = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance_to(self, when: dt.datetime) -> None:
        self.now = max(self.now, when)

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def write_config(
    tmp: Path, fakes: str, port: int, store: str | None = None,
    dispatcher: str = "batch_size = 100", sms: str = "", push: str = "", siren: str = "", alerts: str = "",
    extra: str = "",
) -> Path:
    """A configuration on the fakes; `dispatcher`, `alerts`, `sms`, `push` and `siren` are extra TOML
    lines for those sections, `extra` more sections."""
    path = tmp / "alertd.toml"
    store = store or f"sqlite:///{tmp / 'alertd.db'}"
    path.write_text(demo.config_toml(port, store, fakes, dispatcher=dispatcher, sms=sms, push=push, siren=siren,
                                     alerts=alerts, extra=extra))
    return path


def load_config(tmp: Path, fakes: str, port: int, **kw) -> config.Config:
    return config.load(str(write_config(tmp, fakes, port, **kw)), env={})


NO_APPROVAL = {key: "none" for key in people.APPROVAL_KEYS}


async def add_token(
    db, role: model.Role, zones: list[str], cell: str = "Préfecture test", **cell_options
) -> str:
    """A token as tests had before users existed: of a trusted machine client holding `role`, in the
    cell named `cell` over `zones` (id `<slug>-<zones>`, made on first use, approving nothing)."""
    key = "-".join("national" if z == "*" else z.lower() for z in zones)
    cell_id = f"{people.slug(cell)}-{key}"[:64].strip("-")
    try:
        await db.get_cell(cell_id)
    except errors.NotFound:
        options = {"approval": NO_APPROVAL} | cell_options
        await db.add_cell(auth.new_cell(cell_id, cell, zones, START, **options))
    name = f"{role.value}@{cell_id}"
    try:
        user = await db.get_user(name)
    except errors.NotFound:
        user = auth.new_user(name, cell_id, [role], START, machine=True, trusted=True)
        await db.add_user(user)
    plaintext, token = auth.new_token(user, START)
    await db.add_token(token)
    return plaintext


async def add_cell(db, cell_id: str, zones: list[str], name: str | None = None, senders=None, approval=None,
                   rate=None, **options) -> people.Cell:
    """A cell with the default approval policy (an actual alert waits for a second person) unless told."""
    cell = auth.new_cell(cell_id, name or cell_id, zones, START, senders=senders or (), approval=approval,
                         rate=rate, **options)
    await db.add_cell(cell)
    return cell


async def add_person(db, name: str, cell_id: str, *roles: model.Role, expires: dt.timedelta | None = None) -> str:
    """A person of the cell holding `roles`, and the plaintext of a token of theirs."""
    user = auth.new_user(name, cell_id, roles, START)
    await db.add_user(user)
    plaintext, token = auth.new_token(user, START, expires)
    await db.add_token(token)
    return plaintext


def alert(alert_id: str, *kinds: model.Kind) -> model.Alert:
    """A committed-looking alert for Paris, straight into the store (not through the API)."""
    return model.Alert(
        id=alert_id, identifier=alert_id, sender="test", sent=START, status=model.Status.ACTUAL,
        event="Crue", urgency="Immediate", severity="Severe", certainty="Observed",
        area=model.Area(("75056",)), channels=kinds, template="evacuate", locale="fr",
    )


def order(**overrides) -> dict:
    base = {
        "status": "actual", "event": "Inondation", "urgency": "Immediate", "severity": "Severe",
        "certainty": "Observed", "expires": (START + dt.timedelta(hours=2)).isoformat(),
        "area": {"zones": ["75056"], "description": "Paris"},
        "channels": ["sms", "push", "siren"], "template": "shelter_in_place",
        "params": {"reason": "crue de la Seine"}, "locale": "fr",
    }
    base.update(overrides)
    return base


PARIS, LYON = "75056", "69123"

PEOPLE = [
    {"id": "p-fr", "phone": "06 12 34 56 78", "push_token": "tok-fr-000001", "locale": "fr", "zones": [PARIS]},
    {"id": "p-en", "phone": "+33 6 22 33 44 55", "locale": "en", "zones": [PARIS]},
    {"id": "p-es", "push_token": "tok-es-000002", "locale": "es", "zones": [PARIS]},
    {"id": "p-ar", "phone": "+33633445566", "push_token": "dead-tok-ar", "locale": "ar", "zones": [PARIS]},
    {"id": "p-lyon", "phone": "+33644556677", "push_token": "tok-lyon", "locale": "fr", "zones": [LYON]},
]
# The CAP senders of the cells `populate` makes (the first, the cell's id, signs their JSON orders; a
# sender belongs to one cell): Paris's issuer signs as the Paris prefecture, the national cell as the
# other publishers of tests/cap (COGIC for the Paris prefecture's documents, which draw shapes).
PARIS_SENDER = "prefecture-75@interieur.gouv.fr"
NATIONAL_SENDER = "cogic@interieur.gouv.fr"
ISSUER_SENDERS = ("prefecture-test-75", PARIS_SENDER)
NATIONAL_SENDERS = ("prefecture-test-national", NATIONAL_SENDER, "sdis-75@interieur.gouv.fr",
                    *(f"prefecture-{d}@interieur.gouv.fr" for d in ("13", "69", "76", "92")),
                    "BoM-Sender@bom.gov.au", "cap-pac@canada.ca", "eoc@miamidade.gov", "opendata@dwd.de",
                    "vigilance@meteo.fr")
SIRENS = [model.Siren("siren-paris-1", PARIS, "Hôtel de Ville"), model.Siren("siren-lyon-1", LYON, "Bellecour")]


class Daemon:
    """The daemon under test, its HTTP client, its clock and the fakes' records."""

    def __init__(self, client, clock, fakes_url):
        self.client = client
        self.clock = clock
        self.app = client.server.app
        self.store = self.app[web_mod.STORE]
        self.dispatcher = self.app[web_mod.DISPATCHER]
        self.sms = testing.FakeControl(fakes_url, "twilio")
        self.push = testing.FakeControl(fakes_url, "fcm")
        self.siren = testing.FakeControl(fakes_url, "siren")
        self.fakes_url = fakes_url
        self.headers: dict[str, dict[str, str]] = {}

    async def populate(self) -> None:
        """Fakes reset (no Twilio callbacks: "sent" stays "sent"), a token per role, PEOPLE and SIRENS."""
        await self.sms.reset()
        await self.sms._call("POST", "/_fake/twilio/callbacks", {"enabled": False})
        issuer = await add_token(self.store, model.Role.ISSUER, ["75"], senders=ISSUER_SENDERS)
        operator = await add_token(self.store, model.Role.OPERATOR, ["*"], senders=NATIONAL_SENDERS)
        self.headers["issuer"], self.headers["operator"] = auth_header(issuer), auth_header(operator)
        self.headers["admin"] = auth_header(await add_token(self.store, model.Role.ADMIN, ["*"]))
        resp = await self.post("/v1/subscribers", who="admin", json=PEOPLE)
        assert resp.status == 200, await resp.text()
        await self.store.upsert_sirens(SIRENS)

    async def drain(self) -> None:
        await self.dispatcher.run_until_idle(self.clock.advance_to)

    async def post(self, path, who="issuer", **kw):
        return await self.client.post(path, headers=self.headers.get(who, {}) | kw.pop("headers", {}), **kw)

    async def get(self, path, who="operator"):
        return await self.client.get(path, headers=self.headers.get(who, {}))

    async def send(self, **fields) -> dict:
        resp = await self.post("/v1/alerts", json=order(**fields))
        assert resp.status == 202, await resp.text()
        return await resp.json()

    async def status(self, alert_id: str) -> dict:
        resp = await self.get(f"/v1/alerts/{alert_id}")
        assert resp.status == 200
        return await resp.json()


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
