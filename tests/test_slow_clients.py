"""Idle and slow clients cannot exhaust the daemon: the real daemon, its file descriptors limited
to 1,024, held by 1,100 unauthenticated connections that each send half a request, still takes an
alert at once and sends its first siren command at once; a slowloris is dropped after the
configured time; the log says "out of file descriptors" a bounded number of times."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import time
import uuid

import aiohttp

from alertd import app, demo, model, store as store_mod, testing
from tests import helpers, test_crash

FD_LIMIT = 1024
FLOOD = 1100
HALF_A_REQUEST = b"POST /v1/alerts HTTP/1.1\r\nHost: alertd\r\nContent-Ty"
FD_LINES = re.compile(r"(?i)out of (system resource|file descriptors)|too many open files")


def write_config(tmp_path, fakes_url, port, server: str = "") -> pathlib.Path:
    path = helpers.write_config(tmp_path, fakes_url, port)
    path.write_text(path.read_text().replace("[server]\n", f"[server]\n{server}\n", 1))
    return path


# The daemon as `alertd serve` runs it, but taking no descriptors aside for itself: its client
# connections alone run it out of descriptors, as other descriptors (provider connections, files)
# may in production.
NO_RESERVE = "import sys; from alertd import app, cli; app.FD_RESERVE = -100_000; sys.exit(cli.main())"


def start_daemon(config_path, log: pathlib.Path, reserve: bool = True) -> subprocess.Popen:
    """The daemon with at most `FD_LIMIT` file descriptors, its log in `log`."""
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    env = os.environ | {"ALERTD_LOG__LEVEL": "warning", "ALERTD_LOG__FORMAT": "json"}
    program = ["-m", "alertd.cli"] if reserve else ["-c", NO_RESERVE]
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, *program, "serve", "--config", str(config_path)],
            env=env, stderr=err, preexec_fn=limited,
        )


@contextlib.contextmanager
def own_fd_limit(needed: int):
    """The test's own descriptor limit raised for the flood's sockets, put back afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"this test needs {needed} descriptors, hard limit {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def seed(url: str, siren_id: str) -> str:
    db = store_mod.open_store(url)
    await db.open()
    try:
        await db.upsert_sirens([model.Siren(siren_id, helpers.PARIS, "Place de la mairie")])
        return await helpers.add_token(db, model.Role.ISSUER, ["75"])
    finally:
        await db.close()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def half_request(port: int, held: list) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (TimeoutError, OSError):
        return  # the daemon's backlog is full: this one never got in, which is the daemon's right
    writer.write(HALF_A_REQUEST)
    held.append(writer)


async def flood(port: int, count: int) -> list[asyncio.StreamWriter]:
    held: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):  # in waves, as a botnet would, not one SYN storm
        await asyncio.gather(*(half_request(port, held) for _ in range(start, min(count, start + 100))))
    return held


def fd_lines(log: pathlib.Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if FD_LINES.search(line))


async def post_an_alert(base: str, token: str, sirens: testing.FakeControl, siren_id: str) -> tuple[float, float]:
    """Seconds to the order's 202 and to its first siren command (inf: not within 5 s)."""
    already = len(await sirens.received())
    order = helpers.order(channels=["siren"], expires=None)
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.post(base + "/v1/alerts", json=order, headers=helpers.auth_header(token)) as r,
        ):
            assert r.status == 202, await r.text()
            accepted = time.monotonic() - started
    except TimeoutError:
        return float("inf"), float("inf")

    async def first_siren():
        got = [c for c in (await sirens.received())[already:] if c.get("to") == siren_id]
        return time.monotonic() - started if got else None

    return accepted, await test_crash.wait_until(first_siren, 5, "the first siren command")


async def test_an_alert_gets_through_1100_idle_half_requests_at_once(tmp_path, fakes_url):
    port = demo.free_port()
    siren_id = f"slow-clients-{uuid.uuid4().hex[:8]}"
    path = write_config(tmp_path, fakes_url, port)
    token = await seed(f"sqlite:///{tmp_path / 'alertd.db'}", siren_id)
    base, log = f"http://127.0.0.1:{port}", tmp_path / "daemon.log"
    sirens = testing.FakeControl(fakes_url, "siren")
    daemon = start_daemon(path, log)
    held: list[asyncio.StreamWriter] = []
    try:
        with own_fd_limit(FLOOD + 512):
            await test_crash.wait_until(lambda: test_crash.up(base), 20, "the daemon to listen")
            held = await flood(port, FLOOD)
            fds_held = open_fds(daemon.pid)
            accepted, siren_after = await post_an_alert(base, token, sirens, siren_id)
            async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as r:
                connections = float(re.search(r"^alertd_connections_open (\S+)$", await r.text(), re.M)[1])
            evicted = (await drops(base))["evicted"]
            lines = fd_lines(log)
            helpers.REPORT.append(
                f"idle flood: {len(held)} half-request connections opened against a daemon limited to {FD_LIMIT} fds "
                f"({fds_held} fds open in it, {connections:.0f} client connections held, {evicted:.0f} idle ones "
                f"closed to make room); the alert's 202 in {accepted * 1000:.0f} ms, its first siren "
                f"command in {siren_after * 1000:.0f} ms; {lines} fd lines in the log"
            )
            assert len(held) >= 1000, "the flood did not get in: it tests nothing"
            assert accepted < 1.0
            assert siren_after < 1.0
            assert connections <= FD_LIMIT - app.FD_RESERVE and evicted >= FLOOD - connections
            assert lines <= 5, log.read_text()[-2000:]
    finally:
        for writer in held:
            writer.close()
        daemon.terminate()
        daemon.wait(15)


