"""RolloutPool: the driver-side owner of N RolloutWorker actors.

    pool = RolloutPool(cfg, model_path, num_workers=2)
    groups = pool.generate(requests, SamplingParams(n=4, seed=0))   # split across workers, order preserved
    stream = pool.generate_shards(requests, sampling)                # (first index, groups) as each shard ends
    pool.update_weights(bucket_refs, version=3)                      # every worker; remembered for late joiners
    pool.resize(3)                                                   # the new worker loads version 3 first

Requests are cut into contiguous, balanced shards (segr1.shards), one per worker, so putting the results back
in order is a concatenation. A worker that dies mid-call, or whose call outlives `rollout.timeout_s` (hung:
it is killed), is replaced by a fresh one at the latest weights and its shard re-run with the same seed (up to
`rollout.max_retries` times; then segr1.faults.StageError names the stage and the worker). A worker that does
not take a weight update within `learner.sync.timeout_s` is replaced the same way.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from rollout.worker import RolloutWorker
from segr1.config import Config
from segr1.faults import StageError
from segr1.protocol import GenerationRequest, RolloutGroup, SamplingParams
from segr1.shards import balanced_shards
from segr1.weights import TensorBucket, WeightBucket


class RolloutPool:
    """N rollout actors behind one generate / update_weights / resize interface."""

    def __init__(self, cfg: Config, model_path: str, num_workers: int | None = None,
                 worker_cls: type = RolloutWorker) -> None:
        # worker_cls: any class constructed as worker_cls(cfg, model_path, worker_id) with RolloutWorker's
        # methods (bench/scheduling.py passes a sleep-based stand-in to time this pool without models).
        self.cfg = cfg
        self.model_path = model_path
        self._actor_class = ray.remote(worker_cls).options(
            num_cpus=cfg.rollout.num_cpus, num_gpus=cfg.rollout.num_gpus, resources=dict(cfg.rollout.resources),
            max_restarts=0,  # a dead worker is replaced by a fresh one (on any node with the resources)
        )
        self._workers: list[tuple[str, Any]] = []  # (worker_id, actor handle)
        self._next_id = 0
        self._latest: tuple[int, list[ray.ObjectRef]] | None = None  # (version, bucket refs) for late joiners
        self._lock = threading.RLock()  # generate may run in another thread than resize (async controller)
        self.resize(num_workers if num_workers is not None else cfg.rollout.num_workers)

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def workers(self) -> list[tuple[str, Any]]:
        """(worker_id, actor handle) of the current workers (a copy: for fault injection and monitoring)."""
        with self._lock:
            return list(self._workers)

    def actors(self) -> list[Any]:
        """Actor handles of the current workers."""
        return [actor for _, actor in self.workers]

    # ------------------------------------------------------------------------------------------- membership
    def _spawn(self) -> tuple[str, Any]:
        worker_id = f"rollout-{self._next_id}"
        self._next_id += 1
        actor = self._actor_class.remote(self.cfg, self.model_path, worker_id)
        return worker_id, actor

    def _bring_up(self, workers: list[tuple[str, Any]]) -> None:
        """Wait until new workers are loaded and, if weights were published, hold the latest version."""
        timeout_s = self.cfg.rollout.timeout_s  # a worker that loads its model for longer counts as hung
        if self._latest is None:
            ray.get([actor.health.remote() for _, actor in workers], timeout=timeout_s)
        else:
            version, refs = self._latest
            ray.get([actor.update_weights.remote(refs, version) for _, actor in workers], timeout=timeout_s)

    def resize(self, num_workers: int) -> None:
        """Grow (new workers get the latest weights before they serve) or shrink (removed workers drain)."""
        if num_workers < 1:
            raise ValueError(f"rollout pool size must be >= 1, got {num_workers}")
        with self._lock:
            if num_workers > len(self._workers):
                new = [self._spawn() for _ in range(num_workers - len(self._workers))]
                self._bring_up(new)
                self._workers += new
            elif num_workers < len(self._workers):
                removed = self._workers[num_workers:]
                self._workers = self._workers[:num_workers]
                self._drain_and_kill(removed)

    def _drain_and_kill(self, workers: list[tuple[str, Any]]) -> None:
        # An actor runs its calls in submission order: once this no-op returns, earlier calls have finished.
        for _, actor in workers:
            try:
                ray.get(actor.health.remote(), timeout=self.cfg.rollout.timeout_s)
            except (RayActorError, GetTimeoutError):
                pass  # already dead, or hung: nothing more will come from it
            ray.kill(actor)

    def _replace(self, dead_id: str) -> tuple[str, Any]:
        """A fresh worker (at the latest weights) in place of a dead one; returns the worker to re-run on."""
        with self._lock:
            ids = [worker_id for worker_id, _ in self._workers]
            if dead_id not in ids:  # removed by a resize meanwhile: any live worker will do
                return self._workers[0]
            attempts = self.cfg.rollout.max_retries + 1
            for attempt in range(attempts):
                fresh = self._spawn()
                try:
                    self._bring_up([fresh])
                    break
                except (RayActorError, GetTimeoutError):
                    # Its node died too: a node lost without warning counts as alive until its heartbeats are
                    # missed, so Ray may place the replacement there; the next one goes to a live node.
                    ray.kill(fresh[1])
                    if attempt == attempts - 1:
                        raise
            index = ids.index(dead_id)
            ray.kill(self._workers[index][1])
            self._workers[index] = fresh
            return fresh

    def shutdown(self) -> None:
        with self._lock:
            for _, actor in self._workers:
                ray.kill(actor)
            self._workers = []

    # ------------------------------------------------------------------------------------------- serving
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        """All groups, in request order. With a seed, shard i samples with seed + i (distinct streams)."""
        shards = dict(self.generate_shards(requests, sampling))
        return [group for start in sorted(shards) for group in shards[start]]

    def generate_shards(self, requests: list[GenerationRequest],
                        sampling: SamplingParams) -> Iterator[tuple[int, list[RolloutGroup]]]:
        """(index of the shard's first request, its groups), one per shard, in the order the shards finish
        (ray.wait), so a caller can score a shard while the others still generate. Same shards and seeds as
        `generate`; a shard whose worker died or hung is re-run on a replacement and yielded once."""
        with self._lock:
            workers = list(self._workers)
        shards = [(i, a, b) for i, (a, b) in enumerate(balanced_shards(len(requests), len(workers))) if b > a]

        def submit(i: int, a: int, b: int) -> ray.ObjectRef:
            params = sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + i)
            return actors[i][1].generate.remote(requests[a:b], params)

        actors = {i: workers[i] for i, _, _ in shards}
        timeout_s, max_retries = self.cfg.rollout.timeout_s, self.cfg.rollout.max_retries
        pending = {submit(i, a, b): (i, a, b) for i, a, b in shards}
        deadlines = dict.fromkeys(pending, time.monotonic() + timeout_s)
        retries = dict.fromkeys(actors, 0)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1,
                                timeout=max(min(deadlines.values()) - time.monotonic(), 0.0))
            ref = ready[0] if ready else min(deadlines, key=deadlines.__getitem__)  # else the first one due
            i, a, b = pending.pop(ref)
            del deadlines[ref]
            failure = f"generate did not return within rollout.timeout_s={timeout_s:g}s" if not ready else ""
            if ready:
                try:
                    groups = ray.get(ref)
                except RayActorError as error:
                    failure = f"the worker died during generate ({type(error).__name__})"
            if not failure:
                yield a, groups
                continue
            if retries[i] == max_retries:
                raise StageError("generate", actors[i][0], f"{failure}; its {b - a} prompts were tried "
                                 f"{retries[i] + 1} times (rollout.max_retries={max_retries})")
            retries[i] += 1
            actors[i] = self._replace(actors[i][0])  # the dead or hung worker is killed
            ref = submit(i, a, b)
            pending[ref], deadlines[ref] = (i, a, b), time.monotonic() + timeout_s

    # ------------------------------------------------------------------------------------------- weights
    def update_weights(self, buckets: list[Any], version: int) -> None:
        """Deliver one broadcast (ObjectRefs or WeightBuckets, put once here) to every worker; wait for all."""
        for i, b in enumerate(buckets):
            if not isinstance(b, (ray.ObjectRef, WeightBucket, TensorBucket)):
                raise TypeError(f"update_weights: item {i} is {type(b).__name__}, expected a weight bucket or ObjectRef")
        refs = [b if isinstance(b, ray.ObjectRef) else ray.put(b) for b in buckets]
        with self._lock:
            self._latest = (int(version), refs)
            workers = list(self._workers)
        pending = {actor.update_weights.remote(refs, version): worker_id for worker_id, actor in workers}
        timeout_s = self.cfg.learner.sync.timeout_s
        done, failed = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)  # failed: hung
        for ref in done:
            try:
                ray.get(ref)
            except RayActorError:
                failed.append(ref)
        for ref in failed:
            try:  # dead or hung: a fresh worker loads the latest weights as it comes up; the old one is killed
                self._replace(pending[ref])
            except (RayActorError, GetTimeoutError) as error:
                raise StageError("weight_sync", pending[ref], f"its replacement could not load version {version} "
                                 f"({type(error).__name__})") from None

    @property
    def weights_version(self) -> int:
        return self._latest[0] if self._latest is not None else 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            workers = list(self._workers)
        per_worker, dead = [], 0
        for ref in [actor.stats.remote() for _, actor in workers]:
            try:
                per_worker.append(ray.get(ref))
            except RayActorError:
                dead += 1  # replaced on the next generate or update_weights
        return {
            "workers": len(workers),
            "dead_workers": dead,
            "tokens_per_s": sum(s["tokens_per_s"] for s in per_worker),
            "tokens": sum(s["tokens"] for s in per_worker),
            "completions": sum(s["completions"] for s in per_worker),
            "weights_versions": [s["weights_version"] for s in per_worker],
            "per_worker": per_worker,
        }
