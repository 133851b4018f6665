"""Weight-bucket wire format shared by the learner (sender) and the rollout workers (receivers).

A broadcast groups a model's named tensors into a few buckets of about `bucket_bytes`, so it moves a handful
of big objects instead of hundreds of small ones. Two bucket forms share one reader (`unpack_buckets`):

- `WeightBucket`: one flat byte buffer with the tensors at offsets. `pack_buckets` copies tensors into such a
  buffer at ALIGN-byte offsets (the collective transport in segr1/weight_sync.py broadcasts these, on the
  device, and vLLM's out-of-process path ships them). For the object store, `iter_tensor_buckets` instead
  makes the buffer a view of the storage the tensors already share (DeepSpeed ZeRO-1/2's flat parameter
  buffer), at the offsets they have there: nothing is packed.
- `TensorBucket`: one byte array per tensor, each a view of the live tensor, for tensors with no neighbours.

`ray.put` pickles either with protocol 5, which hands every array to Ray as an out-of-band buffer: the put's
copy into shared memory is the only copy the sender makes, and every `ray.get` gives zero-copy, read-only
views of that shared memory. A rollout engine may even serve from those views (rollout.zero_copy_weights), so
a node holds one copy of each version however many workers it runs.

    refs = [ray.put(b) for b in iter_tensor_buckets(model.named_parameters(), 256 << 20, version=3)]
    for name, tensor in unpack_buckets(ray.get(refs)):   # read-only views
        params[name].copy_(tensor)

Every offset is a multiple of its tensor's element size (one dtype per shared-storage bucket), so every view
is aligned for its dtype (bf16 stays bf16).

The collective transport (NCCL between GPUs, gloo on CPU), both its ends, is segr1/weight_sync.py.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

ALIGN = 64  # bytes: a cache line, and a multiple of every dtype's size

_DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
              torch.int16, torch.int8, torch.uint8, torch.bool)
}


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"weight dtype {dtype} is not supported by the bucket format")
    return name


def dtype_of(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unknown weight dtype {name!r} in bucket (known: {sorted(_DTYPES)})")
    return _DTYPES[name]


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class BucketLayout:
    """Where each tensor lives inside one flat byte buffer of `nbytes` bytes."""

    version: int
    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    offsets: list[int]
    nbytes: int


@dataclass(frozen=True)
class WeightBucket:
    """A bucket with its bytes: `buffer` is uint8[nbytes], tensors at `offsets` (see BucketLayout)."""

    version: int
    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    offsets: list[int]
    buffer: np.ndarray

    @property
    def layout(self) -> BucketLayout:
        return BucketLayout(self.version, self.names, self.shapes, self.dtypes, self.offsets, int(self.buffer.size))


@dataclass(frozen=True)
class TensorBucket:
    """A bucket as one uint8 array per tensor (see the module docstring: what the object store carries)."""

    version: int
    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    arrays: list[np.ndarray]


def plan_layouts(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, version: int
) -> list[tuple[BucketLayout, list[torch.Tensor]]]:
    """Group tensors, in order, into buckets of at most `bucket_bytes` (a bigger tensor gets its own bucket)."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    plans: list[tuple[BucketLayout, list[torch.Tensor]]] = []
    names: list[str] = []
    tensors: list[torch.Tensor] = []
    offsets: list[int] = []
    cursor = 0
    seen: set[str] = set()

    def close() -> None:
        nonlocal names, tensors, offsets, cursor
        if names:
            layout = BucketLayout(version, names, [tuple(t.shape) for t in tensors],
                                  [dtype_name(t.dtype) for t in tensors], offsets, cursor)
            plans.append((layout, tensors))
        names, tensors, offsets, cursor = [], [], [], 0

    for name, tensor in named_tensors:
        if name in seen:
            raise ValueError(f"weight {name!r} appears twice in one broadcast")
        seen.add(name)
        size = tensor.numel() * tensor.element_size()
        if names and _aligned(cursor) + size > bucket_bytes:
            close()
        cursor = _aligned(cursor)
        names.append(name)
        tensors.append(tensor)
        offsets.append(cursor)
        cursor += size
    close()
    return plans


