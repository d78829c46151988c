"""Flood benchmark: one cell posting 2,000 alerts must not delay another cell's first siren command.

The fake providers run in their own process, the daemon (`alertd serve`, SQLite, a sending process
per channel, as `bench/priority.py` starts it) in another. Cell A (Lyon: a few sirens, a few dozen
phones) posts `--flood` Extreme/Immediate alerts with sirens and SMS from `--clients` concurrent
clients, as fast as they are answered; a 429 is counted and not retried. Meanwhile cell B posts
`--alerts` Extreme/Immediate siren alerts one after another, each to its own Paris arrondissement
and its one siren, and waits for that siren's command at the fake gateway. Prints B's latency from
its POST to the command (p50, p99), B's 202 latency, and how many of A's orders were refused.
The fake siren gateway runs in a process of its own, as in `bench/priority.py`.

`--admit-all` raises cell A's rate so that every order is admitted: fair sharing in the dispatcher
alone. Run it from an older checkout (a temporary clone of the commit before) for the baseline.

    python bench/flood.py [--flood 2000] [--clients 20] [--alerts 20] [--admit-all]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alertd import auth, demo, model, store as store_mod  # noqa: E402
from bench import fanout, priority  # noqa: E402  (read-only: their daemon set-up and helpers)

ZONE_A = "69123"
SIRENS_A, PHONES_A = 5, 40
B_STARTS_AFTER = 200  # of A's answers: B posts once the flood is under way


async def seed(url: str, alerts: int, admit_all: bool) -> tuple[str, str]:
    """The subscribers, the sirens, and a token for each cell (plaintexts)."""
    db = store_mod.open_store(url)
    await db.open()
    try:
        await db.upsert_recipients([model.Recipient(f"a{i:04d}", "fr", (ZONE_A,), phone=f"+3362{i:07d}")
                                    for i in range(PHONES_A)])
        await db.upsert_sirens([model.Siren(f"siren-a-{k}", ZONE_A) for k in range(SIRENS_A)]
                               + [model.Siren(f"siren-b-{k:02d}", priority.commune(k)) for k in range(alerts + 1)])
        # A rate no flood of this bench reaches, for cell A with --admit-all.
        unlimited = {"per_minute": 1e6, "burst": 1_000_000} if admit_all else None
        a = await credentials(db, "flood-a", "Cellule A", [ZONE_A], unlimited)
        b = await credentials(db, "flood-b", "Cellule B", [priority.commune(k) for k in range(alerts + 1)], None)
        return a, b
    finally:
        await db.close()


async def credentials(db, cell_id: str, name: str, zones: list[str], rate: dict | None) -> str:
    """A trusted machine client of a new cell (approval none), as `alertd cell add` and `alertd
    user add --machine --trusted` make them; on a checkout from before cells (the baseline), a
    token of that cell."""
    now = model.utcnow()
    if not hasattr(auth, "new_cell"):
        plaintext, token = auth.new_token(name, model.Role.ISSUER, zones, now)
        await db.add_token(token)
        return plaintext
    from alertd import people

    none = {key: people.Approval.NONE for key in people.APPROVAL_KEYS}
    cell = auth.new_cell(cell_id, name, zones, now, approval=none, rate=people.Rate(**rate) if rate else None)
    await db.add_cell(cell)
    user = auth.new_user(f"{cell_id}-cms", cell.id, [model.Role.ISSUER], now, machine=True, trusted=True)
    await db.add_user(user)
    plaintext, token = auth.new_token(user, now)
    await db.add_token(token)
    return plaintext


def order(zones: list[str], channels: list[str]) -> dict:
    return priority.order(zones[0], channels, "Immediate", "Extreme") | {"area": {"zones": zones}}


class Flood:
    """Cell A's clients: each posts until the flood is used up; counts what was admitted and refused."""

    def __init__(self, b: fanout.Bench, total: int):
        self.b, self.left, self.answers = b, total, {}
        self.under_way = asyncio.Event()

    async def client(self, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        while self.left > 0:
            self.left -= 1
            async with self.b.http.post(self.b.base + "/v1/alerts", json=order([ZONE_A], ["siren", "sms"]),
                                        headers=headers) as resp:
                await resp.read()
                self.answers[resp.status] = self.answers.get(resp.status, 0) + 1
            if sum(self.answers.values()) >= B_STARTS_AFTER:
                self.under_way.set()
        self.under_way.set()


async def first_siren(b: fanout.Bench, siren_id: str, seen: list[int], timeout: float = 60) -> float:
    """When the fake gateway received the first command for `siren_id` (its clock, time.time)."""
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while siren_id not in found:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no command for {siren_id} after {timeout}s")
        got = await b.received("siren", seen[0])
        seen[0] += len(got)
        for r in got:
            found.setdefault(r["to"], r["at"])
        await asyncio.sleep(0.002)  # waiting on other processes
    return found[siren_id]


async def cell_b(b: fanout.Bench, token: str, alerts: int) -> tuple[list[float], list[float]]:
    """B's alerts one after another: (POST → first siren command, 202 latency) of each."""
    headers, seen, firsts, posts = {"Authorization": f"Bearer {token}"}, [0], [], []
    for k in range(alerts):
        started, t0 = time.time(), time.perf_counter()
        async with b.http.post(b.base + "/v1/alerts", json=order([priority.commune(k)], ["siren"]),
                               headers=headers) as resp:
            assert resp.status == 202, await resp.text()
        posts.append(time.perf_counter() - t0)
        firsts.append(max(0.0, await first_siren(b, f"siren-b-{k:02d}", seen) - started))
    return firsts, posts


async def run(args) -> None:
    with (tempfile.TemporaryDirectory(prefix="alertd-bench-") as tmp, demo.fake_providers() as (fakes, proc),
          demo.fake_providers() as (gateway, gateway_proc)):
        await demo.wait_ready(fakes, proc)
        await demo.wait_ready(gateway, gateway_proc)
        port = demo.free_port()
        url = f"sqlite:///{Path(tmp) / 'a.db'}"
        path = Path(tmp) / "alertd.toml"
        apart = {} if args.shared_fakes else {"siren": gateway}
        path.write_text(priority.siren_apart(demo.config_toml(
            port, url, fakes,
            sms=f"status_callback = false\nmax_concurrency = {fanout.SMS_CONCURRENCY}\nprocesses = {args.processes}",
            push=f"processes = {args.processes}",
        ), fakes, apart))
        token_a, token_b = await seed(url, args.alerts, args.admit_all)
        daemon = subprocess.Popen([sys.executable, "-m", "alertd.cli", "serve", "--config", str(path)],
                                  env=os.environ | {"ALERTD_LOG__LEVEL": "error"})
        try:
            await fanout.wait_ready_daemon(f"http://127.0.0.1:{port}")
            connector = aiohttp.TCPConnector(limit=args.clients + 10)
            async with aiohttp.ClientSession(connector=connector) as http:
                await phases(fanout.Bench(http, f"http://127.0.0.1:{port}", fakes, apart), token_a, token_b, args)
        finally:
            daemon.terminate()
            daemon.wait(10)


async def warm_up(b: fanout.Bench, token: str, alerts: int) -> None:
    """One siren alert of B's, to a siren of its own, heard before the flood: the daemon's lanes
    start once it answers, which is not what is measured."""
    async with b.http.post(b.base + "/v1/alerts", json=order([priority.commune(alerts)], ["siren"]),
                           headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 202, await resp.text()
    await b.until_count("siren", 1, 60)


async def phases(b: fanout.Bench, token_a: str, token_b: str, args) -> None:
    await warm_up(b, token_b, args.alerts)
    flood = Flood(b, args.flood)
    started = time.perf_counter()
    clients = asyncio.gather(*(flood.client(token_a) for _ in range(args.clients)))
    await flood.under_way.wait()
    firsts, posts = await cell_b(b, token_b, args.alerts)
    during = sum(flood.answers.values())
    await clients
    elapsed = time.perf_counter() - started
    await b.until_count("siren", SIRENS_A * flood.answers.get(202, 0) + args.alerts + 1, 600)
    drained = time.perf_counter() - started
    label = "A's rate raised, every order admitted" if args.admit_all else "default per-cell rate"
    print(f"cell A: {args.flood} orders from {args.clients} clients in {elapsed:.1f} s ({label}):"
          f" {flood.answers.get(202, 0)} admitted, {flood.answers.get(429, 0)} refused with 429"
          + "".join(f", {n} answered {s}" for s, n in sorted(flood.answers.items()) if s not in (202, 429))
          + f"; B's {args.alerts} alerts were posted between A's answers {B_STARTS_AFTER} and {during};"
          f" A's last siren command {drained:.1f} s after its first order")
    priority.show("B 202 latency", posts, 50)
    priority.show("B first siren", firsts, 1000)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the daemon and the fakes stop with us
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-fakes", action="store_true",
                        help="the fake siren gateway in the SMS and push fakes' process (before 2026-12-08)")
    parser.add_argument("--flood", type=int, default=2000, help="cell A's orders")
    parser.add_argument("--clients", type=int, default=20, help="cell A's concurrent clients")
    parser.add_argument("--alerts", type=int, default=20, help="cell B's alerts, one after another")
    parser.add_argument("--admit-all", action="store_true", help="raise cell A's rate: every order admitted")
    parser.add_argument("--processes", type=int, default=1, help="sending processes per channel (0: in the daemon)")
    asyncio.run(run(parser.parse_args()))
