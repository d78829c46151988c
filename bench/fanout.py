"""Fan-out benchmark: alertd end to end against the bare client libraries, in the same run.

The fake providers run in their own process, the daemon (`alertd serve`, SQLite; SMS and push from
a sending process each, as config/alertd.toml advises, `--processes` to change) in others; this
process seeds the store, posts alerts over HTTP and, for the baseline, drives the bare `twilio` async
client and firebase-admin's `send_each_async` against the same fakes with the same concurrency.

Prints, for an SMS-only and a push-only alert to N subscribers: deliveries/s from the 202 to the last
provider call, the bare client's messages/s, and their ratio (for push, two baselines: firebase-admin's
`send_each_async`, which alertd must beat 5 times over, and alertd's push channel on its own); the 202
latency (p50, p99); the time from the 202 to the first siren command at the fake (p50, p99 over 20
alerts), idle and during a 100,000-recipient fan-out; and the daemon's peak RSS.

    python bench/fanout.py [--n 20000] [--big 100000] [--sirens 20] [--rounds 5] [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alertd import channels, demo, model, store as store_mod  # noqa: E402
from alertd.channels import fcm_client, fcm_push, twilio_sms  # noqa: E402

SMS_CONCURRENCY, PUSH_CONCURRENCY = 100, 100
ZONE_SMALL, ZONE_BIG, ZONE_SIRENS = "75056", "69123", "13055"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def seed(url: str, n: int, big: int) -> str:
    db = store_mod.open_store(url)
    await db.open()
    try:
        people = [model.Recipient(f"s{i:07d}", "fr", (ZONE_SMALL,), phone=f"+3361{i:07d}",
                                  push_token=f"bench-token-{i:07d}") for i in range(n)]
        people += [model.Recipient(f"b{i:07d}", "fr", (ZONE_BIG,), phone=f"+3362{i:07d}") for i in range(big)]
        for start in range(0, len(people), 10_000):
            await db.upsert_recipients(people[start:start + 10_000])
        await db.upsert_sirens([model.Siren(f"siren-{k}", ZONE_SIRENS) for k in range(3)])
        await demo.add_cell(db, "bench", "Bench", ["*"], model.utcnow(), rate=demo.UNLIMITED)
        return await demo.add_client(db, "bench", "bench", model.Role.ISSUER, model.utcnow())
    finally:
        await db.close()


def order(zone: str, channels: list[str]) -> dict:
    return {
        "status": "actual", "event": "Bench", "urgency": "Immediate", "severity": "Severe",
        "certainty": "Observed", "expires": (model.utcnow() + dt.timedelta(hours=1)).isoformat(),
        "area": {"zones": [zone]}, "channels": channels, "template": "shelter_in_place", "locale": "fr",
    }


class Bench:
    def __init__(self, http: aiohttp.ClientSession, base: str, fakes: str, apart: dict[str, str] | None = None):
        self.http, self.base, self.fakes = http, base, fakes
        self.apart = apart or {}  # provider -> the fakes serving it, when not `fakes`

    def _fakes(self, provider: str) -> str:
        return self.apart.get(provider, self.fakes)

    async def post(self, zone: str, channels: list[str]) -> tuple[float, float]:
        """Post an order; (202 latency in s, monotonic time of the 202)."""
        t = time.perf_counter()
        async with self.http.post(self.base + "/v1/alerts", json=order(zone, channels)) as resp:
            assert resp.status == 202, await resp.text()
        return time.perf_counter() - t, time.time()

    async def count(self, provider: str) -> int:
        async with self.http.get(f"{self._fakes(provider)}/_fake/{provider}/count") as resp:
            return (await resp.json())["count"]

    async def received(self, provider: str, since: int = 0) -> list[dict]:
        async with self.http.get(f"{self._fakes(provider)}/_fake/{provider}/received?since={since}") as resp:
            return await resp.json()

    async def reset(self) -> None:
        async with self.http.post(f"{self.fakes}/_fake/reset") as resp:
            resp.raise_for_status()

    async def until_count(self, provider: str, n: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while await self.count(provider) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{provider}: fewer than {n} messages after {timeout}s")
            await asyncio.sleep(0.02)  # waiting on another process

    async def end_to_end(self, provider: str, channel: str, n: int) -> tuple[float, dict]:
        """Deliveries/s from the 202 to the last provider call, and one message as the fake got it
        (the bare client then sends that same text)."""
        await self.reset()
        latency, t202 = await self.post(ZONE_SMALL, [channel])
        await self.until_count(provider, n)
        tail = await self.received(provider, n - 1)
        return n / (max(r["at"] for r in tail) - t202), tail[-1]

    async def sirens(self, count: int) -> tuple[list[float], list[float]]:
        """202 latencies and 202 → first siren command, over `count` siren alerts."""
        posts, firsts = [], []
        for _ in range(count):
            seen = await self.count("siren")
            latency, t202 = await self.post(ZONE_SIRENS, ["siren"])
            await self.until_count("siren", seen + 1, 30)
            first = min(r["at"] for r in await self.received("siren", seen))
            posts.append(latency)
            firsts.append(max(0.0, first - t202))
        return posts, firsts


async def bare_twilio(fakes: str, n: int, sample: dict) -> float:
    http = twilio_sms.HttpClient(fakes, 10.0, SMS_CONCURRENCY)
    client = twilio_sms.rest.Client(demo.ACCOUNT_SID, demo.AUTH_TOKEN, http_client=http)
    queue = iter(range(n))

    async def worker():
        for i in queue:
            await client.messages.create_async(to=f"+3363{i:07d}", from_="+33700000000", body=sample["body"])

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(SMS_CONCURRENCY)))
    elapsed = time.perf_counter() - t
    await http.close()
    return n / elapsed


async def bare_fcm(fakes: str, n: int, sample: dict) -> float:
    import firebase_admin
    from firebase_admin import messaging

    app = firebase_admin.initialize_app(fcm_client.AnonymousCredential(), {"projectId": demo.PROJECT_ID}, name="bare")
    service = messaging._get_messaging_service(app)
    service._fcm_url = f"{fakes}/v1/projects/{demo.PROJECT_ID}/messages:send"
    # One call of PUSH_CONCURRENCY messages at a time: the same number in flight as the daemon's.
    note = messaging.Notification(sample["title"], sample["body"])
    batches = [[messaging.Message(fid=f"bare-{i:07d}", notification=note, data=sample.get("data") or None)
                for i in range(start, min(n, start + PUSH_CONCURRENCY))] for start in range(0, n, PUSH_CONCURRENCY)]
    t = time.perf_counter()
    for batch in batches:
        await messaging.send_each_async(batch, app=app)
    elapsed = time.perf_counter() - t
    await asyncio.to_thread(firebase_admin.delete_app, app)
    return n / elapsed


def children_of(pid: int) -> list[int]:
    """The daemon's running sending processes."""
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU time so far of a process (all its threads) and of its running children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + (sum(map(cpu_seconds, children_of(pid))) if children else 0.0)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="alertd-bench-") as tmp, demo.fake_providers() as (fakes, proc):
        await demo.wait_ready(fakes, proc)
        port = demo.free_port()
        path = Path(tmp) / "alertd.toml"
        path.write_text(demo.config_toml(
            port, f"sqlite:///{Path(tmp) / 'a.db'}", fakes,
            sms=f"status_callback = false\nmax_concurrency = {SMS_CONCURRENCY}\nprocesses = {args.processes}",
            push=f"max_concurrency = {PUSH_CONCURRENCY}\nprocesses = {args.processes}",
        ))
        t = time.perf_counter()
        token = await seed(f"sqlite:///{Path(tmp) / 'a.db'}", args.n, args.big)
        print(f"seeded {args.n + args.big} subscribers in {time.perf_counter() - t:.1f}s")
        daemon = subprocess.Popen([sys.executable, "-m", "alertd.cli", "serve", "--config", str(path)],
                                  env=os.environ | {"ALERTD_LOG__LEVEL": "warning"})
        try:
            await wait_ready_daemon(f"http://127.0.0.1:{port}")
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
                await run_phases(Bench(http, f"http://127.0.0.1:{port}", fakes), fakes, args, daemon.pid, proc.pid)
        finally:
            daemon.terminate()
            daemon.wait(10)


