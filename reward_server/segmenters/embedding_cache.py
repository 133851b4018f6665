"""A bounded LRU cache of image embeddings, keyed by image id (or by image content when no id is given).

One SAM2 image embedding (Hiera, 1024 input) is about 16 MB, so the cache is bounded by entry count; the
G completions of a group never need it (one encode serves them), but retried groups and several prompts on
one image (referring segmentation: many expressions per photo) hit it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np


def image_key(image: np.ndarray) -> str:
    """A content key for an image: shape plus a 128-bit BLAKE2 digest of its bytes."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()
    return f"{'x'.join(map(str, image.shape))}:{digest}"


class EmbeddingCache:
    """Least-recently-used map holding at most `max_entries` values (0 disables caching)."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"embedding cache size must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.max_entries == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)  # evict the least recently used

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries
