"""Bookkeeping of one learner step: how much each micro-batch counts, lock-step padding, global statistics.

Why weights: `policy_loss` returns the objective of ONE micro-batch (e.g. the mean over its sequences of each
sequence's token mean). The full-batch objective is recovered by weighting micro-batch m with
n_m / N (its sequences over all sequences of all ranks; tokens for token-mean), times world_size because
DeepSpeed averages gradients over ranks. Summing those weighted gradients gives exactly the gradient of the
full-batch loss, however the batch is cut into micro-batches and ranks.

With PPO reuse (algorithm.epochs, algorithm.mini_batches) the same holds per optimizer step: each mini-batch's
weights are its micro-batches' shares of that mini-batch over all ranks, so every step follows the gradient of
its mini-batch's objective. Every rank must take the same number of optimizer steps (`mini_batch_count`).
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

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def mini_batch_count(local_groups: int, requested: int, world_size: int, device: torch.device) -> int:
    """Optimizer steps per epoch, the same on every rank: `requested`, or fewer when some rank holds fewer groups
    than that (e.g. after dynamic sampling dropped groups), since a mini-batch keeps whole groups and every rank
    needs one in each step."""
    fewest = torch.tensor([local_groups], dtype=torch.int64, device=device)
    return max(1, min(requested, int(_all_reduce(fewest, world_size, op="min")[0])))


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
              algo: AlgorithmConfig, max_len: int, is_weights: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, float, float]:
    """Micro-batch GRPO loss, plus the masked token sums of the KL and of clipped tokens (for statistics).

    logp, old_logp, ref_logp, is_weights (TIS, or None): [B, C]. `max_len` is Dr.GRPO's constant divisor (the
    generation budget), the same for every micro-batch so the weighted sum is still the full-batch loss."""
    from learner.grpo import policy_loss

    loss, stats = policy_loss(logp, old_logp, ref_logp, mb.advantages, mb.loss_mask, clip_low=algo.clip_low,
                              clip_high=algo.clip_high, beta=algo.beta, kl=algo.kl, agg=algo.agg, max_len=max_len,
                              is_weights=is_weights)
    return loss, stats["kl"] * stats["tokens"], stats["clip_frac"] * stats["tokens"]


def mismatch_sums(learner_old: torch.Tensor, mb: MicroBatch, tis_cap: float | None
                  ) -> tuple[float, float, torch.Tensor | None]:
    """Engine/learner mismatch of one micro-batch: the masked token sum of the k3 engine KL, the masked token sum
    of the TIS weights (0 when off) and the weights [B, C] themselves (None when tis_cap is None).

    learner_old: [B, C] the learner's log-probs under the pre-update policy; the engine's are mb.rollout_logprobs."""
    from learner.grpo import engine_mismatch_kl, truncated_is_weights

    assert mb.rollout_logprobs is not None, "GRPO micro-batches carry the engine's log-probs"
    engine = mb.rollout_logprobs.to(learner_old.dtype)
    tokens = float(mb.loss_mask.sum())
    kl_sum = float(engine_mismatch_kl(learner_old, engine, mb.loss_mask)) * tokens
    if tis_cap is None:
        return kl_sum, 0.0, None
    weights = truncated_is_weights(learner_old, engine, tis_cap)  # [B, C]
    return kl_sum, float((weights * mb.loss_mask.to(weights.dtype)).sum()), weights


class StatSums:
    """Masked token sums of this rank's micro-batches, all-reduced into global means at the end.

    Per-pass quantities (loss, KL, clipping, entropy) are summed over every pass of every epoch and averaged over
    all passes' tokens; the batch's own quantities (tokens, sequences, engine KL, TIS weights) once, on the first
    pass. The loss is each optimizer step's mini-batch objective, averaged over the optimizer steps."""

    KEYS = ("loss", "kl", "clipped", "entropy", "pass_tokens", "tokens", "sequences", "engine_kl", "tis_weight")

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(self.KEYS), dtype=torch.float64, device=device)

    def add(self, mb: MicroBatch, weighted_loss: torch.Tensor, kl_sum: float = 0.0, clipped: float = 0.0,
            entropy: torch.Tensor | None = None, *, first_pass: bool = True, engine_kl_sum: float = 0.0,
            tis_weight_sum: float = 0.0) -> None:
        ent = float((entropy * mb.loss_mask).sum()) if entropy is not None else 0.0
        tokens = float(mb.loss_mask.sum())
        once = [tokens, float(mb.size), engine_kl_sum, tis_weight_sum] if first_pass else [0.0] * 4
        values = [float(weighted_loss), kl_sum, clipped, ent, tokens, *once]
        self.sums += torch.tensor(values, dtype=self.sums.dtype, device=self.sums.device)

    def reduce(self, world_size: int, optimizer_steps: int = 1) -> dict[str, float]:
        total = dict(zip(self.KEYS, _all_reduce(self.sums.clone(), world_size).tolist()))
        pass_tokens, tokens = max(total["pass_tokens"], 1.0), max(total["tokens"], 1.0)
        return {
            # weights carry a factor world_size (see module doc); each step's weighted sum is its objective
            "policy/loss": total["loss"] / world_size / optimizer_steps,
            "policy/kl": total["kl"] / pass_tokens,
            "policy/clip_frac": total["clipped"] / pass_tokens,
            "policy/entropy": total["entropy"] / pass_tokens,
            "policy/tokens": total["tokens"],
            "policy/sequences": total["sequences"],
            "policy/engine_kl": total["engine_kl"] / tokens,
            "policy/tis_weight_mean": total["tis_weight"] / tokens,
        }
