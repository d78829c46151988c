"""Shared fixtures: the fake provider servers (in their own process) and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from aiohttp import test_utils

from alertd import app as app_mod, demo
from tests import helpers

PG_URL = os.environ.get("ALERTD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def fakes_url():
    """The fake Twilio, FCM and siren servers, in a separate process (the FCM token refresh is
    synchronous in firebase-admin, so a fake served by the test's own loop would deadlock)."""
    with demo.fake_providers() as (url, proc):
        asyncio.run(demo.wait_ready(url, proc))
        yield url


@pytest.fixture(scope="session")
def pg_url():
    return PG_URL


def pytest_terminal_summary(terminalreporter):
    # `helpers`, not this file: pytest loads this file as `conftest`, the tests import `tests.*`.
    if helpers.REPORT:
        terminalreporter.section("alertd figures")
        for line in helpers.REPORT:
            terminalreporter.write_line(line)


@pytest.fixture
async def pg_schema_url(pg_url):
    """`pg_url` confined to a schema of its own, dropped afterwards, so parallel runs never meet."""
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_url}?search_path={schema}"  # asyncpg passes unknown DSN parameters as settings
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
def siren_settings() -> str:
    """Extra TOML lines for the daemon's siren channel; a test module overrides it."""
    return ""


@pytest.fixture
def sms_settings() -> str:
    """Extra TOML lines for the daemon's SMS channel; a test module overrides it."""
    return ""


@pytest.fixture
def alerts_settings() -> str:
    """Extra TOML lines for the daemon's [alerts] section; a test module overrides it (a module posting
    CAP documents dated years from the test clock raises `cap_sent_skew_hours`)."""
    return ""


@pytest.fixture
def extra_settings() -> str:
    """More TOML sections for the daemon (more channels); a test module overrides it."""
    return ""


@pytest.fixture(params=["sqlite", "postgresql"])
async def daemon(request, tmp_path, fakes_url, pg_schema_url, siren_settings, sms_settings, alerts_settings,
                 extra_settings):
    """The daemon on each store, with the fakes, a manual clock and no background work."""
    port = demo.free_port()
    store = pg_schema_url if request.param == "postgresql" else None
    cfg = helpers.load_config(tmp_path, fakes_url, port, store=store, siren=siren_settings, sms=sms_settings,
                              alerts=alerts_settings, extra=extra_settings)
    clock = helpers.ManualClock()
    app = app_mod.build(cfg, clock=clock, run_workers=False)
    server = test_utils.TestServer(app, host="127.0.0.1", port=port)
    async with test_utils.TestClient(server) as client:
        d = helpers.Daemon(client, clock, fakes_url)
        await d.populate()
        yield d
