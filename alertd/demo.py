"""`alertd demo`: the whole path of an alert on one machine, with nothing to configure.

The fake providers run in their own process; the daemon runs here on SQLite in a temporary folder
with the real twilio and firebase-admin clients pointed at the fakes. 2,000 synthetic subscribers in
three communes and four locales, a few sirens, one alert posted over the HTTP API, and a progress
bar per channel until every delivery is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from alertd import app as app_mod, auth, config, logs, model, people, web as web_mod

COMMUNES = {"75056": "Paris", "69123": "Lyon", "13055": "Marseille"}
LOCALES = ["fr"] * 11 + ["en"] * 4 + ["es"] * 3 + ["ar"] * 2  # a plausible mix
SETTLED = [s.value for s in model.SETTLED]

# The credentials the fakes are told about: obviously not real, and the same everywhere.
ACCOUNT_SID = "ACdemo00000000000000000000000000"
AUTH_TOKEN = "demo-auth-token"
PROJECT_ID = "alertd-demo"
RECEIPT_TOKEN = "demo-receipt-token"  # what the fake siren gateway presents with its acks and heartbeats

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
url = "{store}"

[log]
level = "warning"

[dispatcher]
{dispatcher}

[alerts]
{alerts}

[channels.sms]
plugin = "twilio"
account_sid = "{account_sid}"
auth_token = "{auth_token}"
from = "+33700000000"
base_url = "{fakes}"
{sms}

[channels.push]
plugin = "fcm"
project_id = "{project_id}"
base_url = "{fakes}"
{push}

[channels.siren]
plugin = "siren-http"
base_url = "{fakes}/siren"
token = "demo-gateway-token"
receipt_token = "{receipt_token}"
{siren}
{extra}"""

# A cell broadcast channel on the fake CBC, for a configuration's `extra` lines; `{zones}`: what
# one broadcast reaches.
CBC_CHANNEL = """
[channels.{name}]
plugin = "cbc"
base_url = "{fakes}/cbc"
zones = {zones}
"""


def config_toml(
    port: int, store: str, fakes: str, *, dispatcher: str = "", sms: str = "", push: str = "", siren: str = "",
    alerts: str = "", extra: str = "",
) -> str:
    """A configuration of the daemon on the fake providers, for the demo, the tests and the benchmark;
    `dispatcher`, `alerts`, `sms`, `push` and `siren` are extra TOML lines for those sections, `extra`
    more sections (more channels: `CBC_CHANNEL`)."""
    return CONFIG.format(
        port=port, store=store, fakes=fakes, dispatcher=dispatcher, alerts=alerts, sms=sms, push=push, siren=siren,
        extra=extra,
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, project_id=PROJECT_ID, receipt_token=RECEIPT_TOKEN,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fake_providers():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alertd.fakes", "--port", str(port)])
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(10)


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("the fake providers did not start")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/_fake/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)  # waiting for another process to listen
    raise RuntimeError("the fake providers did not answer")


def subscribers(n: int, seed: int = 2026) -> list[dict]:
    rng = random.Random(seed)
    codes = list(COMMUNES)
    people = []
    for i in range(n):
        person = {"id": f"demo-{i:06d}", "locale": rng.choice(LOCALES), "zones": [codes[i % 3]]}
        if rng.random() < 0.8:
            person["phone"] = f"+33612{rng.randrange(10**6):06d}"
        if "phone" not in person or rng.random() < 0.6:
            person["push_token"] = f"demo-token-{i:06d}-{rng.randrange(16**12):012x}"
        people.append(person)
    return people


def sirens() -> list[model.Siren]:
    return [
        model.Siren(f"siren-{code}-{k}", code, f"{name} {k}")
        for code, name in COMMUNES.items() for k in (1, 2)
    ]


def order() -> dict:
    expires = model.utcnow() + dt.timedelta(hours=2)
    return {
        "status": "actual", "event": "Nuage toxique", "urgency": "Immediate", "severity": "Severe",
        "certainty": "Observed", "expires": expires.isoformat(),
        "area": {"zones": list(COMMUNES), "description": "Paris, Lyon, Marseille"},
        "channels": ["sms", "push", "siren"], "template": "shelter_in_place",
        "params": {"reason": "nuage toxique", "until": "nouvel ordre"}, "locale": "fr",
    }


# The demo's (and the benchmarks') cells: nobody is there to approve an alert, so none waits.
NO_APPROVAL = {key: people.Approval.NONE for key in people.APPROVAL_KEYS}
UNLIMITED = people.Rate(per_minute=60_000, burst=10_000)  # a benchmark posts orders as fast as it can


async def add_cell(db, cell_id: str, name: str, zones: list[str], now: dt.datetime,
                   rate: people.Rate = people.Rate()) -> people.Cell:
    cell = auth.new_cell(cell_id, name, zones, now, approval=NO_APPROVAL, rate=rate)
    await db.add_cell(cell)
    return cell


async def add_client(db, name: str, cell_id: str, role: model.Role, now: dt.datetime, trusted: bool = True) -> str:
    """A machine client of the cell holding `role` (trusted: its alerts need no second person), and
    the plaintext of its token."""
    user = auth.new_user(name, cell_id, frozenset({role}), now, machine=True, trusted=trusted)
    await db.add_user(user)
    plaintext, token = auth.new_token(user, now)
    await db.add_token(token)
    return plaintext


def bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def progress(alert: dict) -> tuple[str, bool]:
    lines, finished = [], alert["state"] in ("completed", "cancelled")
    for channel, counts in sorted(alert["counts"].items()):
        total = sum(counts.values())
        done = sum(counts.get(s, 0) for s in SETTLED)
        lines.append(f"  {channel:<6} {bar(done, total)}  failed {counts.get('failed', 0)}")
    return "\n".join(lines), finished


DEMO_SIREN = "acks = true\nheartbeats = true"
# The demo runs as config/alertd.toml advises on 2 cores or more: SMS and push calls in processes of their own.
SENDERS = "processes = 1"


HEALTHY = {"mains": True, "battery": 0.97}
HEARTBEAT_EVERY = 60  # seconds between the fake sirens' heartbeats (alertd flags 300 s of silence)


async def _gateway_receipts(fakes: str, public_url: str) -> None:
    """Tell the fake siren gateway where to post its acknowledgements and heartbeats."""
    body = {"url": public_url.rstrip("/") + "/v1/receipts/siren", "token": RECEIPT_TOKEN, "enabled": True}
    await _fake_call(fakes, "/_fake/siren/receipts", body)


async def _fake_call(fakes: str, path: str, body: dict) -> None:
    async with aiohttp.ClientSession() as session, session.post(fakes + path, json=body) as resp:
        resp.raise_for_status()


async def run(once: bool, count: int = 2000, port: int = 0) -> int:
    with tempfile.TemporaryDirectory(prefix="alertd-demo-") as tmp, fake_providers() as (fakes, proc):
        await wait_ready(fakes, proc)
        port = port or free_port()
        path = Path(tmp) / "alertd.toml"
        # The fake gateway acknowledges each siren command and sends heartbeats, as a real one would.
        path.write_text(config_toml(
            port, f"sqlite:///{Path(tmp) / 'alertd.db'}", fakes, siren=DEMO_SIREN, sms=SENDERS, push=SENDERS
        ))
        cfg = config.load(str(path))
        logs.configure(cfg.log.level, cfg.log.format)
        runner = web.AppRunner(app_mod.build(cfg), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await app_mod.listening(runner.app)
        await _gateway_receipts(fakes, cfg.server.public_url)
        try:
            return await _drive(runner.app, cfg.server.public_url, fakes, count, once)
        finally:
            await runner.cleanup()


async def _drive(app: web.Application, url: str, fakes: str, count: int, once: bool) -> int:
    db = app[web_mod.STORE]
    now = model.utcnow()
    await add_cell(db, "demo", "Démo — cellule de crise", list(COMMUNES), now)
    issuer = await add_client(db, "demo-issuer", "demo", model.Role.ISSUER, now)
    operator = await add_client(db, "demo-operator", "demo", model.Role.OPERATOR, now, trusted=False)
    await db.upsert_sirens(sirens())
    await _fake_call(fakes, "/_fake/siren/heartbeats", HEALTHY | {"sirens": [s.id for s in sirens()]})
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {issuer}"}) as http:
        async with http.post(url + "/v1/subscribers", json=subscribers(count)) as resp:
            answer = await resp.json()
            if resp.status != 200:
                print(answer, file=sys.stderr)
                return 1
            print(f"subscribers: {answer['imported']} in {', '.join(COMMUNES.values())}")
        started = time.monotonic()
        async with http.post(url + "/v1/alerts", json=order()) as resp:
            accepted = await resp.json()
            if resp.status != 202:
                print(accepted, file=sys.stderr)
                return 1
        print(f"alert {accepted['id']} accepted ({resp.status}) — status {accepted['status_url']}")
        alert = await _watch(http, accepted["status_url"])
        print(f"settled in {time.monotonic() - started:.1f}s: {alert['totals']}")
        if once:  # the daemon stays up until Twilio's last status callback has reached it
            await _callbacks_posted(fakes)
            async with http.get(accepted["status_url"]) as resp:
                print(f"with every status callback heard: {(await resp.json())['totals']}")
    if once:
        return 0
    print(f"\nalertd is running at {url}\n  console:        {url}/console\n  issuer token:   {issuer}\n"
          f"  operator token: {operator}\nCtrl-C to stop.")
    while True:  # the fake gateway's sirens report their health, as real ones do
        await _fake_call(fakes, "/_fake/siren/heartbeats", HEALTHY | {"sirens": [s.id for s in sirens()]})
        await asyncio.sleep(HEARTBEAT_EVERY)


async def _callbacks_posted(fakes: str, patience: float = 30.0) -> None:
    """Wait, within `patience` seconds, until the fake Twilio has posted every status callback."""
    deadline = time.monotonic() + patience
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(fakes + "/_fake/twilio/callbacks", params={"since": 10**9}) as resp:
                if (await resp.json())["pending"] == 0:
                    return
            await asyncio.sleep(0.1)  # the fake's own workers, in another process: polled


async def _watch(http: aiohttp.ClientSession, status_url: str) -> dict:
    tty = sys.stdout.isatty()
    shown = 0
    while True:
        async with http.get(status_url) as resp:
            alert = await resp.json()
        text, finished = progress(alert)
        if tty and shown:
            print(f"\x1b[{shown}F", end="")
        if tty or finished:
            print(text)
            shown = text.count("\n") + 1
        if finished:
            return alert
        await asyncio.sleep(0.25)  # a progress display refreshes on a clock, by design
