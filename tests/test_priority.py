"""The most urgent goes first: sirens, then CAP urgency × severity, national before local, an
update or a cancel before what it replaces; a new urgent alert overtakes a fan-out under way."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from alertd import (
    dispatcher as dispatcher_mod,
    fair,
    metrics as metrics_mod,
    model,
    planner,
    priority,
    store as store_mod,
    zones,
)
from alertd.store import sql
from tests import helpers, test_channel_twilio

LYON_CROWD = 120  # the older, less urgent fan-out


def alert(alert_id: str, *kinds: model.Kind, urgency: str = "Immediate", severity: str = "Extreme",
          zones: tuple[str, ...] = (helpers.PARIS,), **kw) -> model.Alert:
    return dataclasses.replace(
        helpers.alert(alert_id, *(kinds or (model.Kind.SMS,))), urgency=urgency, severity=severity,
        area=model.Area(zones), **kw,
    )


def update_of(earlier: model.Alert, alert_id: str, msg_type=model.MsgType.UPDATE, **kw) -> model.Alert:
    ref = model.Reference(earlier.sender, earlier.identifier, earlier.sent, earlier.id)
    return alert(alert_id, *earlier.channels, msg_type=msg_type, references=(ref,), zones=earlier.area.zones, **kw)


async def add_lyon_crowd(store, n: int = LYON_CROWD) -> list[str]:
    people = [model.Recipient(f"ly-{i:04d}", "fr", (helpers.LYON,), phone=f"+3361000{i:04d}") for i in range(n)]
    await store.upsert_recipients(people)
    return [p.phone for p in people] + ["+33644556677"]  # and p-lyon, of `helpers.PEOPLE`


async def plan(daemon, a: model.Alert) -> None:
    await daemon.store.create_alert(a, a.id)
    daemon.dispatcher.submit(a)
    await daemon.dispatcher.planned()


async def claim_order(daemon, channel: str = "sms", limit: int = 1000) -> list[str]:
    claimed = await daemon.store.claim(channel, "t", daemon.clock(), limit, daemon.dispatcher.settings.lease)
    return [d.alert_id for d in claimed]


# -- the rank, a plain function --------------------------------------------------------------------


def test_sirens_rank_first_then_urgency_and_severity():
    extreme, minor = alert("x"), alert("m", urgency="Future", severity="Minor")
    assert priority.rank(minor, model.Kind.SIREN) == priority.SIREN < priority.rank(extreme, model.Kind.SMS)
    assert priority.rank(extreme, model.Kind.SMS) == priority.rank(extreme, model.Kind.PUSH)
    order = [("Immediate", "Extreme"), ("Immediate", "Severe"), ("Expected", "Severe"), ("Future", "Moderate"),
             ("Unknown", "Unknown"), ("Past", "Minor"), ("Nonsense", "Nonsense")]
    ranks = [priority.rank(alert("a", urgency=u, severity=s), model.Kind.SMS) for u, s in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert priority.rank(alert("a", urgency="immediate", severity="EXTREME"), model.Kind.SMS) == ranks[0]


def test_national_before_local_at_equal_urgency_and_severity_only():
    national = alert("n", zones=(zones.NATIONAL,), urgency="Expected", severity="Severe")
    local = alert("l", urgency="Expected", severity="Severe")
    assert priority.rank(national, model.Kind.SMS) < priority.rank(local, model.Kind.SMS)
    assert priority.rank(alert("x"), model.Kind.SMS) < priority.rank(national, model.Kind.SMS)


def test_an_update_or_cancel_ranks_just_before_what_it_replaces_even_when_it_says_less():
    earlier = alert("e", urgency="Expected", severity="Severe")
    downgrade = update_of(earlier, "u", urgency="Future", severity="Minor")
    cancel = update_of(earlier, "c", msg_type=model.MsgType.CANCEL, urgency="Past", severity="Minor")
    for later in (downgrade, cancel):
        assert (priority.rank(later, model.Kind.SMS, [earlier])
                == priority.rank(earlier, model.Kind.SMS) - priority.LEVELS)
    # An update ranks by its own standing when that is higher.
    upgrade = update_of(earlier, "u2")
    assert priority.rank(upgrade, model.Kind.SMS, [earlier]) < priority.rank(alert("x"), model.Kind.SMS)


def test_the_default_for_deliveries_planned_before_priorities_is_an_unknown_local_alert():
    assert priority.rank(alert("a", urgency="Unknown", severity="Unknown"), model.Kind.SMS) == priority.DEFAULT


def test_a_cells_nth_alert_in_a_minute_ranks_below_another_cells_first_at_the_same_urgency():
    extreme = alert("x")
    for kind in (model.Kind.SIREN, model.Kind.SMS):
        assert priority.rank(extreme, kind, nth=1) < priority.rank(extreme, kind, nth=2)
    # A few alerts stay ahead of a flood: a cell's 20th before another's 32nd, and each doubling is a step.
    assert [priority.share(n) for n in (1, 2, 3, 4, 7, 8, 20, 32, 2000)] == [0, 1, 1, 2, 2, 3, 4, 5, 10]
    assert priority.share(10**9) == priority.LEVELS - 1 and priority.share(0) == 0


def test_the_share_never_reorders_sirens_urgency_national_or_updates():
    flood, first = 10**6, 1
    minor = alert("m", urgency="Future", severity="Minor")
    # A flooding cell's siren command still goes before anyone's SMS, its Extreme before a Severe.
    assert priority.rank(minor, model.Kind.SIREN, nth=flood) < priority.rank(alert("x"), model.Kind.SMS, nth=first)
    assert priority.rank(alert("x"), model.Kind.SMS, nth=flood) < priority.rank(
        alert("s", severity="Severe"), model.Kind.SMS, nth=first)
    national = alert("n", zones=(zones.NATIONAL,), urgency="Expected", severity="Severe")
    local = alert("l", urgency="Expected", severity="Severe")
    assert priority.rank(national, model.Kind.SMS, nth=flood) < priority.rank(local, model.Kind.SMS, nth=first)
    earlier = alert("e", urgency="Expected", severity="Severe")
    update = update_of(earlier, "u", urgency="Future", severity="Minor")
    assert priority.rank(update, model.Kind.SMS, [earlier], nth=flood) < priority.rank(earlier, model.Kind.SMS)
    assert priority.shared(priority.ranks(earlier), 4) == {k: priority.rank(earlier, k, nth=4) for k in model.Kind}


def test_a_planning_waits_in_the_stores_line_as_its_most_urgent_deliveries():
    with_sirens = alert("S", model.Kind.SMS, model.Kind.SIREN, urgency="Future", severity="Minor")
    extreme = alert("E", model.Kind.SMS, model.Kind.PUSH)
    minor = alert("M", model.Kind.SMS, urgency="Future", severity="Minor")
    assert priority.foremost(with_sirens) == priority.rank(with_sirens, model.Kind.SIREN)
    assert priority.foremost(extreme) == priority.rank(extreme, model.Kind.PUSH)
    assert priority.foremost(with_sirens) < priority.foremost(extreme) < priority.foremost(minor)
    assert priority.foremost(minor, nth=5) > priority.foremost(minor)
    assert priority.foremost(with_sirens) > store_mod.REQUEST  # a request's store calls go before any of them


def test_recent_counts_a_cells_alerts_within_the_window_and_forgets_idle_cells():
    recent = fair.Recent(window=60)
    assert [recent.note("a", t) for t in (0, 1, 2)] == [1, 2, 3]
    assert recent.note("b", 2) == 1  # another cell counts on its own
    assert recent.note("a", 61) == 2  # the alerts of 0 and 1 s left the window
    recent.note("c", 200)  # a minute on: the idle cells are forgotten
    assert len(recent) == 1 and recent.count("a", 200) == 0


async def test_the_gate_lets_the_lowest_key_in_first_and_skips_who_gave_up():
    gate, order, release = fair.Gate(1), [], asyncio.Event()

    async def planning(name: str, key: tuple[int, ...]) -> None:
        async with gate.turn(key):
            order.append(name)
            if name == "first":
                await release.wait()  # holds the turn while the others queue

    first = asyncio.create_task(planning("first", (1, 9)))
    waiting = [asyncio.create_task(planning(n, k)) for n, k in (("flood", (1, 9)), ("other", (1, 0)),
                                                                 ("gone", (0, 0)), ("cancel", (0, 5)))]
    await asyncio.sleep(0)
    waiting[2].cancel()
    release.set()
    await asyncio.gather(first, *waiting, return_exceptions=True)
    assert order == ["first", "cancel", "other", "flood"]
    assert gate.held == 0


# -- claims, on both stores --------------------------------------------------------------------------


async def test_a_new_extreme_alert_is_claimed_before_the_rest_of_an_older_fan_out(daemon):
    await add_lyon_crowd(daemon.store)
    await plan(daemon, alert("old", urgency="Future", severity="Minor", zones=(helpers.LYON,)))
    started = await claim_order(daemon, limit=20)  # the older fan-out is under way
    assert started == ["old"] * 20
    await plan(daemon, alert("urgent"))
    order = await claim_order(daemon)
    assert order[:3] == ["urgent"] * 3  # its 3 Paris phones
    assert order[3:] == ["old"] * (LYON_CROWD + 1 - 20)


async def test_sirens_are_planned_first(daemon):
    await plan(daemon, alert("a", model.Kind.SMS, model.Kind.SIREN, urgency="Future", severity="Minor"))
    [siren] = await daemon.store.deliveries("a", channel="siren")
    sms = await daemon.store.deliveries("a", channel="sms")
    assert siren.priority == priority.SIREN < min(d.priority for d in sms)


async def test_national_before_local_at_equal_rank(daemon):
    await plan(daemon, alert("local", urgency="Expected", severity="Severe"))
    await plan(daemon, alert("national", urgency="Expected", severity="Severe", zones=(zones.NATIONAL,)))
    order = await claim_order(daemon)
    assert order == ["national"] * order.count("national") + ["local"] * 3
    assert order.count("national") == 4  # every phone in the country


async def test_an_update_goes_before_alerts_of_the_rank_it_replaces(daemon):
    await add_lyon_crowd(daemon.store, 10)
    earlier = alert("earlier", urgency="Expected", severity="Severe")
    await plan(daemon, earlier)
    await plan(daemon, alert("other", urgency="Expected", severity="Severe", zones=(helpers.LYON,)))
    claimed = await daemon.store.claim("sms", "t", daemon.clock(), 3, daemon.dispatcher.settings.lease)
    await daemon.store.record([model.Outcome(d.id, model.State.SENT, provider_id=f"pid-{d.id}")
                               for d in claimed if d.alert_id == "earlier"], daemon.clock())
    await plan(daemon, update_of(earlier, "update", urgency="Future", severity="Minor"))
    assert await claim_order(daemon) == ["update"] * 3 + ["other"] * 11


async def test_a_cancel_goes_before_alerts_of_the_rank_it_stops(daemon):
    await add_lyon_crowd(daemon.store, 10)
    earlier = alert("earlier", urgency="Expected", severity="Severe")
    await plan(daemon, earlier)
    sent = await daemon.store.claim("sms", "t", daemon.clock(), 3, daemon.dispatcher.settings.lease)
    await daemon.store.record([model.Outcome(d.id, model.State.SENT, provider_id=f"p{d.id}") for d in sent],
                              daemon.clock())
    await plan(daemon, alert("other", urgency="Expected", severity="Severe", zones=(helpers.LYON,)))
    await plan(daemon, update_of(earlier, "cancel", msg_type=model.MsgType.CANCEL, urgency="Past", severity="Minor"))
    assert await claim_order(daemon) == ["cancel"] * 3 + ["other"] * 11


async def test_another_cells_first_alert_is_claimed_before_the_rest_of_a_cells_flood(daemon):
    for i in range(6):
        await plan(daemon, alert(f"flood-{i}", model.Kind.SMS, model.Kind.SIREN, cell="cell-a"))
    await plan(daemon, alert("other", model.Kind.SMS, model.Kind.SIREN, cell="cell-b"))
    sirens = await claim_order(daemon, "siren")
    assert sirens == ["flood-0", "other"] + [f"flood-{i}" for i in range(1, 6)] * 1  # one Paris siren each
    sms = await claim_order(daemon)
    assert (sms[:6] == ["flood-0"] * 3 + ["other"] * 3
            and sms[6:] == [f"flood-{i}" for i in range(1, 6) for _ in range(3)])


async def test_the_siren_commands_are_claimable_before_the_people_are_planned(daemon):
    # The siren lane is woken as soon as they are written, while the first thousand people are planned.
    a = alert("urgent", model.Kind.SMS, model.Kind.SIREN)
    await daemon.store.create_alert(a, a.id)

    def woken() -> None:
        raise Woken  # the planning stops here: what it has written is what the lanes are woken for

    with pytest.raises(Woken):
        await planner.plan(daemon.store, a, {model.Kind.SMS: "sms", model.Kind.SIREN: "siren"}, chunk=1000,
                           clock=daemon.clock, on_chunk=woken)
    counts = await daemon.store.counts(a.id)
    assert counts.get("siren", {}).get("pending") == 1 and "sms" not in counts, counts


class Woken(Exception):
    pass


# -- sent, through a lane ----------------------------------------------------------------------------


class Overtake(metrics_mod.Observer):
    """After the older fan-out's `after`-th send, a new urgent alert is issued."""

    def __init__(self, daemon, after: int) -> None:
        self.daemon, self.after, self.count = daemon, after, 0
        self.issued: asyncio.Task | None = None
        self.planned_at = 0  # sends that came back before the urgent alert's planning did

    def sent(self, *_) -> None:
        self.count += 1
        if self.count == self.after:
            self.issued = asyncio.create_task(plan(self.daemon, alert("urgent")))
            self.issued.add_done_callback(lambda _: setattr(self, "planned_at", self.count))


