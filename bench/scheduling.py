"""Benchmark: controller-side scheduling overhead of the rollout pool with 64 simulated rollout actors.

Run:  .venv/bin/python bench/scheduling.py [--workers 64] [--requests 256] [--request-s 0 0.05 0.25 1]
                                           [--repeats 3] [--weights-mb 8] [--bucket-mb 1]

Models are replaced by `SleepEngine`, which "generates" by sleeping a fixed time per request, so every second
above the ideal is scheduling cost: the pool cutting requests into shards, Ray shipping them (a 112 px image
each) to the actors, the actors building and serialising G completions per request (64 actors share 2 cores
here, so this part runs in parallel only on a real cluster) and the driver gathering them in order. Each of
the W actors is a `SleepWorker` with RolloutWorker's constructor and methods, reserving a sliver of a logical
CPU (Ray's CPU count is a scheduling budget, so 64 actors fit on 2 cores); they import no torch, which would
cost ~290 MB per process. Ray warns that many workers start at once: expected here.

1. rollout step: wall time of `RolloutPool.generate` on R requests (n=8) against the ideal
   request_s x (R / W), the longest shard; overhead share = (wall - ideal) / wall, median of --repeats.
   "direct Ray calls" sends the same shards straight to the actors: pool minus direct is the pool's own code.
2. weight fan-out: `RolloutPool.update_weights` of one broadcast (segr1.weights buckets of --bucket-mb,
   put once into the object store) to all W actors, each copying every tensor out, against the same to one.
The driver plays the controller; another job on the machine inflates both; the load average is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == ROOT / "bench":  # before other imports: ray puts its own paths first
    sys.path[0] = str(ROOT)  # run as a script: make `bench.common` importable, and stop bench/rollout.py
    # shadowing the `rollout` package

import numpy as np
import ray

from bench.common import load_average, median, print_table
from reward_server.parse import SegPrompt, render
from segr1.config import Config, load_config
from segr1.protocol import Completion, GenerationRequest, RolloutGroup, SamplingParams

EOS_ID = 256  # the completion's token ids are its UTF-8 bytes, then this end-of-sequence id
PROMPT_TOKENS = 96  # prompt ids per group (chat template + image pads); only sets the payload size


class SleepEngine:
    """A scheduling benchmark, not a model: "generates" by sleeping `request_s` per request.

    It returns well-formed RolloutGroups: grammar-valid completion text (reward_server.parse reads it), its
    bytes as token ids with EOS, a log-prob per token, and the weights version, so the pool moves the same
    payload a real engine returns. Weights arrive as named numpy arrays (not torch tensors) and are copied in.
    """

    def __init__(self, request_s: float) -> None:
        self.request_s = request_s
        self._version = 0
        self._weights: dict[str, np.ndarray] = {}

    @property
    def weights_version(self) -> int:
        return self._version

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        time.sleep(self.request_s * len(requests))
        return [self._group(request, sampling) for request in requests]

    def _group(self, request: GenerationRequest, sampling: SamplingParams) -> RolloutGroup:
        size = request.image.shape[1]
        completions = []
        for i in range(sampling.n):
            x, y = (size // 4 + i) % size, size // 4
            box = (x, y, x + size // 2, y + size // 2)
            text = render(SegPrompt(think="the animal blends into the bark", boxes=[box],
                                    points=[(x + size // 4, y + size // 4)], labels=[1]))
            token_ids = [*text.encode(), EOS_ID]
            completions.append(Completion(text, token_ids, [-1.0] * len(token_ids), "stop"))
        return RolloutGroup(request.request_id, list(range(PROMPT_TOKENS)), completions, self._version)

    def update_weights(self, named_arrays: Iterable[tuple[str, np.ndarray]], version: int) -> None:
        for name, array in named_arrays:
            self._weights[name] = array.copy()  # shared-memory views are read-only: copy, as loading does
        self._version = version


class SleepWorker:
    """Stands in for rollout.worker.RolloutWorker: the constructor and methods RolloutPool calls, plus
    `set_request_s` (the benchmark sweeps the sleep time on live actors). Buckets are plain dicts
    {layout fields, buffer}.
    """

    def __init__(self, cfg: Config, model_path: str, worker_id: str) -> None:
        self.worker_id = worker_id
        self.engine = SleepEngine(request_s=0.0)
        self.calls = 0

    def set_request_s(self, request_s: float) -> None:
        self.engine.request_s = request_s

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        self.calls += 1
        groups = self.engine.generate(requests, sampling)
        return [dataclasses.replace(g, worker_id=self.worker_id) for g in groups]

    def update_weights(self, buckets: list[Any], version: int) -> int:
        buckets = ray.get(list(buckets))  # refs nested in a list are not resolved by Ray for us
        self.engine.update_weights(_named_arrays(buckets), version)
        return self.engine.weights_version

    def weights_version(self) -> int:
        return self.engine.weights_version

    def health(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "ok": True, "weights_version": self.engine.weights_version,
                "pid": os.getpid(), "torch_imported": "torch" in sys.modules}

    def stats(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "weights_version": self.engine.weights_version,
                "calls": self.calls, "tokens_per_s": 0.0, "tokens": 0, "completions": 0}


def _named_arrays(buckets: list[dict[str, Any]]) -> Iterable[tuple[str, np.ndarray]]:
    """(name, bytes) views of each tensor in the buckets, at the layout's offsets (numpy twin of unpack)."""
    for bucket in buckets:
        ends = [*bucket["offsets"][1:], bucket["nbytes"]]
        for name, start, end in zip(bucket["names"], bucket["offsets"], ends):
            yield name, bucket["buffer"][start:end]


