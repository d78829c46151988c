"""systemd integration without a dependency: readiness, stopping, and the watchdog.

`notify` speaks the sd_notify protocol: one datagram of ``KEY=value`` lines to the unix socket in
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace). Outside systemd it does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger("alertd.systemd")


def notify(state: str, env: Mapping[str, str] = os.environ) -> None:
    """Send `state` (e.g. "READY=1") to systemd; raises `OSError` when the socket refuses it."""
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode(), address)


def ready() -> None:
    notify("READY=1")


def stopping() -> None:
    notify("STOPPING=1")


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """The watchdog's timeout in seconds, when systemd watches this very process."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000


async def watchdog_task(check: Callable[[], Awaitable[None]], interval: float | None = None) -> None:
    """Ping the watchdog at half its interval, only after `check()` succeeds in time.

    A failing or hanging check stops the pings, so systemd restarts a daemon that is alive but can
    no longer do its job (store unreachable, dispatcher stuck). Returns at once without a watchdog.
    """
    interval = interval or watchdog_interval()
    if interval is None:
        return
    period = interval / 2
    while True:
        try:
            await asyncio.wait_for(check(), timeout=period)
        except Exception as exc:  # any failure means "not healthy": skip this ping
            log.warning("watchdog_check_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            _ping()
        await asyncio.sleep(period)


def _ping() -> None:
    try:
        notify("WATCHDOG=1")
    except OSError as exc:  # systemd will notice the missing pings; keep checking meanwhile
        log.warning("watchdog_notify_failed", error=str(exc))
