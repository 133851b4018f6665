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
from pathlib import Path
from typing import Any, Mapping, Sequence

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
        """Log the numeric entries of one step's metrics at wandb step = metrics["step"]."""
        if self._run is None:
            return
        values = numeric_items(metrics)
        step = metrics.get("step")
        self._run.log(values, step=int(step) if step is not None else None)

    def log_images(self, step: int, images: Sequence[tuple[str, np.ndarray]]) -> None:
        """Log overlays (uint8[H, W, 3] RGB each) under one `overlays` key at this step."""
        if self._run is None or not images:
            return
        import wandb

        panel = [wandb.Image(image, caption=sample_id) for sample_id, image in images]
        self._run.log({"overlays": panel}, step=int(step))

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
