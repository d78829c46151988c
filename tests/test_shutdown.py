"""Stopping the daemon: a housekeeping pass under way ends on its own, and nothing is logged as failed."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from alertd import app as app_mod, demo, housekeeping
from tests import helpers


async def test_a_housekeeping_pass_under_way_ends_before_the_store_closes_and_is_not_an_error(
    tmp_path, fakes_url, monkeypatch,
):
    began, finish, ended = asyncio.Event(), asyncio.Event(), []

    async def a_pass(disp) -> None:  # stands for a pass that takes a while (a big expiry)
        began.set()
        await finish.wait()
        await disp.store.ping()  # the store is still open
        ended.append(True)

    monkeypatch.setattr(app_mod, "HOUSEKEEPING_SECONDS", 0.01)
    monkeypatch.setattr(housekeeping, "run", a_pass)
    port = demo.free_port()
    app = app_mod.build(helpers.load_config(tmp_path, fakes_url, port))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await app_mod.listening(app)
    await asyncio.wait_for(began.wait(), 10)
    with structlog.testing.capture_logs() as logs:
        stopping = asyncio.create_task(runner.cleanup())
        await asyncio.sleep(0)  # the stop is under way, the pass too
        finish.set()
        await asyncio.wait_for(stopping, 30)
    assert ended == [True]
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
