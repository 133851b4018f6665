"""Benchmark: does memory stay flat over a long run? RSS of the driver and every actor, sampled while training.

Run:  nice -n 19 .venv/bin/python bench/memory.py [--steps 200] [--interval-s 1] [--bound-mb 2] [--keep DIR]
          [key=value ...]
      (``make bench SLOW=1`` runs it with the defaults; key=value overrides go to the run.) 200 steps took 4 minutes
      and 600 steps 11 on the shared 2-core machine; the controller actor's RSS warms up for about 250 steps
      (Ray's per-call bookkeeping), so --steps 600 judges the level after it (bench/RESULTS.md).

Trains the embedded default (configs/local_cpu.yaml) shrunk to tiny batches (2 prompts x 4 completions,
16 new tokens, a short warm start) for `--steps` GRPO steps, with its periodic evaluations, overlays and
checkpoints left on: they are where images and metrics could pile up. The `segr1 train` process is the driver;
it starts the local Ray cluster, so every actor is among its descendants (named by Ray's process title,
e.g. `ray::ControllerActor`). psutil samples each one's RSS every `--interval-s`, tagged with the number of
GRPO steps logged so far.

Per process it prints the RSS at the first and last steps, the peak, and the slope of a least-squares line
through the samples of the second half of the run (MB per 100 steps, after start-up, the first evaluation and
the first checkpoint have touched their memory), beside the early noise (the spread of the RSS over the first
quarter's steps). The verdict is against a stated bound, `--bound-mb` per 100 steps (default 2 MB): keeping
one frame's image and mask per step (112^2 x 4 bytes = 50 KB at the embedded default's frame) would grow a
process by 5 MB per 100 steps, so a leak of pixels fails it; a leak of metric rows (a few KB per step) is
below what RSS can show. The last line is PASS or FAIL for the driver and the controller actor (the loop's
process), the two that H item 4 requires flat. The summary's own peak-RSS line (VmHWM) is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: make `bench.common` importable; stop bench/ shadowing packages

from bench.common import load_average, print_table

CONFIG = "configs/local_cpu.yaml"
SHRUNK = [
    "algorithm.prompts_per_step=2",
    "algorithm.group_size=4",
    "rollout.max_new_tokens=16",
    "algorithm.warm_start.steps=20",
    "algorithm.warm_start.batch_size=4",
    "learner.micro_batch_size=8",
    "data.eval_size=4",
    "algorithm.baseline_images=4",
    "cluster.dashboard=false",
    "cluster.metrics_export_port=0",
    "logging.tui=plain",
    "logging.wandb.mode=disabled",
]


def role(process: psutil.Process, driver_pid: int) -> str | None:
    """`driver`, or the Ray actor class from the process title (`ray::RolloutWorker.generate` -> RolloutWorker;
    Ray's per-node agents, e.g. `ray::DashboardAgent`, count as well); None for the GCS, raylet and idle
    pooled workers."""
    if process.pid == driver_pid:
        return "driver"
    try:
        title = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if not title.startswith("ray::") or title.startswith("ray::IDLE"):
        return None
    # "ray::RolloutWorker.generate", or for a named actor "ray::segr1-controller-run:ControllerActor.run"
    return title.removeprefix("ray::").split()[0].split(":")[-1].split(".")[0]


def steps_logged(metrics_path: Path) -> int:
    if not metrics_path.is_file():
        return 0
    return sum(1 for line in metrics_path.read_text().splitlines() if '"time/step_s"' in line)


def sample(driver: subprocess.Popen, metrics_path: Path, interval_s: float) -> dict[str, list[tuple[int, float]]]:
    """(steps logged, RSS MB) per process role, until the driver exits. Two actors of one class share a role
    (the pools here have one of each); their RSS is summed."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    root = psutil.Process(driver.pid)
    while driver.poll() is None:
        step = steps_logged(metrics_path)
        totals: dict[str, float] = defaultdict(float)
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for process in processes:
            name = role(process, driver.pid)
            if name is None:
                continue
            try:
                if process.status() == psutil.STATUS_ZOMBIE:  # exiting: its RSS reads 0
                    continue
                totals[name] += process.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if step > 0:  # before the first step: start-up, warm start and the first evaluation
            for name, rss in totals.items():
                series[name].append((step, rss))
        time.sleep(interval_s)
    return series


def slope_per_100(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS against steps, MB per 100 steps (0 with fewer than two distinct steps)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return 100 * sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def analyse(points: list[tuple[int, float]], steps: int) -> dict[str, float]:
    # samples at the last step are taken while the run ends (final evaluation, checkpoint, HF export, shutdown):
    # one-off growth, not growth per step
    early = [y for x, y in points if x <= max(1, steps // 4)]
    late = [(x, y) for x, y in points if steps // 2 < x < steps]
    late_span = max(1, max((x for x, _ in late), default=1) - min((x for x, _ in late), default=0))
    spread = (max(early) - min(early)) if early else 0.0
    return {
        "first": points[0][1], "last": points[-1][1], "peak": max(y for _, y in points),
        "slope": slope_per_100(late) if len(late) > 1 else float("nan"),
        "noise": 100 * spread / late_span,  # early noise, spread over the late window, per 100 steps
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="GRPO steps (>= 8)")
    parser.add_argument("--interval-s", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--keep", type=Path, default=None, help="write the run here and keep it")
    parser.add_argument("--bound-mb", type=float, default=2.0, help="largest flat slope, MB per 100 steps")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides")
    args = parser.parse_args()
    if args.steps < 8:
        parser.error("--steps must be >= 8 (a first quarter and a second half of steps)")

    with tempfile.TemporaryDirectory(prefix="segr1_bench_memory_") as tmp:
        out = (args.keep or Path(tmp)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        overrides = [f"run.output_dir={out}", "run.name=memory", f"run.steps={args.steps}",
                     f"model.tiny_dir={out / 'tiny_vlm'}", *SHRUNK, *args.overrides]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local cluster
        print(f"training {args.steps} shrunk steps ... {load_average()}", flush=True)
        started = time.perf_counter()
        log_path = out / "memory.log"
        with open(log_path, "w") as log:
            segr1 = str(Path(sys.executable).with_name("segr1"))  # this environment's console script
            driver = subprocess.Popen([segr1, "train", "--config", CONFIG, *overrides],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                series = sample(driver, out / "memory" / "metrics.jsonl", args.interval_s)
                driver.wait(timeout=args.timeout_s)
            finally:
                if driver.poll() is None:
                    driver.kill()
        wall_s = time.perf_counter() - started
        text = log_path.read_text()
        if driver.returncode != 0:
            raise SystemExit(f"run failed (exit {driver.returncode}); last lines of {log_path}:\n"
                             + "\n".join(text.splitlines()[-40:]))
        peak_line = next((line for line in text.splitlines() if line.startswith("peak RSS")), "(no peak RSS line)")
    print(f"done in {wall_s:.0f} s ... {load_average()}")
    if args.keep:  # the raw series, for a look at where growth happens (evals, checkpoints, steady)
        (out / "rss.json").write_text(json.dumps(series))

    rows, slopes = [], {}
    for name in sorted(series, key=lambda n: (n != "driver", n)):
        a = analyse(series[name], args.steps)
        slopes[name] = a["slope"]
        flat = a["slope"] <= args.bound_mb  # nan (too few samples) is not flat: nothing was shown
        rows.append([name, len(series[name]), a["first"], a["last"], a["peak"], a["slope"], a["slope"] / 100,
                     a["noise"], "flat" if flat else "GROWS"])
    print_table(f"RSS over {args.steps} GRPO steps of {CONFIG} shrunk ({' '.join(SHRUNK[:3])}); MB",
                ["process", "samples", "RSS step 1", "RSS last", "peak", "slope MB/100 steps (2nd half)",
                 "MB/step", "early noise per 100 steps", f"verdict (bound {args.bound_mb:g} MB/100 steps)"], rows)
    print(f"run summary: {peak_line}")
    judged = {name: slopes.get(name, float("nan")) for name in ("driver", "ControllerActor")}
    passed = all(slope <= args.bound_mb for slope in judged.values())
    print(f"{'PASS' if passed else 'FAIL'}: RSS slope over the second half, "
          + ", ".join(f"{name} {slope:.2f}" for name, slope in judged.items())
          + f" MB per 100 steps; bound {args.bound_mb:g}")
    others = [name for name, slope in slopes.items() if name not in judged and not slope <= args.bound_mb]
    print("other processes: all within the bound" if not others else f"other processes above it: {', '.join(others)}")

if __name__ == "__main__":
    main()
