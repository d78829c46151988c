"""The cell broadcast channel against the fake CBC (osmo-cbc's ECBE API), its pages and message
identifiers, and orders naming channels by kind or by configured name, end to end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from alertd import cbs, channels, demo, errors, model, orders, planner, testing
from alertd.channels import cell_broadcast
from tests import helpers

CMAS_LEVELS = [(s, u, c) for s in ("Extreme", "Severe") for u in ("Immediate", "Expected")
               for c in ("Observed", "Likely")]


def make_channel(fakes_url: str, **config) -> cell_broadcast.CellBroadcast:
    settings = {"base_url": fakes_url + "/cbc", "zones": ["*"]} | config
    return cell_broadcast.CellBroadcast(settings, channels.Context(public_url="http://127.0.0.1", name="cbc"))


@pytest.fixture
async def channel(fakes_url):
    chan = make_channel(fakes_url)
    await chan.start()
    yield chan
    await chan.close()


@pytest.fixture
def fake(fakes_url):
    return testing.FakeControl(fakes_url, "cbc")


@pytest.fixture
def permanent_failure():
    return {"status": 400, "code": "CBCMSG 'category' unknown"}


def broadcast(i: int, body: str = "Mise à l'abri immédiate", command: str = "broadcast", **facts) -> model.Message:
    """The i-th message, on the i-th CMAS identifier (4371 + i): one CBC holds one message per identifier."""
    severity, urgency, certainty = CMAS_LEVELS[i % 8]
    data = {"status": "actual", "event": "Crue", "severity": severity, "urgency": urgency, "certainty": certainty,
            "scope": "local"} | facts
    return model.Message(delivery_id=i, alert_id=f"alert-{i}", kind=model.Kind.CELL_BROADCAST, to="", body=body,
                         locale="fr", command=command, data=data)


class TestCellBroadcastContract(testing.ChannelContract):
    @pytest.fixture
    async def channel(self, fakes_url):
        chan = make_channel(fakes_url, timeout=1)
        await chan.start()
        yield chan
        await chan.close()

    def address(self, i: int) -> str:
        return str(4371 + i % 8)  # the fake CBC keys its records and failure rules on the identifier

    def message(self, i: int, body: str = "Mise à l'abri immédiate") -> model.Message:
        return broadcast(i, body, command="send")


# -- the message identifier ------------------------------------------------------------------------


@pytest.mark.parametrize(("levels", "expected"), [
    (("Extreme", "Immediate", "Observed"), 4371), (("Extreme", "Immediate", "Likely"), 4372),
    (("Extreme", "Expected", "Observed"), 4373), (("Extreme", "Expected", "Likely"), 4374),
    (("Severe", "Immediate", "Observed"), 4375), (("Severe", "Immediate", "Likely"), 4376),
    (("Severe", "Expected", "Observed"), 4377), (("Severe", "Expected", "Likely"), 4378),
    (("Moderate", "Immediate", "Observed"), 4396), (("Severe", "Future", "Observed"), 4396),
    (("Extreme", "Immediate", "Possible"), 4396), (("extreme", "IMMEDIATE", "observed"), 4371),
])
def test_an_actual_alert_goes_out_on_the_cmas_identifier_of_its_levels(levels, expected):
    assert cbs.message_id("actual", "Crue", *levels) == expected


def test_status_national_reach_amber_and_language_pick_their_own_identifiers():
    top = ("Extreme", "Immediate", "Observed")
    assert cbs.message_id("actual", "Séisme", *top, national=True) == 4370  # EU-Alert level 1
    assert cbs.message_id("actual", "Séisme", "Severe", "Immediate", "Observed", national=True) == 4375
    assert cbs.message_id("test", "Test", *top) == cbs.message_id("system", "Test", *top) == 4380
    assert cbs.message_id("exercise", "Séisme", *top, national=True) == 4381  # an exercise is never level 1
    assert cbs.message_id("actual", "Alerte enlèvement", "Severe", "Immediate", "Likely") == 4379
    assert cbs.message_id("actual", "Crue", *top, additional_language=True) == 4384
    assert cbs.message_id("actual", "Séisme", *top, national=True, additional_language=True) == 4383
    assert cbs.message_id("actual", "Crue", "Minor", "Future", "Possible", additional_language=True) == 4397


# -- pages -----------------------------------------------------------------------------------------


def test_a_gsm7_text_fills_93_septets_a_page_and_an_extension_character_counts_two():
    assert len(cbs.paginate("a" * 93).pages) == 1
    assert len(cbs.paginate("a" * 94).pages) == 2
    assert len(cbs.paginate("a" * 92 + "€").pages) == 2  # 94 septets: the escape and its code stay together
    fitted = cbs.paginate("a" * 91 + "€")
    assert fitted.encoding == "GSM-7" and len(fitted.pages) == 1 and fitted.characters == 93
    assert all(len(page) == cbs.PAGE_OCTETS for page in fitted.pages)
    assert cbs.text_of(fitted.dcs, list(fitted.pages)) == "a" * 91 + "€"


def test_a_text_outside_gsm7_goes_as_ucs2_41_characters_a_page():
    text = "تمرين " * 14  # 84 characters
    pages = cbs.paginate(text)
    assert pages.encoding == "UCS-2" and pages.dcs == cbs.UCS2_DCS and len(pages.pages) == 3
    assert cbs.text_of(pages.dcs, list(pages.pages)) == text  # the padding (carriage returns) removed
    assert len(cbs.paginate("ج" * 41).pages) == 1
    assert len(cbs.paginate("ج" * 40 + "😀").pages) == 2  # a surrogate pair never straddles two pages


def test_the_language_is_said_in_the_gsm7_coding_scheme():
    assert cbs.paginate("Alerte", "fr").dcs == 0x03
    assert cbs.paginate("Alert", "en").dcs == 0x01
    assert cbs.paginate("Alerta", "eu").dcs == cbs.GSM7_UNSPECIFIED_DCS


def test_more_than_15_pages_is_refused():
    assert len(cbs.paginate("a" * 93 * 15).pages) == 15
    with pytest.raises(errors.MessageTooLong) as caught:
        cbs.paginate("a" * (93 * 15 + 1))
    assert caught.value.pages == 16 and caught.value.limit == 15
    with pytest.raises(errors.MessageTooLong):
        cbs.paginate("é" * (93 * 15 - 1) + "€")  # 1394 characters, but the € takes two septets
    with pytest.raises(errors.MessageTooLong):
        cbs.paginate("ж" * (41 * 15 + 1))


# -- the channel against the fake CBC ------------------------------------------------------------


class TestCellBroadcast:
    @pytest.fixture(autouse=True)
    async def _reset(self, fake):
        await fake.reset()

    def test_registered_as_the_cbc_entry_point_with_its_kind_and_address(self):
        cls = channels.load("cbc")
        assert cls is cell_broadcast.CellBroadcast
        assert cls.kind == "cell_broadcast" and cls.address is model.Address.AREA

    async def test_the_create_follows_the_ecbe_shapes(self, channel, fake):
        text = "ALERTE Crue : montez dans les étages. " * 4
        await channel.send(broadcast(4, text, expires=(model.utcnow() + dt.timedelta(hours=1)).isoformat()))
        [got] = await fake.received()
        body = got["body_json"]
        assert body["cbe_name"] == "alertd" and body["category"] == "high_priority"
        assert body["scope"] == {"scope_plmn": {}} and body["repetition_period"] == 32
        assert body["num_of_bcast"] == 60  # an hour at about a minute apart: it stops when the alert expires
        msg = body["smscb_message"]
        assert msg["message_id"] == 4375  # Severe, Immediate, Observed
        serial = msg["serial_nr"]["serial_nr_decoded"]
        assert serial["geo_scope"] == "plmn_wide" and 0 <= serial["msg_code"] < 1024 and serial["update_nr"] == 0
        encoded = msg["payload"]["payload_encoded"]
        assert encoded["dcs"] == 0x03 and len(encoded["pages"]) == 2 == got["pages"]
        assert got["body"] == text

    async def test_without_expiry_it_repeats_until_deleted(self, channel, fake):
        await channel.send(broadcast(0))
        [got] = await fake.received()
        assert got["body_json"]["num_of_bcast"] == 0

    async def test_cancel_deletes_the_message_of_its_identifier(self, channel, fake, fakes_url):
        await channel.send(broadcast(1))
        receipt = await channel.send(broadcast(1, command="cancel"))
        assert receipt.provider_id.startswith("4372/")
        assert await fake._call("GET", "/_fake/cbc/deleted") == [4372]
        assert await fake._call("GET", "/_fake/cbc/active") == []
        assert await channel.send(broadcast(1, command="cancel"))  # already gone (404): nothing left to stop

    async def test_a_taken_identifier_is_transient_until_deleted(self, channel, fake):
        await channel.send(broadcast(2))
        with pytest.raises(errors.Transient) as caught:
            await channel.send(dataclasses.replace(broadcast(2), alert_id="another"))
        assert caught.value.code == "http_409"

    async def test_a_wrong_url_is_a_misconfigured_channel(self, fakes_url):
        chan = make_channel(fakes_url, base_url=fakes_url + "/nothing-here")
        await chan.start()
        try:
            with pytest.raises(errors.ChannelMisconfigured):
                await chan.send(broadcast(0))
        finally:
            await chan.close()

    async def test_a_text_over_15_pages_is_permanent(self, channel, fake):
        with pytest.raises(errors.Permanent):
            await channel.send(broadcast(0, "a" * 93 * 16))
        assert await fake.received() == []

    @pytest.mark.parametrize(("config", "problem"), [
        ({"zones": []}, "zones"), ({"zones": ["Paris"]}, "zones"), ({"category": "urgent"}, "category"),
        ({"repetition_period": 0}, "repetition_period"), ({"base_url": ""}, "base_url"),
    ])
    def test_bad_settings_are_named(self, fakes_url, config, problem):
        with pytest.raises(errors.ConfigError) as caught:
            make_channel(fakes_url, **config)
        assert any(problem in p for p in caught.value.problems)


# -- orders naming channels ------------------------------------------------------------------------

KINDS = {"sms": model.Kind.SMS, "push": model.Kind.PUSH, "cbc": "cell_broadcast", "cbc-paris": "cell_broadcast",
         "voice": "voice"}


def to_alert(channel_names: list[str]) -> model.Alert:
    order = orders.parse(json.dumps(helpers.order(channels=channel_names)).encode(), helpers.START)
    return orders.to_alert(order, alert_id="a1", cell="c", token_id="t", now=helpers.START, kinds=KINDS)


def test_an_order_names_channels_by_kind_or_by_configured_name():
    alert = to_alert(["sms", "cell_broadcast", "voice"])
    assert alert.channels == ("sms", "cell_broadcast", "voice") and alert.channels[0] is model.Kind.SMS
    assert planner.routes(alert, KINDS) == {"sms": "sms", "cell_broadcast": "cbc", "voice": "voice"}
    named = to_alert(["sms", "cbc-paris"])
    assert named.channels == ("sms", "cell_broadcast") and named.via == ("cbc-paris",)  # "sms" is the kind
    assert planner.routes(named, KINDS) == {"sms": "sms", "cell_broadcast": "cbc-paris"}
    assert model.Alert.from_json(named.to_json()).via == ("cbc-paris",)  # as the store keeps it


@pytest.mark.parametrize(("names", "field", "words"), [
    (["sms", "fax"], "channels.1", "no channel 'fax' is configured"),
    (["cbc", "cbc-paris"], "channels.1", "a second channel of kind cell_broadcast"),
    (["cell_broadcast", "cbc-paris"], "channels.1", "a second channel of kind cell_broadcast"),
])
def test_an_unknown_or_doubled_channel_is_refused_naming_the_field(names, field, words):
    with pytest.raises(errors.Invalid) as caught:
        to_alert(names)
    assert caught.value.field == field and words in caught.value.errors[0]["message"]


def test_a_broadcast_goes_only_where_the_area_covers_all_it_reaches():
    alert = to_alert(["cell_broadcast"])  # Paris (75056)
    route = planner.routes(alert, KINDS)
    planner.check_broadcasts(alert, route, {"cbc": ("75056",)})
    assert [d.command for d in planner.fixed(alert, route, [], [], {"cbc": ("75056",)})] == ["broadcast"]
    with pytest.raises(errors.Invalid) as caught:
        planner.check_broadcasts(alert, route, {"cbc": ("75",)})  # the whole département: beyond Paris
    assert caught.value.field == "channels"
    assert planner.fixed(alert, route, [], [], {"cbc": ("*",)}) == []  # the last gate, should one slip through
    national = dataclasses.replace(alert, area=model.Area(("*",)))
    planner.check_broadcasts(national, route, {"cbc": ("*",)})


# -- end to end through the daemon -----------------------------------------------------------------


@pytest.fixture
def extra_settings(fakes_url) -> str:
    paris = demo.CBC_CHANNEL.format(name="cbc", fakes=fakes_url, zones='["75056"]')
    named = demo.CBC_CHANNEL.format(name="cbc-paris", fakes=fakes_url, zones='["75056"]') + 'cbe_name = "paris"\n'
    wide = demo.CBC_CHANNEL.format(name="cbc-national", fakes=fakes_url, zones='["*"]')
    return paris + named + wide


async def _broadcast_of(daemon, alert_id: str) -> dict:
    page = await (await daemon.get(f"/v1/alerts/{alert_id}/deliveries?channel=cbc")).json()
    named = await (await daemon.get(f"/v1/alerts/{alert_id}/deliveries?channel=cbc-paris")).json()
    [delivery] = page["deliveries"] + named["deliveries"]
    return delivery


@pytest.mark.parametrize(("named", "channel", "cbe_name"), [("cell_broadcast", "cbc", "alertd"),
                                                            ("cbc-paris", "cbc-paris", "paris")])
async def test_an_order_reaches_the_cbc_and_its_cancel_deletes_the_message(daemon, named, channel, cbe_name):
    cbc = testing.FakeControl(daemon.fakes_url, "cbc")
    await cbc.reset()
    alert = await daemon.send(channels=["sms", named], template="evacuate")
    await daemon.drain()
    [got] = await cbc.received()
    assert got["message_id"] == 4375 and got["body_json"]["cbe_name"] == cbe_name  # Severe, Immediate, Observed
    messages = (await (await daemon.get(f"/v1/alerts/{alert['id']}/messages")).json())["messages"]
    [fr] = [m for m in messages if m["channel"] == "cell_broadcast" and m["locale"] == "fr"]
    assert got["body"] == fr["body"] and got["pages"] == len(cbs.paginate(fr["body"]).pages)
    delivery = await _broadcast_of(daemon, alert["id"])
    assert delivery["channel"] == channel and delivery["state"] == "sent" and delivery["command"] == "broadcast"
    assert len(await daemon.sms.received()) == 3  # the SMS went to the Paris phones as ever

    resp = await daemon.post(f"/v1/alerts/{alert['id']}/cancel")
    assert resp.status == 200, await resp.text()
    await daemon.drain()
    assert await cbc._call("GET", "/_fake/cbc/deleted") == [4375]
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries")).json()
    assert [(d["channel"], d["state"]) for d in page["deliveries"] if d["command"] == "cancel"] == [(channel, "sent")]


async def test_an_update_withdraws_the_earlier_broadcast_before_its_own(daemon):
    cbc = testing.FakeControl(daemon.fakes_url, "cbc")
    await cbc.reset()
    first = await daemon.status((await daemon.send(channels=["cell_broadcast"], template="evacuate"))["id"])
    await daemon.drain()
    refs = [{"sender": first["sender"], "identifier": first["identifier"], "sent": first["sent"]}]
    update = await daemon.send(msg_type="update", references=refs, template="shelter_in_place",
                               channels=["cell_broadcast"])
    await daemon.drain()
    assert await cbc._call("GET", "/_fake/cbc/deleted") == [4375]
    assert await cbc._call("GET", "/_fake/cbc/active") == [4375]
    bodies = [r["body"] for r in await cbc.received()]
    assert len(bodies) == 2 and bodies[0] != bodies[1]  # the update's own text broadcasts now
    assert (await _broadcast_of(daemon, update["id"]))["state"] == "sent"
    assert (await daemon.status(first["id"]))["state"] == "updated"


@pytest.mark.parametrize(("names", "field"), [(["sms", "cbc-national"], "channels"), (["sms", "telex"], "channels.1")])
async def test_a_broadcast_beyond_the_area_or_an_unknown_channel_is_a_422_naming_the_field(daemon, names, field):
    cbc = testing.FakeControl(daemon.fakes_url, "cbc")
    await cbc.reset()
    resp = await daemon.post("/v1/alerts", json=helpers.order(channels=names))
    assert resp.status == 422
    problem = await resp.json()
    assert problem["field"] == field
    await daemon.drain()
    assert await cbc.received() == [] and await daemon.sms.received() == []


async def test_a_plugin_kind_that_needs_a_phone_gets_a_delivery_per_subscriber_with_one(daemon):
    alert = dataclasses.replace(helpers.alert("a-voice"), channels=("voice",))
    await daemon.store.create_alert(alert, "voice")
    await planner.plan(daemon.store, alert, {"voice": "voice-line"}, chunk=100, clock=daemon.clock,
                       addresses={"voice": model.Address.PHONE})
    planned = await daemon.store.deliveries(alert.id)
    assert sorted(d.target for d in planned) == ["p-ar", "p-en", "p-fr"]  # Paris subscribers with a phone
    assert {(d.kind, d.channel) for d in planned} == {("voice", "voice-line")}


@pytest.mark.parametrize(("parameters", "kinds"), [
    ("", ["sms", "push", "siren"]),  # every configured kind but the broadcast: one reaches everyone
    ("<parameter><valueName>channels</valueName><value>sms cell_broadcast</value></parameter>",
     ["sms", "cell_broadcast"]),
])
async def test_a_cap_document_goes_by_cell_broadcast_only_when_it_names_it(daemon, parameters, kinds):
    from tests import test_cap_api

    cbc = testing.FakeControl(daemon.fakes_url, "cbc")
    await cbc.reset()
    body = test_cap_api.document(infos=test_cap_api.info("fr-FR", "Crue", "Montez", parameters=parameters))
    resp = await test_cap_api.post_cap(daemon, body)
    assert resp.status == 202, await resp.text()
    alert = await daemon.status((await resp.json())["id"])
    assert alert["channels"] == kinds
    await daemon.drain()
    assert len(await cbc.received()) == (1 if "cell_broadcast" in kinds else 0)


async def test_a_broadcast_that_never_went_out_is_not_withdrawn(daemon):
    """The CBC deletes by identifier alone: a DELETE for a broadcast that failed (say, another alert
    held the identifier) would withdraw someone else's alert."""
    cbc = testing.FakeControl(daemon.fakes_url, "cbc")
    await cbc.reset()
    await cbc.fail(status=400, code="CBCMSG 'category' unknown", to="4375", times=1)
    alert = await daemon.send(channels=["cell_broadcast"], template="evacuate")
    await daemon.drain()
    assert (await _broadcast_of(daemon, alert["id"]))["state"] == "failed"
    other = await daemon.send(channels=["cell_broadcast"], template="evacuate", area={"zones": ["75056"]})
    await daemon.drain()
    assert await cbc._call("GET", "/_fake/cbc/active") == [4375]  # the other alert's broadcast
    resp = await daemon.post(f"/v1/alerts/{alert['id']}/cancel")
    assert resp.status == 200, await resp.text()
    await daemon.drain()
    assert await cbc._call("GET", "/_fake/cbc/deleted") == []
    assert await cbc._call("GET", "/_fake/cbc/active") == [4375]
    page = await (await daemon.get(f"/v1/alerts/{alert['id']}/deliveries")).json()
    [withdrawal] = [d for d in page["deliveries"] if d["command"] == "cancel"]
    assert withdrawal["state"] == "cancelled" and "nothing to withdraw" in withdrawal["last_error"]
    assert (await _broadcast_of(daemon, other["id"]))["state"] == "sent"
