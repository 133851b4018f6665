"""Benchmark: where a short run's fixed cost goes, phase by phase, and how busy the cores are in each phase.

Run:  .venv/bin/python bench/startup.py [--steps 2] [--rounds 2] [--keep DIR] [key=value ...]

It runs `segr1 train` as the TRL side-by-side bench's tuned project side does (same data, warm-started model,
overrides; bench/trl_side_by_side.py builds them), samples the machine's CPU use every 0.2 s while the run is
alive, and prints, per phase of the run's timeline (runs/<name>/timeline.json, cluster/telemetry/timeline.py):
its seconds and the share of all cores that was busy. A phase with idle cores is one where work could overlap;
a phase at 100% can only get shorter by doing less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: make `bench.common` importable; stop bench/ shadowing packages

from bench.common import load_average, print_table
from bench.trl_side_by_side import TUNED, prepare, project_command


def sample_cpu(stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """(wall-clock time, percent of all cores busy) every 0.2 s until `stop`."""
    psutil.cpu_percent()
    while not stop.is_set():
        busy = psutil.cpu_percent(interval=0.2)
        out.append((time.time(), busy))


def one_run(out: Path, paths: dict[str, str], index: int, args: argparse.Namespace) -> list[list[object]]:
    name = f"startup_{index}"
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_cpu, args=(stop, samples), daemon=True)
    sampler.start()
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(project_command(out, paths, name, args.steps, *TUNED, *args.overrides), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        origin = psutil.Process(proc.pid).create_time()  # the timeline counts from the same instant
        code = proc.wait()
    end = time.time() - origin
    stop.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"segr1 train failed (exit {code}); see {out / f'{name}.log'}")
    marks = json.loads((out / name / "timeline.json").read_text())
    marks["process_exit"] = round(end, 2)
    rows, previous = [], 0.0
    for phase, at in marks.items():
        busy = [b for t, b in samples if previous <= t - origin < at]
        rows.append([index, phase, round(at - previous, 2), round(at, 2),
                     round(statistics.fmean(busy), 1) if busy else "-"])
        previous = at
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a temporary one)")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("overrides", nargs="*", help="key=value overrides for the run")
    args = p.parse_args()
    out = args.keep or Path(tempfile.mkdtemp(prefix="segr1_startup_"))
    out.mkdir(parents=True, exist_ok=True)
    paths = prepare(out, args)
    print(f"{args.rounds} runs of {args.steps} steps, {load_average()}", flush=True)
    rows = [row for index in range(args.rounds) for row in one_run(out, paths, index, args)]
    print_table(f"Start-up and wind-down of `segr1 train` ({args.steps} steps, tuned side of the TRL bench); "
                f"{load_average()}", ["run", "phase ends at mark", "phase s", "mark s", "cores busy %"], rows)


if __name__ == "__main__":
    main()
