"""`EpochSampler`: deterministic epoch-wise shuffling of dataset indices that a resumed run continues exactly.

Epoch `e` visits every index once, in the order `permutation(seed, e)`. A batch that reaches the end of an
epoch takes the rest of its indices from the start of the next one, so within an epoch no index is lost or
repeated however the batch size divides the dataset. The cursor (epoch, position) plus the seed is the whole
state: `state_dict()` / `load_state_dict()` save and restore it.
"""

from __future__ import annotations

import numpy as np


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The visiting order of epoch `epoch`: a permutation of range(n), a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class EpochSampler:
    """Draws batches of indices in range(n), epoch after epoch."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError(f"EpochSampler needs n >= 1, got {n}")
        self.n, self.seed = n, seed
        self.epoch, self.position = 0, 0
        self._order = epoch_permutation(n, seed, 0)

    def next_batch(self, k: int) -> list[int]:
        """The next `k` indices; crosses into the next epoch (a fresh permutation) when this one runs out."""
        if k < 1:
            raise ValueError(f"batch size must be >= 1, got {k}")
        batch: list[int] = []
        while len(batch) < k:
            take = min(k - len(batch), self.n - self.position)
            batch.extend(int(i) for i in self._order[self.position:self.position + take])
            self.position += take
            if self.position == self.n:
                self._start_epoch(self.epoch + 1)
        return batch

    def _start_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0
        self._order = epoch_permutation(self.n, self.seed, epoch)

    def state_dict(self) -> dict[str, int]:
        """Plain ints, JSON-safe: enough to continue exactly where this sampler stands."""
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a cursor saved by `state_dict()`; the dataset size must not have changed."""
        missing = {"n", "seed", "epoch", "position"} - set(state)
        if missing:
            raise KeyError(f"sampler state lacks {sorted(missing)}")
        if int(state["n"]) != self.n:
            raise ValueError(f"sampler state is for {state['n']} samples, this dataset has {self.n}")
        if not 0 <= int(state["position"]) < self.n:
            raise ValueError(f"sampler position {state['position']} out of range for {self.n} samples")
        self.seed = int(state["seed"])
        self._start_epoch(int(state["epoch"]))
        self.position = int(state["position"])
