"""Tests of cluster.telemetry: metrics.jsonl, key naming, dashboard, wandb, terminal view, RunLogger, summary.

Overlay drawing is tested in test_telemetry_overlays.py; the Prometheus export through a real Ray cluster
in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest

from cluster.telemetry import dashboard, keys
from cluster.telemetry.jsonl import MetricsFileError, MetricsWriter, read_metrics
from cluster.telemetry.logger import RunLogger
from cluster.telemetry.prometheus import MetricNameCollision, PrometheusExporter
from cluster.telemetry.summary import format_summary, summarize
from cluster.telemetry.tui import LiveView
from cluster.telemetry.wandb_logger import WandbLogger
from segr1.config import load_config


# ------------------------------------------------------------------------------------------ metrics.jsonl
def test_jsonl_round_trip_keeps_values_and_writes_nonfinite_as_null(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        writer.write({"step": 1, "reward/mean": np.float32(0.25), "policy/kl": float("nan"), "note": "warm"})
        writer.write(
            {"step": 2, "reward/mean": 0.5, "pool/rollout_workers": np.int64(3), "time/step_s": math.inf}
        )
    assert read_metrics(path) == [
        {"step": 1, "reward/mean": 0.25, "policy/kl": None, "note": "warm"},
        {"step": 2, "reward/mean": 0.5, "pool/rollout_workers": 3, "time/step_s": None},
    ]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # strict JSON, one object a line


def test_jsonl_line_is_readable_before_close(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write({"step": 1})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1}]  # flushed per line
    writer.close()


def test_jsonl_resume_appends_and_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        for step in range(1, 6):
            writer.write({"step": step})
    with open(path, "a") as f:
        f.write('{"step": 6, "rew')  # a crash mid-line
    with MetricsWriter(path, keep_through_step=3) as writer:
        writer.write({"step": 4, "resumed": True})
    assert read_metrics(path) == [{"step": 1}, {"step": 2}, {"step": 3}, {"step": 4, "resumed": True}]
    with MetricsWriter(path) as writer:  # plain reopen keeps every row
        writer.write({"step": 5})
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3, 4, 5]


def test_jsonl_errors_name_the_file_line_and_key(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl:2: expected a JSON object"):
        read_metrics(path)
    path.write_text('{"step": 1}\n{"step": 2,,}\n{"step": 3}\n')
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl:2: not valid JSON"):
        MetricsWriter(path, keep_through_step=1)
    with MetricsWriter(tmp_path / "other.jsonl") as writer, pytest.raises(TypeError, match="'blob'"):
        writer.write({"step": 1, "blob": object()})


# ------------------------------------------------------------------------------------------ Prometheus names
def test_prometheus_names_of_contract_keys():
    assert keys.prometheus_name("reward/mean") == "segr1_reward_mean"
    assert keys.prometheus_name("time/step_s") == "segr1_time_step_s"
    assert keys.prometheus_name("reward_pool/masks_per_s") == "segr1_reward_pool_masks_per_s"
    assert keys.exported_name("segr1_reward_mean") == "ray_segr1_reward_mean"
    assert keys.exported_name("segr1_steps", "counter") == "ray_segr1_steps_total"


def test_prometheus_mapping_is_injective_and_valid_on_known_keys():
    names = [keys.prometheus_name(key) for key in keys.KNOWN_KEYS]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) for name in names)
    assert set(keys.CONTRACT_KEYS) <= set(keys.KNOWN_KEYS)


def test_prometheus_name_sanitizes_any_key_and_rejects_empty():
    assert keys.is_valid_prometheus_name(keys.prometheus_name("eval/iou@cod10k-test:v2"))
    with pytest.raises(ValueError, match="non-empty"):
        keys.prometheus_name("")


def test_exporter_refuses_two_keys_with_one_prometheus_name():
    exporter = PrometheusExporter("unit", refresh_s=0)  # ray.util.metrics works without a cluster
    exporter.export({"step": 1, "reward/s_measure": 0.5, "note": "text is skipped"})
    with pytest.raises(MetricNameCollision, match="'reward/s_measure' and 'reward_s/measure'"):
        exporter.export({"step": 2, "reward_s/measure": 0.5})


def test_dashboard_file_is_current_and_queries_only_exported_names():
    built = dashboard.build_dashboard()
    assert dashboard.DASHBOARD_PATH.read_text() == dashboard.render_json(built) + "\n"
    assert json.loads(dashboard.DASHBOARD_PATH.read_text()) == built
    exported = {keys.exported_name(keys.prometheus_name(key)) for key in keys.KNOWN_KEYS}
    exported |= {dashboard.STEPS_SERIES, dashboard.STAGE_BUCKETS_SERIES}
    queries = [target["expr"] for panel in built["panels"] for target in panel["targets"]]
    used = {name for expr in queries for name in re.findall(r"\bray_[a-z0-9_]+", expr)}
    assert used and used <= exported
    for key in (
        "throughput/samples_per_s",
        "reward/mean",
        "policy/kl",
        "pool/reward_actors",
        "time/sync_s",
        "pipeline/staleness",
        "reward_pool/masks_per_s",
        "reward_pool/queue_depth",
    ):
        assert keys.exported_name(keys.prometheus_name(key)) in used, key
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in built["panels"])


# ------------------------------------------------------------------------------------------ wandb
def test_wandb_offline_writes_a_run_directory(tmp_path):
    logger = WandbLogger(mode="offline", run_dir=tmp_path, run_name="unit", config={"run": {"steps": 2}})
    logger.log_scalars({"warm_start/step": 1, "warm_start/loss": 2.5})  # a row on its own x axis
    logger.log_scalars({"step": 1, "reward/mean": 0.3, "note": "skipped"})
    logger.log_images(1, [("s0", np.zeros((8, 8, 3), np.uint8))])
    wandb_dir = logger.wandb_dir
    logger.close()
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1 and wandb_dir == run_dirs[0]
    assert list(run_dirs[0].glob("run-*.wandb"))  # the run's event log, for `wandb sync`
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert run_dirs[0].name.endswith(run_id)


def test_wandb_disabled_is_a_no_op(tmp_path):
    logger = WandbLogger(mode="disabled", run_dir=tmp_path / "run", run_name="unit")
    logger.log_scalars({"step": 1, "reward/mean": 0.3})
    logger.log_images(1, [("s0", np.zeros((8, 8, 3), np.uint8))])
    logger.close()
    assert not logger.enabled and logger.wandb_dir is None and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="logging.wandb.mode"):
        WandbLogger(mode="cloud", run_dir=tmp_path, run_name="unit")


# ------------------------------------------------------------------------------------------ terminal view
STEP_METRICS = {
    "reward/mean": 0.5,
    "reward/format": 0.75,
    "policy/kl": 0.0012,
    "time/rollout_s": 1.25,
    "time/learn_s": 2.0,
    "weights/version": 3,
}


@pytest.mark.parametrize("mode", ["plain", "auto"])  # auto: a StringIO is not a TTY
def test_tui_plain_fallback_prints_one_line_per_step(mode):
    stream = io.StringIO()
    with LiveView(total_steps=3, run_name="unit", mode=mode, stream=stream) as view:
        for step in (1, 2, 3):
            view.update({"step": step, **STEP_METRICS})
            view.update({"step": step, **STEP_METRICS})  # polled again within the step: no new line
        view.update({"warm_start/step": 4})  # no "step": nothing to print
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 1/3", "step 2/3", "step 3/3"]
    assert "reward 0.500" in lines[0] and "format 0.75" in lines[0] and "kl 0.0012" in lines[0]
    assert "rollout 1.25s learn 2.00s" in lines[0] and "version 3" in lines[0]


def test_tui_takes_total_from_config_and_from_a_steps_key(tmp_path):
    stream = io.StringIO()
    with LiveView.from_config(_cfg(tmp_path), stream=stream) as view:
        view.update({"step": 1})
        view.update({"step": 2, "steps": 5})
    assert stream.getvalue().splitlines() == ["step 1/2", "step 2/5"]


def test_tui_live_view_renders_progress_and_stats():
    stream = io.StringIO()
    with LiveView(total_steps=4, run_name="unitrun", mode="live", stream=stream) as view:
        view.update({"step": 2, **STEP_METRICS})
    text = stream.getvalue()
    assert "unitrun" in text and "2/4" in text and "0.500" in text and "rollout" in text


# ------------------------------------------------------------------------------------------ RunLogger, summary
def _cfg(tmp_path, *overrides):
    return load_config(
        None,
        [
            f"run.output_dir={tmp_path}",
            "run.name=unit",
            "run.steps=2",
            "logging.tui=plain",
            "logging.wandb.mode=disabled",
            "logging.prometheus=false",
            "logging.overlay_every=2",
            *overrides,
        ],
    )


def test_run_logger_fans_out_to_jsonl_images_and_terminal(tmp_path):
    cfg = _cfg(tmp_path)
    stream = io.StringIO()
    with RunLogger(cfg, cfg.run_dir, stream=stream) as run_logger:
        run_logger.log_step({"warm_start/step": 1, "warm_start/loss": 2.0})  # rows without "step" are fine
        for step in (1, 2):
            run_logger.log_step({"step": step, **STEP_METRICS})
        assert [run_logger.wants_overlays(s) for s in (1, 2, 4)] == [False, True, True]
        paths = run_logger.log_overlays(2, [("synth/0", np.full((16, 16, 3), 7, np.uint8))])
        with pytest.raises(TypeError, match=r"metrics\['step'\]"):
            run_logger.log_step({"step": "3"})
    rows = read_metrics(cfg.run_dir / "metrics.jsonl")
    assert [row.get("step") for row in rows] == [None, 1, 2] and rows[0]["warm_start/loss"] == 2.0
    assert paths == [cfg.run_dir / "images" / "step_2_synth_0.png"] and paths[0].is_file()
    assert len(stream.getvalue().splitlines()) == 2


def test_run_logger_rewinds_on_resume_and_stays_quiet_without_tui(tmp_path):
    cfg = _cfg(tmp_path)
    with RunLogger(cfg, cfg.run_dir, tui=False) as run_logger:
        for step in (1, 2, 3):
            run_logger.log_step({"step": step})
    stream = io.StringIO()
    with RunLogger(cfg, cfg.run_dir, tui=False, stream=stream) as run_logger:
        run_logger.rewind(1)  # resumed from checkpoint step_1
        run_logger.log_step({"step": 2, "resumed": 1})
    assert read_metrics(cfg.run_dir / "metrics.jsonl") == [{"step": 1}, {"step": 2, "resumed": 1}]
    assert stream.getvalue() == ""


def _write_run(run_dir):
    """A finished-looking run: three metrics rows, two checkpoints."""
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        writer.write(
            {"step": 2, "reward/mean": 0.4, "reward/format": 0.5, "eval/iou": 0.2, "eval/format": 0.5}
        )
        writer.write({"step": 3, "reward/mean": 0.5, "reward/format": 0.5})
        writer.write(
            {"step": 4, "reward/mean": 0.9, "reward/format": 1.0, "eval/iou": 0.35, "eval/format": 0.75}
        )
    for step in (2, 4):  # complete: the learner writes state.json last
        (run_dir / "checkpoints" / f"step_{step}").mkdir(parents=True)
        (run_dir / "checkpoints" / f"step_{step}" / "state.json").write_text("{}")
    (run_dir / "checkpoints" / "step_6").mkdir()  # an interrupted write: not counted


def test_format_summary_reads_outputs_and_scores_from_disk(tmp_path):
    run_dir = tmp_path / "run"
    _write_run(run_dir)
    text = format_summary(run_dir, hf_dir=run_dir / "hf", metrics_urls=["http://127.0.0.1:8080/metrics"])
    assert "eval IoU: 0.200 (step 2) -> 0.350 (step 4), +0.150" in text
    assert "eval format rate: 0.500 (step 2) -> 0.750 (step 4), +0.250" in text
    assert "train reward: 0.400 (step 2) -> 0.900 (step 4), +0.500" in text
    assert "2 kept, newest step_4" in text and "(3 rows)" in text and "hf (not written)" in text
    assert "http://127.0.0.1:8080/metrics" in text and "segr1.json" in text


def test_summarize_prefers_the_eval_history_which_has_the_start_eval(tmp_path):
    cfg = _cfg(tmp_path)
    _write_run(cfg.run_dir)
    history = [
        {"step": 0, "tag": "start", "eval/iou": 0.05, "eval/format": 0.0},
        {"step": 4, "tag": "end", "eval/iou": 0.35, "eval/format": 0.75},
    ]
    summary = summarize(cfg, cfg.run_dir, history, metrics_urls=[])
    assert "eval IoU: 0.050 (step 0) -> 0.350 (step 4), +0.300" in summary["text"]
    assert summary["eval_first"]["tag"] == "start" and summary["eval_last"]["eval/iou"] == 0.35
    assert summary["checkpoints"] == [str(cfg.run_dir / "checkpoints" / f"step_{s}") for s in (2, 4)]
    assert summary["hf_export"] == str(cfg.run_dir / "hf_model") and summary["wandb_dir"] is None
