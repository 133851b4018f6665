"""Prometheus export of step metrics through ray.util.metrics, tagged run=<name>.

Call from a process connected to Ray (the driver after ray.init, or inside an actor): Ray's per-node metrics
agent serves the values at http://<node>:<metrics_export_port>/metrics. Names as served:

    every numeric key      Gauge      "reward/mean"  -> ray_segr1_reward_mean{run="..."}
    one per step           Counter    ray_segr1_steps_total{run="..."}
    each time/<stage>_s    Histogram  ray_segr1_stage_seconds_bucket{run="...", stage="rollout", le="..."}

cluster/dashboards/segr1.json queries exactly these names (built from cluster.telemetry.keys).

Two behaviours of Ray 2.60's metrics pipeline shape this class (both measured, see the integration test):
- The metrics agent forgets a gauge that its process has not set again within two report intervals
  (2 x metrics_report_interval_ms = 20 s by default), while one GRPO step can take minutes. A daemon thread
  therefore re-sets every gauge to its last value every `refresh_s` seconds until close().
- Histograms are rebuilt from bucket counts, so `_sum` is approximate (bucket midpoints); `_count` and the
  buckets are exact. The per-stage gauges carry the exact seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ray.util.metrics import Counter, Gauge, Histogram

from cluster.telemetry.keys import STAGE_KEY, describe, numeric_items, prometheus_name

STEPS_METRIC = "segr1_steps"
STAGE_SECONDS_METRIC = "segr1_stage_seconds"
# Stage times range from milliseconds (tiny CPU model) to minutes (7B on GPUs).
STAGE_SECONDS_BUCKETS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
# Well inside Ray's 10 s report interval, so every interval reports each gauge at least once.
GAUGE_REFRESH_S = 5.0


class MetricNameCollision(ValueError):
    """Two metric keys map to the same Prometheus name."""


class PrometheusExporter:
    """Sets one Ray Gauge per numeric metric key (created on first sight), counts steps and observes
    per-stage seconds in a histogram. All series carry the tag run=<run_name>.

    refresh_s: period of re-setting the gauges to their last values (0 = never; then they vanish from the
    endpoint ~20 s after the last export).
    """

    def __init__(self, run_name: str, refresh_s: float = GAUGE_REFRESH_S) -> None:
        self._tags = {"run": run_name}
        self._gauges: dict[str, Gauge] = {}
        self._last_values: dict[str, float] = {}
        self._lock = threading.Lock()  # export() and the refresh thread share the gauges and last values
        # Prometheus name -> the key that claimed it, so a second key mapping there fails loudly.
        self._claimed: dict[str, str] = {
            STEPS_METRIC: "<step counter>",
            STAGE_SECONDS_METRIC: "<stage histogram>",
        }
        self._steps = Counter(STEPS_METRIC, "GRPO steps completed", tag_keys=("run",))
        self._stage_seconds = Histogram(
            STAGE_SECONDS_METRIC,
            "seconds per step stage",
            boundaries=STAGE_SECONDS_BUCKETS,
            tag_keys=("run", "stage"),
        )
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        if refresh_s > 0:
            self._refresher = threading.Thread(
                target=self._refresh_loop, args=(refresh_s,), name="segr1-gauge-refresh", daemon=True
            )
            self._refresher.start()

    def _gauge(self, key: str) -> Gauge:
        gauge = self._gauges.get(key)
        if gauge is None:
            name = prometheus_name(key)
            owner = self._claimed.get(name)
            if owner is not None and owner != key:
                raise MetricNameCollision(
                    f"metric keys {owner!r} and {key!r} both map to Prometheus name {name!r}"
                )
            self._claimed[name] = key
            gauge = self._gauges[key] = Gauge(name, describe(key), tag_keys=("run",))
        return gauge

    def export(self, metrics: Mapping[str, Any]) -> None:
        """Publish one step's metrics; non-numeric and non-finite values are skipped."""
        values = numeric_items(metrics)
        with self._lock:
            for key, value in values.items():
                self._gauge(key).set(value, tags=self._tags)
                self._last_values[key] = value
                stage = STAGE_KEY.match(key)
                if stage:
                    self._stage_seconds.observe(value, tags={**self._tags, "stage": stage["stage"]})
            if "step" in values:
                self._steps.inc(1.0, tags=self._tags)

    def refresh(self) -> None:
        """Set every gauge again to its last exported value (keeps it alive at the metrics agent)."""
        with self._lock:
            for key, value in self._last_values.items():
                self._gauges[key].set(value, tags=self._tags)

    def _refresh_loop(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self.refresh()

    def close(self) -> None:
        """Stop refreshing; the gauges then age out of the endpoint (counters and histograms stay)."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