async def fan_out_overtaken(daemon, concurrency: int, after: int) -> tuple[list[str], Overtake]:
    """Drain an SMS lane of `concurrency` calls at a time, planning the urgent alert after its
    `after`-th send; the addresses in the order the fake received them."""
    sms = test_channel_twilio.make_channel(daemon.fakes_url, max_concurrency=concurrency)
    lane = dispatcher_mod.Dispatcher(daemon.store, {"sms": sms}, daemon.dispatcher.renderer, clock=daemon.clock)
    daemon.dispatcher = lane
    lane.metrics = overtake = Overtake(daemon, after=after)
    await sms.start()
    try:
        await asyncio.wait_for(lane.run_until_idle(daemon.clock.advance_to), 60)
        await overtake.issued
        await asyncio.wait_for(lane.run_until_idle(daemon.clock.advance_to), 60)
    finally:
        await sms.close()
    return [r["to"] for r in await daemon.sms.received()], overtake


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_new_urgent_alert_overtakes_a_fan_out_under_way_which_then_completes(daemon, concurrency):
    lyon = await add_lyon_crowd(daemon.store)
    await plan(daemon, alert("old", urgency="Future", severity="Minor", zones=(helpers.LYON,)))
    # One call at a time, the order the fake receives them is the order they were sent; with more,
    # the lane holds three rounds, and the urgent alert must not wait behind the two queued.
    received, overtake = await fan_out_overtaken(daemon, concurrency, after=10)
    paris = {"+33612345678", "+33622334455", "+33633445566"}
    firsts = [i for i, to in enumerate(received) if to in paris]
    # Within about a round of its planning (which the fan-out's sends run beside): not behind the rest.
    assert len(firsts) == 3 and max(firsts) < overtake.planned_at + concurrency + 3, (firsts, overtake.planned_at)
    assert sorted(to for to in received if to not in paris) == sorted(lyon)  # and the older one completes
    assert (await daemon.store.counts("old"))["sms"]["sent"] == LYON_CROWD + 1