# -------------------------------------------------------------------------------------------- measurements
def requests_for(count: int, frame: int) -> list[GenerationRequest]:
    rng = np.random.default_rng(0)
    return [GenerationRequest(f"req-{i}", rng.integers(0, 256, (frame, frame, 3), dtype=np.uint8),
                              "Segment the camouflaged object.") for i in range(count)]


SAMPLING = SamplingParams(n=8, max_new_tokens=64, seed=0)


def time_generate(pool: Any, requests: list[GenerationRequest], repeats: int) -> float:
    """Median seconds of pool.generate; checks the groups come back complete and in request order."""
    sampling = SAMPLING
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        groups = pool.generate(requests, sampling)
        seconds.append(time.perf_counter() - started)
        if [g.request_id for g in groups] != [r.request_id for r in requests] or any(
                len(g.completions) != sampling.n for g in groups):
            raise SystemExit("pool.generate returned groups out of order or incomplete")
    return median(seconds)


def time_direct_calls(actors: list[Any], requests: list[GenerationRequest], repeats: int) -> float:
    """Median seconds of the same shards sent straight to the actors: Ray's own cost, without the pool."""
    from rollout.pool import balanced_shards

    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        ray.get([actor.generate.remote(requests[a:b], SAMPLING)
                 for actor, (a, b) in zip(actors, balanced_shards(len(requests), len(actors)))])
        seconds.append(time.perf_counter() - started)
    return median(seconds)


