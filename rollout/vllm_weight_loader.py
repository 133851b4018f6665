"""The vLLM worker extension that swaps the weights in place, called by method name, without pickled code.

`VLLMEngine` starts vLLM with `worker_extension_cls=EXTENSION`: vLLM adds `WeightLoaderExtension` to its worker
class's bases, so `LLM.collective_rpc("segr1_load_weights", args=(...))` runs that method on every worker. A
method NAME crosses vLLM's process boundaries as a string; sending a function instead needs
VLLM_ALLOW_INSECURE_SERIALIZATION=1, which lets vLLM's message decoder unpickle code (cloudpickle) in the
engine-core process. The engine keeps running, so the KV-cache memory, compiled graphs and scheduler survive a
weight update.

The tensors carry the CHECKPOINT's names (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`; the engine
renames the learner's names with segr1.weight_names before sending), the names vLLM's loader reads from disk;
it maps them onto its fused layers (q/k/v into one qkv_proj, gate/up into one gate_up_proj). Loading goes
through the worker's `reload_weights`, not the model's `load_weights`: the reload path first restores the
loader hooks the parameters lose after start-up (calling `load_weights` directly fails with "'Parameter'
object has no attribute 'weight_loader'"). A subset of the weights is fine layer by layer: a vLLM layer that
receives nothing keeps its weights, but one that receives only some of its tensors (q_proj without k_proj and
v_proj, a weight without its bias) is rebuilt with garbage in the rest (NaN log-probs), so the engine refuses
such updates before sending them.

Two payload forms, both handled by `segr1_load_weights`:
- a list of (name, tensor) pairs: the engine core runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, the CPU
  setting), so the list arrives by reference and the tensors may be zero-copy views of object-store buffers;
- `to_wire(buckets)`: a list of (bucket layout fields, raw bytes), when the engine core and its workers run in
  other processes. Arguments make two hops there (msgpack to the engine core, pickle on to the workers);
  tensors and numpy arrays fail the second ("cannot pickle memoryview objects"), bytes and lists pass.

GPU transport (learner.sync.transport=nccl): the learner's rank 0 broadcasts buckets over a
`segr1.weight_sync.WeightSyncGroup` (segr1/weight_sync.py). `segr1_join_sync_group` makes each vLLM worker a member
(and hands it the learner -> checkpoint names), and `segr1_receive_and_load` receives one broadcast straight
into the worker's device memory, renames it and loads it, so the weights never pass through the engine's front
end. Over gloo the same code runs on CPU, as the tests do.

The worker process imports this module, so nothing heavy is imported at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


def checkpoint_named(tensors: Iterable[tuple[str, torch.Tensor]], to_checkpoint: dict[str, str],
                     tied: dict[str, str]) -> Iterator[tuple[str, torch.Tensor]]:
    """`tensors` under checkpoint names, streamed, then each tied tensor the stream lacked (rollout.
    vllm_update_rules.with_tied, for a stream whose buckets should not all be held at once)."""
    seen: set[str] = set()
    sources: dict[str, torch.Tensor] = {}
    for name, tensor in tensors:
        name = to_checkpoint.get(name, name)
        seen.add(name)
        if name in tied.values():
            sources[name] = tensor
        yield name, tensor
    for target, source in tied.items():
        if target not in seen and source in sources:
            yield target, sources[source]


EXTENSION = f"{__name__}.WeightLoaderExtension"  # vLLM imports it by this name in each worker process
_GROUP_ATTR = "_segr1_weight_sync_group"  # where a worker keeps its membership between broadcasts
_NAMES_ATTR = "_segr1_weight_names"  # (learner -> checkpoint names, tied names) for the sync-group transport


class WeightLoaderExtension:
    """Mixed into vLLM's worker class (so `self` is the worker); every name starts with `segr1_` so none can
    clash with the worker's own attributes, which vLLM asserts."""

    def segr1_fused_layers(self) -> dict[str, list[str]]:
        """vLLM's fused layers and the checkpoint layers each holds, e.g. qkv_proj -> [q_proj, k_proj, v_proj]."""
        model = self.model_runner.get_model()
        return {fused: list(parts) for fused, parts in getattr(model, "packed_modules_mapping", {}).items()}

    def segr1_load_weights(self, payload: list[tuple[str, torch.Tensor]] | list[WireBucket]) -> int:
        """Copy checkpoint-named tensors into the worker's model in place; returns how many were given."""
        named = list(from_wire(payload) if is_wire(payload) else payload)
        self.reload_weights(weights_iterator=iter(named))  # model_runner.reload_weights under vLLM's config
        return len(named)

    # -------------------------------------------------------------------------------- sync-group transport
    def segr1_join_sync_group(self, host: str, port: int, first_rank: int, world_size: int, backend: str,
                              to_checkpoint: dict[str, str], tied: dict[str, str]) -> int:
        """Join the learner's weight-sync group as rank `first_rank` + the worker's own rank; returns that rank.
        Tensor-parallel workers each receive the full tensors and vLLM shards them while loading."""
        from segr1.weight_sync import WeightSyncGroup

        rank = first_rank + int(getattr(self, "rank", 0))
        setattr(self, _GROUP_ATTR, WeightSyncGroup(host, port, rank, world_size, backend=backend))
        setattr(self, _NAMES_ATTR, (dict(to_checkpoint), dict(tied)))
        return rank

    def segr1_receive_and_load(self) -> int:
        """Receive one broadcast (header, then bucket by bucket) and load it in place; returns its version."""
        from segr1.weight_sync import receive_weights

        group = getattr(self, _GROUP_ATTR, None)
        if group is None:
            raise RuntimeError("segr1_receive_and_load: this vLLM worker has not joined a weight-sync group")
        to_checkpoint, tied = getattr(self, _NAMES_ATTR)
        version, tensors = receive_weights(group)
        # Each bucket is a fresh buffer, so tensors vLLM holds on to while it assembles a layer stay valid.
        self.reload_weights(weights_iterator=checkpoint_named(tensors, to_checkpoint, tied))
        return version

    def segr1_leave_sync_group(self) -> None:
        """Drop the membership (the pool re-forms the group when it grows or shrinks)."""
        for attr in (_GROUP_ATTR, _NAMES_ATTR):
            if hasattr(self, attr):
                delattr(self, attr)
