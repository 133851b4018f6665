"""Benchmark: sync against async GRPO pipelines on the embedded default, training samples/s side by side.

Run:  .venv/bin/python bench/pipeline.py [--steps 6] [--warm-start-steps 10] [--keep DIR] [key=value ...]
      (``make bench`` runs it with the defaults; extra key=value overrides go to both runs.)

Trains configs/local_cpu.yaml twice with `segr1 train` in a subprocess, the same overrides except
algorithm.mode=sync|async, one run after the other, and reads each run's metrics.jsonl. Both clip the
importance ratio (algorithm.clip_low=0.2; async needs it, sync gets it for a fair comparison). Samples/s is
completions over the summed `time/step_s` of the GRPO steps, so Ray start-up, warm start, evaluation and
checkpoints (all outside the step) do not count. The headline skips step 1: an async run has nothing generated
ahead then. Prints one row per mode and the async/sync ratio. Other jobs on the machine skew both runs; the
load average before and after each run is printed with it. Async gains only where the overlapped stages have
processors of their own: actors that share two busy cores slow each other down instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: make `bench.common` importable; stop bench/ shadowing packages

from bench.common import load_1min, load_average, print_table

CONFIG = "configs/local_cpu.yaml"
MODES = ("sync", "async")
# Same for both modes: keep everything outside the GRPO steps short, and nothing extra inside them.
COMMON_OVERRIDES = [
    "algorithm.clip_low=0.2",
    "algorithm.eval_every=0",  # the controller still evaluates at start and end, outside time/step_s
    "data.eval_size=4",
    "logging.overlay_every=0",  # overlays score extra groups inside the step
    "checkpoint.every=0",  # one checkpoint, after the last step
    "checkpoint.export_hf=false",
    "cluster.dashboard=false",
    "cluster.metrics_export_port=0",
    "logging.tui=plain",
    "logging.wandb.mode=disabled",
]


@dataclass
class RunResult:
    mode: str
    steps: list[dict]  # metrics.jsonl rows of GRPO steps, in order
    wall_s: float  # the whole `segr1 train` process
    load_before: float  # 1-minute load average
    load_after: float

    def samples_per_s(self, skip_first: bool) -> float:
        rows = self.steps[1:] if skip_first else self.steps
        completions = sum(round(r["throughput/samples_per_s"] * r["time/step_s"]) for r in rows)
        return completions / sum(r["time/step_s"] for r in rows)

    def mean(self, key: str) -> float:
        rows = self.steps[1:]
        return sum(r[key] for r in rows) / len(rows)


def train(mode: str, out_dir: Path, args: argparse.Namespace) -> RunResult:
    """One `segr1 train` run in a subprocess; its output goes to <run dir>.log."""
    name = f"pipeline_{mode}"
    overrides = [f"run.output_dir={out_dir}", f"run.name={name}", f"run.steps={args.steps}",
                 f"model.tiny_dir={out_dir / 'tiny_vlm'}",  # private: a shared cache may be cleaned mid-run
                 f"algorithm.warm_start.steps={args.warm_start_steps}", f"algorithm.mode={mode}",
                 *COMMON_OVERRIDES, *args.overrides]
    command = [str(ROOT / ".venv/bin/segr1"), "train", "--config", CONFIG, *overrides]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local cluster
    log_path = out_dir / f"{name}.log"
    load_before = load_1min()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(command, check=False, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=args.timeout_s)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        tail = log_path.read_text().splitlines()[-40:]
        raise SystemExit(f"{mode} run failed (exit {done.returncode}); last lines of {log_path}:\n"
                         + "\n".join(tail))
    metrics_path = out_dir / name / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "time/step_s" in r]
    if len(steps) < 2:
        raise SystemExit(f"{metrics_path}: expected >= 2 GRPO step rows, found {len(steps)}")
    return RunResult(mode, steps, wall_s, load_before, load_1min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps per run (>= 2)")
    parser.add_argument("--warm-start-steps", type=int, default=10,
                        help="supervised steps first, so completions follow the grammar as in training")
    parser.add_argument("--keep", type=Path, default=None, help="write the runs here and keep them")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per run")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="run only these (the ratio needs both)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for both runs")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (step 1 is left out of the headline)")

    with tempfile.TemporaryDirectory(prefix="segr1_bench_pipeline_") as tmp:
        out_dir = (args.keep or Path(tmp)).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        results = []
        for mode in args.modes:
            print(f"training {mode} ({args.steps} steps) ... {load_average()}", flush=True)
            results.append(train(mode, out_dir, args))

    print_table(
        f"GRPO pipeline on {CONFIG}, {args.steps} steps per mode (steps 2..{args.steps} unless noted)",
        ["mode", "samples/s", "samples/s all steps", "step s", "rollout+reward s", "learn s", "sync s",
         "max staleness", "process wall s", "load before", "load after"],
        [[r.mode, r.samples_per_s(skip_first=True), r.samples_per_s(skip_first=False), r.mean("time/step_s"),
          r.mean("time/rollout_s") + r.mean("time/reward_s"), r.mean("time/learn_s"), r.mean("time/sync_s"),
          max(s["pipeline/staleness"] for s in r.steps), round(r.wall_s), r.load_before, r.load_after]
         for r in results],
    )
    print(f"load = 1-minute load average on {os.cpu_count()} cores; above the core count the runs share CPUs")
    if len(results) < 2:
        return
    sync, async_ = results
    print(f"async / sync samples/s: {async_.samples_per_s(True) / sync.samples_per_s(True):.2f}x "
          f"(all steps: {async_.samples_per_s(False) / sync.samples_per_s(False):.2f}x)")
    print("In async mode rollout+reward runs in a thread beside the learner: overlapped, not added.")


if __name__ == "__main__":
    main()