def weight_buckets(weights_mb: int, bucket_mb: int) -> list[dict[str, Any]]:
    """A transformer-shaped state dict packed by segr1.weights, as plain dicts (actors import no torch)."""
    import torch

    from segr1.weights import pack_buckets

    hidden = 256
    count = max(1, weights_mb * (1 << 20) // (hidden * hidden * 4))
    tensors = [(f"model.layers.{i}.proj.weight", torch.randn(hidden, hidden)) for i in range(count)]
    buckets = pack_buckets(tensors, bucket_bytes=bucket_mb << 20, version=1)
    return [{**dataclasses.asdict(b.layout), "buffer": b.buffer} for b in buckets]


def time_fan_out(pool: Any, buckets: list[dict[str, Any]], repeats: int, first_version: int) -> float:
    """Median seconds of pool.update_weights (refs put once per broadcast, as the learner does; not timed)."""
    seconds = []
    for i in range(repeats):
        refs = [ray.put(b) for b in buckets]
        started = time.perf_counter()
        pool.update_weights(refs, version=first_version + i)
        seconds.append(time.perf_counter() - started)
    versions = ray.get([actor.weights_version.remote() for actor in pool.actors()])
    if set(versions) != {first_version + repeats - 1}:
        raise SystemExit(f"weight fan-out: workers hold versions {sorted(set(versions))}")
    return median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--request-s", type=float, nargs="+", default=[0.0, 0.05, 0.25, 1.0],
                        help="simulated generation seconds per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frame", type=int, default=112, help="request image side (configs/local_cpu.yaml)")
    parser.add_argument("--weights-mb", type=int, default=8)
    parser.add_argument("--bucket-mb", type=int, default=1)
    args = parser.parse_args()

    from rollout.pool import RolloutPool  # driver only (it imports torch)

    cpus_per_worker = 0.05
    cfg = load_config("configs/local_cpu.yaml" if (ROOT / "configs/local_cpu.yaml").is_file() else None,
                      [f"rollout.num_workers={args.workers}", f"rollout.num_cpus={cpus_per_worker}"])
    os.environ.pop("RAY_ADDRESS", None)  # a private local cluster
    print(f"starting {args.workers} sleep workers ... before: {load_average()}", flush=True)
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(args.workers * cpus_per_worker)),
             include_dashboard=False, log_to_driver=False)
    requests = requests_for(args.requests, args.frame)
    started = time.perf_counter()
    pool = RolloutPool(cfg, "sleep", args.workers, worker_cls=SleepWorker)
    healths = ray.get([actor.health.remote() for actor in pool.actors()])
    print(f"  {pool.size} actors up in {time.perf_counter() - started:.1f} s; "
          f"torch imported in any actor: {any(h['torch_imported'] for h in healths)}", flush=True)
    pool.generate(requests[:args.workers], SamplingParams(n=1, seed=0))  # warm-up: first call per actor
    rows = []
    for request_s in args.request_s:
        ray.get([actor.set_request_s.remote(request_s) for actor in pool.actors()])
        wall = time_generate(pool, requests, args.repeats)
        direct = time_direct_calls(pool.actors(), requests, args.repeats)
        ideal = request_s * math.ceil(args.requests / args.workers)
        rows.append([request_s, ideal, direct, wall, wall - ideal, (wall - ideal) / wall])
    load_generate = load_average()

    buckets = weight_buckets(args.weights_mb, args.bucket_mb)
    total_mb = sum(b["nbytes"] for b in buckets) / (1 << 20)
    fan_out_all = time_fan_out(pool, buckets, args.repeats, first_version=1)
    pool.resize(1)  # the 63 others drain and leave; the same broadcast to one worker is the baseline
    fan_out_one = time_fan_out(pool, buckets, args.repeats, first_version=1 + args.repeats)
    pool.shutdown()
    load_end = load_average()
    ray.shutdown()

    print_table(f"RolloutPool.generate: {args.requests} requests (n=8, {args.frame} px images) on "
                f"{args.workers} sleep workers, median of {args.repeats}",
                ["s/request", "ideal s", "direct Ray calls s", "pool wall s", "overhead s", "overhead share"],
                rows)
    print(f"  after: {load_generate} (includes this benchmark's own actor start-up)")
    print_table(f"RolloutPool.update_weights: {total_mb:.1f} MB in {len(buckets)} buckets of "
                f"<= {args.bucket_mb} MB, median of {args.repeats}",
                ["workers", "s", "ms per worker", "x one worker", "GB/s delivered"],
                [[args.workers, fan_out_all, 1000 * fan_out_all / args.workers, fan_out_all / fan_out_one,
                  args.workers * total_mb / 1024 / fan_out_all],
                 [1, fan_out_one, 1000 * fan_out_one, 1.0, total_mb / 1024 / fan_out_one]])
    print(f"  after: {load_end}")
    request_s, ideal, _, wall, overhead_s, share = rows[-1]
    print(f"scheduling overhead at {request_s} s/request: {overhead_s:.3f} s, {share:.1%} of a {wall:.2f} s "
          f"rollout step; fan-out to {args.workers} workers takes {fan_out_all / fan_out_one:.1f}x the time of one")


if __name__ == "__main__":
    main()