# -- the migration -------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, pg_schema_url):
    return pg_schema_url if request.param == "postgresql" else f"sqlite:///{tmp_path}/alertd.db"


async def test_deliveries_planned_before_priorities_get_a_default_and_sirens_still_go_first(store_url, monkeypatch):
    with monkeypatch.context() as before:
        before.setattr(sql, "MIGRATIONS", tuple(m for m in sql.MIGRATIONS if m[0] < 8))
        db = store_mod.open_store(store_url)
        await db.open()
        await db.create_alert(alert("old", model.Kind.SMS, model.Kind.SIREN), "old")
        for channel, kind, target in (("sms", "sms", "p-fr"), ("siren", "siren", "siren-paris-1")):
            await db._execute(
                "INSERT INTO deliveries (alert_id, channel, kind, target, address, locale, command, state, attempts,"
                " next_at, updated_at) VALUES ('old', $1, $2, $3, $3, 'fr', 'send', 'pending', 0, $4, $4)",
                channel, kind, target, db._t(helpers.START),
            )
        await db.close()
    db = store_mod.open_store(store_url)
    await db.open()  # migrates to the latest
    try:
        ranks = {d.kind: d.priority for d in await db.deliveries("old")}
        assert ranks == {model.Kind.SMS: priority.DEFAULT, model.Kind.SIREN: priority.SIREN}
        [claimed] = await db.claim("sms", "t", helpers.START, 10, dt.timedelta(minutes=1))
        assert claimed.target == "p-fr"
    finally:
        await db.close()


async def test_an_urgent_alert_does_not_wait_behind_the_rounds_a_full_lane_holds(daemon):
    lyon = await add_lyon_crowd(daemon.store, 20)
    await plan(daemon, alert("old", urgency="Future", severity="Minor", zones=(helpers.LYON,)))
    await daemon.sms.fail(delay=0.3, times=None)  # a slow provider: rounds of 2 calls, 0.3 s each
    received, overtake = await fan_out_overtaken(daemon, 2, after=1)  # planned during the second round
    firsts = [i for i, to in enumerate(received) if to not in lyon]
    # The lane held three rounds (6) when it was planned, the second on the wire: it goes in the
    # third, ahead of the round queued, as room is made for it (the last of its three a round on).
    assert len(firsts) == 3 and firsts[:2] == [4, 5], firsts
    assert sorted(to for to in received if to in lyon) == sorted(lyon)
