"""End-of-run summary: where every output of a run is, and how the held-out scores moved.

    print(format_summary(cfg.run_dir, hf_dir=cfg.run_dir / "hf", metrics_url="http://127.0.0.1:8080/metrics"))

Reads only what is on disk (metrics.jsonl, checkpoints/, images/, wandb/), so it also works on a finished
run from another process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cluster.telemetry.jsonl import METRICS_FILE, read_metrics
from cluster.telemetry.overlays import IMAGES_DIR

DASHBOARD_JSON = Path(__file__).resolve().parent.parent / "dashboards" / "segr1.json"
_CHECKPOINT_DIR = re.compile(r"^step_(\d+)$")


def _first_last(rows: list[dict[str, Any]], key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    having = [row for row in rows if isinstance(row.get(key), (int, float))]
    return (having[0], having[-1]) if having else None


def score_change(rows: list[dict[str, Any]], key: str, label: str) -> str | None:
    """`label: 0.120 (step 0) -> 0.310 (step 20), +0.190`, or None when no row has the key."""
    pair = _first_last(rows, key)
    if pair is None:
        return None
    first, last = pair
    delta = last[key] - first[key]
    return (
        f"{label}: {first[key]:.3f} (step {first.get('step', '?')}) -> "
        f"{last[key]:.3f} (step {last.get('step', '?')}), {delta:+.3f}"
    )


def _checkpoints_line(run_dir: Path) -> str:
    root = run_dir / "checkpoints"
    steps = sorted(
        int(m.group(1)) for p in (root.iterdir() if root.is_dir() else ()) if (m := _CHECKPOINT_DIR.match(p.name))
    )
    if not steps:
        return f"{root} (none)"
    return f"{root} ({len(steps)} kept, newest step_{steps[-1]})"


def _path_line(path: Path | None) -> str:
    if path is None:
        return "(off)"
    return str(path) if path.exists() else f"{path} (not written)"


def format_summary(
    run_dir: str | Path,
    *,
    hf_dir: str | Path | None = None,
    wandb_dir: str | Path | None = None,
    ray_dashboard_url: str | None = None,
    metrics_url: str | None = None,
) -> str:
    """A multi-line, human-readable summary of a run's outputs and first-vs-last scores."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    images = sorted((run_dir / IMAGES_DIR).glob("*.png"))
    if wandb_dir is None and (run_dir / "wandb").is_dir():
        wandb_dir = run_dir / "wandb"

    lines = [
        f"run directory   {run_dir.resolve()}",
        f"metrics         {_path_line(metrics_path)} ({len(rows)} rows)",
        f"checkpoints     {_checkpoints_line(run_dir)}",
        f"overlays        {run_dir / IMAGES_DIR} ({len(images)} images)",
        f"HF export       {_path_line(Path(hf_dir) if hf_dir is not None else None)}",
        f"wandb           {_path_line(Path(wandb_dir) if wandb_dir is not None else None)}",
        f"grafana         {DASHBOARD_JSON} (import it; see cluster/dashboards/README.md)",
    ]
    if ray_dashboard_url:
        lines.append(f"ray dashboard   {ray_dashboard_url}")
    if metrics_url:
        lines.append(f"prometheus      {metrics_url}")

    scores = [
        score_change(rows, "eval/iou", "eval IoU"),
        score_change(rows, "eval/format", "eval format rate"),
        score_change(rows, "reward/mean", "train reward"),
        score_change(rows, "reward/format", "train format rate"),
    ]
    present = [line for line in scores if line is not None]
    lines += ["", *present] if present else ["", "no scores recorded in metrics.jsonl"]
    return "\n".join(lines)
