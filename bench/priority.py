"""Priority benchmark: new urgent alerts during a big, less urgent fan-out, and the cost of a claim.

The fake providers run in their own process, the daemon (`alertd serve`, SQLite, a sending process
per channel as `bench/fanout.py` runs it) in another. A 100,000-recipient SMS+push alert of low
priority (Future/Minor) is posted; once its fan-out is under way, 20 Extreme/Immediate alerts are
posted one after another, each to its own commune (5 subscribers, 1 siren). Prints their `202`
latency, and from the 202 to the first siren command, the first SMS and the first push of each at
the fakes (p50, p99), with the big fan-out's progress at the start and the end of that phase.
The fake siren gateway runs in a process of its own, as a real gateway is a device of its own:
in the process of the SMS and push fakes, their 8,000 requests a second delayed its answers and
its record of each command by tens of ms (`--shared-fakes` measures it so).

`--claim` instead times one claim (300 rows, a lane's three rounds of 100) on 100,000 pending
deliveries, on SQLite and, with `--pg URL`, PostgreSQL: median and p99 over 30 claims. Only store
calls older versions also have: run it from an older checkout for the figure before.

    python bench/priority.py [--big 100000] [--urgent 20] [--processes 1]
    python bench/priority.py --claim [--pending 100000] [--pg postgresql://127.0.0.1:5432/test]

Measured 2026-12-08 (2 cores; the checkout of 2026-12-04 and this one alternated in one session):
    202 p50 22-34 ms -> 6-14 ms, p99 47-130 -> 19-38 ms; first siren command p50 51-84 -> 12-29 ms,
    p99 99-277 -> 38-60 ms; first SMS p99 584-1,168 -> 107-200 ms; first push p99 520-1,179 ->
    103-144 ms. With --shared-fakes: 202 p99 24 ms, first siren p99 92-139 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
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

from alertd import demo, model, store as store_mod  # noqa: E402
from bench import fanout  # noqa: E402  (read-only: its daemon set-up and helpers)

ZONE_BIG = "69123"
PER_COMMUNE = 5


def commune(k: int) -> str:
    return f"75{101 + k}"  # Paris's arrondissements: one urgent alert each


async def seed(url: str, big: int, urgent: int) -> str:
    db = store_mod.open_store(url)
    await db.open()
    try:
        people = [model.Recipient(f"b{i:07d}", "fr", (ZONE_BIG,), phone=f"+3362{i:07d}", push_token=f"big-{i:07d}")
                  for i in range(big)]
        people += [model.Recipient(f"u{k:02d}{j}", "fr", (commune(k),), phone=f"+33610{k:02d}{j:05d}",
                                   push_token=f"urgent-{k:02d}-{j}") for k in range(urgent) for j in range(PER_COMMUNE)]
        for start in range(0, len(people), 10_000):
            await db.upsert_recipients(people[start:start + 10_000])
        await db.upsert_sirens([model.Siren(f"siren-{k:02d}", commune(k)) for k in range(urgent)])
        await demo.add_cell(db, "bench", "Bench", ["*"], model.utcnow(), rate=demo.UNLIMITED)
        return await demo.add_client(db, "bench", "bench", model.Role.ISSUER, model.utcnow())
    finally:
        await db.close()


def order(zone: str, channels: list[str], urgency: str, severity: str) -> dict:
    return fanout.order(zone, channels) | {"urgency": urgency, "severity": severity}


class Watch:
    """The first message to each of the urgent communes, per provider, as the fakes received them."""

    def __init__(self, b: fanout.Bench):
        self.b = b
        self.seen = {"twilio": 0, "fcm": 0, "siren": 0}
        self.first: dict[tuple[str, int], float] = {}

    async def until_first(self, k: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while any((p, k) not in self.first for p in self.seen):
            if time.monotonic() > deadline:
                missing = [p for p in self.seen if (p, k) not in self.first]
                raise TimeoutError(f"alert {k}: no first message on {missing}")
            for provider in self.seen:
                if (provider, k) not in self.first:
                    await self._scan(provider)
            await asyncio.sleep(0.005)  # waiting on other processes

    async def _scan(self, provider: str) -> None:
        got = await self.b.received(provider, self.seen[provider])
        self.seen[provider] += len(got)
        for r in got:
            k = _which(provider, r["to"])
            if k is not None:
                self.first.setdefault((provider, k), r["at"])


def _which(provider: str, to: str) -> int | None:
    """Which urgent alert a message belongs to, by its address; None for the big fan-out."""
    if provider == "siren":
        return int(to.rsplit("-", 1)[1])
    if provider == "fcm":
        return int(to.split("-")[1]) if to.startswith("urgent-") else None
    return int(to[6:8]) if to.startswith("+33610") else None


async def overtaking(args) -> None:
    with (tempfile.TemporaryDirectory(prefix="alertd-bench-") as tmp, demo.fake_providers() as (fakes, proc),
          demo.fake_providers() as (gateway, gateway_proc)):
        await demo.wait_ready(fakes, proc)
        await demo.wait_ready(gateway, gateway_proc)
        port = demo.free_port()
        url = f"sqlite:///{Path(tmp) / 'a.db'}"
        path = Path(tmp) / "alertd.toml"
        toml = demo.config_toml(
            port, url, fakes,
            sms=f"status_callback = false\nmax_concurrency = {fanout.SMS_CONCURRENCY}\nprocesses = {args.processes}",
            push=f"max_concurrency = {fanout.PUSH_CONCURRENCY}\nprocesses = {args.processes}",
        )
        apart = {} if args.shared_fakes else {"siren": gateway}
        path.write_text(siren_apart(toml, fakes, apart))
        token = await seed(url, args.big, args.urgent)
        daemon = subprocess.Popen([sys.executable, "-m", "alertd.cli", "serve", "--config", str(path)],
                                  env=os.environ | {"ALERTD_LOG__LEVEL": "warning"})
        try:
            await fanout.wait_ready_daemon(f"http://127.0.0.1:{port}")
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
                await urgent_phase(fanout.Bench(http, f"http://127.0.0.1:{port}", fakes, apart), args)
        finally:
            daemon.terminate()
            daemon.wait(10)


def siren_apart(toml: str, fakes: str, apart: dict[str, str]) -> str:
    """The daemon's configuration with the siren channel on its own fakes, if `apart` names them."""
    return toml.replace(f'"{fakes}/siren"', f'"{apart.get("siren", fakes)}/siren"')


