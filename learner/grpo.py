"""GRPO math: group-relative advantages, per-token KL estimators and the clipped policy-gradient loss.

With one completion-level advantage A_i per sample and per-token ratio r_t = exp(logp_t - old_logp_t):

    A_i    = (R_i - mean_group(R)) / (std_group(R) + eps)        (scale="std"; "none": R_i - mean, Dr.GRPO)
    L_t    = -( min(A_i r_t, A_i clip(r_t, 1 - clip_low, 1 + clip_high)) - beta KL_t )
    KL_t   = exp(ref_t - logp_t) - (ref_t - logp_t) - 1                       (k3; k1 and k2 also offered)

and L aggregates L_t over the completion tokens (mask) as chosen by ``agg``. The released Seg-R1 objective is
clip_low=None (no clipping: one update per rollout batch, so r_t == 1 in value but carries the policy
gradient), beta=0.04, k3 and "seq-mean-token-mean".

Engine/learner mismatch. The rollout engine (vLLM: other kernels, other precision) samples from pi_engine, not
from the learner's pi_old. Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework
secretly brings you off-policy RL training") weighs each token's policy-gradient term by

    w_t    = min(pi_old(y_t) / pi_engine(y_t), C)  = min(exp(old_t - engine_t), C)     (no gradient)
    L_t    = -( w_t min(A_i r_t, A_i clip(r_t, ...)) - beta KL_t )

and the mismatch itself is measured as the k3 estimate of KL(pi_engine || pi_old) on the engine's samples:
exp(old_t - engine_t) - (old_t - engine_t) - 1, averaged over the completion tokens.

Pure torch; no config objects; inputs are never modified.
"""

from __future__ import annotations

import math

import torch

from segr1.choices import ADVANTAGE_SCALES, AGGREGATIONS, KL_KINDS


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "std", eps: float = 1e-4
) -> torch.Tensor:
    """Advantages of rewards[N], N = groups * group_size, each group a consecutive run -> [N].

    "std" divides by the unbiased group std (+ eps); "none" only centres (Dr.GRPO). A group whose rewards
    are all equal carries no signal and gets exactly zero advantages.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if group_size < 1 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards {list(rewards.shape)} do not split into groups of group_size={group_size}")
    grouped = rewards.reshape(-1, group_size)  # [groups, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "std":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centred[:, :1])
        centred = centred / (std + eps)
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # [groups, 1]
    return torch.where(constant, 0.0, centred).reshape(-1)


def overlong_penalty(
    lengths: torch.Tensor,  # [N] completion lengths in tokens
    max_new_tokens: int,
    buffer: int,
    factor: float = 1.0,
) -> torch.Tensor:
    """DAPO's soft overlong punishment [N] (<= 0), added to the rewards before the group advantages.

    With L_max = max_new_tokens and the last `buffer` tokens before it as the soft zone:
        0                                            L <= L_max - buffer
        factor * ((L_max - buffer) - L) / buffer     L_max - buffer < L <= L_max   (linear, -factor at L_max)
        -factor                                      L > L_max
    buffer = 0 switches it off (all zeros).
    """
    if buffer < 0 or factor < 0:
        raise ValueError(f"buffer and factor must be >= 0, got buffer={buffer}, factor={factor}")
    if buffer >= max_new_tokens:
        raise ValueError(f"buffer ({buffer}) must be below max_new_tokens ({max_new_tokens})")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be [N], got {list(lengths.shape)}")
    lengths = lengths.to(torch.float64)
    if buffer == 0:
        return torch.zeros_like(lengths)
    start = max_new_tokens - buffer
    return -factor * ((lengths - start) / buffer).clamp(min=0.0, max=1.0)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled-token log-probs [B, T] -> [B, T].

    k1 = logp - ref (unbiased, can be negative); k2 = (logp - ref)^2 / 2; k3 = exp(ref - logp) - (ref - logp) - 1
    (unbiased and non-negative; the released Seg-R1 choice).
    """
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio * log_ratio
    if kind == "k3":
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")


