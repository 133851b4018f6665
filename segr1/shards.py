"""Contiguous, balanced shards: how one batch is split over rollout workers, and over learner ranks.

Sizes differ by at most one and order is kept, so putting the parts' results back together is a concatenation.
"""

from __future__ import annotations


def balanced_shards(count: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) ranges splitting `count` items into `parts` contiguous shards of near-equal size (the first
    `count % parts` shards one longer); shards are empty when count < parts."""
    base, extra = divmod(count, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