async def post(b: fanout.Bench, body: dict) -> tuple[float, float]:
    t = time.perf_counter()
    async with b.http.post(b.base + "/v1/alerts", json=body) as resp:
        assert resp.status == 202, await resp.text()
    return time.perf_counter() - t, time.time()


async def urgent_phase(b: fanout.Bench, args) -> None:
    big_latency, _ = await post(b, order(ZONE_BIG, ["sms", "push"], "Future", "Minor"))
    await b.until_count("twilio", 2_000, 120)  # under way: its planning and its sending
    await b.until_count("fcm", 500, 120)
    watch = Watch(b)
    progress = [await b.count("twilio"), await b.count("fcm")]
    posts, t202s = [], []
    for k in range(args.urgent):
        latency, t202 = await post(b, order(commune(k), ["sms", "push", "siren"], "Immediate", "Extreme"))
        posts.append(latency)
        t202s.append(t202)
        await watch.until_first(k)
    progress += [await b.count("twilio"), await b.count("fcm")]
    print(f"big fan-out (Future/Minor, {args.big} SMS + push; 202 in {big_latency * 1000:.0f} ms) during the"
          f" {args.urgent} urgent alerts: SMS {progress[0]} -> {progress[2]}, push {progress[1]} -> {progress[3]}")
    show("202 latency", posts, 50)
    for provider, label, target in (("siren", "first siren cmd", 100), ("twilio", "first SMS", 1000),
                                    ("fcm", "first push", 1000)):
        show(label, [max(0.0, watch.first[(provider, k)] - t202s[k]) for k in range(args.urgent)], target)


def show(label: str, seconds: list[float], target_ms: float) -> None:
    print(f"{label:16} p50 {fanout.pct(seconds, .5) * 1000:7.1f} ms  p99 {fanout.pct(seconds, .99) * 1000:7.1f} ms"
          f"   ({len(seconds)} Extreme/Immediate alerts; target p99 <= {target_ms:.0f} ms)", flush=True)


# -- one claim on many pending deliveries ------------------------------------------------------------


async def claim_cost(url: str, pending: int, label: str) -> None:
    db = store_mod.open_store(url)
    await db.open()
    try:
        await db.upsert_sirens([])
        for start in range(0, pending, 10_000):
            await db.upsert_recipients([model.Recipient(f"c{i:07d}", "fr", (ZONE_BIG,), phone=f"+3362{i:07d}")
                                        for i in range(start, min(pending, start + 10_000))])
        alert = model.Alert(
            id="claim", identifier="claim", sender="bench", sent=model.utcnow(), status=model.Status.ACTUAL,
            event="Bench", urgency="Future", severity="Minor", certainty="Observed", area=model.Area((ZONE_BIG,)),
            channels=(model.Kind.SMS,), template="shelter_in_place",
        )
        await db.create_alert(alert, "claim")
        after, now = None, model.utcnow()
        while True:
            after = await db.plan_chunk(alert, {model.Kind.SMS: "sms"}, model.Audience("zones", (ZONE_BIG,)),
                                        after, 10_000, now)
            if after is None:
                break
        times, done = [], []
        for _ in range(30):
            t = time.perf_counter()
            batch = await db.claim("sms", "bench", model.utcnow(), 300, dt.timedelta(minutes=1), done)
            times.append(time.perf_counter() - t)
            done = [model.Outcome(d.id, model.State.SENT, provider_id=f"p{d.id}") for d in batch]
        print(f"claim of 300 on {pending} pending ({label}): median {fanout.pct(times, .5) * 1000:.1f} ms"
              f"  p99 {fanout.pct(times, .99) * 1000:.1f} ms   (the claim records the previous 300 as sent)")
    finally:
        await db.close()


async def claims(args) -> None:
    with tempfile.TemporaryDirectory(prefix="alertd-bench-") as tmp:
        await claim_cost(f"sqlite:///{Path(tmp) / 'c.db'}", args.pending, "SQLite")
    if args.pg:
        import asyncpg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(args.pg)
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            await claim_cost(f"{args.pg}?search_path={schema}", args.pending, "PostgreSQL")
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
            await admin.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the daemon and the fakes stop with us
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--urgent", type=int, default=20)
    parser.add_argument("--processes", type=int, default=1, help="sending processes per channel (0: in the daemon)")
    parser.add_argument("--shared-fakes", action="store_true",
                        help="the fake siren gateway in the SMS and push fakes' process (before 2026-12-08)")
    parser.add_argument("--claim", action="store_true", help="time a claim on many pending deliveries instead")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--pg", help="also time the claim on this PostgreSQL database (in a schema of its own)")
    args = parser.parse_args()
    asyncio.run(claims(args) if args.claim else overtaking(args))
