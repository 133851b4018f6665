"""Functions that run INSIDE a vLLM worker (sent with `LLM.collective_rpc`) to swap the weights in place.

vLLM calls each one as `fn(worker, *args)` with its worker object; the engine keeps running, so the KV-cache
memory, compiled graphs and scheduler survive a weight update.

The tensors carry Hugging Face checkpoint names (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`),
exactly what the learner's model reports; vLLM's loader maps them onto its fused layers (q/k/v into one
qkv_proj, gate/up into one gate_up_proj). Loading goes through the worker's `reload_weights`, not the model's
`load_weights`: the reload path first restores the loader hooks the parameters lose after start-up (calling
`load_weights` directly fails with "'Parameter' object has no attribute 'weight_loader'"). A subset of the
weights is fine layer by layer: a vLLM layer that receives nothing keeps its weights, but one that receives
only some of its tensors (q_proj without k_proj and v_proj, a weight without its bias) is rebuilt with garbage
in the rest (NaN log-probs), so the engine refuses such updates before sending them.

Two payload forms, both handled by `load_weights`:
- a list of (name, tensor) pairs: the engine core runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, the CPU
  setting), so the list arrives by reference and the tensors may be zero-copy views of object-store buffers;
- `to_wire(buckets)`: a list of (bucket layout fields, raw bytes), when the engine core and its workers run in
  other processes. Arguments make two hops there (msgpack to the engine core, pickle on to the workers);
  tensors and numpy arrays fail the second ("cannot pickle memoryview objects"), bytes and lists pass.

GPU transport (learner.sync.transport=nccl): the learner's rank 0 broadcasts buckets over a
`segr1.weights.WeightSyncGroup` (learner/nccl_sync.py). `join_sync_group` makes each vLLM worker a member, and
`receive_and_load` receives one broadcast straight into the worker's device memory and loads it, so the
weights never pass through the engine's front end. Over gloo the same code runs on CPU, as the tests do.

The worker process imports this module, so nothing heavy is imported at module level.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from segr1.weights import WeightBucket


WireBucket = tuple[dict[str, Any], bytes]  # (BucketLayout fields, the bucket's bytes)


def to_wire(buckets: list[WeightBucket]) -> list[WireBucket]:
    """Buckets in the form that crosses vLLM's process boundaries intact (see the module docstring)."""
    return [(vars(bucket.layout), bucket.buffer.tobytes()) for bucket in buckets]


def from_wire(wire: list[WireBucket]) -> Iterable[tuple[str, torch.Tensor]]:
    """(name, tensor) views of wire buckets (msgpack turned the layout's tuples into lists)."""
    import numpy as np

    from segr1.weights import WeightBucket, unpack_buckets

    buckets = [
        WeightBucket(fields["version"], list(fields["names"]), [tuple(s) for s in fields["shapes"]],
                     list(fields["dtypes"]), list(fields["offsets"]), np.frombuffer(data, dtype=np.uint8))
        for fields, data in wire
    ]
    return unpack_buckets(buckets)


def is_wire(payload: list[Any]) -> bool:
    return bool(payload) and isinstance(payload[0][0], dict) and isinstance(payload[0][1], bytes)


def fused_layers(worker: Any) -> dict[str, list[str]]:
    """vLLM's fused layers and the checkpoint layers each holds, e.g. qkv_proj -> [q_proj, k_proj, v_proj]."""
    model = worker.model_runner.get_model()
    return {fused: list(parts) for fused, parts in getattr(model, "packed_modules_mapping", {}).items()}


def load_weights(worker: Any, payload: list[tuple[str, torch.Tensor]] | list[WireBucket]) -> int:
    """Copy HF-named tensors into the worker's model in place; returns how many tensors were given."""
    named = list(from_wire(payload) if is_wire(payload) else payload)
    worker.reload_weights(weights_iterator=iter(named))  # model_runner.reload_weights under vLLM's config
    return len(named)


# ------------------------------------------------------------------------------------ sync-group transport
_GROUP_ATTR = "_segr1_weight_sync_group"  # where a worker keeps its membership between broadcasts


def join_sync_group(worker: Any, host: str, port: int, first_rank: int, world_size: int, backend: str) -> int:
    """Join the learner's weight-sync group as rank `first_rank` + the worker's own rank; returns that rank.
    Tensor-parallel workers each receive the full tensors and vLLM shards them while loading."""
    from segr1.weights import WeightSyncGroup

    rank = first_rank + int(getattr(worker, "rank", 0))
    setattr(worker, _GROUP_ATTR, WeightSyncGroup(host, port, rank, world_size, backend=backend))
    return rank


def receive_and_load(worker: Any) -> int:
    """Receive one broadcast (header, then bucket by bucket) and load it in place; returns its version."""
    from segr1.weights import receive_weights

    group = getattr(worker, _GROUP_ATTR, None)
    if group is None:
        raise RuntimeError("receive_and_load: this vLLM worker has not joined a weight-sync group")
    version, tensors = receive_weights(group)
    # Each bucket is a fresh buffer, so tensors vLLM holds on to while it assembles a layer stay valid.
    worker.reload_weights(weights_iterator=tensors)
    return version


def leave_sync_group(worker: Any) -> None:
    """Drop the membership (the pool re-forms the group when it grows or shrinks)."""
    if hasattr(worker, _GROUP_ATTR):
        delattr(worker, _GROUP_ATTR)
