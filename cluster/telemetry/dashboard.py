"""Builds the Grafana dashboard cluster/dashboards/segr1.json from the metric names the exporter serves.

    python -m cluster.telemetry.dashboard          # rewrite cluster/dashboards/segr1.json
    python -m cluster.telemetry.dashboard --check  # exit 1 if the file is out of date

Every query names a series through keys.prometheus_name / keys.exported_name, so the dashboard cannot
drift from prometheus.py (a unit test compares the file with build_dashboard()). The data source is a
dashboard variable, so the JSON imports into any Grafana with a Prometheus data source.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cluster.telemetry.keys import exported_name, prometheus_name

DASHBOARD_PATH = Path(__file__).resolve().parent.parent / "dashboards" / "segr1.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RUN_FILTER = '{run=~"$run"}'
# Names of the exporter's own Counter and Histogram (prometheus.py); kept as literals here so building the
# dashboard needs no Ray import.
STEPS_SERIES = exported_name("segr1_steps", "counter")
STAGE_BUCKETS_SERIES = exported_name("segr1_stage_seconds", "histogram")


def gauge_series(key: str) -> str:
    """PromQL for one metric key, one line per run (max over the reporting workers)."""
    return f"max by (run) ({exported_name(prometheus_name(key))}{RUN_FILTER})"


def stage_quantile(q: float, stage: str = "") -> str:
    """PromQL for the q-quantile of per-stage seconds from the histogram (one stage, or all by stage)."""
    labels = f'{{run=~"$run", stage="{stage}"}}' if stage else RUN_FILTER
    rate = f"rate({STAGE_BUCKETS_SERIES}{labels}[$__rate_interval])"
    return f"histogram_quantile({q}, sum by (le, run, stage) ({rate}))"


def gauges(*keys: str) -> list[tuple[str, str]]:
    """(PromQL, legend) per metric key; the legend names the run and the key."""
    return [(gauge_series(key), f"{{{{run}}}} {key}") for key in keys]


STAGES = ("rollout", "reward", "learn", "sync", "step")
STEPS_PER_MINUTE = f"sum by (run) (rate({STEPS_SERIES}{RUN_FILTER}[$__rate_interval])) * 60"

# (title, unit, [(PromQL, legend)]) per panel, laid out two per row.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Throughput (completions/s)", "short", gauges("throughput/samples_per_s")),
    ("Time per stage", "s", gauges(*(f"time/{stage}_s" for stage in STAGES), "time/reward_exposed_s")),
    ("Reward", "short", gauges("reward/mean", "reward/format", "reward/iou", "reward/s_measure")),
    ("Held-out eval", "percentunit", gauges("eval/iou", "eval/format")),
    ("Held-out IoU vs blind and oracle", "percentunit",
     gauges("eval/iou", "eval/iou_blind", "eval/iou_oracle", "eval/iou_shuffled")),
    ("Localisation gain", "short", gauges("eval/localisation_gain")),
    ("KL and loss", "short", gauges("policy/kl", "policy/loss", "policy/clip_frac")),
    ("Gradient norm", "short", gauges("policy/grad_norm")),
    ("Pool sizes", "short", gauges("pool/rollout_workers", "pool/reward_actors")),
    ("Queue depths", "short", gauges("reward_pool/queue_depth", "pipeline/queue_depth")),
    ("Staleness and weights version", "short", gauges("pipeline/staleness", "weights/version")),
    ("Weight sync time", "s", [*gauges("time/sync_s"), (stage_quantile(0.95, "sync"), "{{run}} sync p95")]),
    ("Reward pool masks/s", "short", gauges("reward_pool/masks_per_s")),
    ("Rollout tokens/s", "short", gauges("rollout/tokens_per_s")),
    (
        "Stage time p50 / p95 (histogram)",
        "s",
        [(stage_quantile(0.5), "{{run}} {{stage}} p50"), (stage_quantile(0.95), "{{run}} {{stage}} p95")],
    ),
    ("Steps per minute", "short", [(STEPS_PER_MINUTE, "{{run}}")]),
    ("Faults survived: learner restarts, groups dropped", "short",
     gauges("learner/restarts", "data/groups_dropped")),
]


def _panel(panel_id: int, title: str, unit: str, queries: list[tuple[str, str]]) -> dict[str, Any]:
    x, y = 12 * (panel_id % 2), 8 * (panel_id // 2)
    return {
        "id": panel_id + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def build_dashboard() -> dict[str, Any]:
    run_query = f"label_values({exported_name(prometheus_name('step'))}, run)"
    return {
        "title": "Seg-R1 training",
        "uid": "segr1-training",
        "tags": ["segr1", "ray"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
                {
                    "name": "run",
                    "label": "Run",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": run_query,
                    "query": {"query": run_query, "refId": "run"},
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".+",
                    "refresh": 2,
                },
            ]
        },
        "panels": [_panel(i, title, unit, queries) for i, (title, unit, queries) in enumerate(PANELS)],
    }


def render_json(value: Any, indent: int = 0, width: int = 140) -> str:
    """Pretty JSON that keeps short objects and lists on one line (the file stays short and diffable)."""
    flat = json.dumps(value)
    if len(flat) + indent <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {render_json(v, indent + 2, width)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + render_json(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the build")
    args = parser.parse_args(argv)
    text = render_json(build_dashboard()) + "\n"
    if args.check:
        current = DASHBOARD_PATH.read_text(encoding="utf-8") if DASHBOARD_PATH.exists() else ""
        if current != text:
            print(
                f"{DASHBOARD_PATH} is out of date: run python -m cluster.telemetry.dashboard", file=sys.stderr
            )
            return 1
        return 0
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DASHBOARD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
