"""The collective weight-sync protocol, both ends: learner rank 0 sends, the rollout workers receive.

The learner's rank 0 (group rank 0) and every rollout worker (ranks 1..N; a vLLM engine's GPU workers join
themselves) form one `WeightSyncGroup` over a TCPStore rendezvous at the learner's address. Each sync then runs
concurrently on both sides:

    learner rank 0:   send_weights(group, trainable_weights, bucket_bytes, version)
    each worker:      version, tensors = receive_weights(group)
                      engine.update_weights(tensors, version)

The header (version and bucket layouts, segr1.weights) travels over the group itself, then one device buffer
per bucket: packing is a device-to-device copy, so the weights never touch host memory. With backend "gloo" the
same code runs on CPU, which is how it is tested; with "nccl" it needs one GPU per process. Group membership
is fixed: when the rollout pool changes size, every member leaves and a new group (new port) is formed.
Who joins whom, with which actor handles, is job assembly: cluster/weight_sync.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from segr1.weights import BucketLayout, fill_buffer, plan_layouts, tensor_views


def sync_backend(transport: str, has_gpu: bool) -> str:
    """`learner.sync.transport` -> collective backend; raises when NCCL is asked for without a GPU."""
    if transport == "nccl" and not has_gpu:
        raise ValueError("learner.sync.transport=nccl needs GPUs on the learner and rollout workers")
    return "nccl" if has_gpu else "gloo"


class WeightSyncGroup:
    """A process group of the learner's rank 0 (group rank 0, the sender) and the rollout workers (ranks 1..N).

    It is built directly from a TCPStore rendezvous, so it lives beside, not inside, each process's default
    torch.distributed world (the learner ranks already have one for DeepSpeed). backend "nccl" moves the
    buckets GPU to GPU; "gloo" runs the same protocol on CPU (used by the tests).
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "nccl",
                 timeout_s: float = 600.0) -> None:
        import datetime

        import torch.distributed as dist

        from segr1.rendezvous import pin_gloo_to, tcp_store

        timeout = datetime.timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        if backend == "gloo":
            pin_gloo_to(host)
        self._store = tcp_store(host, port, rank, world_size, timeout_s)
        store = dist.PrefixStore("segr1/weight-sync", self._store)
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
            self._group = dist.ProcessGroupNCCL(store, rank, world_size, timeout)
        elif backend == "gloo":
            self.device = torch.device("cpu")
            self._group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        else:
            raise ValueError(f"weight sync backend must be 'nccl' or 'gloo', got {backend!r}")

    def broadcast(self, tensor: torch.Tensor) -> None:
        """In place: rank 0's `tensor` lands in every other rank's `tensor` (same shape and dtype)."""
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = 0
        self._group.broadcast([tensor], options).wait()

    def broadcast_header(self, version: int, layouts: list[BucketLayout]) -> tuple[int, list[BucketLayout]]:
        """Rank 0 sends the version and bucket layouts (as JSON) so receivers need no side channel; the
        arguments of the other ranks are ignored (pass -1, [])."""
        import json

        size = torch.zeros(1, dtype=torch.int64, device=self.device)
        payload = b""
        if self.rank == 0:
            payload = json.dumps({"version": version, "buckets": [vars(b) for b in layouts]}).encode()
            size[0] = len(payload)
        self.broadcast(size)
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.rank == 0:
            data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        self.broadcast(data)
        header = json.loads(bytes(data.cpu().numpy()).decode())
        buckets = [BucketLayout(d["version"], d["names"], [tuple(s) for s in d["shapes"]], d["dtypes"],
                                d["offsets"], d["nbytes"]) for d in header["buckets"]]
        return int(header["version"]), buckets


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


def receive_weights(group: WeightSyncGroup) -> tuple[int, Iterator[tuple[str, torch.Tensor]]]:
    """Receiver side of send_weights, on group ranks 1..N: (version, tensors on the group's device).

    The iterator receives bucket by bucket as it is consumed; consume it to the end (the sender waits on every
    receiver), and copy each tensor before the next bucket arrives if it must outlive the iteration.
    """
    version, layouts = group.broadcast_header(-1, [])

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        for layout in layouts:
            buffer = torch.empty(layout.nbytes, dtype=torch.uint8, device=group.device)
            group.broadcast(buffer)
            yield from tensor_views(buffer, layout)

    return version, tensors()
