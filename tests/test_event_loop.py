"""No request freezes the event loop: while the most expensive bodies alertd accepts to read are
checked, `/healthz` keeps answering at once, and each of those bodies gets its answer."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import time

import pytest
from aiohttp import test_utils

from alertd import app as app_mod, audience, cap, demo, errors, geo, model
from alertd.cap import alert as cap_alert
from alertd.web import alerts
from tests import helpers

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
HEALTHZ_BUDGET = 0.1  # seconds, the slowest probe allowed while the bodies are checked
MAX_PROBLEMS = 100
PROBE_EVERY = 0.005  # seconds between probes, as a monitor hammering it would


@pytest.fixture
async def daemon(tmp_path, fakes_url):
    """The daemon on SQLite (the store plays no part in what is measured), its heap frozen out of the
    cyclic collector's way once started, as `alertd serve` does: otherwise a full collection of the
    test process's whole heap (95 ms here) is what a probe measures, not the daemon."""
    port = demo.free_port()
    cfg = helpers.load_config(tmp_path, fakes_url, port)
    clock = helpers.ManualClock()
    app = app_mod.build(cfg, clock=clock, run_workers=False)
    thresholds = gc.get_threshold()
    async with test_utils.TestClient(test_utils.TestServer(app, host="127.0.0.1", port=port)) as client:
        d = helpers.Daemon(client, clock, fakes_url)
        await d.populate()
        await alerts.start_readers(app)  # as app.build is to have it do at startup
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)  # cli._serve's
        try:
            yield d
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)


# -- the bodies --------------------------------------------------------------------------------


def _document(identifier: str, area: str, extra: str = "", expires: str = "2026-11-26T14:00:00+01:00") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP_NS}"><identifier>{identifier}</identifier><sender>cogic@interieur.gouv.fr</sender>
<sent>2026-11-26T11:00:00+01:00</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>{extra}
<info><language>fr-FR</language><category>Met</category><event>Inondation</event><urgency>Immediate</urgency>
<severity>Severe</severity><certainty>Observed</certainty><expires>{expires}</expires>
<headline>Crue</headline><instruction>Montez dans les etages.</instruction>
<area><areaDesc>Paris</areaDesc>{area}<geocode><valueName>INSEE</valueName><value>75056</value></geocode></area>
</info></alert>""".encode()


def _ring(lat: float, lon: float, vertices: int) -> str:
    points = [(lat + 0.01 * math.sin(2 * math.pi * k / vertices), lon + 0.01 * math.cos(2 * math.pi * k / vertices))
              for k in range(vertices)]
    return " ".join(f"{a:.5f},{b:.5f}" for a, b in [*points, points[0]])


def _zigzag(lat: float, lon: float, vertices: int) -> str:
    """A ring crossing itself at every edge: each is a problem GEOS must find."""
    half = vertices // 2
    points = [(lat + 0.001 * k, lon + 0.01 * (k % 2)) for k in range(half)]
    points += [(lat + 0.001 * k, lon + 0.01 * (1 - k % 2)) for k in reversed(range(half))]
    return " ".join(f"{a:.3f},{b:.3f}" for a, b in [*points, points[0]])


def _polygons(shape, count: int, vertices: int) -> str:
    return "".join(f"<polygon>{shape(48.8 + 0.03 * (i % 30), 2.2 + 0.03 * (i // 30), vertices)}</polygon>"
                   for i in range(count))


def worst_cap_bodies() -> dict[str, bytes]:
    """Within the 1 MB a CAP document may take: the most polygons and vertices alertd accepts
    (all checked, then refused for one thing: it expired already), as many self-intersecting ones,
    and as many elements as fit, each of them a problem."""
    per_ring = geo.MAX_VERTICES // geo.MAX_POLYGONS - 1
    bodies = {
        "expired": _document("FR-BIG-1", _polygons(_ring, geo.MAX_POLYGONS, per_ring),
                             expires="2026-11-26T10:30:00+01:00"),
        "crossing": _document("FR-BIG-2", _polygons(_zigzag, geo.MAX_POLYGONS, per_ring)),
        "empty polygons": _document("FR-BIG-3", "<polygon/>" * (cap.MAX_ELEMENTS - 100)),
        "unknown elements": _document("FR-BIG-4", "", "<x/>" * (cap.MAX_ELEMENTS - 100)),
    }
    assert all(len(body) <= cap.MAX_BYTES for body in bodies.values())
    return bodies


def worst_subscribers_body() -> bytes:
    """Near the 4 MiB a body may take: as many subscribers as are allowed, each with an overseas
    number (tried as metropolitan first) and thirty zones."""
    people = [{"id": f"citizen-{i}", "phone": f"0690 12 {i // 100 % 100:02d} {i % 100:02d}", "zones": ["75056"] * 30}
              for i in range(audience.MAX_SUBSCRIBERS)]
    body = json.dumps(people).encode()
    assert len(body) < 4 * 1024 * 1024
    return body


def too_many_subscribers_body() -> bytes:
    people = [{"id": f"c{i}", "phone": "0690123456", "zones": ["75056"]} for i in range(65_000)]
    body = json.dumps(people).encode()
    assert len(body) < 4 * 1024 * 1024
    return body


# -- measuring ---------------------------------------------------------------------------------


async def probe_while(daemon, requests) -> tuple[float, int, list]:
    """The slowest `/healthz` round trip while `requests` (coroutines) run, how many probes were
    made, and the requests' answers (status, body)."""
    async def answer(request):
        resp = await request
        return resp.status, await resp.read()

    tasks = [asyncio.ensure_future(answer(r)) for r in requests]
    slowest, probes = 0.0, 0
    due = time.perf_counter()
    async with asyncio.timeout(120):
        while not all(t.done() for t in tasks):
            resp = await daemon.client.get("/healthz")
            assert resp.status == 200
            # From when the probe was due, not when it was sent: a loop frozen while this one slept
            # sends it late, and that wait is what a monitor probing then would have seen.
            done = time.perf_counter()
            slowest = max(slowest, done - due)
            probes += 1
            due = done + PROBE_EVERY
            await asyncio.sleep(PROBE_EVERY)
        answers = [t.result() for t in tasks]
    return slowest, probes, answers


