"""RolloutWorker: one rollout engine behind a plain class that the job wraps as a Ray actor.

    Worker = ray.remote(RolloutWorker).options(num_cpus=cfg.rollout.num_cpus, num_gpus=cfg.rollout.num_gpus)
    worker = Worker.remote(cfg, model_path, "rollout-0")
    groups = ray.get(worker.generate.remote(requests, SamplingParams(n=4)))
    ray.get(worker.update_weights.remote(bucket_refs, version=3))   # refs from the learner's ray.put

Weights arrive as segr1.weights buckets: over the object store (ObjectRefs, fetched here as zero-copy views of
shared memory, or bucket objects) or over a collective group with the learner (GPU path). Buckets fetched from
the object store are immutable, so with rollout.zero_copy_weights the engine serves straight from them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import torch

from rollout.engine import Engine, build_engine
from segr1.config import Config
from segr1.faults import FaultHook
from segr1.protocol import GenerationRequest, RolloutGroup, SamplingParams, resolve_arrays
from segr1.threads import thread_count
from segr1.weight_sync import WeightSyncGroup, receive_weights
from segr1.weights import TensorBucket, WeightBucket, unpack_buckets


class RolloutWorker:
    """Generates completions and receives weight updates for one engine; keeps throughput counters."""

    def __init__(self, cfg: Config, model_path: str, worker_id: str) -> None:
        # Ray sets OMP_NUM_THREADS=1 in actors; by default use exactly the CPUs this actor reserved
        torch.set_num_threads(thread_count(cfg.rollout.torch_threads, cfg.rollout.num_cpus))
        self.cfg = cfg
        self.worker_id = worker_id
        self.engine: Engine = build_engine(cfg, model_path)
        self._sync_group: WeightSyncGroup | None = None
        self._engine_syncs = False  # True when the engine joined the weight-sync group itself (vLLM)
        self._faults = FaultHook()  # fault drills (segr1.faults): armed by the controller, fired mid-call
        self._counters = {"requests": 0, "completions": 0, "tokens": 0, "generate_s": 0.0, "updates": 0,
                          "update_s": 0.0}

    # ------------------------------------------------------------------------------------------- serving
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        start = time.perf_counter()
        images = resolve_arrays([r.image for r in requests])  # ArrayRefs: one object-store fetch for all
        requests = [dataclasses.replace(r, image=image) for r, image in zip(requests, images)]
        groups = self.engine.generate(requests, sampling)
        self._faults.fire("generate")  # a drill: die or hang with the shard generated but not returned
        elapsed = time.perf_counter() - start
        c = self._counters
        c["requests"] += len(requests)
        c["completions"] += sum(len(g.completions) for g in groups)
        c["tokens"] += sum(len(comp.token_ids) for g in groups for comp in g.completions)
        c["generate_s"] += elapsed
        return [dataclasses.replace(g, worker_id=self.worker_id) for g in groups]

    # ------------------------------------------------------------------------------------------- weights
    def update_weights(self, buckets: list[Any], version: int) -> int:
        """Load a broadcast: buckets or ObjectRefs to them (all of one `version`). Returns the version."""
        start = time.perf_counter()
        self._faults.fire("weight_sync")
        from_store = any(not isinstance(b, (WeightBucket, TensorBucket)) for b in buckets)
        if from_store:
            import ray  # only needed when refs are passed

            buckets = ray.get(list(buckets))  # refs nested in a list are not resolved by Ray for us
        for i, bucket in enumerate(buckets):
            if not isinstance(bucket, (WeightBucket, TensorBucket)):
                raise TypeError(f"update_weights: item {i} is {type(bucket).__name__}, expected a weight bucket")
        # object-store buffers never change and live as long as a tensor views them: safe to serve from
        immutable = from_store and self.cfg.rollout.zero_copy_weights
        self.engine.update_weights(unpack_buckets(buckets, version), version, immutable=immutable)
        self._counters["updates"] += 1
        self._counters["update_s"] += time.perf_counter() - start
        return self.engine.weights_version

    def join_weight_sync(self, host: str, port: int, rank: int, world_size: int, backend: str) -> None:
        """Join the collective group of the learner's rank 0 (group rank 0) and the workers (ranks 1..N).

        An engine with its own sync (vLLM) joins from inside its GPU workers, so the weights land on their
        devices without a hop through this process (tensor parallelism 1: one group rank per worker)."""
        self.leave_weight_sync()
        if hasattr(self.engine, "join_weight_sync"):
            self.engine.join_weight_sync(host, port, rank, world_size, backend)
            self._engine_syncs = True
            return
        self._sync_group = WeightSyncGroup(host, port, rank, world_size, backend=backend)

    def receive_weights(self) -> int:
        """Receive one collective broadcast (runs while the learner calls send_weights). Returns the version."""
        start = time.perf_counter()
        self._faults.fire("weight_sync")
        if self._engine_syncs:
            self.engine.receive_weights()
        elif self._sync_group is None:
            raise RuntimeError(f"{self.worker_id}: receive_weights before join_weight_sync")
        else:
            version, tensors = receive_weights(self._sync_group)
            self.engine.update_weights(tensors, version)
        self._counters["updates"] += 1
        self._counters["update_s"] += time.perf_counter() - start
        return self.engine.weights_version

    def leave_weight_sync(self) -> None:
        if self._engine_syncs:
            self.engine.leave_weight_sync()
        self._engine_syncs = False
        self._sync_group = None  # dropping the group closes its connections

    def weights_version(self) -> int:
        return self.engine.weights_version

    def arm_fault(self, stage: str, action: str) -> None:
        """Fault drill: `action` (die | hang) inside this worker's next `stage` call (generate | weight_sync)."""
        self._faults.arm(stage, action)

    # ------------------------------------------------------------------------------------------- introspection
    def health(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "ok": True,
            "engine": self.cfg.rollout.engine,
            "weights_version": self.engine.weights_version,
            "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(),
        }

    def stats(self) -> dict[str, Any]:
        c = self._counters
        return {
            "worker_id": self.worker_id,
            "weights_version": self.engine.weights_version,
            **c,
            "tokens_per_s": c["tokens"] / c["generate_s"] if c["generate_s"] > 0 else 0.0,
        }