async def wait_ready_daemon(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            try:
                async with http.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("the daemon did not start")


async def bare_channel(fakes: str, n: int, sample: dict) -> float:
    """alertd's push channel on its own (`FCMPush.send`, as a sending process calls it), the same
    number in flight."""
    config = {"project_id": demo.PROJECT_ID, "base_url": fakes, "max_concurrency": PUSH_CONCURRENCY}
    channel = fcm_push.FCMPush(config, channels.Context(public_url="http://127.0.0.1", name="bare"))
    await channel.start()
    queue = iter(range(n))

    async def worker():
        for i in queue:
            await channel.send(model.Message(delivery_id=i, alert_id="bare", kind=model.Kind.PUSH, to=f"bare-{i:07d}",
                                             title=sample["title"], body=sample["body"], data=sample.get("data") or {}))

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(PUSH_CONCURRENCY)))
    elapsed = time.perf_counter() - t
    await channel.close()
    return n / elapsed


async def one_round(b: Bench, fakes: str, provider: str, channel: str, baselines, n: int, pid: int,
                    fakes_pid: int) -> list[float]:
    """The daemon, then each baseline client, each sending n messages; prints their rates with the
    CPU time per message of each process (µs: the daemon with its sending processes, and on its own;
    each client; the fakes in each phase); returns the daemon's rate over each baseline's."""
    before = cpu_seconds(pid), cpu_seconds(pid, False), cpu_seconds(fakes_pid)
    e2e, sample = await b.end_to_end(provider, channel, n)
    daemon, own, fakes_e2e = (cpu_seconds(pid) - before[0], cpu_seconds(pid, False) - before[1],
                              cpu_seconds(fakes_pid) - before[2])
    line = f"{channel:5} end to end {e2e:8.0f}/s"
    cpu = f"daemon {daemon / n * 1e6:.0f} (own {own / n * 1e6:.0f}, fakes {fakes_e2e / n * 1e6:.0f})"
    ratios = []
    for label, bare, _ in baselines:
        await b.reset()
        before = time.process_time(), cpu_seconds(fakes_pid)
        base = await bare(fakes, n, sample)
        client, fakes_bare = time.process_time() - before[0], cpu_seconds(fakes_pid) - before[1]
        line += f"   {label} {base:8.0f}/s ratio {e2e / base:.2f}"
        cpu += f"; {label} {client / n * 1e6:.0f} (fakes {fakes_bare / n * 1e6:.0f})"
        ratios.append(e2e / base)
    print(f"{line}   CPU µs/message: {cpu}", flush=True)
    return ratios


