"""One-million-recipient benchmark: a push alert to N subscribers and a mixed SMS+push+siren alert.

The fake providers run in their own process, the daemon (`alertd serve`, one sending process per
channel as config/alertd.toml advises) in another; `--instances 2` starts a second `alertd serve`
in its own process on the same store (PostgreSQL: `--store postgresql://...`). This process seeds
the store straight through `Store.upsert_recipients` (timed apart: it is not the figure), posts the
two alerts over HTTP one after the other and, for each, prints the wall time from the 202 to every
delivery settled (the alert's own counts), deliveries per second, and then the peak RSS of each
daemon and each of its sending processes (target: their sum <= 250 MB), and the store's size on
disk; before the alerts, the daemon's RSS once serving (its start-up memory).

    python bench/million.py [--n 1000000] [--store URL] [--instances 1] [--alerts push,mixed]

Figures measured 2026-12-04 on SQLite, one instance (2 cores shared with other jobs: noisy):
    --n 1000000: seed 2,000,000 subscribers 40.1 s; push 1,000,000 settled in 225.7 s (4,431/s);
    mixed 500,000 SMS + 500,000 push + 20 sirens settled in 312.2 s (3,203/s); peak RSS daemon
    114 MB, sending processes 65 and 76 MB (each <= 250 MB; sum 255 MB); store 1,216 MB.
    --n 200000: push 56.5 s (3,541/s), mixed 56.9 s (3,513/s); RSS 115 / 65 / 76 MB; store 239 MB.
    PostgreSQL, --n 50000 --alerts push: one instance 4,046/s (12.4 s), two instances 3,672/s
    (13.6 s; CPU 8 s each, so both worked): ratio 0.91 — on 2 shared cores a second instance
    has no core to gain; the ratio says the two share the store without loss, not that they scale.
Memory, 2026-12-08 (the daemon no longer loads firebase-admin: `fcm_client`): start-up RSS of the
daemon 87 MB (108 before); peak at --n 200000 daemon 94 MB, sending processes 65 and 76 MB, sum
235 MB (was 115 + 65 + 76 = 256); at --n 1000000 95 + 65 + 76 = 235 MB: the same, memory does not
grow with N. The rest is each interpreter's start-up (some 45 MB: asyncio and ssl, pydantic,
structlog, aiohttp) and each channel's library.
PostgreSQL, 2026-12-08, --n 200000 --alerts push (another engineer's test run on the same 2 cores):
one instance 2,164/s (92.4 s), two instances 1,674/s (119.5 s; CPU 37 s each): ratio 0.77; each
instance's sum of peak RSS 232-233 MB.
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
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout  # noqa: E402

from alertd import demo, model, store as store_mod  # noqa: E402

ZONE_PUSH, ZONE_MIXED = fanout.ZONE_BIG, fanout.ZONE_SMALL
SIRENS, BATCH = 20, 20_000


def people(n: int):
    """Batches of subscribers: n with a push token in ZONE_PUSH; n in ZONE_MIXED, half with a phone
    and half with a push token."""
    for start in range(0, n, BATCH):
        ids = range(start, min(n, start + BATCH))
        yield [model.Recipient(f"p{i:07d}", "fr", (ZONE_PUSH,), push_token=f"push-{i:07d}") for i in ids]
        yield [model.Recipient(f"m{i:07d}", "fr", (ZONE_MIXED,), phone=f"+3361{i:07d}") if i % 2 else
               model.Recipient(f"m{i:07d}", "fr", (ZONE_MIXED,), push_token=f"mixed-{i:07d}") for i in ids]


async def seed(url: str, n: int) -> str:
    db = store_mod.open_store(url)
    await db.open()
    try:
        for batch in people(n):
            await db.upsert_recipients(batch)
        await db.upsert_sirens([model.Siren(f"siren-{k}", ZONE_MIXED) for k in range(SIRENS)])
        await demo.add_cell(db, "bench", "Bench", ["*"], model.utcnow(), rate=demo.UNLIMITED)
        return await demo.add_client(db, "bench", "bench", model.Role.ISSUER, model.utcnow())
    finally:
        await db.close()


async def settle(http: aiohttp.ClientSession, status_url: str, timeout: float) -> dict:
    """The alert once every delivery is settled (polled: the work is in other processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(status_url) as resp:
            alert = await resp.json()
        counts = alert["counts"].values()
        total = sum(sum(c.values()) for c in counts)
        if total and total == sum(c.get(s, 0) for c in counts for s in demo.SETTLED):
            return alert
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{status_url} not settled after {timeout}s")


async def one_alert(http: aiohttp.ClientSession, base: str, zone: str, channels: list[str], timeout: float):
    async with http.post(base + "/v1/alerts", json=fanout.order(zone, channels)) as resp:
        assert resp.status == 202, await resp.text()
        accepted = await resp.json()
    t202 = time.perf_counter()
    alert = await settle(http, accepted["status_url"], timeout)
    wall = time.perf_counter() - t202
    total = sum(sum(c.values()) for c in alert["counts"].values())
    print(f"{'+'.join(channels):15} {total:8} deliveries settled in {wall:7.1f}s  {total / wall:7.0f}/s"
          f"   {nonzero(alert['counts'])}", flush=True)
    return total / wall


def nonzero(counts: dict) -> dict:
    return {channel: {s: k for s, k in c.items() if k} for channel, c in counts.items()}


async def store_size(url: str, db_file: Path | None) -> str:
    if db_file is not None:
        files = [p for p in db_file.parent.iterdir() if p.name.startswith(db_file.name)]
        return f"{sum(p.stat().st_size for p in files) / 2**20:.0f} MB (SQLite file + WAL + SHM)"
    return await pg_size(url)


async def pg_size(url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT relname, pg_total_relation_size(c.oid) AS size FROM pg_class c "
                                "WHERE relname IN ('deliveries', 'recipients') AND relnamespace = "
                                "current_schema()::regnamespace")
    finally:
        await conn.close()
    return ", ".join(f"{r['relname']} {r['size'] / 2**20:.0f} MB" for r in rows)


def rss_report(pids: list[int]) -> None:
    for k, pid in enumerate(pids):
        own, senders = fanout.peak_rss_mb(pid), [fanout.peak_rss_mb(c) for c in fanout.children_of(pid)]
        total = own + sum(senders)
        print(f"instance {k + 1} peak RSS: daemon {own:.0f} MB, sending processes "
              f"{', '.join(f'{s:.0f}' for s in senders)} MB; sum {total:.0f} MB"
              f" (<= 250 MB: {'yes' if total <= 250 else 'NO'});"
              f" CPU {fanout.cpu_seconds(pid):.0f} s (with its sending processes: who did the work)")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_daemon(tmp: Path, k: int, port: int, url: str, fakes: str) -> subprocess.Popen:
    path = tmp / f"alertd-{k}.toml"
    path.write_text(demo.config_toml(
        port, url, fakes, sms=f"status_callback = false\nmax_concurrency = {fanout.SMS_CONCURRENCY}\nprocesses = 1",
        push=f"max_concurrency = {fanout.PUSH_CONCURRENCY}\nprocesses = 1"))
    return subprocess.Popen([sys.executable, "-m", "alertd.cli", "serve", "--config", str(path)],
                            env=os.environ | {"ALERTD_LOG__LEVEL": "warning"})


async def run(args, tmp: Path, url: str, db_file: Path | None) -> None:
    with demo.fake_providers() as (fakes, proc):
        await demo.wait_ready(fakes, proc)
        t = time.perf_counter()
        token = await seed(url, args.n)
        print(f"seeded {2 * args.n} subscribers and {SIRENS} sirens in {time.perf_counter() - t:.1f}s"
              f" (not the figure)", flush=True)
        port = demo.free_port()
        daemons = [start_daemon(tmp, k, port + k, url, fakes) for k in range(args.instances)]
        try:
            for k in range(args.instances):
                await fanout.wait_ready_daemon(f"http://127.0.0.1:{port + k}")
            print("RSS once serving, before any alert (start-up memory): daemon "
                  + ", ".join(f"{rss_mb(d.pid):.0f}" for d in daemons) + " MB", flush=True)
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
                base = f"http://127.0.0.1:{port}"
                for name in args.alerts.split(","):
                    channels = ["push"] if name == "push" else ["sms", "push", "siren"]
                    await one_alert(http, base, ZONE_PUSH if name == "push" else ZONE_MIXED, channels, args.timeout)
            rss_report([d.pid for d in daemons])
            print(f"store size: {await store_size(url, db_file)}   (the daemons still running)")
        finally:
            for d in daemons:
                d.terminate()
            for d in daemons:
                d.wait(30)


async def pg_schema(base: str, schema: str, create: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}" if create else f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="alertd-million-", dir="/tmp") as tmp:
        if args.store.startswith("sqlite"):
            db_file = Path(tmp) / "million.db"
            asyncio.run(run(args, Path(tmp), f"sqlite:///{db_file}", db_file))
            return
        schema = f"bench_{uuid.uuid4().hex[:12]}"  # a schema of its own, dropped afterwards
        asyncio.run(pg_schema(args.store, schema, True))
        try:
            asyncio.run(run(args, Path(tmp), f"{args.store}?search_path={schema}", None))
        finally:
            asyncio.run(pg_schema(args.store, schema, False))


if __name__ == "__main__":
    # `timeout` and Ctrl-C alike: unwind, so the daemons and the fakes are stopped with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--store", default="sqlite", help="sqlite (a temporary file) or a PostgreSQL URL")
    parser.add_argument("--instances", type=int, default=1, help="alertd serve processes on the same store")
    parser.add_argument("--alerts", default="push,mixed")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for one alert to settle")
    main(parser.parse_args())
