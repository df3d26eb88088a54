"""Seeded subsets by id: `at_most` keeps the given order and grows by adding ids."""

from __future__ import annotations

from embedtune.sampling import at_most, by_hash

IDS = [f"q{i}" for i in range(50)]


def test_at_most_keeps_the_order_and_takes_the_smallest_hashes():
    chosen = at_most(IDS, 10, seed=7, salt="eval")
    assert len(chosen) == 10
    assert chosen == [i for i in IDS if i in set(by_hash(IDS, 7, "eval")[:10])]
    assert at_most(list(reversed(IDS)), 10, 7, "eval") == list(reversed(chosen))  # order-free


def test_at_most_grows_by_adding_and_none_or_enough_means_all():
    assert set(at_most(IDS, 10, 7, "eval")) < set(at_most(IDS, 20, 7, "eval"))
    assert at_most(IDS, 10, 7, "eval") != at_most(IDS, 10, 8, "eval")  # the seed matters
    assert at_most(IDS, None, 7, "eval") == at_most(IDS, 50, 7, "eval") == IDS
    assert at_most(IDS, 0, 7, "eval") == []
