"""One cell cannot starve the others: each cell's orders come out of its own token bucket."""

from __future__ import annotations

from alertd import people, quota

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
