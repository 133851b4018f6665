"""RunLogger: the one object the controller reports to; it fans each step's metrics out to every sink.

    with RunLogger(cfg, cfg.run_dir) as run_logger:
        run_logger.rewind(resumed_step)  # only when resuming from a checkpoint
        run_logger.log_step({"step": 1, "reward/mean": 0.41, ...})
        if run_logger.wants_overlays(step):
            run_logger.log_overlays(step, [(sample.sample_id, render_overlay(...)), ...])

Sinks, each switched by cfg.logging: metrics.jsonl (`jsonl`), Prometheus through ray.util.metrics
(`prometheus`; only in a process connected to Ray), wandb (`wandb.mode`), and the terminal view (`tui`;
pass tui=False where another process draws it, e.g. a controller actor polled by the driver).
Overlay PNGs always go to <run_dir>/images/.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TextIO

import numpy as np

from cluster.telemetry.jsonl import METRICS_FILE, MetricsWriter
from cluster.telemetry.overlays import IMAGES_DIR, overlay_path, save_overlay
from cluster.telemetry.tui import LiveView
from cluster.telemetry.wandb_logger import WandbLogger
from segr1.config import Config, to_dict

log = logging.getLogger(__name__)


def _prometheus_exporter(run_name: str) -> Any:
    """A PrometheusExporter when this process is connected to Ray, else None (with a warning)."""
    import ray

    if not ray.is_initialized():
        log.warning("logging.prometheus is on but Ray is not initialized here: Prometheus export skipped")
        return None
    from cluster.telemetry.prometheus import PrometheusExporter

    return PrometheusExporter(run_name)


class RunLogger:
    """Fans metrics out to jsonl, Prometheus, wandb and the terminal.

    resume_step: the checkpoint step a resumed run continues from; metrics.jsonl rows after it are dropped
        (or call rewind(step) later).
    tui: False = no terminal output from this logger, whatever cfg.logging.tui says.
    stream: where the terminal view or plain lines go (default stdout).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        *,
        resume_step: int | None = None,
        tui: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        settings = cfg.logging
        self._jsonl = (
            MetricsWriter(self.metrics_path, keep_through_step=resume_step) if settings.jsonl else None
        )
        self._prometheus = _prometheus_exporter(cfg.run.name) if settings.prometheus else None
        self._wandb = WandbLogger(
            mode=settings.wandb.mode,
            run_dir=self.run_dir,
            run_name=cfg.run.name,
            config=to_dict(cfg),
            project=settings.wandb.project,
            entity=settings.wandb.entity,
        )
        self._view = LiveView.from_config(cfg, stream=stream or sys.stdout) if tui else None
        if self._view is not None:
            self._view.__enter__()
        self._closed = False

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def images_dir(self) -> Path:
        return self.run_dir / IMAGES_DIR

    @property
    def wandb_dir(self) -> Path | None:
        return self._wandb.wandb_dir

    @property
    def prometheus_enabled(self) -> bool:
        return self._prometheus is not None

    def rewind(self, step: int) -> None:
        """A resumed run continues from checkpoint `step`: drop metrics.jsonl rows logged after it."""
        if self._jsonl is not None:
            self._jsonl.rewind(step)

    def log_step(self, metrics: Mapping[str, Any]) -> None:
        """Report one row: a training step (int "step") or progress without one (e.g. warm_start/step).
        Numbers go to every sink; other values (strings, lists) only to metrics.jsonl."""
        if self._closed:
            raise RuntimeError("RunLogger.log_step: the logger is closed")
        step = metrics.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise TypeError(f"metrics['step']: expected an int, got {step!r}")
        if self._jsonl is not None:
            self._jsonl.write(metrics)
        if self._prometheus is not None:
            self._prometheus.export(metrics)
        self._wandb.log_scalars(metrics)
        if self._view is not None:
            self._view.update(metrics)

    def wants_overlays(self, step: int) -> bool:
        """True on the steps that should draw overlays (every logging.overlay_every steps)."""
        every = self.cfg.logging.overlay_every
        return every > 0 and step % every == 0

    def log_overlays(self, step: int, overlays: Sequence[tuple[str, np.ndarray]]) -> list[Path]:
        """Save each (sample_id, uint8[H, W, 3] RGB overlay) as images/step_<N>_<sample>.png; log to wandb."""
        paths = [
            save_overlay(image, overlay_path(self.run_dir, step, sample_id)) for sample_id, image in overlays
        ]
        self._wandb.log_images(step, overlays)
        return paths

    def close(self) -> None:
        """Stop the terminal view first (it holds the screen), then flush and close the other sinks."""
        if self._closed:
            return
        self._closed = True
        if self._view is not None:
            self._view.close()
        if self._prometheus is not None:
            self._prometheus.close()
        self._wandb.close()
        if self._jsonl is not None:
            self._jsonl.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
