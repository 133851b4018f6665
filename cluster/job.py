"""`segr1 train`: assemble one training job on a Ray cluster and follow it to the end.

    segr1 train --config configs/local_cpu.yaml                 # starts a local Ray cluster
    RAY_ADDRESS=auto segr1 train --config ...                     # joins a running cluster
    ray job submit --address http://HEAD:8265 -- segr1 train ... # as a Ray job (RAY_ADDRESS is set for us)

The driver resolves the model and data, writes `runs/<name>/config.yaml`, starts the controller as a named
actor on the driver's node (so run files land where the user looks) and shows a live view until it finishes.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.job_control import NAMESPACE, controller_name
from cluster.telemetry.timeline import Timeline, process_start
from rollout.engine import resolve_model_path
from segr1.config import Config, to_yaml
from segr1.rendezvous import free_port


def train(cfg: Config) -> dict[str, Any]:
    timeline = Timeline(origin=process_start())  # a run's fixed cost counts from the command's start
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    connect(cfg)
    timeline.mark("ray_connected")
    model_path = resolve_model_path(cfg)
    train_path, eval_path = resolve_data(cfg)

    controller = ray.remote(ControllerActor).options(
        name=controller_name(cfg.run.name), namespace=NAMESPACE, num_cpus=0, max_concurrency=4,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
    ).remote(cfg, model_path, train_path, eval_path, timeline.origin, timeline.marks)
    done = controller.run.remote()
    summary = _follow(cfg, controller, done)
    print(summary["text"])
    return summary


class ControllerActor:
    """The job's named Ray actor: builds the controller from config inside its own process (the pools' threads
    and the logger cannot be shipped) and answers the driver, `segr1 scale`, `segr1 stop` and `segr1 status`."""

    def __init__(self, cfg: Config, model_path: str, train_path: str, eval_path: str, origin: float,
                 marks: dict[str, float]) -> None:
        timeline = Timeline(origin, marks)
        timeline.mark("controller_started")
        from cluster.controller import Controller  # imported here: it pulls in torch and the services

        self.controller = Controller.from_config(cfg, model_path, train_path, eval_path, timeline)

    def run(self) -> dict[str, Any]:
        """Train to the end; the run's summary (outputs, eval scores; `stopped_at` after `segr1 stop`)."""
        history = self.controller.run()
        return run_summary(self.controller.cfg, self.controller.step, history)

    def progress(self) -> dict[str, Any]:
        return self.controller.progress()

    def scale(self, rollout: int | None = None, reward: int | None = None,
              wait_s: float | None = None) -> dict[str, Any]:
        return self.controller.scale(rollout=rollout, reward=reward, wait_s=wait_s)

    def stop(self) -> dict[str, int]:
        return self.controller.stop()


def run_summary(cfg: Config, steps_done: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    """cluster.telemetry.summary's summary, plus where a run ended early by `segr1 stop` stopped."""
    from cluster.telemetry.summary import summarize

    summary = summarize(cfg, cfg.run_dir, history)
    if steps_done < cfg.run.steps:
        summary["stopped_at"] = steps_done
        summary["text"] += f"\nstopped by `segr1 stop` after step {steps_done} of {cfg.run.steps}"
    return summary


def _follow(cfg: Config, controller: Any, done: Any) -> dict[str, Any]:
    """Live terminal view while the controller runs; returns its summary (re-raising its error)."""
    from cluster.telemetry.tui import LiveView

    with LiveView.from_config(cfg) as view:
        while True:
            ready, _ = ray.wait([done], timeout=1.0)
            if ready:
                view.update(ray.get(controller.progress.remote()))  # the last step's line
                break
            try:
                view.update(ray.get(controller.progress.remote(), timeout=5))
            except ray.exceptions.GetTimeoutError:
                pass  # the controller is busy with a long call; the view catches up next tick
        return ray.get(done)


# -------------------------------------------------------------------------------------------- cluster
def connect(cfg: Config) -> None:
    """Join the configured cluster, the one in RAY_ADDRESS, or start a bounded local one."""
    if ray.is_initialized():
        return
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, namespace=NAMESPACE)
        return
    if cfg.cluster.loopback_only:
        _bind_to_loopback()
    ray.init(
        num_cpus=local_cpus(cfg), resources=local_resources(cfg), namespace=NAMESPACE,
        include_dashboard=cfg.cluster.dashboard,
        dashboard_host=cfg.cluster.dashboard_host, dashboard_port=cfg.cluster.dashboard_port,
        _metrics_export_port=cfg.cluster.metrics_export_port or free_port("127.0.0.1"),
        _system_config={"metrics_report_interval_ms": int(cfg.cluster.metrics_report_s * 1000)},
    )


def _bind_to_loopback() -> None:
    """Make the local cluster a loopback-only node: every server Ray starts then listens on 127.0.0.1.

    Ray turns a node IP of 127.0.0.1 into the host's external address (`ray.init(_node_ip_address=...)` is
    resolved away), except when multi-node clusters are switched off, as Ray does on macOS and Windows: then the
    node IP is the loopback address and the GCS, raylet, object manager, workers, agents and metrics exporter
    bind to it. Ray reads the switch from the environment once at import, so the module constant is set too;
    the variable is inherited by the processes Ray spawns.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def local_cpus(cfg: Config) -> int:
    """Logical CPUs for a local cluster: what the pools ask for, with room to scale each pool up twice over.

    Ray's CPU count is a scheduling budget, not a thread count: actors set their own torch thread counts.
    """
    asked = (cfg.rollout.num_workers * cfg.rollout.num_cpus + cfg.reward.num_actors * cfg.reward.num_cpus
             + cfg.learner.num_ranks * cfg.learner.num_cpus)
    return max(cfg.cluster.num_cpus or os.cpu_count() or 1, math.ceil(2 * asked))


def local_resources(cfg: Config) -> dict[str, float]:
    """The custom resources the pools place themselves with (`rollout.resources`, ...), on the one local node,
    twice what they ask for (room to scale), so a config written for a multi-node cluster runs locally too."""
    total: dict[str, float] = {}
    for count, resources in ((cfg.rollout.num_workers, cfg.rollout.resources),
                             (cfg.reward.num_actors, cfg.reward.resources),
                             (cfg.learner.num_ranks, cfg.learner.resources)):
        for name, amount in resources.items():
            total[name] = total.get(name, 0.0) + 2 * count * amount
    return total


# -------------------------------------------------------------------------------------------- inputs
def resolve_data(cfg: Config) -> tuple[str, str]:
    """Train and eval Parquet paths; empty entries are synthesized (deterministically) under the run dir."""
    from segr1.data.synth import synthesize

    paths = []
    for given, n, seed, name in ((cfg.data.train, cfg.data.synth_train_n, cfg.data.synth_seed, "train"),
                                 (cfg.data.eval, cfg.data.synth_eval_n, cfg.data.synth_seed + 1, "eval")):
        if given:
            if not Path(given).is_file():
                raise FileNotFoundError(f"data.{name}: no Parquet file at {given!r}")
            paths.append(str(Path(given).resolve()))
            continue
        out = cfg.run_dir / "data" / f"synth_{name}_n{n}_s{seed}_{cfg.data.synth_size}px.parquet"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            synthesize(str(out), n=n, seed=seed, size=cfg.data.synth_size)
        paths.append(str(out.resolve()))
    return paths[0], paths[1]


def wait_for_controller(run_name: str, timeout_s: float = 60.0) -> Any:
    """The controller handle of a run that another process started (tests and `segr1 scale` use this)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get_actor(controller_name(run_name), namespace=NAMESPACE)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
