"""Weights & Biases logging of step scalars and overlay images.

    logger = WandbLogger(mode="offline", run_dir=run_dir, run_name="local_cpu", config=to_dict(cfg))
    logger.log_scalars({"step": 3, "reward/mean": 0.4})
    logger.log_images(step=10, images=[("synth-0003", overlay)])
    logger.close()

Offline by default (no network): the run lands in <run_dir>/wandb/offline-run-*/, to upload later with
`wandb sync <that dir>`. mode="disabled" never imports wandb and every method is a no-op. The wandb run id
is kept in <run_dir>/wandb_run_id so a resumed training run continues the same wandb run.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cluster.telemetry.keys import numeric_items

WANDB_MODES = ("offline", "online", "disabled")
RUN_ID_FILE = "wandb_run_id"


class WandbLogger:
    def __init__(
        self,
        mode: str,
        run_dir: str | Path,
        run_name: str,
        config: Mapping[str, Any] | None = None,
        project: str = "seg-r1",
        entity: str = "",
    ) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb.mode: must be one of {WANDB_MODES}, got {mode!r}")
        self.mode = mode
        self.run_dir = Path(run_dir)
        self._run: Any = None
        self._x_axis_defined: set[str] = set()
        if mode == "disabled":
            return
        import wandb  # imported only when used: it is slow to import and spawns a service process

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            mode=mode,
            dir=str(self.run_dir),
            project=project,
            entity=entity or None,
            name=run_name,
            id=self._run_id(),
            resume="allow",
            config=dict(config or {}),
            # console="off": the live view owns the terminal; x_disable_stats: no sampler competing for CPUs.
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    def _run_id(self) -> str:
        """The run's wandb id: read back on resume, else a new one (wandb's style: 8 lowercase alphanumerics)."""
        path = self.run_dir / RUN_ID_FILE
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        path.write_text(run_id + "\n", encoding="utf-8")
        return run_id

    @property
    def enabled(self) -> bool:
        return self._run is not None

    @property
    def wandb_dir(self) -> Path | None:
        """The local directory of this wandb run (None when disabled)."""
        return Path(self._run.dir).parent if self._run is not None else None

    def log_scalars(self, metrics: Mapping[str, Any]) -> None:
        """Log the numeric entries of one row. Charts plot each key against the row's "step" (or against
        "<group>/step" when the row has one, e.g. warm_start/step). wandb's own step stays a plain row
        counter: passing ours as step= would make wandb drop rows that arrive after a higher step."""
        if self._run is None:
            return
        values = numeric_items(metrics)
        self._define_x_axes(values)
        if values:
            self._run.log(values)

    def _define_x_axes(self, values: Mapping[str, float]) -> None:
        for key in values:
            if key in self._x_axis_defined or key == "step" or key.endswith("/step"):
                continue
            group_step = f"{key.split('/', 1)[0]}/step"
            x_axis = group_step if group_step in values else "step" if "step" in values else None
            if x_axis is not None:
                self._run.define_metric(key, step_metric=x_axis)
                self._x_axis_defined.add(key)

    def log_images(self, step: int, images: Sequence[tuple[str, np.ndarray]]) -> None:
        """Log overlays (uint8[H, W, 3] RGB each) under one `overlays` key at this training step."""
        if self._run is None or not images:
            return
        import wandb

        self._define_x_axes({"overlays": 0.0, "step": float(step)})
        panel = [wandb.Image(image, caption=sample_id) for sample_id, image in images]
        self._run.log({"overlays": panel, "step": step})

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
            import wandb

            # Stop wandb's service process now: in a Ray actor its exit-time teardown would run after Ray has
            # closed the connection, and print a ConnectionResetError traceback at the end of every run.
            wandb.teardown()
