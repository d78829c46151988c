"""One cell cannot starve the others: each cell's orders come out of its own token bucket."""

from __future__ import annotations

from alertd import model, people, quota
from tests import helpers

RATE = people.Rate(per_minute=60, burst=3)  # one order a second, three at once


def test_a_cell_may_post_its_burst_at_once_then_waits_for_the_refill():
    q = quota.Quota()
    assert [q.take("pref-69", RATE, 100.0) for _ in range(3)] == [None, None, None]
    assert q.take("pref-69", RATE, 100.0) == 1.0  # seconds until the next order
    assert q.take("pref-69", RATE, 100.5) == 0.5  # a refused order takes nothing
    assert q.take("pref-69", RATE, 101.0) is None
    assert q.take("pref-69", RATE, 101.0) == 1.0


def test_one_cells_flood_leaves_another_cells_bucket_full():
    q = quota.Quota()
    while q.take("pref-69", RATE, 100.0) is None:
        pass
    assert [q.take("pref-75", RATE, 100.0) for _ in range(3)] == [None, None, None]


def test_the_bucket_refills_at_the_rate_up_to_the_burst_only():
    q = quota.Quota()
    for _ in range(3):
        q.take("pref-69", RATE, 0.0)
    # An hour idle refills three orders, not 3,600.
    assert [q.take("pref-69", RATE, 3600.0) for _ in range(4)] == [None, None, None, 1.0]
    slow = people.Rate(per_minute=6, burst=1)
    assert q.take("slow", slow, 0.0) is None and q.take("slow", slow, 0.0) == 10.0


def test_a_cell_allowed_nothing_is_told_it_waits_for_ever():
    assert quota.Quota().take("closed", people.Rate(per_minute=0, burst=0), 0.0) == float("inf")


def test_full_buckets_are_forgotten_so_memory_stays_bounded():
    q = quota.Quota()
    for i in range(quota.SWEEP_EVERY - 1):
        q.take(f"cell-{i}", RATE, 0.0)
    assert len(q) == quota.SWEEP_EVERY - 1
    q.take("busy", RATE, 10.0)  # ten seconds on, every other bucket has refilled: forgotten
    assert len(q) == 1
    assert [q.take("busy", RATE, 10.0) for _ in range(3)] == [None, None, 1.0]  # and its own is kept


# -- at POST /v1/alerts ------------------------------------------------------------------------------


async def cell_token(daemon, cell: str, zones: list[str], rate: people.Rate) -> dict[str, str]:
    return helpers.auth_header(await helpers.add_token(daemon.store, model.Role.ISSUER, zones, cell=cell, rate=rate))


async def post(daemon, headers: dict[str, str], **order):
    return await daemon.client.post("/v1/alerts", headers=headers, json=helpers.order(**order))


async def test_an_order_beyond_the_cells_rate_is_refused_with_429_and_retry_after_and_nothing_is_kept(daemon):
    paris = await cell_token(daemon, "Flood", ["75"], people.Rate(per_minute=2, burst=2))
    assert [(await post(daemon, paris)).status for _ in range(2)] == [202, 202]
    refused = await post(daemon, paris)
    assert refused.status == 429 and refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.headers["Retry-After"] == "30"  # two a minute: the next in 30 s
    problem = await refused.json()
    assert problem["status"] == 429 and problem["type"].endswith("/too-many-orders")
    assert "try again in 30 s" in problem["detail"]
    await daemon.drain()
    assert len((await (await daemon.get("/v1/alerts")).json())["alerts"]) == 2
    daemon.clock.advance(30)
    assert (await post(daemon, paris)).status == 202


async def test_one_cells_flood_does_not_refuse_another_cells_orders(daemon):
    paris = await cell_token(daemon, "Flood", ["75"], people.Rate(per_minute=1, burst=1))
    lyon = await cell_token(daemon, "Other", ["69"], people.Rate(per_minute=1, burst=1))
    assert [(await post(daemon, paris)).status for _ in range(3)] == [202, 429, 429]
    assert (await post(daemon, lyon, area={"zones": ["69123"]})).status == 202


async def test_retry_after_is_a_whole_number_of_seconds_and_at_least_one(daemon):
    fast = await cell_token(daemon, "Fast", ["75"], people.Rate(per_minute=600, burst=1))
    assert (await post(daemon, fast)).status == 202
    refused = await post(daemon, fast)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"  # 0.1 s, rounded up


async def test_refused_orders_do_not_use_up_the_cells_rate(daemon):
    """A cell's client looping on a bad order (a broken CMS) must not block the cell's real alerts."""
    paris = await cell_token(daemon, "Flood", ["75"], people.Rate(per_minute=1, burst=2))
    broken = [await daemon.client.post("/v1/alerts", headers=paris | {"Content-Type": "application/json"},
                                       data=b"{bad") for _ in range(5)]
    outside = [await post(daemon, paris, area={"zones": ["69123"]}) for _ in range(3)]  # not its jurisdiction
    assert [r.status for r in broken] == [400] * 5 and [r.status for r in outside] == [403] * 3
    assert [(await post(daemon, paris)).status for _ in range(3)] == [202, 202, 429]  # its burst, whole


def test_an_order_given_back_refills_the_bucket_up_to_the_burst_only():
    q = quota.Quota()
    assert q.take("c", RATE, 0.0) is None
    q.give_back("c", RATE, 0.0)
    q.give_back("c", RATE, 0.0)  # more than was taken: still the burst
    assert [q.take("c", RATE, 0.0) for _ in range(4)][:3] == [None, None, None]
    assert q.take("c", RATE, 0.0) is not None