async def test_a_slowloris_is_dropped_after_the_header_timeout_and_a_slow_body_after_the_body_timeout(
        tmp_path, fakes_url):
    port = demo.free_port()
    settings = "header_timeout = 1\nbody_timeout = 1\nkeepalive_timeout = 30"
    path = write_config(tmp_path, fakes_url, port, settings)
    token = await seed(f"sqlite:///{tmp_path / 'alertd.db'}", f"slow-clients-{uuid.uuid4().hex[:8]}")
    base, log = f"http://127.0.0.1:{port}", tmp_path / "daemon.log"
    daemon = start_daemon(path, log)
    try:
        await test_crash.wait_until(lambda: test_crash.up(base), 20, "the daemon to listen")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: alertd\r\n"):  # a slowloris: a line now and then
            writer.write(piece)
            await asyncio.sleep(0.3)  # the attacker's pace, not a wait for our own work
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the daemon, nothing answered
        dropped = time.monotonic() - started
        writer.close()
        assert 0.9 <= dropped < 2.5

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"POST /v1/alerts HTTP/1.1\r\nHost: alertd\r\nContent-Type: application/json\r\n"
                     b"Authorization: " + helpers.auth_header(token)["Authorization"].encode() + b"\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"status\":")
        answer = await asyncio.wait_for(reader.read(), 5)
        waited = time.monotonic() - started
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"Server: alertd" in answer
        assert 0.9 <= waited < 2.5
        counted = await drops(base)
        assert counted["head_timeout"] >= 1 and counted["body_timeout"] == 1
        assert "Traceback" not in log.read_text() and "Unhandled" not in log.read_text()
    finally:
        daemon.terminate()
        daemon.wait(15)


async def drops(base: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as r:
        text = await r.text()
    found = re.findall(r'^alertd_connections_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(n) for reason, n in found}


async def test_an_idle_keep_alive_connection_closes_and_garbage_is_answered_and_logged_a_few_times(tmp_path, fakes_url):
    port = demo.free_port()
    path = write_config(tmp_path, fakes_url, port, "keepalive_timeout = 1\nheader_timeout = 30")
    await seed(f"sqlite:///{tmp_path / 'alertd.db'}", f"slow-clients-{uuid.uuid4().hex[:8]}")
    base, log = f"http://127.0.0.1:{port}", tmp_path / "daemon.log"
    daemon = start_daemon(path, log)
    try:
        await test_crash.wait_until(lambda: test_crash.up(base), 20, "the daemon to listen")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: alertd\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        answered = time.monotonic()
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
        await asyncio.wait_for(reader.read(), 5)  # the body, then the daemon's close
        idle = time.monotonic() - answered
        writer.close()
        assert 0.9 <= idle < 2.5

        for _ in range(200):  # a scanner's garbage: each answered 400, the log says so a few times
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: alertd\r\nBad Header\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer[:100]
        assert b"Server: alertd" in answer and b"X-Content-Type-Options: nosniff" in answer
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Content-Type: application/problem+json" in head, head  # a problem, as every error
        assert json.loads(body)["status"] == 400 and b"Bad Header" not in body  # the input is not echoed
        lines = [line for line in log.read_text().splitlines() if "request" in line.lower()]
        assert 1 <= len(lines) <= 3, lines[:5]
    finally:
        daemon.terminate()
        daemon.wait(15)


async def test_out_of_file_descriptors_the_daemon_says_so_a_few_times_and_keeps_serving(tmp_path, fakes_url):
    port = demo.free_port()
    siren_id = f"slow-clients-{uuid.uuid4().hex[:8]}"
    path = write_config(tmp_path, fakes_url, port, "max_connections = 5000")
    token = await seed(f"sqlite:///{tmp_path / 'alertd.db'}", siren_id)
    base, log = f"http://127.0.0.1:{port}", tmp_path / "daemon.log"
    sirens = testing.FakeControl(fakes_url, "siren")
    daemon = start_daemon(path, log, reserve=False)
    held: list[asyncio.StreamWriter] = []
    try:
        with own_fd_limit(FLOOD + 512):
            await test_crash.wait_until(lambda: test_crash.up(base), 20, "the daemon to listen")
            held = await flood(port, FLOOD)
            fds_held = open_fds(daemon.pid)
            accepted, siren_after = await post_an_alert(base, token, sirens, siren_id)
            await test_crash.wait_until(lambda: test_crash.up(base), 10, "the daemon to answer again")
            async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as r:
                refused = float(re.search(r"^alertd_accept_errors_total (\S+)$", await r.text(), re.M)[1])
            lines = fd_lines(log)
            helpers.REPORT.append(
                f"out of descriptors ({fds_held} of {FD_LIMIT} held by {len(held)} idle connections): {refused:.0f} "
                f"accepts refused, {lines} log lines; the alert's 202 in {accepted * 1000:.0f} ms, its first siren "
                f"command in {siren_after * 1000:.0f} ms"
            )
            assert refused >= 1, "the daemon never ran out of descriptors: this tests nothing"
            assert 1 <= lines <= 5, log.read_text()[-2000:]
            assert accepted < 3.0 and siren_after < 3.0  # asyncio waits 1 s before it accepts again
    finally:
        for writer in held:
            writer.close()
        daemon.terminate()
        daemon.wait(15)
