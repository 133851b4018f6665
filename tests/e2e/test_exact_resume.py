"""Exact resume of a whole run: 4 steps straight vs 2 steps, then `resume=true` to 4, from a `file://` URI.

Sync mode on CPU is deterministic (seeded sampling per step, seeded GrabCut, one torch thread per actor), so the
resumed run must end on bitwise the same weights and log the same per-step metrics as the uninterrupted one;
only wall-clock figures, the actors' running counters and the held-out evaluations (the interrupted run
evaluates at its own end, step 2) may differ. The split run keeps its checkpoints under `checkpoint.storage`
given as a URI, so the resume also goes through segr1.storage.

The same straight run is the reference for a run hit by a fault inside every kind of call (faults.*): a rollout
worker dies while it generates, a reward actor while it scores, the learner during its update (the job restarts
it from the step-2 checkpoint by itself), and a rollout worker hangs taking new weights. It must end on bitwise
the same weights, with the same per-step metrics and samples.
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
            # after 2 warm-start steps the tiny policy earns no reward yet, so every advantage is 0: the KL term
            # of runs.TINY (beta 0.04) makes every step update, and weight decay moves every weight in it, so the
            # optimizer's state must be restored exactly for the weights to match
            "learner.weight_decay=0.1")


def comparable(row: dict, also: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(UNCOMPARED + also)}


def assert_same_rows(straight: list[dict], other: list[dict], also: tuple[str, ...] = ()) -> None:
    assert [r["step"] for r in other] == [r["step"] for r in straight] == list(range(1, STEPS + 1))
    for a, b in zip(straight, other):
        a, b = comparable(a, also), comparable(b, also)
        diff = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        assert not diff, f"step {a['step']}: {diff}"


def assert_same_weights(ours_path, theirs_path) -> None:
    from safetensors.torch import load_file

    ours, theirs = load_file(str(ours_path)), load_file(str(theirs_path))
    assert ours.keys() == theirs.keys()
    assert all(ours[k].equal(theirs[k]) for k in ours), [k for k in ours if not ours[k].equal(theirs[k])][:5]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run: its output directory."""
    out = tmp_path_factory.mktemp("straight")
    runs.run(runs.train_args(out, "straight", f"run.steps={STEPS}", *SETTINGS), timeout=900)
    return out / "straight"


def test_resumed_run_matches_the_uninterrupted_run_bitwise(tmp_path, straight):
    from safetensors.torch import load_file

    store = f"file://{tmp_path / 'store'}"
    runs.run(runs.train_args(tmp_path, "split", f"run.steps={STEPS // 2}", f"checkpoint.storage={store}",
                             *SETTINGS), timeout=900)
    runs.run(runs.train_args(tmp_path, "split", f"run.steps={STEPS}", f"checkpoint.storage={store}",
                             "resume=true", *SETTINGS), timeout=900)

    assert_same_rows(runs.steps(straight / "metrics.jsonl"), runs.steps(tmp_path / "split" / "metrics.jsonl"))
    assert not (tmp_path / "split" / "checkpoints").exists()  # the split run's checkpoints went to the store
    final = straight / "checkpoints" / f"step_{STEPS}" / "model.safetensors"
    assert_same_weights(tmp_path / "store" / "split" / f"step_{STEPS}" / "model.safetensors", final)
    first = load_file(str(straight / "checkpoints" / f"step_{STEPS // 2}" / "model.safetensors"))
    theirs = load_file(str(final))
    assert not all(first[k].equal(theirs[k]) for k in first)  # the resumed steps did change the weights


def test_faults_inside_every_kind_of_call_leave_the_run_equal_to_the_uninterrupted_one(tmp_path, straight):
    drills = ("faults.die_in_generate_at_step=0", "faults.die_in_score_at_step=1",
              "faults.die_in_learner_step_at_step=2", "faults.hang_weight_sync_at_step=3",
              "learner.sync.timeout_s=15", "learner.restart_backoff_s=1")
    proc = runs.run(runs.train_args(tmp_path, "faulted", f"run.steps={STEPS}", *SETTINGS, *drills), timeout=900)

    assert "stage learner_step failed on learner rank 0 at step 3: the rank died during train_step" in proc.stdout
    rows = runs.steps(tmp_path / "faulted" / "metrics.jsonl")
    # the same samples, rewards, policy statistics and versions at every step; replaced workers have new ids
    assert_same_rows(runs.steps(straight / "metrics.jsonl"), rows, also=("rollout/worker_versions", "learner/"))
    assert [r["learner/restarts"] for r in rows] == [0, 0, 1, 1]
    assert [r["data/groups_dropped"] for r in rows] == [0, 0, 0, 0]
    for row in rows:  # every worker generated at the newest weights, the restored ones after the restart
        assert set(row["rollout/worker_versions"].values()) == {row["weights/version"] - 1}
    assert rows[0]["rollout/worker_versions"].keys() == {"rollout-1"}  # rollout-0 died inside generate
    assert_same_weights(tmp_path / "faulted" / "checkpoints" / f"step_{STEPS}" / "model.safetensors",
                        straight / "checkpoints" / f"step_{STEPS}" / "model.safetensors")
