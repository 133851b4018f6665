"""Weight-sync assembly: which transport a job uses, and who joins whom (learner rank 0 and the rollout actors).

The protocol itself, both ends over plain tensors and one group, is segr1/weight_sync.py; the learner and the
rollout workers call it from their actor methods (`join_weight_sync`, `broadcast_weights`, `receive_weights`).
This module holds what needs the actor handles: forming the group and running one sync from the driver.

    backend = collective_backend(cfg)          # None: the object store carries the buckets
    connect(learner, workers, backend)         # again (new port) whenever the rollout pool changes
    version = broadcast(learner, workers, timeout_s)

A sync that outlives `learner.sync.timeout_s` raises segr1.faults.StageError naming a member still blocked: over
a collective, every member waits for every other, so no member can be replaced mid-sync (the object-store path
replaces a hung worker instead: rollout/pool.py).
"""

from __future__ import annotations

from typing import Any

from segr1.config import Config
from segr1.faults import StageError
from segr1.weight_sync import sync_backend


def collective_backend(cfg: Config) -> str | None:
    """`learner.sync.transport` for this job: None (object store), "nccl", or "gloo" (collective on CPU)."""
    sync = cfg.learner.sync
    gpus_both_sides = cfg.learner.num_gpus > 0 and cfg.rollout.num_gpus > 0
    if sync.transport == "object_store" or (sync.transport == "auto" and not gpus_both_sides):
        return None
    return sync_backend(sync.transport, has_gpu=gpus_both_sides)


def connect(learner: Any, workers: list[Any], backend: str) -> None:
    """Form the sync group: the LearnerGroup's rank 0 (group rank 0) and rollout worker actors (ranks 1..N).

    `workers` are RolloutWorker actor handles; call again (new port) whenever the rollout pool changes."""
    import ray

    host, port = learner.sync_address()
    world_size = 1 + len(workers)
    joins = [w.join_weight_sync.remote(host, port, rank, world_size, backend) for rank, w in enumerate(workers, 1)]
    ray.get(learner.join_weight_sync_async(host, port, world_size, backend) + joins)  # they meet concurrently


def broadcast(learner: Any, workers: list[Any], timeout_s: float | None = None) -> int:
    """One collective sync: every worker receives while the learner sends. Returns the new weights version."""
    import ray

    receives = [w.receive_weights.remote() for w in workers]
    sends = learner.broadcast_weights_async()
    _, blocked = ray.wait([*sends, *receives], num_returns=len(sends) + len(receives), timeout=timeout_s)
    if blocked:
        who = (f"learner rank {sends.index(blocked[0])}" if blocked[0] in sends
               else f"rollout worker {receives.index(blocked[0])} of the pool")
        raise StageError("weight_sync", who, f"the collective broadcast did not finish within "
                         f"learner.sync.timeout_s={timeout_s:g}s ({len(blocked)} members still in it)")
    version = ray.get(sends)[0]
    received = ray.get(receives)
    if any(v != version for v in received):
        raise RuntimeError(f"weight sync: learner sent version {version}, workers report {received}")
    return version
