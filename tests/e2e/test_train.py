"""`segr1 train` end to end, as a user runs it: a local Ray cluster, every real actor, files on disk.

One short run (checked for every metrics key, versions, checkpoints, overlays, the HF export and the
Prometheus endpoint while it runs), then `resume=true` continuing it exactly where it stopped.
"""

from __future__ import annotations

import itertools
import subprocess

import pytest

from cluster.telemetry.keys import CONTRACT_KEYS
from tests.e2e import runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]

STEPS = 3


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Run 3 steps while scraping Prometheus; returns (run_dir, scraped text, stdout, listening sockets)."""
    out = tmp_path_factory.mktemp("runs")
    port = runs.free_port()
    args = runs.train_args(out, "e2e", f"run.steps={STEPS}", f"cluster.metrics_export_port={port}",
                           "cluster.metrics_report_s=1", "checkpoint.every=1", "checkpoint.keep=2",
                           "cluster.dashboard=true", f"cluster.dashboard_port={runs.free_port()}")
    proc = subprocess.Popen(args, cwd=runs.ROOT, env=runs.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    def segr1_metrics() -> str:
        text = runs.scrape(port)
        if proc.poll() is not None and "ray_segr1_reward_mean" not in text:
            raise AssertionError("the run ended before its metrics were scraped")
        return text if "ray_segr1_reward_mean" in text else ""

    try:
        scraped = runs.wait_for(segr1_metrics, timeout=300, what="segr1 metrics on the Prometheus endpoint",
                                interval=0.5)
        sockets = runs.listening_sockets(proc.pid)  # mid-run: every actor, agent and server is up
    finally:
        stdout, _ = proc.communicate(timeout=420)
    assert proc.returncode == 0, stdout[-6000:]
    return out / "e2e", scraped, stdout, sockets


def test_a_local_run_listens_only_on_loopback(first_run):
    *_, sockets = first_run
    names = {name for _, name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, f"expected Ray's servers among the listeners, saw {sorted(names)}"
    exposed = [s for s in sockets if not runs.is_loopback(s[2])]
    assert not exposed, f"non-loopback listeners (pid, process, ip, port): {exposed}"


def test_metrics_jsonl_has_every_contract_key_and_versions_increase(first_run):
    run_dir, _, _, _ = first_run
    rows = runs.steps(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for row in rows:
        missing = set(CONTRACT_KEYS) - set(row) - {k for k in CONTRACT_KEYS if k.startswith("eval/")}
        assert not missing, f"step {row['step']} lacks {sorted(missing)}"
    assert {k for k in CONTRACT_KEYS if k.startswith("eval/")} <= set(rows[-1])  # the final held-out eval
    versions = [r["weights/version"] for r in rows]
    assert all(b == a + 1 for a, b in itertools.pairwise(versions)), versions
    assert all(r["pipeline/staleness"] == 0 for r in rows)  # sync mode is on-policy
    ids = [i for r in rows for i in r["data/sample_ids"]]
    assert len(ids) == len(set(ids)) == STEPS * 2  # no sample repeated within the epoch


def test_run_directory_holds_config_checkpoints_overlays_and_hf_export(first_run):
    run_dir, _, stdout, _ = first_run
    assert (run_dir / "config.yaml").is_file()
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == [f"step_{STEPS - 1}", f"step_{STEPS}"]  # checkpoint.keep=2
    assert list((run_dir / "checkpoints" / f"step_{STEPS}").glob("*.safetensors"))
    assert list((run_dir / "images").glob("*.png"))
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(run_dir / "hf_model")
    assert str(run_dir) in stdout  # the summary says where the outputs are


def test_timeline_marks_each_phase_in_order_from_the_command_start(first_run):
    import json

    run_dir, _, stdout, _ = first_run
    marks = json.loads((run_dir / "timeline.json").read_text())
    order = ["ray_connected", "controller_started", "actors_ready", "warm_start_done", "first_step",
             "last_step_done", "finished"]
    assert list(marks) == order
    times = [marks[name] for name in order]
    assert 0 < times[0] and times == sorted(times)  # seconds since the driver process started, increasing
    assert "timeline (s)    ray_connected" in stdout  # the summary prints it


def test_prometheus_endpoint_served_segr1_metrics_during_the_run(first_run):
    _, scraped, _, _ = first_run
    for name in ("ray_segr1_reward_mean", "ray_segr1_weights_version", "ray_segr1_pool_rollout_workers"):
        assert name in scraped
    assert 'run="e2e"' in scraped


def test_resume_continues_from_the_newest_checkpoint(first_run):
    run_dir, _, _, _ = first_run
    runs.run(runs.train_args(run_dir.parent, "e2e", f"run.steps={STEPS + 1}", "resume=true",
                             "cluster.metrics_export_port=0"))
    rows = runs.steps(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 2))  # each step once
    # the resumed learner republishes the checkpoint's weights (a new version) before its first step, and the
    # fresh rollout workers generate with exactly those weights
    resumed = rows[-1]
    assert resumed["weights/version"] > rows[-2]["weights/version"]
    assert set(resumed["rollout/worker_versions"].values()) == {resumed["weights/version"] - 1}
    ids = [i for r in rows for i in r["data/sample_ids"]]
    assert len(ids) == len(set(ids))  # the data cursor resumed: nothing repeated


@pytest.mark.parametrize("depth", [1, 2])
def test_async_mode_overlaps_rollouts_within_the_staleness_bound(tmp_path, depth):
    """Async: the next batches are generated while the learner trains, at most `depth` versions behind."""
    runs.run(runs.train_args(tmp_path, "async", "run.steps=4", "algorithm.mode=async", "algorithm.clip_low=0.2",
                             f"algorithm.max_staleness={depth}", "cluster.metrics_export_port=0",
                             "checkpoint.every=0"))
    rows = runs.steps(tmp_path / "async" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    staleness = [r["pipeline/staleness"] for r in rows]
    if depth == 1:
        assert staleness == [0, 1, 1, 1]  # every batch after the first ran one step ahead
    else:
        assert staleness[0] == 0 and all(1 <= s <= depth for s in staleness[1:]), staleness
    ids = [i for r in rows for i in r["data/sample_ids"]]
    assert len(ids) == len(set(ids)) == 8  # drawn in order, none lost or repeated


def test_killed_reward_and_rollout_actors_do_not_stop_the_run(tmp_path):
    """Fault drill from config: a reward actor dies at step 1, a rollout worker at step 2; every step completes."""
    runs.run(runs.train_args(tmp_path, "faults", "run.steps=3", "faults.kill_reward_actor_at_step=1",
                             "faults.kill_rollout_worker_at_step=2", "cluster.metrics_export_port=0",
                             "checkpoint.every=0"))
    rows = runs.steps(tmp_path / "faults" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [len(r["data/sample_ids"]) for r in rows] == [2, 2, 2]  # no group lost to the deaths
    # the killed worker was replaced by a new one, which generated with the newest weights
    assert set(rows[-1]["rollout/worker_versions"]) != set(rows[0]["rollout/worker_versions"])
    assert set(rows[-1]["rollout/worker_versions"].values()) == {rows[-1]["weights/version"] - 1}
