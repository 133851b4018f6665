"""GPU weight broadcast: learner rank 0 -> rollout workers over one collective group (sender side).

The learner's rank 0 and every rollout worker join a `segr1.weights.WeightSyncGroup` (TCPStore rendezvous at
the learner's address; group rank 0 = learner). Each sync then runs concurrently on both sides:

    learner rank 0:   send_weights(group, trainable_weights, bucket_bytes, version)
    each worker:      version, tensors = segr1.weights.receive_weights(group)
                      engine.update_weights(tensors, version)

From the driver, `connect(learner_group, worker_actors, backend)` forms the group and `broadcast(...)` runs one
sync. The header (version and bucket layouts) travels over the group itself, then one device buffer per bucket:
packing is a device-to-device copy, so the weights never touch host memory. With backend "gloo" the same code
runs on CPU, which is how it is tested here; with "nccl" it needs one GPU per process.
Group membership is fixed: when the rollout pool grows or shrinks, every member leaves and a new group (new port)
is formed before the next sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from segr1.weights import WeightSyncGroup, fill_buffer, plan_layouts


def sync_backend(transport: str, has_gpu: bool) -> str:
    """`learner.sync.transport` -> collective backend; raises when NCCL is asked for without a GPU."""
    if transport == "nccl" and not has_gpu:
        raise ValueError("learner.sync.transport=nccl needs GPUs on the learner and rollout workers")
    return "nccl" if has_gpu else "gloo"


def send_weights(group: WeightSyncGroup, named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int,
                 version: int) -> int:
    """Broadcast `named_tensors` from group rank 0 in buckets of <= bucket_bytes; returns bytes sent."""
    if group.rank != 0:
        raise ValueError(f"send_weights runs on group rank 0 (the learner), this process is rank {group.rank}")
    plans = plan_layouts(named_tensors, bucket_bytes, version)
    group.broadcast_header(version, [layout for layout, _ in plans])
    sent = 0
    for layout, tensors in plans:
        buffer = torch.empty(layout.nbytes, dtype=torch.uint8, device=group.device)
        fill_buffer(buffer, layout, tensors)  # device-to-device copies on GPU
        group.broadcast(buffer)
        sent += layout.nbytes
    return sent


# ------------------------------------------------------------------------------------------------ driver side
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
