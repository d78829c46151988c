"""systemd: notifications reach a real unix datagram socket; the watchdog pings only while healthy."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import uuid

import pytest

from alertd import app, config, demo, systemd
from tests import helpers, test_crash

UNIT = pathlib.Path(__file__).resolve().parent.parent / "systemd" / "alertd.service"


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A socket playing systemd's part: what the daemon sends arrives here."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_ready_and_stopping_reach_the_socket(notify_socket):
    systemd.ready()
    systemd.stopping()
    assert received(notify_socket) == ["READY=1", "STOPPING=1"]


def test_abstract_namespace_socket(monkeypatch):
    name = f"alertd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        systemd.ready()
        assert received(sock) == ["READY=1"]


def test_without_systemd_notifications_are_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    systemd.ready()  # nothing to reach, nothing raised
    systemd.notify("WATCHDOG=1", env={})


def test_a_missing_socket_is_an_error(tmp_path):
    with pytest.raises(OSError):
        systemd.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env, expected):
    assert systemd.watchdog_interval(env) == expected


async def test_no_watchdog_means_the_task_returns(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(systemd.watchdog_task(lambda: asyncio.sleep(0)), timeout=5)


async def test_the_watchdog_stops_pinging_while_the_check_fails(notify_socket):
    pings_before: list[int] = []
    total: list[str] = []
    sixth = asyncio.Event()
    stuck = asyncio.Event()

    async def check() -> None:
        total.extend(received(notify_socket))
        pings_before.append(len(total))
        call = len(pings_before)
        if call == 3:
            await stuck.wait()  # hangs: the task's own timeout must give up on it
        if call == 4:
            raise ConnectionError("store unreachable")
        if call == 6:
            sixth.set()

    task = asyncio.create_task(systemd.watchdog_task(check, interval=0.02))
    await asyncio.wait_for(sixth.wait(), timeout=10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    total.extend(received(notify_socket))
    # Calls 1, 2, 5 and 6 succeed; the hung call 3 and the failing call 4 send nothing.
    assert pings_before == [0, 1, 2, 2, 2, 3]
    assert total == ["WATCHDOG=1"] * 4


def unit_directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_waits_for_readiness_and_watches_the_daemon():
    unit = unit_directives()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30"] and unit["Restart"] == ["on-failure"]
    assert unit["ExecStart"] == ["/opt/alertd/venv/bin/alertd serve --config /etc/alertd/alertd.toml"]
    assert unit["User"] == ["alertd"] and unit["StateDirectory"] == ["alertd"]
    assert unit["ProtectSystem"] == ["strict"] and unit["CapabilityBoundingSet"] == [""]
    assert all(c.split(":")[1].startswith("/etc/alertd/credentials/") for c in unit["LoadCredential"])


def test_the_unit_gives_room_for_the_connections_the_configuration_allows():
    limit = int(unit_directives()["LimitNOFILE"][0])  # one value: the soft limit and the hard one
    allowed = config.Server().max_connections + app.FD_RESERVE
    assert limit >= 4 * allowed  # and room to raise server.max_connections without editing the unit


def test_systemd_accepts_the_unit():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # nothing to ask on a machine without systemd; the directives are checked above
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    # The unit runs /opt/alertd/venv/bin/alertd, which only exists once installed.
    complaints = [line for line in result.stderr.splitlines() if "/opt/alertd/venv/bin/alertd" not in line]
    assert complaints == [], result.stderr


# -- the daemon's own notifications ----------------------------------------------------------------


def serve(config_path, notify_socket: socket.socket) -> subprocess.Popen:
    env = os.environ | {"NOTIFY_SOCKET": notify_socket.getsockname(), "ALERTD_LOG__LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "alertd.cli", "serve", "--config", str(config_path)],
                            env=env, stderr=subprocess.PIPE, text=True)


async def notification(sock: socket.socket, timeout: float = 30) -> str:
    return (await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), timeout)).decode()


async def test_ready_comes_once_the_daemon_listens_and_its_sending_processes_run(tmp_path, fakes_url, notify_socket):
    port = demo.free_port()
    path = helpers.write_config(tmp_path, fakes_url, port, sms="processes = 1", push="processes = 1")
    daemon = serve(path, notify_socket)
    try:
        assert await notification(notify_socket) == "READY=1"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it listens
        senders = test_crash.sending_processes(daemon.pid)
        assert len(senders) == 2 and all(test_crash.running(pid) for pid in senders)
        daemon.terminate()
        assert await notification(notify_socket) == "STOPPING=1"
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
        daemon.wait(10)
    assert daemon.stderr.read() == ""


async def test_a_daemon_that_cannot_start_its_sending_processes_never_says_ready(tmp_path, fakes_url, notify_socket):
    missing = tmp_path / "missing-service-account.json"
    path = helpers.write_config(
        tmp_path, fakes_url, demo.free_port(), push=f"processes = 1\nservice_account_file = '{missing}'"
    )
    daemon = serve(path, notify_socket)
    try:
        assert daemon.wait(60) == 1
    finally:
        daemon.kill()
    assert "READY=1" not in received(notify_socket)
    lines = [json.loads(line) for line in daemon.stderr.read().splitlines()]  # JSON, all of them
    assert [(line["level"], line["event"]) for line in lines] == [("error", "alertd cannot serve")]
    assert "channel push-0" in lines[0]["error"] and "service_account_file" in lines[0]["error"]


async def test_the_log_says_where_it_serves_and_when_it_stopped(tmp_path, fakes_url, notify_socket):
    """An operator reading the journal sees the address it listens on, and its stop."""
    port = demo.free_port()
    path = helpers.write_config(tmp_path, fakes_url, port)
    env = os.environ | {"NOTIFY_SOCKET": notify_socket.getsockname(), "ALERTD_LOG__LEVEL": "info",
                        "ALERTD_LOG__FORMAT": "json"}
    daemon = subprocess.Popen([sys.executable, "-m", "alertd.cli", "serve", "--config", str(path)],
                              env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert await notification(notify_socket) == "READY=1"
        daemon.terminate()
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
        daemon.wait(10)
    lines = [json.loads(line) for line in (daemon.stdout.read() + daemon.stderr.read()).splitlines() if line]
    events = {line["event"]: line for line in lines}
    assert events["alertd serving"]["listen"].endswith(f":{port}") and "alertd stopped" in events