async def run_phases(b: Bench, fakes: str, args, pid: int, fakes_pid: int) -> None:
    # The machine is noisy (two cores for three processes): alternate the daemon and the baseline
    # clients and report each round's ratios and their medians.
    phases = (("twilio", "sms", [("bare client", bare_twilio, 0.80)]),
              ("fcm", "push", [("send_each_async", bare_fcm, 5.0), ("channel client", bare_channel, 0.80)]))
    for provider, channel, baselines in [p for p in phases if p[1] in args.channels.split(",")]:
        rounds = [await one_round(b, fakes, provider, channel, baselines, args.n, pid, fakes_pid)
                  for _ in range(args.rounds)]
        for (label, _, target), ratios in zip(baselines, zip(*rounds, strict=True), strict=True):
            print(f"{channel:5} median ratio to the {label} {statistics.median(ratios):.2f} over {args.rounds} rounds"
                  f"   (target >= {target:.2f})")
        if len(baselines) == 2:  # the push channel on its own against send_each_async, without the daemon
            between = statistics.median(first / second for first, second in rounds)
            print(f"{channel:5} median ratio of the {baselines[1][0]} to the {baselines[0][0]} {between:.2f}")
    idle_posts, idle_firsts = await b.sirens(args.sirens)
    await b.reset()
    big_latency, _ = await b.post(ZONE_BIG, ["sms"])
    load_posts, load_firsts = await b.sirens(args.sirens)
    await b.until_count("twilio", args.big, 1200)
    for label, posts in (("alerts posted one after another", idle_posts + [big_latency]),
                         (f"posted during the {args.big}-recipient fan-out", load_posts)):
        print(f"202 latency      p50 {pct(posts, .5) * 1000:6.1f} ms  p99 {pct(posts, .99) * 1000:6.1f} ms"
              f"   ({len(posts)} {label})")
    print(f"202 latency of the {args.big}-recipient alert: {big_latency * 1000:.1f} ms   (target p99 <= 50)")
    for label, firsts in (("alerts posted one after another", idle_firsts),
                          (f"during the {args.big}-recipient fan-out", load_firsts)):
        print(f"first siren cmd  p50 {pct(firsts, .5) * 1000:6.1f} ms  p99 {pct(firsts, .99) * 1000:6.1f} ms"
              f"   ({label}; target p99 <= 100)")
    own, senders = peak_rss_mb(pid), [peak_rss_mb(c) for c in children_of(pid)]
    print(f"daemon peak RSS  {own + sum(senders):6.0f} MB   (after {args.big} + {2 * args.n} deliveries; target <= 250;"
          f" the daemon {own:.0f} MB and {len(senders)} sending processes {sum(senders):.0f} MB)")


if __name__ == "__main__":
    # `timeout` and Ctrl-C alike: unwind, so the daemon and the fakes are stopped with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--sirens", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--channels", default="sms,push", help="which throughput phases to run")
    parser.add_argument("--processes", type=int, default=1, help="sending processes per channel (0: in the daemon)")
    asyncio.run(main(parser.parse_args()))