def truncated_is_weights(
    old_logp: torch.Tensor,  # [B, T] learner's log-probs of the sampled tokens under the pre-update policy
    engine_logp: torch.Tensor,  # [B, T] the rollout engine's log-probs of the same tokens (it sampled them)
    cap: float,
) -> torch.Tensor:
    """TIS weights min(exp(old - engine), cap) [B, T], detached: they reweigh samples, never carry gradient.

    Computed as exp(min(old - engine, log cap)) so a huge log-ratio (e.g. on padding) never overflows to inf.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if old_logp.shape != engine_logp.shape:
        raise ValueError(f"old_logp {list(old_logp.shape)} and engine_logp {list(engine_logp.shape)} differ")
    log_ratio = (old_logp - engine_logp).detach()  # [B, T]
    return torch.exp(log_ratio.clamp(max=math.log(cap)))


def engine_mismatch_kl(
    old_logp: torch.Tensor,  # [B, T] learner's log-probs under the pre-update policy
    engine_logp: torch.Tensor,  # [B, T] the rollout engine's sampling log-probs
    mask: torch.Tensor,  # [B, T] 1 on completion tokens
) -> torch.Tensor:
    """Scalar k3 estimate of KL(pi_engine || pi_old), token mean over the mask: 0 when the two agree.

    The tokens were sampled by the engine, so the unbiased, non-negative estimator takes the learner as the
    "reference": k3(engine, old) = exp(old - engine) - (old - engine) - 1.
    """
    per_token = kl_penalty(engine_logp.detach(), old_logp.detach(), "k3")  # [B, T]
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def policy_loss(
    logp: torch.Tensor,  # [B, T] log-probs of the sampled tokens under the policy being trained
    old_logp: torch.Tensor,  # [B, T] the same under the policy that sampled them
    ref_logp: torch.Tensor | None,  # [B, T] the same under the frozen reference (may be None if beta == 0)
    advantages: torch.Tensor,  # [B] one per completion
    mask: torch.Tensor,  # [B, T] 1 for completion tokens (up to and including the first EOS), else 0
    *,
    clip_low: float | None = 0.2,
    clip_high: float | None = 0.2,
    beta: float = 0.04,
    kl: str = "k3",
    agg: str = "seq-mean-token-mean",
    max_len: int | None = None,
    is_weights: torch.Tensor | None = None,  # [B, T] per-token weights of the policy-gradient term (TIS)
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss (scalar, differentiable in ``logp``) and float statistics of the batch.

    clip_low=None: no clipping (clip_high is then unused); clip_high=None: the same bound as clip_low.
    The KL statistic is reported whenever ref_logp is given, even with beta=0. ``max_len`` is the divisor of
    "seq-mean-token-sum-norm" (default T). ``is_weights`` (e.g. `truncated_is_weights`) multiply each token's
    clipped surrogate, not its KL term; None = all 1. Statistics: ``kl`` (mean per token), ``clip_frac`` (share of
    tokens where the clipped branch is the one taken), ``ratio_mean``, ``adv_mean`` (per completion),
    ``tokens`` (number of masked tokens).
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(f"logp {list(logp.shape)}, old_logp {list(old_logp.shape)}, mask {list(mask.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages {list(advantages.shape)} must be [B] for logp {list(logp.shape)}")
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]  # [B, 1]
    ratio = torch.exp(logp - old_logp)  # [B, T]
    surrogate = adv * ratio
    clipped_taken = torch.zeros_like(mask, dtype=torch.bool)
    if clip_low is not None:
        high = clip_low if clip_high is None else clip_high
        clipped = adv * ratio.clamp(1 - clip_low, 1 + high)
        clipped_taken = clipped < surrogate  # the pessimistic (min) branch is the clipped one
        surrogate = torch.minimum(surrogate, clipped)
    if ref_logp is None and beta != 0:
        raise ValueError("ref_logp is required when beta != 0")
    kl_value = torch.zeros_like(logp) if ref_logp is None else kl_penalty(logp, ref_logp, kl)  # [B, T]
    if is_weights is not None:
        if is_weights.shape != logp.shape:
            raise ValueError(f"is_weights {list(is_weights.shape)} must match logp {list(logp.shape)}")
        surrogate = surrogate * is_weights.detach().to(logp.dtype)
    per_token = -surrogate  # [B, T]
    if beta != 0:
        per_token = per_token + beta * kl_value

    loss = _aggregate(per_token, mask, agg, logp.shape[1] if max_len is None else max_len)
    tokens = mask.sum().clamp(min=1)
    with torch.no_grad():
        stats = {
            "kl": float((kl_value * mask).sum() / tokens),
            "clip_frac": float((clipped_taken.to(mask.dtype) * mask).sum() / tokens),
            "ratio_mean": float((ratio * mask).sum() / tokens),
            "adv_mean": float(advantages.float().mean()),
            "tokens": float(mask.sum()),
        }
    return loss, stats


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, agg: str, max_len: int) -> torch.Tensor:
    """Reduce per-token losses [B, T] over the masked tokens to a scalar."""
    token_sums = (per_token * mask).sum(dim=1)  # [B]
    if agg == "token-mean":  # every token weighs the same (DAPO)
        return token_sums.sum() / mask.sum().clamp(min=1)
    if agg == "seq-mean-token-sum-norm":  # a constant divisor: no length bias (Dr.GRPO)
        return (token_sums / max_len).mean()
    return (token_sums / mask.sum(dim=1).clamp(min=1)).mean()  # every completion weighs the same
