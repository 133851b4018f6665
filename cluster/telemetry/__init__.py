"""Observability of a training run: metrics.jsonl, Prometheus (ray.util.metrics), wandb, overlay images,
a live terminal view and the end-of-run summary.

The controller talks to one facade, `cluster.telemetry.logger.RunLogger`. This package init stays light
(no Ray, wandb or rich import): import the submodule you need.

    jsonl.py         MetricsWriter / read_metrics: runs/<name>/metrics.jsonl
    keys.py          known metric keys and the key -> Prometheus name mapping
    prometheus.py    PrometheusExporter: Gauges / Counter / Histogram through ray.util.metrics
    wandb_logger.py  WandbLogger: scalars and overlay images (offline by default)
    overlays.py      render_overlay / render_panel / save_overlay: GT contour, mask, boxes, points, legend
    tui.py           LiveView: rich progress and stats, or one plain line per step
    logger.py        RunLogger: fans one metrics dict out to all of the above
    summary.py       format_summary: where the outputs are, first-vs-last scores
    curve.py         write_eval_curve: runs/<name>/eval_curve.png, eval IoU vs blind and oracle
    dashboard.py     builds cluster/dashboards/segr1.json (Grafana) from keys.py
"""
