"""The store's cells, users and tokens: part of the behaviour suite every store passes
(`store_contract.StoreContract` inherits it)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from alertd import auth, errors, model, people

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
RHONE = ((45.4, 4.6), (45.4, 5.2), (46.0, 5.2), (46.0, 4.6), (45.4, 4.6))


def cell(cell_id: str = "pref-69", zones=("69",), **options) -> people.Cell:
    return auth.new_cell(cell_id, "Préfecture du Rhône", zones, NOW, **options)


class PeopleContract:
    async def test_cells_round_trip(self, store):
        rhone = cell(senders=("pref-69", "prefecture-du-rhone"), boundary=(RHONE,), approval={"exercise": "required"},
                     approval_minutes=30, rate=people.Rate(10.0, 5))
        await store.add_cell(rhone)
        await store.add_cell(cell("mairie-lyon", ("69123",)))
        assert await store.get_cell("pref-69") == rhone
        assert rhone.approval["exercise"] is people.Approval.REQUIRED
        assert [c.id for c in await store.list_cells()] == ["mairie-lyon", "pref-69"]
        with pytest.raises(errors.NotFound):
            await store.get_cell("nope")

    async def test_a_cell_id_and_a_sender_belong_to_one_cell(self, store):
        await store.add_cell(cell(senders=("pref-69", "shared")))
        with pytest.raises(errors.Conflict) as caught:
            await store.add_cell(cell(zones=("75",)))
        assert caught.value.field == "id"
        with pytest.raises(errors.Conflict) as caught:
            await store.add_cell(cell("pref-75", ("75",), senders=("pref-75", "shared")))
        assert caught.value.field == "senders"
        assert [c.id for c in await store.list_cells()] == ["pref-69"]  # nothing half-written

    async def test_updating_a_cell_moves_its_senders(self, store):
        await store.add_cell(cell(senders=("pref-69", "old")))
        await store.add_cell(cell("pref-75", ("75",)))
        moved = dataclasses.replace(await store.get_cell("pref-69"), name="Rhône", zones=("69", "01"), senders=("new",))
        await store.update_cell(moved)
        assert await store.get_cell("pref-69") == moved
        await store.update_cell(dataclasses.replace(await store.get_cell("pref-75"), senders=("pref-75", "old")))
        with pytest.raises(errors.Conflict) as caught:
            await store.update_cell(dataclasses.replace(moved, senders=("pref-75",)))
        assert caught.value.field == "senders"
        with pytest.raises(errors.NotFound):
            await store.update_cell(cell("nope"))

    async def test_users_round_trip_and_disable(self, store):
        await store.add_cell(cell())
        await store.add_cell(cell("pref-75", ("75",)))
        alice = auth.new_user("alice", "pref-69", [model.Role.ISSUER, model.Role.APPROVER], NOW)
        crisis = auth.new_user("crisis-system", "pref-75", [model.Role.ISSUER], NOW, machine=True, trusted=True)
        for user in (crisis, alice):
            await store.add_user(user)
        assert await store.get_user("alice") == alice
        assert [u.name for u in await store.list_users()] == ["alice", "crisis-system"]
        assert await store.list_users("pref-75") == [crisis]
        with pytest.raises(errors.Conflict) as caught:
            await store.add_user(auth.new_user("alice", "pref-75", [model.Role.OPERATOR], NOW))
        assert caught.value.field == "name"
        with pytest.raises(errors.NotFound):
            await store.add_user(auth.new_user("bob", "nope", [model.Role.OPERATOR], NOW))
        assert await store.disable_user("alice") == dataclasses.replace(alice, disabled=True)
        with pytest.raises(errors.NotFound):
            await store.disable_user("bob")

    async def test_tokens_lead_to_their_caller(self, store):
        await store.add_cell(cell(boundary=(RHONE,)))
        alice = auth.new_user("alice", "pref-69", [model.Role.ISSUER], NOW)
        await store.add_user(alice)
        _, token = auth.new_token(alice, NOW)
        await store.add_token(token)
        found = await store.caller_by_hash(token.secret_hash)
        assert found == people.Caller(token, alice, await store.get_cell("pref-69"))
        assert (found.user, found.cell, found.zones) == ("alice", "pref-69", ("69",))
        assert found.cell_name == "Préfecture du Rhône"
        assert token.expires_at == NOW + dt.timedelta(days=people.PERSON_TOKEN_DAYS)
        assert await store.caller_by_hash("hash-2") is None
        with pytest.raises(errors.Conflict):
            await store.add_token(dataclasses.replace(token, secret_hash="hash-3"))  # its id is taken
        with pytest.raises(errors.NotFound):
            await store.add_token(dataclasses.replace(token, id="t2", user="nobody"))

    async def test_tokens_are_listed_and_revoked(self, store):
        await store.add_cell(cell())
        users = [auth.new_user(name, "pref-69", [model.Role.OPERATOR], NOW) for name in ("alice", "bob")]
        for user in users:
            await store.add_user(user)
        tokens = [auth.new_token(user, NOW + dt.timedelta(minutes=n))[1] for n, user in enumerate(users * 2)]
        for token in tokens:
            await store.add_token(token)
        assert await store.list_tokens() == tokens
        assert await store.list_tokens("alice") == [tokens[0], tokens[2]]
        assert await store.list_tokens("nobody") == []
        assert await store.revoke_token(tokens[2].id) is True
        assert await store.revoke_token(tokens[2].id) is False
        assert await store.revoke_token("nope") is False
        assert (await store.caller_by_hash(tokens[2].secret_hash)).token.revoked
        assert [t.revoked for t in await store.list_tokens("alice")] == [False, True]
