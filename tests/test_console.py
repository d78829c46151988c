"""The operators' console: the reads it needs (on both stores), then the page itself in headless
Chromium against a daemon serving on a real port with its workers running on the fakes: sign in,
watch an alert progress to completion, cancel another one. Screenshots go to tests/artifacts/.

Needs Debian's chromium (`apt-get install -y --no-install-recommends chromium`) and playwright.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import re
import time

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import async_playwright, expect

from alertd import app as app_mod, demo, model, people, testing, web as web_mod
from alertd.web import console
from tests import helpers

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = pathlib.Path(__file__).parent / "artifacts"
LAPTOP, TABLET = {"width": 1366, "height": 768}, {"width": 768, "height": 1024}
PEOPLE = 200
WAIT = 20_000  # ms: the bound on any wait for the page
SEINE = [[48.85, 2.29], [48.87, 2.35], [48.84, 2.39], [48.85, 2.29]]
ISLAND = {"lat": 48.853, "lon": 2.349, "radius_km": 0.8}


async def test_the_page_and_every_asset_it_loads_are_served_from_alertd_alone(daemon):
    page = await daemon.client.get("/console")
    assert page.status == 200 and page.content_type == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    files = {p.name: p.read_text() for p in console.STATIC.iterdir()}
    wanted = set(re.findall(r'(?:href|src)="/console/([^"]+)"', files["index.html"]))
    wanted |= {name for text in files.values() for name in re.findall(r"from '\./([\w.]+)'", text)}
    assert wanted == set(files) - {"index.html"}  # every file is used, every import exists
    for name in wanted:
        asset = await daemon.client.get(f"/console/{name}")
        assert asset.status == 200, name
        assert asset.content_type in ("text/javascript", "application/javascript", "text/css"), name
    assert not [name for name, text in files.items() if re.search(r"(?:src|href)=\"https?:|url\(|@import|//cdn", text)]


async def test_me_tells_the_console_who_signed_in(daemon):
    me = await (await daemon.get("/v1/me", who="issuer")).json()
    assert me["roles"] == ["issuer"] and me["zones"] == ["75"]
    assert (me["cell"], me["cell_name"]) == ("prefecture-test-75", "Préfecture test")
    assert me["user"] == "issuer@prefecture-test-75"
    assert me["expires_at"] == (helpers.START + dt.timedelta(days=people.MACHINE_TOKEN_DAYS)).isoformat()
    assert (await daemon.client.get("/v1/me")).status == 401


async def test_messages_are_the_texts_the_alert_sent(daemon):
    alert_id = (await daemon.send(channels=["sms"]))["id"]
    await daemon.drain()
    messages = (await (await daemon.get(f"/v1/alerts/{alert_id}/messages")).json())["messages"]
    by_locale = {m["locale"]: m["body"] for m in messages if m["channel"] == "sms"}
    sent = {r["to"]: r["body"] for r in await daemon.sms.received()}
    assert sent["+33622334455"] == by_locale["en"] and sent["+33612345678"] == by_locale["fr"]


async def test_sirens_show_their_last_command_to_operators_of_their_jurisdiction(daemon):
    alert_id = (await daemon.send(channels=["siren"]))["id"]
    await daemon.drain()
    of_alert = (await (await daemon.get(f"/v1/alerts/{alert_id}/sirens")).json())["sirens"]
    assert [(s["id"], s["status"]) for s in of_alert] == [("siren-paris-1", "activated")]
    await daemon.post(f"/v1/alerts/{alert_id}/cancel")
    await daemon.drain()
    sirens = (await (await daemon.get("/v1/sirens")).json())["sirens"]
    assert {s["id"]: s["status"] for s in sirens} == {"siren-lyon-1": "ready", "siren-paris-1": "ready"}
    paris = next(s for s in sirens if s["id"] == "siren-paris-1")
    assert paris["last"]["alert_id"] == alert_id and paris["last"]["command"] == "cancel"

    lyon = helpers.auth_header(await helpers.add_token(daemon.store, model.Role.OPERATOR, ["69"], cell="Lyon"))
    seen = (await (await daemon.client.get("/v1/sirens", headers=lyon)).json())["sirens"]
    assert [s["id"] for s in seen] == ["siren-lyon-1"]
    issuer = (await (await daemon.get("/v1/sirens", who="issuer")).json())["sirens"]  # zones "75"
    assert [s["id"] for s in issuer] == ["siren-paris-1"]


@pytest.fixture
async def served(tmp_path, fakes_url):
    """alertd on a real port, workers running, SMS slowed down so that the fan-out takes seconds."""
    port = demo.free_port()
    slow_sms = 'max_concurrency = 4\nprice_per_segment = 0.05\ncurrency = "EUR"'
    cfg = helpers.load_config(tmp_path, fakes_url, port, sms=slow_sms)
    app = app_mod.build(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await app_mod.listening(app)
    db = app[web_mod.STORE]
    await db.upsert_recipients([
        model.Recipient(f"r{i:04d}", "fr" if i % 3 else "en", (helpers.PARIS,), phone=f"+3361000{i:04d}",
                        push_token=f"tok-{i:06d}")
        for i in range(PEOPLE)
    ])
    await db.upsert_sirens([
        model.Siren("siren-paris-1", helpers.PARIS, "Hôtel de Ville", lat=48.8566, lon=2.3522),
        model.Siren("siren-lyon-1", helpers.LYON, "Bellecour", lat=45.7578, lon=4.8320),
    ])
    tokens = {role: await helpers.add_token(db, role, zones) for role, zones in (
        (model.Role.ISSUER, ["*"]), (model.Role.OPERATOR, ["*"]))}
    # An actual alert waits for a second person.
    await helpers.add_cell(db, "pref-75", ["75"], name="Préfecture de police")
    tokens["alice"] = await helpers.add_person(db, "alice", "pref-75", model.Role.ISSUER, model.Role.APPROVER)
    tokens["bruno"] = await helpers.add_person(db, "bruno", "pref-75", model.Role.APPROVER)
    sms = testing.FakeControl(fakes_url, "twilio")
    await sms.reset()
    await sms.fail(delay=0.05, times=None)  # no status: each SMS succeeds, 50 ms later
    try:
        yield f"http://127.0.0.1:{port}", tokens, sms
    finally:
        await sms.reset()
        await runner.cleanup()


@pytest.fixture
async def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        await chromium.close()


async def send(base: str, token: str, **order) -> str:
    async with (
        aiohttp.ClientSession(headers=helpers.auth_header(token)) as http,
        http.post(base + "/v1/alerts", json=helpers.order(**order) | {"expires": None}) as resp,
    ):
        assert resp.status == 202, await resp.text()
        return (await resp.json())["id"]


async def sign_in(page, base: str, token: str) -> None:
    await page.goto(base + "/console")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await expect(page.locator("table.alerts")).to_be_visible(timeout=WAIT)


async def test_sign_in_watch_an_alert_complete_and_cancel_another(served, browser):
    base, tokens, sms = served
    started = time.monotonic()
    page = await browser.new_page(viewport=LAPTOP, locale="fr-FR")
    elsewhere, problems = [], []
    page.on("request", lambda r: r.url.startswith((base, "data:")) or elsewhere.append(r.url))
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))

    await sign_in(page, base, tokens[model.Role.ISSUER])
    watched = await send(base, tokens[model.Role.ISSUER], area={"zones": [helpers.PARIS], "description": "Paris",
                                                                 "polygons": [SEINE], "circles": [ISLAND]})
    row = page.locator(f"tr[data-alert='{watched}']")
    await expect(row).to_be_visible(timeout=WAIT)  # the list refreshes by itself
    await page.screenshot(path=ARTIFACTS / "console-alerts.png")

    await row.locator("a.event").click()
    counts = page.locator("table.counts")
    await expect(counts).to_have_attribute("data-total", str(2 * PEOPLE + 1), timeout=WAIT)
    await expect(page.locator(".head [data-state=completed]")).to_be_visible(timeout=WAIT)
    await expect(counts).to_have_attribute("data-done", str(2 * PEOPLE + 1))
    assert await page.locator("tr[data-channel=sms] td[data-state=delivered]").inner_text() == str(PEOPLE)
    sent_line = page.locator("polyline.reach.sent[data-channel=sms]")
    assert int(await sent_line.get_attribute("data-points")) >= 3  # the start, and rows along the way
    await expect(page.locator("article.message[data-channel=sms]")).to_contain_text("crue de la Seine")
    await expect(page.locator("li[data-siren=siren-paris-1]")).to_have_attribute("data-status", "activated")
    outline = page.locator("svg.outline")  # the area drawn: its polygon, its circle, its siren
    assert await outline.locator(".shape").count() == 2
    await expect(outline.locator("circle.siren.ss-activated[data-siren=siren-paris-1]")).to_have_count(1)
    await page.screenshot(path=ARTIFACTS / "console-alert-laptop.png", full_page=True)
    await page.set_viewport_size(TABLET)
    await page.screenshot(path=ARTIFACTS / "console-alert-tablet.png", full_page=True)
    await page.set_viewport_size(LAPTOP)

    await sms.reset()
    await sms.fail(status=429, code=20429, retry_after=60, times=None)  # the SMS wait: the alert stays live
    stopped = await send(base, tokens[model.Role.ISSUER], identifier="second-alert")
    await page.goto(f"{base}/console#/alerts/{stopped}")
    await expect(page.locator(".head [data-state=active]")).to_be_visible(timeout=WAIT)
    await page.click("#cancel")
    await expect(page.locator("#dialog")).to_contain_text("Annuler")
    await page.screenshot(path=ARTIFACTS / "console-cancel-dialog.png")
    await page.click("#confirm-cancel")
    await expect(page.locator("#cancel-result")).to_contain_text("prefecture-test-national", timeout=WAIT)
    await page.screenshot(path=ARTIFACTS / "console-cancelled.png")
    await page.click("#cancel-result button")
    await expect(page.locator(".head [data-state=cancelled]")).to_be_visible(timeout=WAIT)
    await expect(page.locator("#cancelled")).to_contain_text("prefecture-test-national")
    await expect(page.locator("tr[data-channel=sms] td[data-state=cancelled]")).to_have_text(str(PEOPLE), timeout=WAIT)

    # An operator reads but may not cancel, and sees the sirens; in English when asked.
    await page.click("#signout")
    await sign_in(page, base, tokens[model.Role.OPERATOR])
    await page.click("#lang")
    await page.goto(f"{base}/console#/alerts/{stopped}")
    await expect(page.locator(".head [data-state=cancelled]")).to_have_text("cancelled", timeout=WAIT)
    assert await page.locator("#cancel").count() == 0
    await page.goto(f"{base}/console#/sirens")
    await expect(page.locator("tr[data-siren=siren-paris-1]")).to_have_attribute("data-status", "ready", timeout=WAIT)
    await expect(page.locator("tr[data-siren=siren-lyon-1]")).to_have_attribute("data-status", "ready")
    await page.screenshot(path=ARTIFACTS / "console-sirens.png")

    assert elsewhere == [] and problems == []
    helpers.REPORT.append(f"console: browser test {time.monotonic() - started:.1f}s, screenshots in {ARTIFACTS}")


async def test_a_siren_that_did_not_sound_or_awaits_a_retry_is_not_shown_ready(served, browser, fakes_url):
    base, tokens, _ = served
    sirens = testing.FakeControl(fakes_url, "siren")
    await sirens.reset()
    await sirens.fail(status=422, code="fault", to="siren-lyon-1", times=None)  # refused: it cannot sound
    await sirens.fail(status=500, retry_after=600, to="siren-paris-1", times=None)  # retried in 10 min
    try:
        lyon = await send(base, tokens[model.Role.ISSUER], channels=["siren"], identifier="lyon",
                          area={"zones": [helpers.LYON], "description": "Lyon"})
        paris = await send(base, tokens[model.Role.ISSUER], channels=["siren"], identifier="paris")
        page = await browser.new_page(viewport=LAPTOP, locale="fr-FR")
        await sign_in(page, base, tokens[model.Role.OPERATOR])
        await page.goto(f"{base}/console#/sirens")
        rows = {siren: page.locator(f"tr[data-siren={siren}]") for siren in ("siren-lyon-1", "siren-paris-1")}
        await expect(rows["siren-paris-1"]).to_have_attribute("data-status", "retrying", timeout=WAIT)
        await expect(rows["siren-lyon-1"]).to_have_attribute("data-status", "failed", timeout=WAIT)
        await expect(rows["siren-lyon-1"].locator("td").first).to_contain_text("commande non exécutée")
        await expect(rows["siren-paris-1"].locator("td").first).to_contain_text("nouvel essai prévu")
        for row in rows.values():
            await expect(row.locator("td").first).not_to_contain_text("prête")
        await expect(rows["siren-lyon-1"].locator("td.reason")).to_contain_text("HTTP 422")
        await page.screenshot(path=ARTIFACTS / "console-sirens-failed.png")
        for alert_id, siren, status in ((lyon, "siren-lyon-1", "failed"), (paris, "siren-paris-1", "retrying")):
            await page.goto(f"{base}/console#/alerts/{alert_id}")  # the alert page agrees
            await expect(page.locator(f"li[data-siren={siren}]")).to_have_attribute("data-status", status, timeout=WAIT)
        await sirens.reset()  # the gateway is well again: a later alert's activation goes through
        await send(base, tokens[model.Role.ISSUER], channels=["siren"], identifier="paris-again")
        # The first Paris alert's page, left open, follows the siren without an event of its own.
        await expect(page.locator("li[data-siren=siren-paris-1]")).to_have_attribute("data-status", "activated",
                                                                                       timeout=WAIT)
    finally:
        await sirens.reset()


async def test_an_actual_alert_of_a_person_waits_for_a_second_one(served, browser):
    """alice sends an actual alert: it awaits approval; her own approval is refused, the reason
    shown; bruno (approver) approves it, and the deliveries reach the fakes."""
    base, tokens, sms = served
    await sms.reset()
    page = await browser.new_page(viewport=LAPTOP, locale="fr-FR")
    problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmation asked before releasing it
    waiting = await send(base, tokens["alice"], channels=["sms"], identifier="two-people")

    await sign_in(page, base, tokens["alice"])
    await page.goto(f"{base}/console#/alerts/{waiting}")
    await expect(page.locator(".head [data-state=awaiting_approval]")).to_be_visible(timeout=WAIT)
    await expect(page.locator("#approval")).to_contain_text("créée par alice")
    await expect(page.locator("#audience")).to_contain_text(f"SMS {PEOPLE}")
    await expect(page.locator("#estimate")).to_contain_text("Jusqu’au dernier message : SMS ")  # at Twilio's 10/s
    await expect(page.locator("#estimate")).to_contain_text("€")
    await expect(page.locator("article.message[data-channel=sms]")).to_contain_text("crue de la Seine")
    await page.click("#approve")
    await expect(page.locator("#approval-error")).to_contain_text("a second person must approve it", timeout=WAIT)
    await expect(page.locator(".head [data-state=awaiting_approval]")).to_be_visible()
    await page.screenshot(path=ARTIFACTS / "console-awaiting-approval.png")
    assert await sms.received() == []

    await page.click("#signout")
    await sign_in(page, base, tokens["bruno"])
    await page.goto(f"{base}/console#/alerts/{waiting}")
    await expect(page.locator("#approve")).to_be_visible(timeout=WAIT)
    await page.click("#approve")
    await expect(page.locator("#approval")).to_contain_text("approuvée par bruno", timeout=WAIT)
    await expect(page.locator(".head [data-state=completed]")).to_be_visible(timeout=WAIT)
    assert len(await sms.received()) == PEOPLE
    await page.screenshot(path=ARTIFACTS / "console-approved.png")
    assert problems == []
