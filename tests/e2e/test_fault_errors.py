"""A stage that fails for good ends `segr1 train` with one line naming the stage, the actor and the step.

Here a rollout worker hangs inside generate at step 1 with no retries allowed: the call is abandoned after
`rollout.timeout_s` and the job stops with status 1, instead of waiting forever or printing a traceback.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e import runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_a_hung_generate_with_no_retries_left_ends_the_run_with_one_line(tmp_path):
    args = runs.train_args(tmp_path, "hung", "run.steps=2", "faults.hang_generate_at_step=0", "rollout.max_retries=0",
                           "rollout.timeout_s=15", "cluster.metrics_export_port=0", "algorithm.baseline_images=0",
                           "logging.overlay_every=0", "checkpoint.export_hf=false", "algorithm.warm_start.steps=0")
    proc = subprocess.run(args, cwd=runs.ROOT, env=runs.env(), capture_output=True, text=True, timeout=600,
                          check=False)

    assert proc.returncode == 1, proc.stderr[-3000:]
    # Ray's log lines from the actors interleave with ours; the CLI's own output is one line
    ours = [line for line in proc.stderr.splitlines() if line.startswith("segr1")]
    assert ours == [("segr1: run failed: stage generate failed on rollout-0 at step 1: generate did not return "
                     "within rollout.timeout_s=15s; its 2 prompts were tried 1 times (rollout.max_retries=0)")]
    assert not runs.steps(tmp_path / "hung" / "metrics.jsonl")  # no step was logged as if it had run