def _capped(status: int, body: bytes, total: int | None = None) -> dict:
    assert status == 422, body[:500]
    assert len(body) < 64 * 1024  # never megabytes of problems for a body of one
    problem = json.loads(body)
    assert len(problem["errors"]) <= MAX_PROBLEMS
    if total is not None:
        assert len(problem["errors"]) == MAX_PROBLEMS
        assert f"{total} problems" in problem["detail"], problem["detail"]
        assert problem["more_errors"] == total - MAX_PROBLEMS
    return problem


async def test_big_cap_bodies_do_not_freeze_the_loop(daemon):
    bodies = worst_cap_bodies()
    posts = [daemon.post("/v1/alerts", who="admin", data=body, headers={"Content-Type": "application/cap+xml"})
             for body in bodies.values()]
    slowest, probes, answers = await probe_while(daemon, posts)
    helpers.REPORT.append(f"event loop: /healthz slowest {slowest * 1000:.0f} ms over {probes} probes while "
                          f"four 1 MB CAP bodies were checked")
    by_name = dict(zip(bodies, answers, strict=True))
    expired = _capped(*by_name["expired"])
    assert [e["field"] for e in expired["errors"]] == ["/alert/info[1]/expires"]
    _capped(*by_name["crossing"], total=geo.MAX_POLYGONS)
    for name in ("empty polygons", "unknown elements"):
        _capped(*by_name[name], total=cap.MAX_ELEMENTS - 100)
    assert probes >= 2
    assert slowest < HEALTHZ_BUDGET, f"/healthz took {slowest * 1000:.0f} ms while CAP bodies were checked"


