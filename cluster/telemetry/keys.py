"""The metric keys a training step reports, and how each key is named in Prometheus.

A step's metrics are a flat dict of `group/name` keys (DESIGN.md, "metrics.jsonl keys"). Every sink treats
any numeric key generically; this module only adds descriptions for the keys we know, and the one mapping
from a key to a Prometheus-safe metric name:

    prometheus_name("reward/mean")   # -> "segr1_reward_mean"
    exported_name("segr1_reward_mean")  # -> "ray_segr1_reward_mean" (what Ray's exporter serves)

Pure: no Ray import, so tests and the dashboard builder use it without a cluster.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from numbers import Real
from typing import Any

PREFIX = "segr1"
# Ray's metrics agent prepends its namespace to every ray.util.metrics name; Counters also gain "_total"
# and Histograms "_bucket" / "_sum" / "_count" (Prometheus conventions).
RAY_NAMESPACE = "ray"

# Keys every step row carries (DESIGN.md contract), with what they mean.
CONTRACT_KEYS: dict[str, str] = {
    "step": "GRPO optimizer steps completed",
    "reward/mean": "mean total reward R = R_format + R_seg over the step's completions",
    "reward/format": "share of completions whose output parses (R_format)",
    "reward/iou": "mean IoU of predicted vs ground-truth masks",
    "reward/s_measure": "mean S-measure of predicted vs ground-truth masks",
    "eval/iou": "held-out mean IoU (eval steps only)",
    "policy/loss": "GRPO policy loss",
    "policy/kl": "mean per-token KL to the reference model",
    "policy/clip_frac": "share of tokens whose ratio was clipped",
    "time/rollout_s": "seconds generating completions",
    "time/reward_s": "seconds scoring completions",
    "time/learn_s": "seconds in the learner update",
    "time/sync_s": "seconds broadcasting weights to the rollout workers",
    "time/step_s": "seconds for the whole step",
    "throughput/samples_per_s": "completions generated, scored and learned per second",
    "weights/version": "policy weights version served by the rollout workers",
    "pool/rollout_workers": "rollout workers alive",
    "pool/reward_actors": "reward actors alive",
    "pipeline/staleness": "versions the consumed rollouts lag the learner by",
    "eval/iou_blind": "held-out mean IoU of the best image-independent prompt through the run's segmenter "
    "(eval steps only)",
    "eval/iou_oracle": "held-out mean IoU of the ground-truth box plus its deepest point through the run's "
    "segmenter (eval steps only)",
    "eval/localisation_gain": "(eval/iou - eval/iou_blind) / (eval/iou_oracle - eval/iou_blind): 0 = no better "
    "than a fixed prompt, 1 = as good as the ground-truth box (eval steps only)",
}

# Keys that services report beyond the contract; any other numeric key is exported too.
EXTRA_KEYS: dict[str, str] = {
    "reward/box_giou": "mean GIoU of the predicted boxes with the ground-truth box (weighted by reward.w_box)",
    "eval/format": "held-out share of parseable outputs (eval steps only)",
    "eval/s_measure": "held-out mean S-measure (eval steps only)",
    "eval/iou_shuffled": "held-out mean IoU of the greedy prompt written for another image (the image ablation: "
    "equal to eval/iou for a policy that ignores the image; eval steps only)",
    "policy/grad_norm": "gradient norm before clipping",
    "policy/entropy": "mean per-token entropy of the policy",
    "policy/lr": "learning rate",
    "policy/tokens": "completion tokens in the update",
    "policy/engine_kl": "k3 KL of the rollout engine's sampling log-probs vs the learner's pre-update ones "
    "(kernel/precision mismatch; also staleness in async mode)",
    "policy/tis_weight_mean": "mean truncated importance weight min(pi_learner / pi_engine, tis_cap) (TIS on only)",
    "policy/optimizer_steps": "optimizer steps taken on the rollout batch (epochs x mini-batches)",
    "data/groups_trained": "groups the update trained on (dynamic sampling keeps only informative ones)",
    "data/groups_drawn": "groups generated this step (all draws), scored or dropped",
    "data/groups_filtered": "groups left out: equal rewards (dynamic sampling) or the surplus of a refill draw",
    "data/draws": "batches of prompts drawn this step (more than 1 only with algorithm.max_draws > 1)",
    "data/groups_dropped": "groups left out because their scoring failed for good (reward.max_retries spent); "
    "never given a reward (docs/RELIABILITY.md)",
    "learner/skipped_update": "1 when the step did not update: no group kept, or every advantage 0 with beta 0 "
    "(a zero gradient, on which Adam would still move the weights)",
    "learner/restarts": "times the job restarted the learner group from a checkpoint after it died or hung",
    "time/reward_exposed_s": "seconds scoring after the last rollout shard returned (reward time not hidden "
    "behind generation: shards are scored as they return)",
    "rollout/tokens_per_s": "tokens generated per second over all rollout workers",
    "reward_pool/masks_per_s": "masks decoded per second over all reward actors",
    "reward_pool/groups_per_s": "completion groups scored per second",
    "reward_pool/queue_depth": "groups waiting for a reward actor",
    "pipeline/queue_depth": "rollout groups buffered for the learner (async mode)",
}

KNOWN_KEYS: dict[str, str] = {**CONTRACT_KEYS, **EXTRA_KEYS}

# The per-stage seconds also feed one histogram, tagged by stage (rollout, reward, learn, sync, step).
STAGE_KEY = re.compile(r"^time/(?P<stage>[A-Za-z0-9_]+)_s$")

_PROMETHEUS_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # Ray also rejects ":" in custom names
_INVALID_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(key: str, prefix: str = PREFIX) -> str:
    """`reward/mean` -> `segr1_reward_mean`: every character Prometheus forbids becomes `_`.

    Readable rather than injective over all strings (`a/b_c` and `a_b/c` meet); the exporter refuses such a
    collision with an error naming both keys, and KNOWN_KEYS is collision-free (tested).
    """
    if not key:
        raise ValueError("metric key: must be a non-empty string")
    name = f"{prefix}_{_INVALID_CHAR.sub('_', key)}"
    if not _PROMETHEUS_NAME.match(name):
        raise ValueError(f"metric key {key!r}: maps to {name!r}, which is not a valid Prometheus name")
    return name


def is_valid_prometheus_name(name: str) -> bool:
    return bool(_PROMETHEUS_NAME.match(name))


def exported_name(name: str, kind: str = "gauge") -> str:
    """The series name Ray serves for a ray.util.metrics metric called `name` (kind: gauge|counter|histogram)."""
    suffix = {"gauge": "", "counter": "_total", "histogram": "_bucket"}
    if kind not in suffix:
        raise ValueError(f"metric kind: must be one of {tuple(suffix)}, got {kind!r}")
    return f"{RAY_NAMESPACE}_{name}{suffix[kind]}"


def describe(key: str) -> str:
    return KNOWN_KEYS.get(key, f"segr1 metric {key}")


def numeric_items(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite real-valued entries of a metrics dict as floats (bools count; numpy/torch scalars too)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalar
            value = value.item()
        if isinstance(value, Real) and math.isfinite(float(value)):
            out[key] = float(value)
    return out
