"""A CAP test or system alert reaches only the configured test recipients inside its area (so inside
the caller's jurisdiction): never the public, however broad its area, and not another cell's testers."""

from __future__ import annotations

import dataclasses

import pytest

from alertd import audience, model
from tests import helpers

# Test phones and sirens in Paris and in Lyon; the issuer of `populate` is Paris's (zone 75).
TESTERS = ("p-en", "p-lyon", "siren-paris-1", "siren-lyon-1")


def with_testers(daemon, *ids: str) -> None:
    daemon.dispatcher.settings = dataclasses.replace(daemon.dispatcher.settings, test_recipients=ids)


async def reached(daemon) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    await daemon.drain()
    return (sorted(r["to"] for r in await daemon.sms.received()), sorted(r["to"] for r in await daemon.push.received()),
            sorted((s["to"], s["command"]) for s in await daemon.siren.received()))


@pytest.mark.parametrize("status", ["test", "system"])
async def test_a_cells_test_reaches_its_own_test_recipients_not_another_cells(daemon, status):
    with_testers(daemon, *TESTERS)
    await daemon.send(status=status)  # Paris
    assert await reached(daemon) == (["+33622334455"], [], [("siren-paris-1", "test")])


async def test_a_national_test_reaches_every_test_recipient_and_no_one_else(daemon):
    with_testers(daemon, *TESTERS)
    daemon.headers["national"] = helpers.auth_header(await helpers.add_token(daemon.store, model.Role.ISSUER, ["*"]))
    resp = await daemon.post("/v1/alerts", who="national", json=helpers.order(status="test", area={"zones": ["*"]}))
    assert resp.status == 202, await resp.text()
    sms, push, sirens = await reached(daemon)
    # Everyone lives in the area; only the two test recipients hear of it (p-lyon on its app too).
    assert sms == ["+33622334455", "+33644556677"] and push == ["tok-lyon"]
    assert sirens == [("siren-lyon-1", "test"), ("siren-paris-1", "test")]


async def test_a_test_with_no_test_recipient_in_its_area_reaches_no_one(daemon):
    with_testers(daemon, "p-lyon", "siren-lyon-1")
    alert = await daemon.send(status="test")  # Paris
    assert await reached(daemon) == ([], [], [])
    assert (await daemon.status(alert["id"]))["state"] == "completed"


async def test_without_test_recipients_a_test_reaches_no_one(daemon):
    await daemon.send(status="test", area={"zones": ["75"]})
    assert await reached(daemon) == ([], [], [])


def test_a_test_recipient_is_inside_by_zone_or_by_location():
    circle = model.Area((), circles=((48.8566, 2.3522, 5.0),))
    here = model.Recipient("here", "fr", (helpers.LYON,), phone="+33600000001", lat=48.86, lon=2.35)
    away = model.Recipient("away", "fr", (helpers.LYON,), phone="+33600000002", lat=45.76, lon=4.84)
    unplaced = model.Recipient("unplaced", "fr", (helpers.PARIS,), phone="+33600000003")
    assert audience.testers(circle, [here, away, unplaced]) == ["here"]
    assert audience.testers(model.Area(("75",)), [here, away, unplaced]) == ["unplaced"]  # 75056 lies in 75
    sirens = [model.Siren("s-paris", helpers.PARIS), model.Siren("s-lyon", helpers.LYON, lat=48.86, lon=2.35)]
    assert [s.id for s in audience.test_sirens(circle, sirens, ["s-paris", "s-lyon"])] == ["s-lyon"]
    assert [s.id for s in audience.test_sirens(model.Area(("75",)), sirens, ["s-lyon"])] == []
