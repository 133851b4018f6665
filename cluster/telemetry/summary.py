"""End-of-run summary: where every output of a run is, and how the held-out scores moved.

    summary = summarize(cfg, cfg.run_dir, eval_history)  # -> {"text": ..., "run_dir": ..., ...}
    print(summary["text"])

`eval_history` holds one dict per evaluation ({"step": 0, "tag": "start", "eval/iou": ...}); it carries the
evaluation before the first step, which metrics.jsonl (one row per step) does not. Without it the scores
come from metrics.jsonl. Everything else is read from disk, so this also works on a finished run.
The eval IoU line ends with the baselines of the last evaluation, e.g.
"eval IoU: 0.280 (step 0) -> 0.550 (step 20), +0.270 (blind 0.29, oracle 0.86, gain 0.45)", and `summarize`
also draws runs/<name>/eval_curve.png (cluster.telemetry.curve).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.checkpoint_dirs import list_checkpoints
from cluster.telemetry.curve import EVAL_CURVE_FILE, write_eval_curve
from cluster.telemetry.jsonl import METRICS_FILE, read_metrics
from cluster.telemetry.memory import memory_line, peak_rss_rows
from cluster.telemetry.overlays import IMAGES_DIR
from cluster.telemetry.timeline import TIMELINE_FILE, timeline_line
from segr1.storage import Storage

if TYPE_CHECKING:
    from segr1.config import Config

DASHBOARD_JSON = Path(__file__).resolve().parent.parent / "dashboards" / "segr1.json"
HF_EXPORT_DIR = "hf_model"  # under the run directory


def score_change(rows: Sequence[dict[str, Any]], key: str, label: str) -> str | None:
    """`label: 0.120 (step 0) -> 0.310 (step 20), +0.190`, or None when no row has the key."""
    having = [
        row for row in rows if isinstance(row.get(key), (int, float)) and not isinstance(row[key], bool)
    ]
    if not having:
        return None
    first, last = having[0], having[-1]
    return (
        f"{label}: {first[key]:.3f} (step {first.get('step', '?')}) -> "
        f"{last[key]:.3f} (step {last.get('step', '?')}), {last[key] - first[key]:+.3f}"
    )


def baseline_note(rows: Sequence[dict[str, Any]]) -> str:
    """` (blind 0.29, oracle 0.86, gain 0.45)` from the last row with baselines, or "" when none has them."""
    having = [row for row in rows if isinstance(row.get("eval/iou_blind"), (int, float))]
    if not having:
        return ""
    last = having[-1]
    parts = [f"blind {last['eval/iou_blind']:.2f}"]
    if isinstance(last.get("eval/iou_shuffled"), (int, float)):
        parts.append(f"pixels shuffled {last['eval/iou_shuffled']:.2f}")
    if isinstance(last.get("eval/iou_oracle"), (int, float)):
        parts.append(f"oracle {last['eval/iou_oracle']:.2f}")
    if isinstance(last.get("eval/localisation_gain"), (int, float)):
        parts.append(f"gain {last['eval/localisation_gain']:.2f}")
    return f" ({', '.join(parts)})"


def checkpoint_steps(location: str) -> list[int]:
    """Steps of the complete checkpoints at `location` (a path or a URI: cluster.checkpoint_dirs)."""
    return [step for step, _ in list_checkpoints(Storage.at(location))]


def _path_line(path: Path | None) -> str:
    if path is None:
        return "(off)"
    return str(path) if path.exists() else f"{path} (not written)"


def format_summary(
    run_dir: str | Path,
    *,
    eval_history: Sequence[dict[str, Any]] | None = None,
    hf_dir: str | Path | None = None,
    wandb_dir: str | Path | None = None,
    ray_dashboard_url: str | None = None,
    metrics_urls: Sequence[str] = (),
    checkpoints_at: str | None = None,
) -> str:
    """A multi-line, human-readable summary of a run's outputs and first-vs-last scores.

    checkpoints_at: the run's checkpoint location (a path or a URI); None = run_dir/checkpoints.
    """
    run_dir = Path(run_dir)
    checkpoints_at = checkpoints_at or str(run_dir / "checkpoints")
    metrics_path = run_dir / METRICS_FILE
    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    steps = checkpoint_steps(checkpoints_at)
    images = sorted((run_dir / IMAGES_DIR).glob("*.png"))
    if wandb_dir is None and (run_dir / "wandb").is_dir():
        wandb_dir = run_dir / "wandb"

    checkpoints = f"{len(steps)} kept, newest step_{steps[-1]}" if steps else "none"
    lines = [
        f"run directory   {run_dir.resolve()}",
        f"metrics         {_path_line(metrics_path)} ({len(rows)} rows)",
        f"checkpoints     {checkpoints_at} ({checkpoints})",
        f"overlays        {run_dir / IMAGES_DIR} ({len(images)} images)",
        f"eval curve      {_path_line(run_dir / EVAL_CURVE_FILE)}",
        f"HF export       {_path_line(Path(hf_dir) if hf_dir is not None else None)}",
        f"wandb           {_path_line(Path(wandb_dir) if wandb_dir is not None else None)}",
        f"grafana         {DASHBOARD_JSON} (import it: cluster/dashboards/README.md)",
    ]
    if ray_dashboard_url:
        lines.append(f"ray dashboard   {ray_dashboard_url}")
    lines += [f"prometheus      {url}" for url in metrics_urls]

    evals = list(eval_history) if eval_history else rows
    eval_iou = score_change(evals, "eval/iou", "eval IoU")
    scores = [
        eval_iou + baseline_note(evals) if eval_iou is not None else None,
        score_change(evals, "eval/format", "eval format rate"),
        score_change(rows, "reward/mean", "train reward"),
        score_change(rows, "reward/format", "train format rate"),
    ]
    present = [line for line in scores if line is not None]
    return "\n".join([*lines, "", *(present or ["no scores recorded"])])


def _timeline(run_dir: Path) -> dict[str, float]:
    """The controller's start-up and wind-down marks (cluster/telemetry/timeline.py); {} before it wrote them."""
    path = run_dir / TIMELINE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _eval_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    return [row for row in read_metrics(path) if "eval/iou" in row] if path.exists() else []


