"""Prometheus export through a real local Ray cluster: metrics set in an actor and in the driver appear on
the node's metrics endpoint under the names the Grafana dashboard queries.

Ray's metrics agent (ray[default]) serves http://127.0.0.1:<_metrics_export_port>/metrics. Values show up
one report interval after they are set (10 s by default; this cluster uses 1 s), so the test polls with a
deadline.
"""

from __future__ import annotations

import io
import socket
import time
import urllib.request
from collections import defaultdict

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families  # ray[default] brings it

from cluster.telemetry.keys import exported_name, prometheus_name
from cluster.telemetry.logger import RunLogger
from cluster.telemetry.prometheus import PrometheusExporter
from cluster.telemetry.summary import ray_metrics_urls
from segr1.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(180)]

POLL_DEADLINE_S = 40.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_url():
    port = _free_port()
    # address="local": always a fresh cluster (never join one left by `ray start`), so the port is ours.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,  # the metrics agent runs without the dashboard UI
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 1000},  # report every 1 s instead of 10 s
    )
    yield f"http://127.0.0.1:{port}/metrics"
    ray.shutdown()


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from one scrape."""
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def _value(samples, name: str, **labels: str) -> float | None:
    for sample_labels, value in samples.get(name, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


def _poll_until(url: str, expected: dict[tuple[str, tuple[tuple[str, str], ...]], float | None]) -> dict:
    """Scrape until every (name, labels) has its expected value (None = absent) or the deadline passes;
    return what the last scrape saw."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        samples = _samples(url)
        seen = {key: _value(samples, key[0], **dict(key[1])) for key in expected}
        if seen == {key: value if value is None else pytest.approx(value) for key, value in expected.items()}:
            return seen
        if time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def test_actor_gauges_counter_and_histogram_reach_the_metrics_endpoint(metrics_url):
    exporter = ray.remote(PrometheusExporter).options(num_cpus=0).remote("itest")
    ray.get(exporter.export.remote({"step": 1, "reward/mean": 0.1, "time/rollout_s": 0.5, "note": "text"}))
    ray.get(
        exporter.export.remote(
            {"step": 2, "reward/mean": 0.25, "time/rollout_s": 2.0, "pool/reward_actors": 3}
        )
    )

    run = (("run", "itest"),)
    rollout = (("run", "itest"), ("stage", "rollout"))
    expected = {
        (exported_name(prometheus_name("reward/mean")), run): 0.25,  # gauge: the last value
        (exported_name(prometheus_name("pool/reward_actors")), run): 3.0,
        (exported_name(prometheus_name("step")), run): 2.0,
        (exported_name("segr1_steps", "counter"), run): 2.0,  # counter: one per step
        ("ray_segr1_stage_seconds_count", rollout): 2.0,  # (_sum is rebuilt from bucket midpoints by Ray)
        ("ray_segr1_stage_seconds_bucket", (*rollout, ("le", "0.3"))): 0.0,
        ("ray_segr1_stage_seconds_bucket", (*rollout, ("le", "1.0"))): 1.0,
        ("ray_segr1_stage_seconds_bucket", (*rollout, ("le", "3.0"))): 2.0,
        (exported_name(prometheus_name("time/rollout_s")), run): 2.0,
    }
    seen = _poll_until(metrics_url, expected)
    assert seen == {key: pytest.approx(value) for key, value in expected.items()}


def test_run_logger_in_the_driver_exports_with_its_run_tag(metrics_url, tmp_path):
    cfg = load_config(
        None,
        [
            f"run.output_dir={tmp_path}",
            "run.name=itest-driver",
            "logging.tui=plain",
            "logging.wandb.mode=disabled",
        ],
    )
    with RunLogger(cfg, cfg.run_dir, stream=io.StringIO()) as run_logger:
        assert run_logger.prometheus_enabled
        run_logger.log_step({"step": 1, "reward/iou": 0.5, "throughput/samples_per_s": 12.0,
                             "eval/iou_blind": 0.29, "eval/localisation_gain": 0.45})
        run = (("run", "itest-driver"),)
        expected = {(exported_name(prometheus_name(key)), run): value for key, value in (
            ("throughput/samples_per_s", 12.0), ("eval/iou_blind", 0.29), ("eval/localisation_gain", 0.45))}
        seen = _poll_until(metrics_url, expected)
    assert seen == {key: pytest.approx(value) for key, value in expected.items()}


def test_refreshed_gauges_outlive_the_agents_gauge_expiry(metrics_url):
    """Ray's agent drops a gauge ~20 s after its last set; the exporter's refresh thread keeps it served."""
    kept = ray.remote(PrometheusExporter).options(num_cpus=0).remote("itest-kept", refresh_s=0.5)
    unrefreshed = ray.remote(PrometheusExporter).options(num_cpus=0).remote("itest-unrefreshed", refresh_s=0)
    ray.get([kept.export.remote({"step": 7}), unrefreshed.export.remote({"step": 7})])
    name = exported_name(prometheus_name("step"))
    both = {(name, (("run", "itest-kept"),)): 7.0, (name, (("run", "itest-unrefreshed"),)): 7.0}
    assert _poll_until(metrics_url, both) == both
    after_expiry = {(name, (("run", "itest-kept"),)): 7.0, (name, (("run", "itest-unrefreshed"),)): None}
    assert _poll_until(metrics_url, after_expiry) == after_expiry
    ray.get(kept.close.remote())


def test_summary_finds_the_nodes_metrics_endpoint(metrics_url):
    port = metrics_url.split(":")[-1].split("/")[0]
    (url,) = ray_metrics_urls()  # one node
    assert (
        url.endswith(f":{port}/metrics") and "ray_" in urllib.request.urlopen(url, timeout=5).read().decode()
    )