def fill_buffer(dest: torch.Tensor, layout: BucketLayout, tensors: list[torch.Tensor]) -> None:
    """Copy `tensors` into the flat uint8 `dest` ([nbytes], any device) at the layout's offsets: one copy each."""
    host = dest.numpy() if dest.device.type == "cpu" else None
    for tensor, offset in zip(tensors, layout.offsets):
        flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        if host is not None and flat.device.type == "cpu":
            # host to host: numpy's plain memcpy; torch splits each copy over its thread pool, which costs more
            # than the copy itself for MB-sized tensors on a busy machine
            host[offset:offset + flat.numel()] = flat.numpy()
        else:
            dest[offset:offset + flat.numel()].copy_(flat)


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


def tensor_views(buffer: torch.Tensor, layout: BucketLayout) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) views into the flat uint8 `buffer` ([nbytes]); nothing is copied."""
    if buffer.numel() < layout.nbytes:
        raise ValueError(f"bucket buffer holds {buffer.numel()} bytes, its layout needs {layout.nbytes}")
    for name, shape, dtype, offset in zip(layout.names, layout.shapes, layout.dtypes, layout.offsets):
        dt = dtype_of(dtype)
        yield name, buffer[offset:offset + _nbytes(shape, dt)].view(dt).view(shape)


def iter_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, version: int
) -> Iterator[WeightBucket]:
    """Pack lazily into flat host buckets, one at a time (a sender can ship bucket i while it fills i + 1)."""
    for layout, tensors in plan_layouts(named_tensors, bucket_bytes, version):
        buffer = np.empty(layout.nbytes, dtype=np.uint8)
        fill_buffer(torch.from_numpy(buffer), layout, tensors)
        yield WeightBucket(version, layout.names, layout.shapes, layout.dtypes, layout.offsets, buffer)


def iter_tensor_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, version: int
) -> Iterator[WeightBucket | TensorBucket]:
    """The object-store form of a broadcast, built without copying host tensors.

    Tensors that already lie side by side in one storage (DeepSpeed ZeRO-1/2 keeps all trainable parameters in
    one flat buffer) ship as WeightBuckets over that storage's bytes: one buffer per bucket, which Ray copies
    fastest. The others ship as TensorBuckets of per-tensor byte views. Every view aliases the live tensors:
    `ray.put` each bucket (the put copies) before the tensors change again.
    """
    named = list(named_tensors)
    repeated = sorted(name for name, count in Counter(name for name, _ in named).items() if count > 1)
    if repeated:
        raise ValueError(f"weight(s) {repeated[:5]} appear twice in one broadcast")
    spans, loose = storage_spans(named, bucket_bytes)
    for span in spans:
        yield _span_bucket(span, version)
    for layout, tensors in plan_layouts(loose, bucket_bytes, version):
        arrays = [_host_bytes(t) for t in tensors]
        yield TensorBucket(version, layout.names, layout.shapes, layout.dtypes, arrays)


MAX_GAP = 4096  # bytes of padding a span may carry between neighbouring tensors (allocator/ZeRO alignment)


def storage_spans(
    named: list[tuple[str, torch.Tensor]], bucket_bytes: int
) -> tuple[list[list[tuple[str, torch.Tensor]]], list[tuple[str, torch.Tensor]]]:
    """Split host tensors into runs of one dtype that are neighbours in one storage (each run spans <=
    bucket_bytes, gaps <= MAX_GAP, at least two tensors) and the rest ("loose", in their given order)."""
    by_storage: dict[tuple[int, torch.dtype], list[tuple[int, str, torch.Tensor]]] = {}
    loose_names: set[str] = set()
    for name, tensor in named:
        t = tensor.detach()
        if t.device.type == "cpu" and t.is_contiguous() and t.numel() > 0:
            # one dtype per span: every offset stays a multiple of the element size, so receivers can view it
            by_storage.setdefault((t.untyped_storage().data_ptr(), t.dtype), []).append((t.data_ptr(), name, t))
        else:
            loose_names.add(name)
    spans: list[list[tuple[str, torch.Tensor]]] = []
    for entries in by_storage.values():
        entries.sort(key=lambda e: e[0])
        run: list[tuple[int, str, torch.Tensor]] = []
        run_start = run_end = 0
        for start, name, t in entries:
            end = start + t.numel() * t.element_size()
            if run and (start - run_end > MAX_GAP or max(end, run_end) - run_start > bucket_bytes):
                spans.append([(n, x) for _, n, x in run])
                run = []
            if not run:
                run_start, run_end = start, end
            run.append((start, name, t))
            run_end = max(run_end, end)  # tied weights share bytes: runs may overlap themselves
        if run:
            spans.append([(n, x) for _, n, x in run])
    loose_names.update(span[0][0] for span in spans if len(span) == 1)
    spans = [span for span in spans if len(span) > 1]
    return spans, [(name, t) for name, t in named if name in loose_names]


def _span_bucket(span: list[tuple[str, torch.Tensor]], version: int) -> WeightBucket:
    """A WeightBucket whose buffer is a byte view of the storage range the span's tensors cover."""
    tensors = [t.detach() for _, t in span]
    start = min(t.data_ptr() for t in tensors)
    end = max(t.data_ptr() + t.numel() * t.element_size() for t in tensors)
    storage = tensors[0].untyped_storage()
    whole = torch.empty(0, dtype=torch.uint8).set_(storage)  # the storage as bytes, no copy
    base = start - storage.data_ptr()
    buffer = whole[base:base + end - start].numpy()
    return WeightBucket(version, [n for n, _ in span], [tuple(t.shape) for t in tensors],
                        [dtype_name(t.dtype) for t in tensors], [t.data_ptr() - start for t in tensors], buffer)


