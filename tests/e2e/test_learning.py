"""GRPO on the embedded default raises the reward it is given, after the grammar-only warm start.

A shortened `make train` (fewer warm-start and GRPO steps, same models, data and actors). The reward is
format + 0.7 IoU + 0.3 S, and in 40 steps most of the rise is the format rate: this checks that the update
reaches the policy, NOT that the policy localises. That the model can localise is tests/integration/
test_model_can_see.py (supervised); that GRPO teaches it is judged against the blind and oracle baselines over
`make train-long` (400 steps, README "Does it learn?"), too long for CI.
"""

from __future__ import annotations

import pytest

from tests.e2e import runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_grpo_raises_the_reward_after_the_warm_start(tmp_path):
    runs.run(runs.train_args(
        tmp_path, "learning", "run.steps=40", "algorithm.warm_start.steps=100", "algorithm.prompts_per_step=8",
        "algorithm.group_size=8", "rollout.max_new_tokens=64", "data.synth_train_n=512", "data.synth_eval_n=16",
        "algorithm.eval_every=0", "logging.overlay_every=0", "checkpoint.every=0", "checkpoint.export_hf=false",
        "cluster.metrics_export_port=0", "algorithm.beta=0"), timeout=900)  # make train's beta (runs.TINY sets 0.04)
    rows = runs.steps(tmp_path / "learning" / "metrics.jsonl")
    assert len(rows) == 40
    first = sum(r["reward/mean"] for r in rows[:10]) / 10
    last = sum(r["reward/mean"] for r in rows[-10:]) / 10
    assert last > first + 0.1, f"reward did not rise: first 10 steps {first:.3f}, last 10 steps {last:.3f}"
    assert rows[-1]["policy/grad_norm"] > 0
