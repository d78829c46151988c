"""The store behaviour suite: every `Store` implementation subclasses `StoreContract` and provides
the `store` fixture (an opened, empty store)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
import store_people_contract

from alertd import errors, model, planner, priority

S = model.State
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=5)
LEASE = dt.timedelta(seconds=30)
ROUTES = {model.Kind.SMS: "sms", model.Kind.PUSH: "push", model.Kind.SIREN: "siren"}

RECIPIENTS = (
    model.Recipient("a1", "fr", ("75056",), phone="+33600000001", push_token="tok-a1"),
    model.Recipient("a2", "en", ("75056", "92012"), phone="+33600000002"),
    model.Recipient("b1", "fr", ("69123",), push_token="tok-b1"),
    model.Recipient("c1", "de", ("92012",), phone="+33600000003", push_token="tok-c1"),
    model.Recipient("d1", "fr", ("2A004",), phone="+33600000004"),
)
SIRENS = (model.Siren("s-paris", "75056", "Hôtel de Ville"), model.Siren("s-75", "75"), model.Siren("s-lyon", "69123"))


def make_alert(alert_id: str = "A1", zones=("75056",), **fields) -> model.Alert:
    values = dict(
        id=alert_id, identifier=f"id-{alert_id}", sender="cell-75", sent=NOW, status=model.Status.ACTUAL,
        event="flood", urgency="Immediate", severity="Severe", certainty="Observed",
        area=model.Area(tuple(zones)), channels=(model.Kind.SMS, model.Kind.PUSH),
    )
    return model.Alert(**(values | fields))


async def chunk(store, alert, routes, after, limit, now):
    """One planning chunk with what the planner decides around it: the audience, sirens, topics."""
    if after is None:
        await store.plan_fixed(alert, planner.fixed(alert, routes, await store.list_sirens(), ()), now)
    return await store.plan_chunk(alert, routes, planner.audience(alert, ()), after, limit, now)


def summary(deliveries) -> set[tuple]:
    return {(d.channel, d.target, d.address, d.locale, d.command) for d in deliveries}


class StoreContract(store_people_contract.PeopleContract):
    @pytest.fixture
    async def store(self):
        raise NotImplementedError("a store implementation's test module provides an opened, empty store")
        yield

    # -- helpers ----------------------------------------------------------------------------------
    async def seed(self, store, alert=None, routes=ROUTES):
        """Recipients, sirens, and (when given) an alert fully planned; the alert's deliveries."""
        await store.upsert_recipients(RECIPIENTS)
        await store.upsert_sirens(SIRENS)
        return await self.plan(store, alert, routes) if alert else []

    async def plan(self, store, alert, routes=ROUTES, limit=1000):
        await store.create_alert(alert, f"key-{alert.id}")
        after = await chunk(store, alert, routes, None, limit, NOW)
        while after is not None:
            after = await chunk(store, alert, routes, after, limit, NOW)
        return await store.deliveries(alert.id, limit=1000)

    async def planned(self, store, zones, routes=ROUTES, **fields):
        return summary(await self.seed(store, make_alert(zones=zones, **fields), routes))

    async def claim_sent(self, store, channel="sms", owner="i1", at=NOW):
        """Claim every due delivery of `channel` and record it sent with provider id `P<id>`."""
        batch = await store.claim(channel, owner, at, 100, LEASE)
        await store.record([model.Outcome(d.id, S.SENT, provider_id=f"P{d.id}") for d in batch], at)
        return batch

    # -- audience ---------------------------------------------------------------------------------
    async def test_recipients_by_ids(self, store):
        await store.upsert_recipients(RECIPIENTS)
        found = await store.recipients(["c1", "nope", "a1", "a1"])
        assert sorted(found, key=lambda r: r.id) == [RECIPIENTS[0], RECIPIENTS[3]]
        assert await store.recipients([]) == []

    async def test_recipients_upsert_and_replace(self, store):
        assert await store.upsert_recipients(RECIPIENTS) == 5
        assert await store.get_recipient("a2") == RECIPIENTS[1]
        moved = model.Recipient("a2", "it", ("69123",), phone="+33611111111", push_token="tok-new")
        assert await store.upsert_recipients([moved]) == 1
        assert await store.count_recipients() == 5
        assert await store.get_recipient("a2") == moved
        planned = await self.plan(store, make_alert(zones=("69123",)), {model.Kind.SMS: "sms"})
        assert summary(planned) == {("sms", "a2", "+33611111111", "it", "send")}

    async def test_dead_token_is_not_planned_until_replaced(self, store):
        await self.seed(store)
        assert await store.mark_push_token_dead("tok-a1") == 1
        assert await store.mark_push_token_dead("tok-a1") == 0
        assert (await store.get_recipient("a1")).push_token_dead
        planned = summary(await self.plan(store, make_alert()))
        assert ("sms", "a1", "+33600000001", "fr", "send") in planned
        assert not any(channel == "push" for channel, *_ in planned)
        await store.upsert_recipients([RECIPIENTS[0]])  # the app registered again
        assert not (await store.get_recipient("a1")).push_token_dead
        assert ("push", "a1", "tok-a1", "fr", "send") in summary(await self.plan(store, make_alert("A2")))

    async def test_sirens_roundtrip(self, store):
        assert await store.upsert_sirens(SIRENS) == 3
        await store.upsert_sirens([model.Siren("s-75", "75", "Préfecture")])
        assert [s.id for s in await store.list_sirens()] == ["s-75", "s-lyon", "s-paris"]
        assert (await store.list_sirens())[0].label == "Préfecture"

    # -- planning ---------------------------------------------------------------------------------
    async def test_plan_by_commune(self, store):
        assert await self.planned(store, ("75056",), routes={model.Kind.SMS: "sms", model.Kind.PUSH: "push"}) == {
            ("sms", "a1", "+33600000001", "fr", "send"),
            ("push", "a1", "tok-a1", "fr", "send"),
            ("sms", "a2", "+33600000002", "en", "send"),
        }

    async def test_plan_by_departement_targets_its_communes(self, store):
        assert await self.planned(store, ("92",), routes={model.Kind.SMS: "sms-fr"}) == {
            ("sms-fr", "a2", "+33600000002", "en", "send"),
            ("sms-fr", "c1", "+33600000003", "de", "send"),
        }

    async def test_plan_national_targets_everyone(self, store):
        planned = await self.planned(store, ("*",), routes={model.Kind.SMS: "sms", model.Kind.PUSH: "push"})
        assert {target for _, target, *_ in planned} == {"a1", "a2", "b1", "c1", "d1"}
        assert len(planned) == 7  # 4 phones + 3 live tokens

    async def test_plan_new_deliveries_are_pending_and_due_now(self, store):
        deliveries = await self.seed(store, make_alert())
        assert {(d.state, d.attempts, d.next_at) for d in deliveries} == {(S.PENDING, 0, NOW)}
        assert await store.next_due("sms") == NOW
        assert await store.next_due("fax") is None
        assert await store.unsettled() == len(deliveries)

    async def test_plan_twice_writes_nothing_new(self, store):
        alert = make_alert(zones=("75056", "69123"), topics=True)
        first = await self.seed(store, alert)
        assert await chunk(store, alert, ROUTES, None, 1000, LATER) == "b1"
        assert await store.deliveries(alert.id, limit=1000) == first

    async def test_plan_in_chunks_resumes_from_cursor(self, store):
        alert = make_alert(zones=("75056", "92"))  # a2 lies in both zones
        await self.seed(store)
        await store.create_alert(alert, "k")
        assert await store.plan_cursor(alert.id) is None
        assert await chunk(store, alert, ROUTES, None, 2, NOW) == "a2"
        assert await store.plan_cursor(alert.id) == "a2"
        assert await chunk(store, alert, ROUTES, "a2", 2, NOW) == "c1"
        assert await chunk(store, alert, ROUTES, "c1", 2, NOW) is None
        assert await store.plan_cursor(alert.id) == "c1"
        assert summary(await store.deliveries(alert.id, limit=1000)) == {
            ("sms", "a1", "+33600000001", "fr", "send"),
            ("push", "a1", "tok-a1", "fr", "send"),
            ("sms", "a2", "+33600000002", "en", "send"),
            ("sms", "c1", "+33600000003", "de", "send"),
            ("push", "c1", "tok-c1", "de", "send"),
            ("siren", "s-paris", "s-paris", "", "activate"),
        }
        other = make_alert("A2", zones=("75056", "92"))
        await store.create_alert(other, "k2")
        assert await chunk(store, other, ROUTES, None, 3, NOW) == "c1"  # a1, a2, c1: a2 counted once

    async def test_plan_first_chunk_adds_sirens_and_topics(self, store):
        assert await self.planned(store, ("75",), topics=True, locale="fr") == {
            ("sms", "a1", "+33600000001", "fr", "send"),
            ("push", "a1", "tok-a1", "fr", "send"),
            ("sms", "a2", "+33600000002", "en", "send"),
            ("siren", "s-paris", "s-paris", "", "activate"),
            ("siren", "s-75", "s-75", "", "activate"),
            ("push", "zone-75", "zone-75", "fr", "topic"),
        }

    async def test_a_national_alert_pushes_to_the_national_topic(self, store):
        planned = await self.planned(store, ("*",), topics=True, locale="fr")
        assert ("push", "zone-FR", "zone-FR", "fr", "topic") in planned

    async def test_plan_later_chunks_add_no_sirens_or_topics(self, store):
        alert = make_alert(zones=("*",), topics=True)
        await self.seed(store)
        await store.create_alert(alert, "k")
        await chunk(store, alert, ROUTES, "a0", 100, NOW)
        kinds = {d.kind for d in await store.deliveries(alert.id)}
        assert kinds == {model.Kind.SMS, model.Kind.PUSH}

    async def test_the_fixed_deliveries_are_written_before_any_chunk_and_once(self, store):
        alert = make_alert(zones=("75",), topics=True, locale="fr")
        await self.seed(store)
        await store.create_alert(alert, "k")
        fixed = planner.fixed(alert, ROUTES, await store.list_sirens(), ())
        assert await store.plan_fixed(alert, fixed, NOW) and await store.plan_fixed(alert, fixed, NOW)
        assert summary(await store.deliveries(alert.id)) == {
            ("siren", "s-paris", "s-paris", "", "activate"), ("siren", "s-75", "s-75", "", "activate"),
            ("push", "zone-75", "zone-75", "fr", "topic"),
        }
        [first] = await store.claim("siren", "i1", NOW, 1, LEASE)
        assert first.priority == priority.SIREN  # claimable at once, first in line
        await chunk(store, alert, ROUTES, None, 100, NOW)  # written again, as a resumed planning does: no more
        assert len(await store.deliveries(alert.id, channel="siren")) == 2

    async def test_no_fixed_deliveries_for_an_alert_cancelled_before_its_planning(self, store):
        alert = make_alert(zones=("75",))
        await self.seed(store)
        await store.create_alert(alert, "k")
        await store.cancel_alert(alert.id, NOW)
        assert not await store.plan_fixed(alert, planner.fixed(alert, ROUTES, await store.list_sirens(), ()), NOW)
        assert await store.deliveries(alert.id) == []

    async def test_plan_without_topics_or_unrouted_kinds(self, store):
        planned = await self.planned(store, ("69123",), routes={model.Kind.PUSH: "push"})
        assert planned == {("push", "b1", "tok-b1", "fr", "send")}

    async def test_a_cancel_between_chunks_stops_planning(self, store):
        alert = make_alert(zones=("*",))
        await self.seed(store)
        await store.create_alert(alert, "k")
        sms = {model.Kind.SMS: "sms"}
        assert await chunk(store, alert, sms, None, 2, NOW) == "a2"
        await store.cancel_alert(alert.id, NOW)
        assert await chunk(store, alert, sms, "a2", 2, NOW) is None
        assert await store.unsettled() == 0  # nothing written after the cancel
        assert {d.target for d in await store.deliveries(alert.id)} == {"a1", "a2"}
        assert not await store.set_alert_state(alert.id, model.AlertState.ACTIVE, only_from=model.AlertState.PLANNING)
        assert (await store.get_alert(alert.id)).state is model.AlertState.CANCELLED

    async def test_plan_siren_cancel(self, store):
        alert = make_alert(zones=("75",))
        await self.seed(store, alert)
        assert await store.plan_siren_cancel(alert.id, LATER) == 2
        assert await store.plan_siren_cancel(alert.id, LATER) == 0
        cancels = await store.deliveries(alert.id, channel="siren", state=S.PENDING)
        assert {(d.target, d.command) for d in cancels} == {
            ("s-paris", "activate"), ("s-75", "activate"), ("s-paris", "cancel"), ("s-75", "cancel"),
        }

    # -- alerts -----------------------------------------------------------------------------------
    async def test_idempotency_key_returns_the_first_alert(self, store):
        first = make_alert("A1", expires=LATER, locale="fr")
        assert await store.create_alert(first, "key") == (first, True)
        assert await store.create_alert(make_alert("A2", event="fire"), "key") == (first, False)
        assert (await store.create_alert(make_alert("A3", sender="cell-69"), "key"))[1] is True
        assert await store.get_alert("A1") == first
        with pytest.raises(errors.NotFound):
            await store.get_alert("A2")

    async def test_alert_listing_and_states(self, store):
        for alert_id in ("A1", "A2", "A3"):
            await store.create_alert(make_alert(alert_id), alert_id)
        assert [a.id for a in await store.list_alerts()] == ["A3", "A2", "A1"]
        assert [a.id for a in await store.list_alerts(limit=1, before="A3")] == ["A2"]
        assert await store.set_alert_state("A2", model.AlertState.ACTIVE, only_from=model.AlertState.PLANNING)
        assert not await store.set_alert_state("A2", model.AlertState.ACTIVE, only_from=model.AlertState.PLANNING)
        assert await store.set_alert_state("A1", model.AlertState.COMPLETED)
        assert [a.id for a in await store.alerts_in_state(model.AlertState.ACTIVE)] == ["A2"]
        assert (await store.get_alert("A2")).state is model.AlertState.ACTIVE

    async def test_unknown_ids_raise_not_found(self, store):
        for call in (
            store.get_alert("nope"),
            store.get_recipient("nope"),
            store.set_alert_state("nope", model.AlertState.ACTIVE),
            store.set_alert_state("nope", model.AlertState.ACTIVE, only_from=model.AlertState.PLANNING),
            store.cancel_alert("nope", NOW),
        ):
            with pytest.raises(errors.NotFound):
                await call

    # -- fan-out ----------------------------------------------------------------------------------
    async def test_claim_leases_and_counts_attempts(self, store):
        await self.seed(store, make_alert())
        batch = await store.claim("sms", "i1", NOW, 10, LEASE)
        assert {(d.target, d.state, d.attempts) for d in batch} == {("a1", S.SENDING, 1), ("a2", S.SENDING, 1)}
        assert await store.claim("sms", "i2", NOW + LEASE - dt.timedelta(seconds=1), 10, LEASE) == []
        again = await store.claim("sms", "i2", NOW + LEASE, 10, LEASE)  # i1 died
        assert {(d.id, d.attempts) for d in again} == {(d.id, 2) for d in batch}

    async def test_claim_records_the_last_batch_before_taking_the_next(self, store):
        await self.seed(store, make_alert())
        first = await store.claim("sms", "i1", NOW, 1, LEASE)
        done = [model.Outcome(first[0].id, S.SENT, provider_id="P-first")]
        second = await store.claim("sms", "i1", NOW, 10, LEASE, done)
        assert [d.id for d in second] != [first[0].id] and len(second) == 1  # the first is settled
        [sent] = await store.deliveries("A1", channel="sms", state=S.SENT)
        assert (sent.id, sent.provider_id) == (first[0].id, "P-first")

    async def test_requeue_only_moves_a_sent_delivery_back_once(self, store):
        await self.seed(store, make_alert())
        sent = (await self.claim_sent(store))[0]
        assert await store.delivery_by_provider(f"P{sent.id}") is not None
        assert await store.requeue(sent.id, f"P{sent.id}", LATER, "30003: unreachable", NOW)
        assert not await store.requeue(sent.id, f"P{sent.id}", LATER, "30003: unreachable", NOW)  # once
        assert await store.delivery_by_provider(f"P{sent.id}") is None  # a late copy finds nothing
        [back] = await store.deliveries("A1", channel="sms", state=S.PENDING)
        assert (back.id, back.next_at, back.last_error) == (sent.id, LATER, "30003: unreachable")

    async def test_failover_moves_only_the_pending_deliveries_of_the_channel(self, store):
        await self.seed(store, make_alert(zones=("*",)))  # a1, a2, c1, d1 by sms
        [sending] = await store.claim("sms", "i1", NOW, 1, LEASE)  # on the wire: stays
        moved = await store.move_pending("sms", "sms-backup", "moved from sms: Twilio 500", LATER)
        assert moved == 3
        backup = await store.deliveries("A1", channel="sms-backup")
        assert {(d.state, d.last_error, d.updated_at) for d in backup} == {
            (S.PENDING, "moved from sms: Twilio 500", LATER)}
        assert [d.id for d in await store.deliveries("A1", channel="sms")] == [sending.id]
        assert [d.channel for d in await store.deliveries("A1", channel="push")] == ["push"] * 3  # other channels stay
        assert len(await store.claim("sms-backup", "i1", LATER, 10, LEASE)) == 3
        assert await store.move_pending("sms", "sms-backup", "again", LATER) == 0

    async def test_failover_leaves_a_delivery_the_other_channel_already_has(self, store):
        alert = make_alert(zones=("75056",), channels=(model.Kind.SMS,))
        await self.seed(store, alert)  # a1, a2 by sms
        backup = {model.Kind.SMS: "sms-backup"}
        in_paris = dataclasses.replace(alert, area=model.Area(("75056",)))
        await chunk(store, in_paris, backup, None, 1, NOW)  # a1 there too
        assert await store.move_pending("sms", "sms-backup", "moved", NOW) == 1  # a2: a1 would go twice
        assert {d.target for d in await store.deliveries("A1", channel="sms")} == {"a1"}
        assert {d.target for d in await store.deliveries("A1", channel="sms-backup")} == {"a1", "a2"}

    async def test_claim_takes_due_oldest_first_up_to_limit(self, store):
        await self.seed(store, make_alert(zones=("*",)))
        batch = await store.claim("sms", "i1", NOW, 4, LEASE)
        retry_at = [NOW + dt.timedelta(seconds=s) for s in (30, 10, 20, 40)]
        await store.record([model.Outcome(d.id, S.PENDING, at) for d, at in zip(batch, retry_at, strict=True)], NOW)
        assert await store.claim("sms", "i1", NOW + dt.timedelta(seconds=5), 4, LEASE) == []
        assert await store.next_due("sms") == NOW + dt.timedelta(seconds=10)
        due = await store.claim("sms", "i1", NOW + dt.timedelta(seconds=30), 4, LEASE)
        assert [d.next_at for d in due] == sorted(retry_at)[:3]
        assert [d.attempts for d in due] == [2, 2, 2]

    async def test_two_owners_never_claim_the_same_delivery(self, store):
        await self.seed(store, make_alert(zones=("*",)))
        first, second = await asyncio.gather(
            store.claim("sms", "i1", NOW, 3, LEASE), store.claim("sms", "i2", NOW, 3, LEASE)
        )
        ids = [d.id for d in first + second]
        assert len(ids) == len(set(ids)) == 4

    async def test_record_changes_only_sending_rows(self, store):
        deliveries = await self.seed(store, make_alert())
        a1_sms = next(d for d in deliveries if d.channel == "sms" and d.target == "a1")
        await store.record([model.Outcome(a1_sms.id, S.FAILED, last_error="x")], NOW)  # never claimed
        assert (await store.deliveries("A1", channel="sms", state=S.PENDING, limit=1))[0].id == a1_sms.id
        batch = await self.claim_sent(store)
        await store.record([model.Outcome(d.id, S.FAILED, last_error="late") for d in batch], LATER)
        sent = await store.deliveries("A1", channel="sms")
        assert {(d.state, d.provider_id, d.last_error) for d in sent} == {
            (S.SENT, f"P{d.id}", None) for d in batch
        }
        assert {d.updated_at for d in sent} == {NOW}

    async def test_record_retry_puts_back_to_pending(self, store):
        await self.seed(store, make_alert())
        batch = await store.claim("sms", "i1", NOW, 1, LEASE)
        await store.record([model.Outcome(batch[0].id, S.PENDING, LATER, last_error="20429: busy")], NOW)
        [retry] = await store.deliveries("A1", state=S.PENDING, channel="sms", after_id=batch[0].id - 1, limit=1)
        assert (retry.id, retry.next_at, retry.last_error) == (batch[0].id, LATER, "20429: busy")

    async def test_receipts_only_move_forward(self, store):
        await self.seed(store, make_alert())
        one, two = await self.claim_sent(store)
        assert await store.apply_receipt(f"P{one.id}", S.DELIVERED, None, LATER)
        assert not await store.apply_receipt(f"P{one.id}", S.DELIVERED, None, LATER)  # repeated
        assert not await store.apply_receipt(f"P{one.id}", S.SENT, None, LATER)  # out of order
        assert not await store.apply_receipt(f"P{one.id}", S.FAILED, "30008", LATER)
        assert await store.apply_receipt(f"P{two.id}", S.FAILED, "30003: unreachable", LATER)
        assert not await store.apply_receipt(f"P{two.id}", S.DELIVERED, None, LATER)
        assert not await store.apply_receipt("P-unknown", S.DELIVERED, None, LATER)
        states = {d.id: (d.state, d.last_error) for d in await store.deliveries("A1", channel="sms")}
        assert states == {one.id: (S.DELIVERED, None), two.id: (S.FAILED, "30003: unreachable")}

    async def test_receipt_before_record_wins(self, store):
        await self.seed(store, make_alert())
        [claimed] = await store.claim("sms", "i1", NOW, 1, LEASE)
        # The provider accepted it and its callback beat the dispatcher's record of the provider id.
        assert not await store.apply_receipt("P1", S.DELIVERED, None, NOW)
        await store.record([model.Outcome(claimed.id, S.SENT, provider_id="P1")], LATER)
        [stored] = await store.deliveries("A1", channel="sms", limit=1)
        assert (stored.id, stored.state, stored.provider_id) == (claimed.id, S.DELIVERED, "P1")
        assert not await store.apply_receipt("P1", S.DELIVERED, None, LATER)  # applied once, not kept

    async def test_early_receipts_waiting_for_nothing_are_purged(self, store):
        await self.seed(store, make_alert())
        [claimed] = await store.claim("sms", "i1", NOW, 1, LEASE)
        assert not await store.apply_receipt("P-old", S.DELIVERED, None, NOW)
        assert not await store.apply_receipt("P1", S.DELIVERED, None, LATER)
        assert await store.purge_early_receipts(NOW + dt.timedelta(seconds=1)) == 1
        await store.record([model.Outcome(claimed.id, S.SENT, provider_id="P1")], LATER)
        [stored] = await store.deliveries("A1", channel="sms", limit=1)
        assert stored.state is S.DELIVERED  # the recent one was kept and applied

    async def test_early_receipts_keep_the_higher_rank(self, store):
        await self.seed(store, make_alert())
        first, second = await store.claim("sms", "i1", NOW, 2, LEASE)
        for provider_id, state, error in (
            ("P1", S.SENT, None), ("P1", S.FAILED, "30003: unreachable"), ("P1", S.DELIVERED, None),
            ("P2", S.DELIVERED, None), ("P2", S.SENT, None),
        ):
            assert not await store.apply_receipt(provider_id, state, error, NOW)
        done = [model.Outcome(first.id, S.SENT, provider_id="P1"), model.Outcome(second.id, S.SENT, provider_id="P2")]
        assert await store.claim("sms", "i1", NOW, 10, LEASE, done) == []  # the record part of a claim
        states = {d.id: (d.state, d.last_error) for d in await store.deliveries("A1", channel="sms")}
        assert states == {first.id: (S.FAILED, "30003: unreachable"), second.id: (S.DELIVERED, None)}

    async def test_cancel_stops_pending_but_not_siren_cancels(self, store):
        alert = make_alert(zones=("75",))
        await self.seed(store, alert)
        [sending] = await store.claim("sms", "i1", NOW, 1, LEASE)
        await store.plan_siren_cancel(alert.id, NOW)
        assert await store.cancel_alert(alert.id, LATER) == 4  # 1 sms, 1 push, 2 siren activations
        [lapsed] = await store.claim("sms", "i2", LATER + LEASE, 10, LEASE)  # for the dispatcher to settle
        assert lapsed.id == sending.id
        stored = await store.get_alert(alert.id)
        assert (stored.state, stored.cancelled_at) == (model.AlertState.CANCELLED, LATER)
        sirens = await store.claim("siren", "i1", LATER, 10, LEASE)
        assert {(d.target, d.command) for d in sirens} == {("s-paris", "cancel"), ("s-75", "cancel")}
        assert await store.claim("push", "i1", LATER, 10, LEASE) == []

    async def test_cancelled_alert_retries_become_cancelled(self, store):
        await self.seed(store, make_alert())
        [sending] = await store.claim("sms", "i1", NOW, 1, LEASE)
        await store.cancel_alert("A1", NOW)
        await store.record([model.Outcome(sending.id, S.PENDING, LATER)], NOW)
        assert (await store.deliveries("A1", limit=1))[0].state is S.CANCELLED
        assert await store.unsettled() == 0
        assert await store.next_due("sms") is None

    async def test_a_lapsed_lease_of_a_cancelled_alert_is_claimed_to_be_settled(self, store):
        await self.seed(store, make_alert())
        [sending] = await store.claim("sms", "i1", NOW, 1, LEASE)
        await store.cancel_alert("A1", NOW)
        assert await store.next_due("sms") == NOW + LEASE
        assert await store.claim("sms", "i2", NOW + LEASE - dt.timedelta(seconds=1), 10, LEASE) == []
        [lapsed] = await store.claim("sms", "i2", NOW + LEASE, 10, LEASE)  # i1 died
        assert (lapsed.id, lapsed.attempts) == (sending.id, 2)
        await store.record([model.Outcome(lapsed.id, S.CANCELLED)], NOW + LEASE)
        assert await store.unsettled() == 0 and await store.next_due("sms") is None

    async def test_a_siren_cancel_waits_for_its_activate(self, store):
        alert = make_alert(zones=("75056",))
        await self.seed(store, alert)
        soon = NOW + dt.timedelta(seconds=1)
        assert await store.plan_siren_cancel(alert.id, NOW) == 1
        [activate] = await store.claim("siren", "i1", soon, 10, LEASE)  # not the cancel in the same batch
        assert activate.command == "activate"
        assert await store.claim("siren", "i2", soon, 10, LEASE) == []
        assert await store.next_due("siren") == soon + LEASE  # the activate's lease, not the waiting cancel
        await store.record([model.Outcome(activate.id, S.SENT, provider_id="G1")], soon)
        [cancel] = await store.claim("siren", "i1", soon, 10, LEASE)
        assert (cancel.target, cancel.command) == (activate.target, "cancel")

    async def test_expire_due(self, store):
        alert = make_alert(zones=("75",), expires=LATER)
        await self.seed(store, alert)
        await self.claim_sent(store)
        await store.plan_siren_cancel(alert.id, NOW)
        assert await store.expire_due(LATER - dt.timedelta(seconds=1)) == 0
        assert await store.expire_due(LATER) == 3  # push a1 + 2 siren activations
        counts = await store.counts(alert.id)
        assert (counts["sms"]["sent"], counts["push"]["expired"], counts["siren"]["expired"]) == (2, 1, 2)
        assert counts["siren"]["pending"] == 2  # the cancels still go out

    async def test_complete_settled(self, store):
        await self.seed(store, make_alert())
        await store.create_alert(make_alert("A2"), "k2")
        await store.set_alert_state("A2", model.AlertState.ACTIVE)  # no deliveries at all
        await store.set_alert_state("A1", model.AlertState.ACTIVE)
        assert await store.complete_settled() == ["A2"]
        for channel in ("sms", "push", "siren"):
            await self.claim_sent(store, channel)
        assert await store.complete_settled() == ["A1"]
        assert (await store.get_alert("A1")).state is model.AlertState.COMPLETED
        assert await store.complete_settled() == []

    # -- reading ----------------------------------------------------------------------------------
    async def test_counts_include_every_state(self, store):
        await self.seed(store, make_alert(), routes={model.Kind.SMS: "sms", model.Kind.PUSH: "push"})
        await self.claim_sent(store)
        zeros = {s.value: 0 for s in S}
        assert await store.counts("A1") == {"sms": zeros | {"sent": 2}, "push": zeros | {"pending": 1}}
        assert await store.counts("nope") == {}

    async def test_deliveries_pagination_and_filters(self, store):
        await self.seed(store, make_alert(zones=("*",)), routes={model.Kind.SMS: "sms", model.Kind.PUSH: "push"})
        pages, after = [], 0
        while page := await store.deliveries("A1", after_id=after, limit=3):
            pages.append(page)
            after = page[-1].id
        ids = [d.id for page in pages for d in page]
        assert [len(p) for p in pages] == [3, 3, 1] and ids == sorted(ids)
        assert {d.target for d in await store.deliveries("A1", channel="push")} == {"a1", "b1", "c1"}
        await self.claim_sent(store, "push")
        assert await store.deliveries("A1", channel="push", state=S.PENDING) == []
        assert len(await store.deliveries("A1", state=S.PENDING)) == 4

    # -- shapes, exercises and the chain of alerts -----------------------------------------------
    LOCATED = (
        model.Recipient("g1", "fr", ("75056",), phone="+33600000011", lat=48.85, lon=2.35, exercise=True),
        model.Recipient("g2", "fr", ("69123",), phone="+33600000012", lat=45.76, lon=4.83),
        model.Recipient("g3", "en", ("75056",), phone="+33600000013", lat=48.86, lon=2.30),
    )

    async def test_located_recipients_roundtrip_and_box(self, store):
        await store.upsert_recipients(self.LOCATED)
        assert await store.get_recipient("g1") == self.LOCATED[0]
        rows = await store.located((48.0, 2.0, 49.0, 3.0))
        assert sorted((r["id"], r["lat"], r["lon"]) for r in rows) == [("g1", 48.85, 2.35), ("g3", 48.86, 2.30)]
        assert await store.located((0.0, 0.0, 1.0, 1.0)) == []

    async def test_sirens_keep_their_location(self, store):
        await store.upsert_sirens([model.Siren("s-geo", "75056", "Tour", 48.85, 2.35)])
        assert await store.list_sirens() == [model.Siren("s-geo", "75056", "Tour", 48.85, 2.35)]

    async def test_targets_plan_each_recipient_once(self, store):
        await self.seed(store)
        await store.upsert_recipients(self.LOCATED)
        alert = make_alert("T1", zones=("92012",), channels=(model.Kind.SMS,))
        await store.create_alert(alert, "t1")
        await store.add_targets("T1", ids=["g1", "g3", "c1"], zones=["92012"])
        await store.add_targets("T1", ids=["g1"])  # again: nothing new
        targets = model.Audience("targets")
        assert await store.plan_chunk(alert, {model.Kind.SMS: "sms"}, targets, None, 2, NOW) == "c1"
        assert await store.plan_chunk(alert, {model.Kind.SMS: "sms"}, targets, "c1", 2, NOW) == "g3"
        assert await store.plan_chunk(alert, {model.Kind.SMS: "sms"}, targets, "g3", 2, NOW) is None
        assert {d.target for d in await store.deliveries("T1")} == {"a2", "c1", "g1", "g3"}

    async def test_an_exercise_reaches_participants_only_whatever_the_walk(self, store):
        await self.seed(store)
        await store.upsert_recipients(self.LOCATED)
        for n, audience in enumerate([
            model.Audience("everyone", exercise_only=True),
            model.Audience("zones", ("75056",), exercise_only=True),
            model.Audience("targets", exercise_only=True),
        ]):
            alert = make_alert(f"X{n}", status=model.Status.EXERCISE)
            await store.create_alert(alert, f"x{n}")
            await store.add_targets(alert.id, ids=["g1", "g2", "g3", "a1"])
            await store.plan_chunk(alert, ROUTES, audience, None, 100, NOW)
            assert {d.target for d in await store.deliveries(alert.id)} == {"g1"}, audience

    async def test_plan_reached_copies_what_reached_someone(self, store):
        await self.seed(store, make_alert(zones=("75056", "92012")))
        sent = await self.claim_sent(store, "sms")  # a1, a2, c1 sent by SMS; push still pending
        await store.create_alert(make_alert("C1", msg_type=model.MsgType.CANCEL), "c1")
        assert await store.plan_reached("C1", ["A1"], [model.Kind.SMS, model.Kind.PUSH], LATER) == len(sent)
        assert summary(await store.deliveries("C1")) == {
            ("sms", d.target, d.address, d.locale, "send") for d in sent
        }
        assert await store.plan_reached("C1", ["A1"], [model.Kind.SMS], LATER) == 0  # once

    async def test_an_all_clear_waits_for_an_original_still_sending(self, store):
        await self.seed(store, make_alert(zones=("75056", "92012")))
        soon = NOW + dt.timedelta(seconds=1)  # within the originals' lease
        a1, a2, c1 = await store.claim("sms", "i1", NOW, 10, LEASE)  # all three sending
        await store.record([model.Outcome(a1.id, S.SENT, provider_id="P1")], NOW)
        await store.cancel_alert("A1", NOW)
        await store.create_alert(make_alert("C1", msg_type=model.MsgType.CANCEL), "c1")
        assert await store.plan_reached("C1", ["A1"], [model.Kind.SMS], soon) == 3
        [told] = await store.claim("sms", "i2", soon, 10, LEASE)  # a2 and c1 are not reached yet
        assert told.target == a1.target
        assert await store.next_due("sms") == NOW + LEASE  # the originals' lease, not the waiting ones
        # a2's call was on the wire and went through; c1 was claimed, then dropped for the cancel.
        await store.record([model.Outcome(a2.id, S.SENT, provider_id="P2"), model.Outcome(c1.id, S.CANCELLED)], soon)
        [told] = await store.claim("sms", "i2", soon, 10, LEASE)
        assert told.target == a2.target
        assert await store.drop_unreached(soon) == 1
        assert await store.drop_unreached(soon) == 0
        [dropped] = await store.deliveries("C1", state=S.CANCELLED)
        assert dropped.target == c1.target and "never reached" in dropped.last_error

    async def test_an_all_clear_goes_if_any_alert_of_the_incident_reached_the_recipient(self, store):
        await self.seed(store, make_alert(zones=("75056",)))  # a1 and a2 by SMS
        soon = NOW + dt.timedelta(seconds=1)
        first = {d.target: d for d in await store.claim("sms", "i1", NOW, 10, LEASE)}
        await store.create_alert(make_alert("U1", msg_type=model.MsgType.UPDATE), "u1")
        await store.add_targets("U1", reached_by=["A1"])
        await store.plan_chunk(make_alert("U1", msg_type=model.MsgType.UPDATE), ROUTES, model.Audience("targets"),
                               None, 100, NOW)
        update = {d.target: d for d in await store.claim("sms", "i1", NOW, 10, LEASE)}
        # a1: the alert went through, the update is still on the wire; a2: both still on the wire.
        await store.record([model.Outcome(first["a1"].id, S.SENT, provider_id="P1")], NOW)
        for alert_id in ("A1", "U1"):
            await store.cancel_alert(alert_id, NOW)
        await store.create_alert(make_alert("C1", msg_type=model.MsgType.CANCEL), "c1")
        assert await store.plan_reached("C1", ["A1", "U1"], [model.Kind.SMS], soon) == 2
        [told] = await store.claim("sms", "i2", soon, 10, LEASE)
        assert told.target == "a1"
        # a2's first message was only claimed, then dropped; the update's reached them.
        await store.record([model.Outcome(first["a2"].id, S.CANCELLED)], soon)
        assert await store.claim("sms", "i2", soon, 10, LEASE) == []
        await store.record([model.Outcome(update["a2"].id, S.SENT, provider_id="P2")], soon)
        [told] = await store.claim("sms", "i2", soon, 10, LEASE)
        assert told.target == "a2"
        assert await store.drop_unreached(soon) == 0

    async def test_replace_cancels_what_has_not_started(self, store):
        await self.seed(store, make_alert(zones=("75056",)))
        await self.claim_sent(store, "sms")
        await store.create_alert(make_alert("U1", msg_type=model.MsgType.UPDATE), "u1")
        assert await store.replace(["A1"], "U1", LATER) == 2  # a1's push and the siren activation
        assert (await store.get_alert("A1")).state is model.AlertState.UPDATED
        assert await store.claim("push", "i1", LATER, 10, LEASE) == []
        await store.add_targets("U1", reached_by=["A1"])
        await store.plan_chunk(make_alert("U1"), ROUTES, model.Audience("targets"), None, 100, LATER)
        assert {d.target for d in await store.deliveries("U1")} == {"a1", "a2"}  # reached or was reaching

    async def test_references_followed_both_ways(self, store):
        first = make_alert("R1")
        await store.create_alert(first, "r1", cap='{"identifier": "id-R1"}')
        ref = model.Reference("cell-75", "id-R1", NOW, "R1")
        await store.create_alert(make_alert("R2", msg_type=model.MsgType.UPDATE, references=(ref,)), "r2")
        assert (await store.find_alert("cell-75", "id-R1")).id == "R1"
        assert await store.find_alert("cell-69", "id-R1") is None
        assert await store.referenced_by("R1") == ["R2"]
        assert (await store.get_alert("R2")).references == (ref,)
        assert await store.alert_cap("R1") == '{"identifier": "id-R1"}'
        assert await store.alert_cap("R2") is None

    async def test_expiry_marks_the_alert(self, store):
        await self.seed(store, make_alert(expires=LATER))
        assert await store.expire_due(LATER) == 4  # sms a1 a2, push a1, siren s-paris
        assert (await store.get_alert("A1")).state is model.AlertState.EXPIRED

    # -- audit --------------------------------------------------------------------------------------
    async def test_audit_appends_filters_and_chains(self, store):
        from alertd import audit

        for n, action in enumerate(["created", "cancelled", "token_created"]):
            await store.add_audit(audit.Entry("cell-75", action, NOW + dt.timedelta(seconds=n), "t1", f"A{n}",
                                              {"n": n}, "10.0.0.1"))
        entries = await store.audit()
        assert [e.action for e in entries] == ["token_created", "cancelled", "created"]  # newest first
        assert entries[-1].detail == {"n": 0} and entries[-1].address == "10.0.0.1"
        assert [e.subject for e in await store.audit(action="cancelled")] == ["A1"]
        assert [e.subject for e in await store.audit(subject="A2")] == ["A2"]
        assert [e.subject for e in await store.audit(limit=1, before=entries[0].id)] == ["A1"]
        assert await store.verify_audit() is None
        await store._execute("UPDATE audit SET cell = 'someone else' WHERE subject = 'A1'")  # behind alertd's back
        assert await store.verify_audit() == entries[1].id

    async def test_an_alert_and_its_audit_entry_commit_together(self, store):
        from alertd import audit

        entry = audit.Entry("cell-75", "created", NOW, subject="A1")
        await store.create_alert(make_alert(), "k", audit_entry=entry)
        await store.create_alert(make_alert("A9"), "k", audit_entry=entry)  # a replay: no second entry
        await store.cancel_alert("A1", LATER, audit.Entry("cell-75", "cancelled", LATER, subject="A1"))
        assert [(e.action, e.subject) for e in await store.audit()] == [("cancelled", "A1"), ("created", "A1")]

    # -- approvals ----------------------------------------------------------------------------------
    @staticmethod
    def awaiting(alert_id: str = "A1", minutes: int = 15, **fields) -> model.Alert:
        record = model.Approval(
            requested_by="alice", requested_cell="pref-75", requested_at=NOW,
            expires_at=NOW + dt.timedelta(minutes=minutes), digest="d" * 64, content_digest="c" * 64,
            messages=({"locale": "fr", "channel": "sms", "title": "", "body": "Abritez-vous"},),
            area=model.Area(("75056",)), audience={"sms": 2},
        )
        return make_alert(alert_id, state=model.AlertState.AWAITING_APPROVAL, approval=record, **fields)

    async def test_an_approval_record_round_trips_and_a_move_is_a_compare_and_set(self, store):
        from alertd import audit

        waiting = self.awaiting(created_by="alice", cell_name="Préfecture de police")
        await store.create_alert(waiting, "k")
        assert await store.get_alert("A1") == waiting
        approved = dataclasses.replace(waiting, state=model.AlertState.PLANNING, approval=dataclasses.replace(
            waiting.approval, approved_by="bruno", approved_cell="pref-75", approved_at=LATER))
        entry = audit.Entry("pref-75", "approved", LATER, subject="A1", user="bruno")
        assert await store.move_alert("A1", model.AlertState.AWAITING_APPROVAL, approved, entry)
        assert not await store.move_alert("A1", model.AlertState.AWAITING_APPROVAL, approved, entry)  # moved already
        assert await store.get_alert("A1") == approved
        assert [(e.action, e.user) for e in await store.audit()] == [("approved", "bruno")]  # one entry, not two
        with pytest.raises(errors.NotFound):
            await store.move_alert("nope", model.AlertState.AWAITING_APPROVAL, approved)

    async def test_approval_requests_past_their_time_expire_with_an_audit_entry(self, store):
        await store.create_alert(self.awaiting("A1", minutes=5), "k1")
        await store.create_alert(self.awaiting("A2", minutes=30), "k2")
        assert await store.expire_approvals(NOW + dt.timedelta(minutes=4)) == []
        assert await store.expire_approvals(NOW + dt.timedelta(minutes=5)) == ["A1"]
        assert await store.expire_approvals(NOW + dt.timedelta(minutes=6)) == []  # once
        assert (await store.get_alert("A1")).state is model.AlertState.APPROVAL_EXPIRED
        assert (await store.get_alert("A2")).state is model.AlertState.AWAITING_APPROVAL
        assert [(e.action, e.subject) for e in await store.audit()] == [("approval_expired", "A1")]

    async def test_the_audience_is_counted_as_a_planning_would_write_it(self, store):
        await self.seed(store)
        assert await store.count_audience(zones=["75056"]) == {"sms": 2, "push": 1}
        assert await store.count_audience(zones=["92"]) == {"sms": 2, "push": 1}  # a2 and c1, by département
        assert await store.count_audience(everyone=True) == {"sms": 4, "push": 3}
        assert await store.count_audience(ids=["b1"], zones=["2A004"]) == {"sms": 1, "push": 1}
        assert await store.count_audience() == {"sms": 0, "push": 0}
        assert await store.count_audience(everyone=True, exercise_only=True) == {"sms": 0, "push": 0}
        await self.plan(store, make_alert("R1", zones=("69123",)))  # reached b1 by push
        assert await store.count_audience(reached_by=["R1"]) == {"sms": 0, "push": 1}

    async def test_the_audience_is_counted_by_locale_for_the_texts_each_gets(self, store):
        """Whom a preview's estimate counts the SMS segments of each locale's text for."""
        await self.seed(store)
        assert await store.count_audience_by_locale(everyone=True) == {
            "fr": {"sms": 2, "push": 2}, "en": {"sms": 1, "push": 0}, "de": {"sms": 1, "push": 1},
        }
        assert await store.count_audience_by_locale(zones=["92"]) == {"en": {"sms": 1, "push": 0},
                                                                      "de": {"sms": 1, "push": 1}}
        assert await store.count_audience_by_locale(zones=["69123"], exercise_only=True) == {}
