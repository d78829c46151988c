"""Failover between two SMS providers (two Twilio channels on the fake, as two accounts), on both stores."""

from __future__ import annotations

import dataclasses

import pytest
import structlog

from alertd import config, demo, errors, health, model
from tests import helpers, test_metrics

BACKUP_SID = "AC" + "b" * 32
MAIN_FROM, BACKUP_FROM = "+33700000000", "+33700000099"  # the demo channel's, and the backup's
MORE = [{"id": f"p-more-{i}", "phone": f"+336990000{i:02d}", "locale": "fr", "zones": [helpers.PARIS]}
        for i in range(20)]
RULES = health.Rules(failures=3, after=0.0, cooldown=60.0)


@pytest.fixture
def extra_settings(fakes_url) -> str:
    # After [channels.sms] in the configuration: the second choice for SMS.
    return (f'[channels.sms-backup]\nplugin = "twilio"\nbase_url = "{fakes_url}"\naccount_sid = "{BACKUP_SID}"\n'
            f'auth_token = "{demo.AUTH_TOKEN}"\nfrom = "{BACKUP_FROM}"\nstatus_callback = false\n')


@pytest.fixture
async def two(daemon):
    assert (await daemon.post("/v1/subscribers", who="admin", json=MORE)).status == 200
    daemon.dispatcher.settings = dataclasses.replace(daemon.dispatcher.settings, failover=RULES)
    return daemon


async def sms_deliveries(daemon, alert_id: str) -> list[dict]:
    page = await (await daemon.get(f"/v1/alerts/{alert_id}/deliveries?limit=100")).json()
    return [d for d in page["deliveries"] if d["kind"] == "sms"]


async def send_sms(daemon) -> tuple[str, list[dict]]:
    alert_id = (await daemon.send(channels=["sms"]))["id"]
    await daemon.drain()
    return alert_id, await sms_deliveries(daemon, alert_id)


async def test_a_failing_provider_hands_its_deliveries_to_the_other_and_gets_them_back_when_it_recovers(two):
    await two.sms.fail(status=500, times=None, account=demo.ACCOUNT_SID)  # the first choice answers 500
    with structlog.testing.capture_logs() as logs:
        _, deliveries = await send_sms(two)
    phones = {r["to"] for r in await two.sms.received()}
    assert len(deliveries) == len(phones) == 23  # every subscriber in Paris with a phone, each once
    assert [r["from"] for r in await two.sms.received()] == [BACKUP_FROM] * 23
    assert {(d["channel"], d["state"]) for d in deliveries} == {("sms-backup", "sent")}
    assert all(d["last_error"].startswith("moved from sms to sms-backup: sms is failing (Twilio 500")
               for d in deliveries)  # the delivery's history says where it went and why
    figures = test_metrics.parse(await (await two.client.get("/metrics")).text())
    assert test_metrics.series(figures, "alertd_failovers_total", **{"from": "sms", "to": "sms-backup"}) == 23
    moves = [e for e in logs if e["event"] == "channel failing: deliveries moved"]
    assert sum(e["deliveries"] for e in moves) == 23 and moves[0]["to"] == "sms-backup"
    assert not any(phone[-6:] in repr(logs) for phone in phones)  # no phone number in the log

    # Still failing, within its cool-down: a new alert goes straight to the backup, nothing moved.
    await two.sms.reset()
    await two.sms._call("POST", "/_fake/twilio/callbacks", {"enabled": False})
    _, meanwhile = await send_sms(two)
    assert {(d["channel"], d["state"], d["last_error"]) for d in meanwhile} == {("sms-backup", "sent", None)}

    # Recovered: after the cool-down the first choice is tried again, and carries the next alert.
    two.clock.advance(RULES.cooldown)
    await two.sms.reset()
    await two.sms._call("POST", "/_fake/twilio/callbacks", {"enabled": False})
    _, back = await send_sms(two)
    assert {(d["channel"], d["state"]) for d in back} == {("sms", "sent")}
    assert {r["from"] for r in await two.sms.received()} == {MAIN_FROM}
    figures = test_metrics.parse(await (await two.client.get("/metrics")).text())
    assert test_metrics.series(figures, "alertd_failovers_total", **{"from": "sms", "to": "sms-backup"}) == 23


