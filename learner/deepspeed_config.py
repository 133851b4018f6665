"""Builds the DeepSpeed config dict from the learner settings, and the learning-rate schedule.

One optimizer step per mini-batch of a `train_step` call (one per call by default), whatever the number of
micro-batches: gradient accumulation is "unmanaged" (`backward` only accumulates, `step` reduces across ranks
and updates), so the learner decides the micro-batch count per step and weights each micro-batch's loss itself
(learner/actor.py).

    ds_config = build_ds_config(cfg.learner, world_size=2, bf16=False)
    scheduler = lr_lambda(cfg.learner.lr_schedule, cfg.learner.warmup_steps, total_steps=cfg.run.steps)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from segr1.config import LearnerConfig


def build_ds_config(learner: LearnerConfig, *, world_size: int, bf16: bool) -> dict[str, Any]:
    """DeepSpeed JSON for AdamW + ZeRO `learner.zero_stage`, bf16 on GPU / fp32 on CPU."""
    micro = learner.micro_batch_size
    zero: dict[str, Any] = {
        "stage": learner.zero_stage,
        "elastic_checkpoint": False,  # per-rank optimizer files, reloaded at the same world size
        "overlap_comm": False,  # unmanaged accumulation allows overlap only with stage 2; keep one code path
        "contiguous_gradients": True,
    }
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,  # nominal: accumulation is driven by the learner (see docstring)
        "train_batch_size": micro * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": learner.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": learner.lr,
                "betas": list(learner.adam_betas),
                "eps": 1e-8,
                "weight_decay": learner.weight_decay,
                "torch_adam": True,  # the fused/CPU-Adam extensions need a compiler; torch's AdamW needs nothing
            },
        },
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "steps_per_print": 1 << 30,  # the controller logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr after `step` optimizer steps: linear warm-up, then constant/cosine/linear."""
    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"learner.lr_schedule: unknown schedule {schedule!r}")
    decay_steps = max(1, total_steps - warmup_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return multiplier
