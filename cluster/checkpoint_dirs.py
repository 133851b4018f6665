"""A run's checkpoint directories, `runs/<name>/checkpoints/step_<N>/`: named, found, and pruned to the newest.

What goes inside one directory, and how the learner writes it atomically (temp dir, then rename), is
learner/checkpoint.py; this module names the directories, finds the newest for `resume=true` (and for the
end-of-run summary), and removes all but the newest `checkpoint.keep`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from segr1.config import Config

_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoints_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoint directories, oldest first (temp dirs are ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def save(cfg: Config, learner: Any, step: int, extra_state: dict[str, Any]) -> Path:
    root = checkpoints_root(cfg.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"step_{step}"
    learner.save_checkpoint(str(path), extra_state)
    for _, old in list_checkpoints(root)[: -cfg.checkpoint.keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_latest(cfg: Config, learner: Any) -> dict[str, Any] | None:
    """Restore the newest checkpoint into the learner; returns its extra state, or None for a fresh run."""
    found = list_checkpoints(checkpoints_root(cfg.run_dir))
    if not found:
        return None
    return learner.load_checkpoint(str(found[-1][1]))
