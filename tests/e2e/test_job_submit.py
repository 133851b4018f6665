"""Against `ray start --head` on 127.0.0.1 with token authentication on: `ray job submit -- segr1 train` runs,
`segr1 scale` adds a rollout worker to the running job, which serves the current weights, and `segr1 stop` ends it.

The head gets a token of its own (a file in its temp dir, named by RAY_AUTH_TOKEN_PATH, as a user's cluster would
have one), so the test needs nothing in ~/.ray and never uses or writes a token of the machine's user.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head node of our own (its own temp dir and ports), stopped at the end."""
    gcs, dash = runs.free_port(), runs.free_port()
    temp_dir = Path("/tmp") / f"segr1-e2e-{gcs}"  # Ray's socket paths must stay short
    temp_dir.mkdir(parents=True)
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # Every process that talks to this head (the head itself, the job's driver, which inherits the head's
    # environment, `ray job submit`, `segr1 scale/stop`) uses this token; the head binds to loopback only.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    args = [RAY, "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=6", "--include-dashboard=true",
            f"--temp-dir={temp_dir}", f"--metrics-export-port={runs.free_port()}", "--disable-usage-stats",
            # every port of our own, so another Ray on this machine (a user's, a test's) cannot collide
            f"--dashboard-agent-listen-port={runs.free_port()}", f"--dashboard-agent-grpc-port={runs.free_port()}",
            f"--runtime-env-agent-port={runs.free_port()}", f"--node-manager-port={runs.free_port()}",
            f"--object-manager-port={runs.free_port()}"]
    proc = subprocess.Popen(args, env=runs.env(**auth), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        runs.wait_for(lambda: _dashboard_up(dash), timeout=120,
                      what="the Ray dashboard (job server)", interval=1.0)
        yield {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}", "auth": auth}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _dashboard_up(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2):
            return True
    except OSError as e:  # 401 without a token still means the server is up
        return "401" in str(e) or "403" in str(e)


def test_job_submit_runs_training_and_scale_adds_a_rollout_worker(head, tmp_path):
    # Many steps: the job runs until `segr1 stop`, so the test never races the run's natural end.
    name, steps = "submitted", 500
    entry = runs.train_args(tmp_path, name, f"run.steps={steps}", "cluster.metrics_export_port=0",
                            "checkpoint.every=0")
    submit = subprocess.Popen([RAY, "job", "submit", "--address", head["dashboard"], "--", *entry],
                              cwd=runs.ROOT, env=runs.env(**head["auth"]), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / name / "metrics.jsonl"
    segr1 = str(Path(sys.executable).with_name("segr1"))

    def rows_with(predicate) -> bool:
        if submit.poll() is not None:
            raise AssertionError(f"the job ended early:\n{submit.stdout.read()[-6000:]}")
        return metrics.is_file() and predicate(runs.steps(metrics))

    try:
        runs.wait_for(lambda: rows_with(lambda rows: len(rows) >= 2), timeout=300,
                      what="two training steps of the submitted job")
        scaled = runs.run([segr1, "scale", "--run", name, "--rollout", "2", "--address", head["gcs"]],
                          timeout=300, **head["auth"])
        assert "rollout workers -> 2" in scaled.stdout and "applied before step" in scaled.stdout, scaled.stdout
        runs.wait_for(lambda: rows_with(lambda rows: sum(r["pool/rollout_workers"] == 2 for r in rows) >= 2),
                      timeout=300, what="two steps served by the resized rollout pool")
        stopped = runs.run([segr1, "stop", "--run", name, "--address", head["gcs"]], timeout=120,
                           **head["auth"])
        assert "stop requested" in stopped.stdout, stopped.stdout
        out, _ = submit.communicate(timeout=420)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == 0, out[-6000:]
    assert "succeeded" in out.lower()

    rows = runs.steps(metrics)
    last = rows[-1]["step"]
    assert [r["step"] for r in rows] == list(range(1, last + 1)) and last < steps
    assert f"stopped by `segr1 stop` after step {last} of {steps}" in out  # the summary says so
    assert "eval/iou" in rows[-1], "the stopped run's last step is evaluated like a last step"
    assert (tmp_path / name / "checkpoints" / f"step_{last}").is_dir(), "and checkpointed"
    sizes = [r["pool/rollout_workers"] for r in rows]
    assert sizes[0] == 1 and sizes[-1] == 2, sizes
    after = [r for r in rows if r["pool/rollout_workers"] == 2]
    for row in after:  # every worker, the new one included, generated with the newest weights
        served = row["rollout/worker_versions"]
        assert len(served) == 2, served
        assert set(served.values()) == {row["weights/version"] - 1}, json.dumps(row)
