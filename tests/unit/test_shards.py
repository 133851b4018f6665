"""segr1.shards: the split of a batch over rollout workers and learner ranks, by hand."""

from __future__ import annotations

from segr1.shards import balanced_shards


def test_balanced_shards_by_hand():
    assert balanced_shards(5, 2) == [(0, 3), (3, 5)]
    assert balanced_shards(1, 3) == [(0, 1), (1, 1), (1, 1)]
    assert balanced_shards(6, 3) == [(0, 2), (2, 4), (4, 6)]
    assert balanced_shards(0, 1) == [(0, 0)]


def test_shards_cover_every_item_once_in_order():
    for count in range(12):
        for parts in range(1, 6):
            bounds = balanced_shards(count, parts)
            assert [i for a, b in bounds for i in range(a, b)] == list(range(count))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
