"""Where a run's wall time goes before its first step and after its last: one mark per phase.

    timeline = Timeline(origin=driver_start)   # seconds count from the `segr1 train` process's start
    timeline.mark("ray_connected")             # ... "actors_ready", "first_step", "finished"
    timeline.marks                             # {"ray_connected": 3.2, "actors_ready": 16.9, ...}
    timeline.write(run_dir)                    # runs/<name>/timeline.json
    timeline_line(timeline.marks)              # "timeline (s)    ray_connected 3.2, ... first_step 19.8"

A short run is dominated by its fixed cost (Ray, the actors' imports and model loads, the forced evaluations,
the last checkpoint); the steps' own times (`time/*_s`) do not show it. The driver and the controller run on
the same node (cluster/job.py pins the controller there), so their wall clocks agree.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

TIMELINE_FILE = "timeline.json"


def process_start() -> float:
    """This process's start as wall-clock seconds (the kernel's record: counts the imports before main)."""
    return psutil.Process().create_time()


class Timeline:
    """Named marks in seconds since `origin` (wall clock), in the order they were made."""

    def __init__(self, origin: float, marks: dict[str, float] | None = None) -> None:
        self.origin = origin
        self.marks: dict[str, float] = dict(marks or {})

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.time() - self.origin, 2)

    def write(self, run_dir: Path) -> None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / TIMELINE_FILE).write_text(json.dumps(self.marks, indent=1) + "\n")


def timeline_line(marks: dict[str, float]) -> str | None:
    """One summary line with each mark's seconds since the driver started; None without marks."""
    if not marks:
        return None
    return "timeline (s)    " + ", ".join(f"{name} {t:.1f}" for name, t in marks.items())
