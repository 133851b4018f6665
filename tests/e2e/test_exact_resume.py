"""Exact resume of a whole run: 4 steps straight vs 2 steps, then `resume=true` to 4, from a `file://` URI.

Sync mode on CPU is deterministic (seeded sampling per step, seeded GrabCut, one torch thread per actor), so the
resumed run must end on bitwise the same weights and log the same per-step metrics as the uninterrupted one;
only wall-clock figures, the actors' running counters and the held-out evaluations (the interrupted run
evaluates at its own end, step 2) may differ. The split run keeps its checkpoints under `checkpoint.storage`
given as a URI, so the resume also goes through segr1.storage.
"""

from __future__ import annotations

import pytest

from tests.e2e import runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]

STEPS = 4
# wall-clock rates and times, per-actor running counters (fresh actors after a resume start from zero), and the
# held-out evaluations, which the two runs take at different steps
UNCOMPARED = ("time/", "throughput/", "rollout_pool/", "reward_pool/", "eval/")
SETTINGS = ("checkpoint.every=2", "checkpoint.keep=3", "cluster.metrics_export_port=0", "logging.overlay_every=0",
            "algorithm.baseline_images=0", "checkpoint.export_hf=false",
            # after 2 warm-start steps the tiny policy earns no reward yet, so every advantage is 0; weight decay
            # keeps the optimizer (and its state) moving the weights on every step regardless
            "learner.weight_decay=0.1")


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(UNCOMPARED)}


def test_resumed_run_matches_the_uninterrupted_run_bitwise(tmp_path):
    from safetensors.torch import load_file

    runs.run(runs.train_args(tmp_path, "straight", f"run.steps={STEPS}", *SETTINGS), timeout=900)
    store = f"file://{tmp_path / 'store'}"
    runs.run(runs.train_args(tmp_path, "split", f"run.steps={STEPS // 2}", f"checkpoint.storage={store}",
                             *SETTINGS), timeout=900)
    runs.run(runs.train_args(tmp_path, "split", f"run.steps={STEPS}", f"checkpoint.storage={store}",
                             "resume=true", *SETTINGS), timeout=900)

    straight = runs.steps(tmp_path / "straight" / "metrics.jsonl")
    split = runs.steps(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in split] == [r["step"] for r in straight] == list(range(1, STEPS + 1))
    for a, b in zip(straight, split):
        diff = {k: (a.get(k), b.get(k)) for k in comparable(a).keys() | comparable(b).keys()
                if a.get(k) != b.get(k)}
        assert not diff, f"step {a['step']}: {diff}"

    assert not (tmp_path / "split" / "checkpoints").exists()  # the split run's checkpoints went to the store
    ours = load_file(str(tmp_path / "store" / "split" / f"step_{STEPS}" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "straight" / "checkpoints" / f"step_{STEPS}" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(ours[k].equal(theirs[k]) for k in ours), [k for k in ours if not ours[k].equal(theirs[k])][:5]
    first = load_file(str(tmp_path / "straight" / "checkpoints" / f"step_{STEPS // 2}" / "model.safetensors"))
    assert not all(first[k].equal(theirs[k]) for k in first)  # the resumed steps did change the weights