def ray_metrics_urls() -> list[str]:
    """Prometheus endpoints of the live nodes of the connected Ray cluster ([] when not connected)."""
    import ray

    if not ray.is_initialized():
        return []
    return [
        f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        for node in ray.nodes()
        if node.get("Alive") and node.get("MetricsExportPort")
    ]


def summarize(
    cfg: Config,
    run_dir: str | Path,
    eval_history: Sequence[dict[str, Any]] = (),
    metrics_urls: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The summary as a dict of output paths and first/last eval rows, plus the printable "text".

    metrics_urls: None = ask the connected Ray cluster for its nodes' Prometheus endpoints.
    """
    run_dir = Path(run_dir)
    urls = list(ray_metrics_urls() if metrics_urls is None else metrics_urls)
    hf_dir = run_dir / HF_EXPORT_DIR if cfg.checkpoint.export_hf else None
    local_dashboard = cfg.cluster.dashboard and not cfg.cluster.address
    dashboard_url = (
        f"http://{cfg.cluster.dashboard_host}:{cfg.cluster.dashboard_port}" if local_dashboard else None
    )
    wandb_dir = run_dir / "wandb" if cfg.logging.wandb.mode != "disabled" else None
    evals = [row for row in eval_history if "eval/iou" in row]
    curve = write_eval_curve(evals or _eval_rows(run_dir), run_dir / EVAL_CURVE_FILE, title=cfg.run.name)
    text = format_summary(
        run_dir,
        eval_history=evals,
        hf_dir=hf_dir,
        wandb_dir=wandb_dir,
        ray_dashboard_url=dashboard_url,
        metrics_urls=urls,
        checkpoints_at=cfg.checkpoint_location,
    )
    memory = peak_rss_rows()  # the actors are still alive here: their high-water marks cover the whole run
    if memory_line(memory):
        text += "\n" + memory_line(memory)
    timeline = _timeline(run_dir)
    if timeline_line(timeline):
        text += "\n" + timeline_line(timeline)
    return {
        "text": text,
        "run_dir": str(run_dir),
        "metrics_jsonl": str(run_dir / METRICS_FILE),
        "checkpoints": [d.location for _, d in list_checkpoints(Storage.at(cfg.checkpoint_location))],
        "images_dir": str(run_dir / IMAGES_DIR),
        "hf_export": str(hf_dir) if hf_dir is not None else None,
        "wandb_dir": str(wandb_dir) if wandb_dir is not None else None,
        "dashboard_json": str(DASHBOARD_JSON),
        "eval_curve": str(curve) if curve is not None else None,
        "metrics_urls": urls,
        "eval_first": evals[0] if evals else None,
        "eval_last": evals[-1] if evals else None,
        "peak_rss": memory,
        "timeline": timeline,
    }