async def test_a_big_subscriber_batch_does_not_freeze_the_loop(daemon):
    slowest, probes, answers = await probe_while(daemon, [
        daemon.post("/v1/subscribers", who="admin", data=worst_subscribers_body(),
                    headers={"Content-Type": "application/json"}),
    ])
    helpers.REPORT.append(f"event loop: /healthz slowest {slowest * 1000:.0f} ms over {probes} probes while "
                          f"a 4 MB batch of {audience.MAX_SUBSCRIBERS} subscribers was checked")
    (status, body), = answers
    assert status == 200, body[:500]
    assert json.loads(body) == {"imported": audience.MAX_SUBSCRIBERS}
    assert slowest < HEALTHZ_BUDGET, f"/healthz took {slowest * 1000:.0f} ms while subscribers were checked"


async def test_a_list_too_long_is_refused_before_it_is_checked(daemon):
    body = too_many_subscribers_body()
    started = time.perf_counter()
    with pytest.raises(errors.Invalid):
        audience.parse_subscribers(body)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"refusing 65,000 subscribers took {elapsed:.2f} s: their phones were checked first"
    resp = await daemon.post("/v1/subscribers", who="admin", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 422
    problem = await resp.json()
    assert problem.get("field") is None
    assert problem["errors"] == [{"field": None, "message": f"at most {audience.MAX_SUBSCRIBERS} subscribers in one "
                                  "body, got 65000"}]


async def test_too_many_polygons_are_refused_before_they_are_read(daemon):
    body = _document("FR-MANY", "".join(f"<polygon>{48 + i / 1e5:.5f},2 48,2.1 48.1,2.1 {48 + i / 1e5:.5f},2</polygon>"
                                        for i in range(15_000)))
    started = time.perf_counter()
    with pytest.raises(errors.Invalid):
        cap.parse(body, cap_alert.LIMITS)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.2, f"refusing 15,000 polygons took {elapsed:.2f} s: each was read first"
    resp = await daemon.post("/v1/alerts", who="admin", data=body, headers={"Content-Type": "application/cap+xml"})
    problem = await resp.json()
    assert resp.status == 422, problem
    assert problem["errors"][0] == {"field": "/alert/info/area/polygon",
                                    "message": f"at most {geo.MAX_POLYGONS} distinct polygons, got 15000"}


async def test_a_problem_list_is_capped(daemon):
    resp = await daemon.post("/v1/alerts", who="admin", data=_document("FR-X", "", "<x/>" * 5000),
                             headers={"Content-Type": "application/cap+xml"})
    problem = _capped(resp.status, await resp.read(), total=5000)
    assert problem["errors"][0] == {"field": "/alert/x", "message": "x is not an element of alert in CAP 1.2"}


async def test_preview_needs_a_role_that_may_send(daemon):
    order = helpers.order()
    resp = await daemon.post("/v1/preview", who="operator", json=order)
    assert resp.status == 403, await resp.text()
    resp = await daemon.post("/v1/preview", who="issuer", json=order)
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("path", ["/v1/alerts", "/v1/preview", "/v1/subscribers"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_json_body_needs_its_content_type(daemon, path, content_type):
    body = json.dumps(helpers.PEOPLE if path == "/v1/subscribers" else helpers.order()).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await daemon.client.post(path, data=body, headers=daemon.headers["admin"] | headers)
    problem = await resp.json()
    assert resp.status == 415, problem
    assert problem["type"] == "https://alertd.example/problems/unsupported-media-type"
    assert "application/json" in problem["detail"]
    assert not await daemon.store.list_alerts(10) or path == "/v1/subscribers"


async def test_an_approval_body_needs_its_content_type(daemon):
    draft = await daemon.send(status="draft")
    resp = await daemon.post(f"/v1/alerts/{draft['id']}/approve", who="admin", data=b'{"status": "exercise"}',
                             headers={"Content-Type": "text/plain"})
    assert resp.status == 415, await resp.text()
    assert (await daemon.status(draft["id"]))["state"] == model.AlertState.DRAFT.value
    resp = await daemon.post(f"/v1/alerts/{draft['id']}/approve", who="admin", json={"status": "exercise"})
    assert resp.status == 202, await resp.text()