def _host_bytes(tensor: torch.Tensor) -> np.ndarray:
    flat = tensor.detach().reshape(-1)
    if flat.device.type != "cpu":
        flat = flat.cpu()
    return flat.contiguous().view(torch.uint8).numpy()


def pack_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, version: int
) -> list[WeightBucket]:
    """All buckets of `named_tensors` (host memory; tensors may live on any device)."""
    return list(iter_buckets(named_tensors, bucket_bytes, version))


def unpack_bucket(bucket: WeightBucket | TensorBucket) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) zero-copy views of the bucket's bytes.

    A buffer fetched from the object store is read-only shared memory: treat the views as read-only (torch warns
    about non-writable buffers; that warning is expected here and silenced).
    """
    if isinstance(bucket, TensorBucket):
        yield from _tensor_bucket_views(bucket)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        flat = torch.from_numpy(bucket.buffer) if bucket.buffer.size else torch.empty(0, dtype=torch.uint8)
    yield from tensor_views(flat, bucket.layout)


def _tensor_bucket_views(bucket: TensorBucket) -> Iterator[tuple[str, torch.Tensor]]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        flats = [torch.from_numpy(a) if a.size else torch.empty(0, dtype=torch.uint8) for a in bucket.arrays]
    for name, shape, dtype, flat in zip(bucket.names, bucket.shapes, bucket.dtypes, flats, strict=True):
        dt = dtype_of(dtype)
        expected = _nbytes(shape, dt)
        if flat.numel() != expected:
            raise ValueError(f"weight {name!r}: bucket holds {flat.numel()} bytes, shape {shape} {dtype} needs "
                             f"{expected}")
        yield name, flat.view(dt).view(shape)


def unpack_buckets(
    buckets: Iterable[WeightBucket | TensorBucket], version: int | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """All tensors of a broadcast; every bucket must carry `version` (default: the first bucket's)."""
    for i, bucket in enumerate(buckets):
        if version is None:
            version = bucket.version
        if bucket.version != version:
            raise ValueError(f"weight bucket {i} has version {bucket.version}, expected {version}")
        yield from unpack_bucket(bucket)
