"""Benchmark: the real controller at cluster scale, with stand-in engines, segmenters and learner whose
latencies come from published GPU figures (bench/sim_pools.py cites each one).

Run:  .venv/bin/python bench/cluster_sim.py [--steps 6] [--quick]

The controller (cluster.controller.Controller: draw, generate, score, advantages, update, broadcast; async
run-ahead; streaming rewards through cluster.records) runs unchanged over stand-in pools that sleep for the
simulated time of each piece of work, scaled down so a step takes about 0.3 s of wall time. Sweeps 8 / 64 / 256
rollout workers and 1 / 8 / 32 reward actors on the paper's batch (24 prompts x G=4, 400 tokens) and a larger
one (256 x 8), in four modes: sync without streaming (score after the whole batch), sync with streaming, async
with staleness 1 and 2 (streaming). For each it prints the mean step (steps 2..n, simulated seconds) against the
critical-path ideal of that mode on the same work:
  sync:  collect + learn + sync, collect = the last reward after generation (every group queued when the
         batch is done, or each shard's groups when that shard is done, on the actor free first);
  async: max(collect, learn + sync): the next batch is collected while this one trains and broadcasts;
and the overhead: the measured step less the ideal, in wall seconds (controller and stand-in bookkeeping, and
sleep jitter on this shared machine: it does not shrink with the time scale), and as a share of the unscaled
ideal step, which is what it would cost on the cluster.
Then the goals of issue H item 2: async >= 1.7x sync when generation and learning take equal time (the learner
stand-in is slowed until learn + sync equals collect), controller overhead < 3% of the step at 256 workers,
and the reward's exposed time (time/reward_exposed_s) cut by >= 80% by streaming.
What it does not model: Ray's own dispatch (bench/scheduling.py measures about 0.2 s per call to 64 actors on
this 2-core box), the object store, weight-transfer contention, stragglers beyond the length distribution.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root before bench/ (see common.py)

import numpy as np

from bench.common import load_average, print_table
from bench.sim_pools import Calibration, NoEval, Rows, SimData, SimPools, completion_lengths
from cluster.controller import Controller
from segr1.config import load_config
from segr1.shards import balanced_shards

MODES = {"sync": ("sync", 1, False), "sync+stream": ("sync", 1, True),
         "async s=1": ("async", 1, True), "async s=2": ("async", 2, True)}
BATCHES = {"paper 24x4": (24, 4, 0.03), "large 256x8": (256, 8, 0.01)}  # prompts, G, time scale
TOKENS = 400


def ideal_collect(cal: Calibration, ids: list[str], group: int, seed: int, workers: int, actors: int,
                  streaming: bool) -> tuple[float, float, float]:
    """(generation, collect, exposed reward) of one batch in simulated seconds, no overhead: each shard ends at
    its generation time; its groups (or, without streaming, every group once all shards are done) go to the
    actor free first."""
    ends = []
    for a, b in balanced_shards(len(ids), workers):
        if b > a:
            lengths = [completion_lengths(i, group, TOKENS, seed) for i in ids[a:b]]
            ends.append((cal.shard_s(b - a, np.concatenate(lengths)), b - a))
    generation = max(end for end, _ in ends)
    free = [0.0] * actors
    heapq.heapify(free)
    for end, groups in sorted(ends):
        for _ in range(groups):
            start = max(heapq.heappop(free), end if streaming else generation)
            heapq.heappush(free, start + cal.group_s(group))
    collect = max(free)
    return generation, collect, collect - generation


def run(cal: Calibration, batch: str, workers: int, actors: int, mode: str, steps: int,
        learn_factor: float = 1.0) -> dict[str, float]:
    prompts, group, scale = BATCHES[batch]
    loop, staleness, streaming = MODES[mode]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [
            f"run.output_dir={tmp}", "run.name=sim", f"run.steps={steps}", f"algorithm.mode={loop}",
            f"algorithm.max_staleness={staleness}", f"algorithm.group_size={group}",
            f"algorithm.prompts_per_step={prompts}", f"rollout.max_new_tokens={TOKENS}",
            "algorithm.warm_start.steps=0", "algorithm.baseline_images=0", "algorithm.eval_every=0",
            "checkpoint.every=0", "checkpoint.export_hf=false", "logging.overlay_every=0"])
        pools = SimPools(cal, workers, actors, scale, streaming, learn_factor)
        log = Rows()
        Controller(cfg, pools, SimData(prompts * (steps + 2)), NoEval(), log, model_path="unused").run()
    rows = log.rows[1:]  # step 1 has no batch generated ahead
    measured = float(np.mean([r["time/step_s"] for r in rows])) / scale
    ideals, exposed_ideal = [], []
    for r in rows:
        seed = cfg.run.seed * 1_000_003 + r["step"] - 1
        _, collect, exposed = ideal_collect(cal, r["data/sample_ids"], group, seed, workers, actors, streaming)
        tokens = sum(int(completion_lengths(i, group, TOKENS, seed).sum()) for i in r["data/sample_ids"])
        learn_sync = cal.learn_s(tokens, prompts) * learn_factor + cal.sync_s
        ideals.append(collect + learn_sync if loop == "sync" else max(collect, learn_sync))
        exposed_ideal.append(exposed)
    ideal = float(np.mean(ideals))
    # wall seconds beyond the ideal do not shrink with the time scale: their share of the unscaled step
    overhead_s = (measured - ideal) * scale
    return {"step": measured, "ideal": ideal, "overhead_s": overhead_s, "overhead": overhead_s / ideal,
            "rollout": float(np.mean([r["time/rollout_s"] for r in rows])) / scale,
            "exposed": float(np.mean([r["time/reward_exposed_s"] for r in rows])) / scale,
            "exposed_ideal": float(np.mean(exposed_ideal)),
            "learn": float(np.mean([r["time/learn_s"] for r in rows])) / scale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="8 and 256 workers, 1 and 32 actors only")
    args = parser.parse_args()
    cal = Calibration()
    workers_sweep, actors_sweep = ((8, 256), (1, 32)) if args.quick else ((8, 64, 256), (1, 8, 32))
    print(f"cluster simulation, {args.steps} steps per run ... {load_average()}", flush=True)
    started = time.perf_counter()
    results: dict[tuple, dict[str, float]] = {}
    for batch in BATCHES:
        rows = []
        for workers in workers_sweep:
            for actors in actors_sweep:
                for mode in MODES:
                    r = results[batch, workers, actors, mode] = run(cal, batch, workers, actors, mode, args.steps)
                    rows.append([workers, actors, mode, r["ideal"], r["step"], r["step"] / r["ideal"],
                                 1000 * r["overhead_s"], f"{100 * r['overhead']:.2f}%", r["rollout"], r["exposed"],
                                 r["exposed_ideal"], r["learn"]])
        print_table(f"{batch}, {TOKENS} tokens, time scale {BATCHES[batch][2]}: mean step against the critical-path "
                    "ideal (simulated seconds; the overhead's wall time is magnified by 1 / scale in them)",
                    ["rollout workers", "reward actors", "mode", "ideal s", "step s", "step / ideal",
                     "overhead wall ms", "overhead on the cluster", "rollout s", "reward exposed s",
                     "exposed ideal s", "learn s"], rows)

    # goal 1: async vs sync when generation and learning take equal time
    batch, workers, actors = "paper 24x4", 8, 8
    base = run(cal, batch, workers, actors, "sync+stream", args.steps)
    factor = max(base["rollout"] + base["exposed"] - cal.sync_s, 0.1) / base["learn"]
    balanced = {mode: run(cal, batch, workers, actors, mode, args.steps, factor) for mode in MODES}
    speedups = {m: balanced["sync"]["step"] / balanced[m]["step"] for m in ("async s=1", "async s=2")}
    print_table(f"{batch}, {workers} workers, {actors} actors, learner slowed {factor:.2f}x so learn + sync = "
                "collect", ["mode", "step s", "ideal s", "speed-up vs sync"],
                [[m, r["step"], r["ideal"], balanced["sync"]["step"] / r["step"]] for m, r in balanced.items()])
    overheads = [r["overhead"] for (b, w, a, m), r in results.items() if w == 256]
    cuts = [1 - results[b, w, a, "sync+stream"]["exposed"] / results[b, w, a, "sync"]["exposed"]
            for (b, w, a, m) in results if m == "sync"]
    print(f"\ngoals (issue H item 2), {time.perf_counter() - started:.0f} s, {load_average()}:")
    print(f"- async >= 1.7x sync at equal generation and learning: s=1 {speedups['async s=1']:.2f}x, "
          f"s=2 {speedups['async s=2']:.2f}x: {'met' if min(speedups.values()) >= 1.7 else 'NOT met'}")
    print(f"- controller overhead < 3% of the step at 256 workers: max {100 * max(overheads):.1f}%, median "
          f"{100 * float(np.median(overheads)):.1f}%: {'met' if max(overheads) < 0.03 else 'NOT met'}")
    print(f"- streaming cuts the reward's exposed time by >= 80%: {100 * min(cuts):.0f}% to {100 * max(cuts):.0f}% "
          f"(median {100 * float(np.median(cuts)):.0f}%) over the sweep: "
          f"{'met' if min(cuts) >= 0.8 else 'met in ' + str(sum(c >= 0.8 for c in cuts)) + ' of ' + str(len(cuts))}")


if __name__ == "__main__":
    main()
