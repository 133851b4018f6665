"""Weight-sync assembly: which transport a job uses, and who joins whom (learner rank 0 and the rollout actors).

The protocol itself, both ends over plain tensors and one group, is segr1/weight_sync.py; the learner and the
rollout workers call it from their actor methods (`join_weight_sync`, `broadcast_weights`, `receive_weights`).
This module holds what needs the actor handles: forming the group and running one sync from the driver.

    backend = collective_backend(cfg)          # None: the object store carries the buckets
    connect(learner, workers, backend)         # again (new port) whenever the rollout pool changes
    version = broadcast(learner, workers)
"""

from __future__ import annotations

from typing import Any

from segr1.config import Config
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


def broadcast(learner: Any, workers: list[Any]) -> int:
    """One collective sync: every worker receives while the learner sends. Returns the new weights version."""
    import ray

    receives = [w.receive_weights.remote() for w in workers]
    version = ray.get(learner.broadcast_weights_async())[0]
    received = ray.get(receives)
    if any(v != version for v in received):
        raise RuntimeError(f"weight sync: learner sent version {version}, workers report {received}")
    return version
