"""Bookkeeping of one learner step: how much each micro-batch counts, lock-step padding, global statistics.

Why weights: `policy_loss` returns the objective of ONE micro-batch (e.g. the mean over its sequences of each
sequence's token mean). The full-batch objective is recovered by weighting micro-batch m with
n_m / N (its sequences over all sequences of all ranks; tokens for token-mean), times world_size because
DeepSpeed averages gradients over ranks. Summing those weighted gradients gives exactly the gradient of the
full-batch loss, however the batch is cut into micro-batches and ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learner.batching import MicroBatch
from segr1.config import AlgorithmConfig

SEQUENCE_WEIGHTED = ("seq-mean-token-mean", "seq-mean-token-sum-norm")


def _all_reduce(tensor: torch.Tensor, world_size: int, op: str = "sum") -> torch.Tensor:
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


@dataclass(frozen=True)
class LossWeights:
    agg: str
    total_sequences: float  # over all ranks
    total_tokens: float  # loss-mask tokens over all ranks
    world_size: int

    @classmethod
    def build(cls, batches: list[MicroBatch], agg: str, world_size: int, device: torch.device) -> LossWeights:
        counts = torch.tensor([sum(mb.size for mb in batches), sum(float(mb.loss_mask.sum()) for mb in batches)],
                              dtype=torch.float64, device=device)
        _all_reduce(counts, world_size)
        return cls(agg, float(counts[0]), float(counts[1]), world_size)

    def weight(self, mb: MicroBatch) -> float:
        if self.agg in SEQUENCE_WEIGHTED:
            share = mb.size / max(self.total_sequences, 1.0)
        elif self.agg == "token-mean":
            share = float(mb.loss_mask.sum()) / max(self.total_tokens, 1.0)
        else:
            raise ValueError(f"algorithm.agg: unknown aggregation {self.agg!r}")
        return share * self.world_size


def lockstep(batches: list[MicroBatch], world_size: int, device: torch.device, partitioned: bool
             ) -> list[tuple[MicroBatch, bool]]:
    """(micro-batch, is_real) pairs. With partitioned parameters (ZeRO-3) every forward all-gathers them, so all
    ranks must run the same number of passes: the shorter ranks repeat their last micro-batch as padding, which
    the caller must give zero weight and leave out of results."""
    if not batches:
        raise ValueError("this learner rank received no sequences; give every rank at least one group")
    count = len(batches)
    if partitioned and world_size > 1:
        most = torch.tensor([count], dtype=torch.int64, device=device)
        count = int(_all_reduce(most, world_size, op="max")[0])
    return [(mb, True) for mb in batches] + [(batches[-1], False)] * (count - len(batches))


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, mb: MicroBatch,
              algo: AlgorithmConfig, max_len: int) -> tuple[torch.Tensor, float, float]:
    """Micro-batch GRPO loss, plus the masked token sums of the KL and of clipped tokens (for statistics).

    logp, old_logp, ref_logp: [B, C]. `max_len` is Dr.GRPO's constant divisor (the generation budget), the
    same for every micro-batch so the weighted sum is still the full-batch loss."""
    from learner.grpo import policy_loss

    loss, stats = policy_loss(logp, old_logp, ref_logp, mb.advantages, mb.loss_mask, clip_low=algo.clip_low,
                              clip_high=algo.clip_high, beta=algo.beta, kl=algo.kl, agg=algo.agg, max_len=max_len)
    return loss, stats["kl"] * stats["tokens"], stats["clip_frac"] * stats["tokens"]


class StatSums:
    """Masked token sums of this rank's micro-batches, all-reduced into global means at the end."""

    KEYS = ("loss", "kl", "clipped", "entropy", "tokens", "sequences")

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(self.KEYS), dtype=torch.float64, device=device)

    def add(self, mb: MicroBatch, weighted_loss: torch.Tensor, kl_sum: float = 0.0, clipped: float = 0.0,
            entropy: torch.Tensor | None = None) -> None:
        ent = float((entropy * mb.loss_mask).sum()) if entropy is not None else 0.0
        values = [float(weighted_loss), kl_sum, clipped, ent, float(mb.loss_mask.sum()), float(mb.size)]
        self.sums += torch.tensor(values, dtype=self.sums.dtype, device=self.sums.device)

    def reduce(self, world_size: int) -> dict[str, float]:
        total = dict(zip(self.KEYS, _all_reduce(self.sums.clone(), world_size).tolist()))
        tokens = max(total["tokens"], 1.0)
        return {
            "policy/loss": total["loss"] / world_size,  # weights carry a factor world_size (see module doc)
            "policy/kl": total["kl"] / tokens,
            "policy/clip_frac": total["clipped"] / tokens,
            "policy/entropy": total["entropy"] / tokens,
            "policy/tokens": total["tokens"],
            "policy/sequences": total["sequences"],
        }
