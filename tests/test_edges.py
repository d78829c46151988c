"""The edges are tight: every answer carries the security headers and no server banner, and failed
authentications are counted in /metrics and logged at a bounded rate."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import structlog
from prometheus_client import parser as prometheus_parser

from alertd import logs, model
from tests import helpers

pytestmark = pytest.mark.parametrize("daemon", ["sqlite"], indirect=True)

API_CSP = re.compile(r"(^|;)\s*frame-ancestors 'none'\s*(;|$)")


@pytest.fixture
def log_lines():
    """Logging into a buffer, as the daemon configures it; the process's logging back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    structlog.reset_defaults()
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def assert_tight(resp, where: str) -> None:
    headers = resp.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    csp = headers.get("Content-Security-Policy")
    assert API_CSP.search(csp or ""), f"{where}: {csp}"
    assert headers.get("Referrer-Policy") == "no-referrer", where
    for server in headers.getall("Server", []):
        assert not re.search(r"(?i)python|aiohttp|\d+\.\d+", server), f"{where}: Server: {server}"


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "no-such-alert", path)


async def test_every_route_answers_with_the_security_headers_and_no_banner(daemon):
    seen = set()
    for route in daemon.app.router.routes():
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if "prefix" in info:  # a static folder: its page and an asset
            for asset in ("/index.html", "/app.js", "/console.css"):
                resp = await daemon.client.get(path + asset)
                assert resp.status == 200, path + asset
                assert_tight(resp, path + asset)
            continue
        method = route.method if route.method != "*" else "GET"
        if method == "HEAD":
            continue
        for who in (None, "admin"):
            resp = await daemon.client.request(
                method, concrete(path), headers=daemon.headers.get(who, {}), data=b"{}" if method != "GET" else None,
            )
            assert_tight(resp, f"{method} {path} as {who} → {resp.status}")
            if resp.status == 401:  # RFC 9110: a 401 says how to authenticate
                assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), f"{method} {path}"
            seen.add(resp.status)
    assert {200, 401}.issubset(seen)  # both answers and refusals went through the checks


@pytest.mark.parametrize("method, path, data, status", [
    ("GET", "/nowhere", None, 404),
    ("DELETE", "/v1/alerts", None, 405),
    ("POST", "/v1/alerts", b"x" * (5 * 1024 * 1024), 413),
    ("GET", "/v1/alerts", None, 401),
    ("GET", "/console/no-such-asset.js", None, 404),
])
async def test_errors_carry_the_security_headers_too(daemon, method, path, data, status):
    who = "issuer" if status == 413 else None
    headers = daemon.headers.get(who, {}) | ({"Content-Type": "application/json"} if data else {})
    resp = await daemon.client.request(method, path, data=data, headers=headers)
    assert resp.status == status
    assert_tight(resp, f"{method} {path} → {status}")


@pytest.mark.parametrize("path", ["/console", "/console/", "/console/index.html"])
async def test_every_console_path_forbids_framing(daemon, path):
    resp = await daemon.client.get(path)
    assert resp.status == 200
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]  # the page's own assets load


async def failures(daemon) -> dict[str, float]:
    resp = await daemon.client.get("/metrics")
    text = await resp.text()
    counts = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        if family.name == "alertd_auth_failures":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["reason"]] = sample.value
    return counts


async def test_a_thousand_failed_authentications_are_counted_and_logged_a_few_times(daemon, log_lines):
    plaintext = await helpers.add_token(daemon.store, model.Role.ISSUER, ["75"])
    assert await daemon.store.revoke_token(plaintext.split("_")[1])
    revoked = helpers.auth_header(plaintext)
    tries = [
        ({}, "missing"), ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed"),
        ({"Authorization": "Bearer alertd_0123456789abcdef_" + "x" * 40}, "unknown"), (revoked, "revoked"),
    ]
    for i in range(1000):
        headers, _ = tries[i % len(tries)]
        resp = await daemon.client.get("/v1/alerts", headers=headers)
        assert resp.status == 401
    counted = await failures(daemon)
    assert {reason: n for reason, n in counted.items() if n} == {reason: 250.0 for _, reason in tries}
    assert sum(counted.values()) == 1000
    lines = [line for line in log_lines() if line["event"] == "authentication failed"]
    assert 1 <= len(lines) <= 3, lines
    assert lines[0]["count"] == 1  # the first one at once: a brute force leaves a trace from its start
    assert "x" * 40 not in json.dumps(lines)  # what was presented is never logged