async def test_a_probe_that_fails_sends_the_alert_to_the_backup_again(two):
    await two.sms.fail(status=500, times=None, account=demo.ACCOUNT_SID)
    await send_sms(two)
    two.clock.advance(RULES.cooldown)  # the probe is due, but the provider still fails
    _, deliveries = await send_sms(two)
    assert {(d["channel"], d["state"]) for d in deliveries} == {("sms-backup", "sent")}
    assert len({r["to"] for r in await two.sms.received()}) == 23  # each phone of the second alert, once more


async def test_when_both_fail_the_deliveries_move_once_and_wait_for_their_retries(two):
    await two.sms.fail(status=500, times=None)  # both accounts fail
    alert_id = (await two.send(channels=["sms"]))["id"]
    await two.dispatcher.planned()
    for _ in range(3):  # what is due now only: the retries wait, within the first channel's cool-down
        await two.dispatcher.run_until_idle()
    deliveries = await sms_deliveries(two, alert_id)
    assert {(d["channel"], d["state"]) for d in deliveries} == {("sms-backup", "pending")}  # none lost, none sent
    figures = test_metrics.parse(await (await two.client.get("/metrics")).text())
    assert test_metrics.series(figures, "alertd_failovers_total", **{"from": "sms", "to": "sms-backup"}) == 23
    assert ("alertd_failovers_total", (("from", "sms-backup"), ("to", "sms"))) not in figures  # no ping-pong


def test_the_failover_rules_are_read_from_the_dispatcher_section(tmp_path, fakes_url):
    lines = "failover_failures = 4\nfailover_after = 20\nfailover_cooldown = 120\nfailover_slow = 8"
    cfg = helpers.load_config(tmp_path, fakes_url, demo.free_port(), dispatcher=lines)
    d = cfg.dispatcher
    assert (d.failover_failures, d.failover_after, d.failover_cooldown, d.failover_slow) == (4, 20, 120, 8)


def test_bad_failover_rules_and_senders_are_named_in_the_configuration_check(tmp_path):
    path = tmp_path / "alertd.toml"
    path.write_text('[dispatcher]\nfailover_failures = 0\n[channels.sms]\nplugin = "twilio"\naccount_sid = "AC1"\n'
                    'auth_token = "t"\nsenders = ["+33700000001", {from = "ALERTE", rate = -1}, 5]\n')
    assert config.check(str(path), env={}) == [
        "dispatcher.failover_failures: must be positive, got 0",
        "channels.sms.senders.1.rate: must be positive, got -1",
        "channels.sms.senders.2: expected a table, got 5",
    ]


def test_a_channel_is_failing_only_after_enough_failures_over_long_enough():
    rules = health.Rules(failures=3, after=30.0, cooldown=60.0)
    failure = errors.Transient("Twilio 500: HTTP 500 from Twilio", code="500")
    h = health.Health()
    for now in (0.0, 10.0, 20.0, 29.0):  # four in a row, but not yet for 30 s
        h = health.note(h, failure, 0.1, now, rules)
    assert h.failing_since is None and health.usable(h, 29.0, rules)
    h = health.note(h, failure, 0.1, 30.0, rules)
    assert h.failing_since == 30.0 and not health.usable(h, 89.0, rules) and health.usable(h, 90.0, rules)
    assert health.note(h, model.Receipt("SM1"), 0.1, 90.0, rules) == health.Health()  # the probe succeeded
    slow = health.Rules(failures=1, after=0.0, slow=5.0)
    assert health.note(health.Health(), model.Receipt("SM1"), 6.0, 0.0, slow).failing_since == 0.0


def test_the_first_usable_channel_of_a_kind_is_preferred_and_takes_over():
    kinds = {"sms": "sms", "push": "push", "sms-backup": "sms"}
    assert health.preferred(kinds, {"sms": False}) == {"push": "push", "sms-backup": "sms", "sms": "sms"}
    assert health.fallback("sms", kinds, {"sms": False}) == "sms-backup"
    assert health.fallback("sms", kinds, {"sms": False, "sms-backup": False}) is None
    assert health.fallback("sms", kinds, {}) is None  # healthy: nothing moves

