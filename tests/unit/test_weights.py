"""segr1.weights: the bucket wire format (layout, bit-exact round trip, zero-copy views, versions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segr1.weights import (
    ALIGN,
    MAX_GAP,
    BucketLayout,
    TensorBucket,
    WeightBucket,
    iter_tensor_buckets,
    pack_buckets,
    plan_layouts,
    unpack_bucket,
    unpack_buckets,
)


def _tensors() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("a.weight", torch.randn(3, 5, generator=g)),  # 60 bytes
        ("b.bf16", torch.randn(7, generator=g).to(torch.bfloat16)),  # 14 bytes
        ("c.half", torch.randn(2, 2, 2, generator=g).half()),  # 16 bytes
        ("d.long", torch.arange(-4, 5, dtype=torch.int64)),  # 72 bytes
        ("e.bool", torch.tensor([True, False, True])),  # 3 bytes
        ("f.scalar", torch.tensor(2.5)),  # 0-dim, 4 bytes
        ("g.empty", torch.empty(0, 4)),  # 0 bytes
        ("h.strided", torch.randn(4, 6, generator=g).t()),  # non-contiguous view, 96 bytes
    ]


def test_round_trip_is_bit_identical_for_every_dtype_and_shape():
    source = _tensors()
    buckets = pack_buckets(source, bucket_bytes=100, version=3)
    received = list(unpack_buckets(buckets))
    assert [n for n, _ in received] == [n for n, _ in source]
    for (name, want), (_, got) in zip(source, received):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert torch.equal(got.reshape(-1).view(torch.uint8) if got.numel() else got,
                           want.contiguous().reshape(-1).view(torch.uint8) if want.numel() else want), name


def test_layout_hand_computed():
    # 60 B at 0; 14 B at 64 (aligned) -> 78; 16 B would start at 128 and end at 144 > 100 -> new bucket
    plans = plan_layouts(_tensors()[:3], bucket_bytes=100, version=1)
    assert [layout.names for layout, _ in plans] == [["a.weight", "b.bf16"], ["c.half"]]
    assert plans[0][0].offsets == [0, 64] and plans[0][0].nbytes == 78
    assert plans[1][0].offsets == [0] and plans[1][0].nbytes == 16


def test_tensor_larger_than_a_bucket_gets_its_own_bucket_and_offsets_are_aligned():
    big = torch.zeros(1000)  # 4000 bytes
    plans = plan_layouts([("x", torch.ones(3)), ("big", big), ("y", torch.ones(2))], bucket_bytes=256, version=0)
    assert [layout.names for layout, _ in plans] == [["x"], ["big"], ["y"]]
    assert plans[1][0].nbytes == 4000
    for layout, _ in plan_layouts(_tensors(), bucket_bytes=1 << 20, version=0):
        assert all(offset % ALIGN == 0 for offset in layout.offsets)


def test_unpack_is_zero_copy_and_version_is_carried():
    bucket = pack_buckets([("w", torch.arange(6.0).reshape(2, 3))], bucket_bytes=1 << 20, version=9)[0]
    assert bucket.version == 9 and bucket.buffer.dtype == np.uint8
    ((_, view),) = list(unpack_bucket(bucket))
    start = bucket.buffer.__array_interface__["data"][0]
    assert view.data_ptr() == start  # a view of the bucket's memory, not a copy
    bucket.buffer[:4] = np.frombuffer(np.float32(42.0).tobytes(), dtype=np.uint8)
    assert view[0, 0].item() == 42.0


def test_read_only_buffer_unpacks():
    bucket = pack_buckets([("w", torch.ones(4, dtype=torch.bfloat16))], bucket_bytes=64, version=1)[0]
    bucket.buffer.setflags(write=False)  # what a buffer fetched from the object store looks like
    ((_, view),) = list(unpack_bucket(bucket))
    assert view.dtype == torch.bfloat16 and torch.equal(view, torch.ones(4, dtype=torch.bfloat16))


def test_mixed_versions_and_duplicate_names_are_rejected():
    a = pack_buckets([("a", torch.ones(1))], 64, version=1)
    b = pack_buckets([("b", torch.ones(1))], 64, version=2)
    with pytest.raises(ValueError, match="bucket 1 has version 2, expected 1"):
        list(unpack_buckets(a + b))
    with pytest.raises(ValueError, match="'a' appears twice"):
        pack_buckets([("a", torch.ones(1)), ("a", torch.ones(1))], 64, version=0)


def test_truncated_buffer_and_unknown_dtype_are_named():
    layout = BucketLayout(0, ["w"], [(4,)], ["float32"], [0], 16)
    short = WeightBucket(0, ["w"], [(4,)], ["float32"], [0], np.zeros(8, dtype=np.uint8))
    assert short.layout.nbytes == 8
    with pytest.raises(ValueError, match="holds 8 bytes, its layout needs 16"):
        from segr1.weights import tensor_views

        list(tensor_views(torch.zeros(8, dtype=torch.uint8), layout))
    odd = WeightBucket(0, ["w"], [(4,)], ["complex32"], [0], np.zeros(16, dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown weight dtype 'complex32'"):
        list(unpack_bucket(odd))


def test_tensor_buckets_alias_the_tensors_and_survive_out_of_band_pickling_bit_exactly():
    """The object-store form: no packing copy on the sender (the views alias the tensors), and pickle protocol 5
    (what ray.put uses) moves every array as its own out-of-band buffer, which the receiver views in place."""
    import pickle

    source = _tensors()
    buckets = list(iter_tensor_buckets(source, bucket_bytes=100, version=4))
    assert len(buckets) > 1 and [n for b in buckets for n in b.names] == [n for n, _ in source]
    for bucket in buckets:
        for name, array in zip(bucket.names, bucket.arrays):
            tensor = dict(source)[name]
            if tensor.is_contiguous() and tensor.numel():
                assert array.ctypes.data == tensor.data_ptr(), f"{name} was copied"

    out_of_band: list[pickle.PickleBuffer] = []
    wire = [pickle.dumps(b, protocol=5, buffer_callback=out_of_band.append) for b in buckets]
    assert len(out_of_band) == sum(len(b.arrays) for b in buckets)  # no array went in-band (copied)
    received_buffers = [bytearray(buf.raw()) for buf in out_of_band]  # what lands in shared memory
    it = iter(received_buffers)
    received = [pickle.loads(w, buffers=[next(it) for _ in b.arrays]) for w, b in zip(wire, buckets)]
    got = list(unpack_buckets(received, version=4))
    for (name, want), (got_name, tensor) in zip(source, got):
        assert got_name == name and tensor.dtype == want.dtype and tensor.shape == want.shape
        assert torch.equal(tensor.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), name
    # and the receiver's tensors view the received buffers: nothing copied there either
    first = received[0]
    ((_, view), *_) = list(unpack_buckets([first]))
    assert view.data_ptr() == np.frombuffer(received_buffers[0], dtype=np.uint8).ctypes.data


def test_tensor_bucket_with_wrong_byte_count_names_the_weight():
    bad = TensorBucket(0, ["w"], [(4,)], ["float32"], [np.zeros(8, dtype=np.uint8)])
    with pytest.raises(ValueError, match="'w'.*8 bytes"):
        list(unpack_buckets([bad]))


def _pickle5_round_trip(buckets):
    """What ray.put / ray.get do: protocol 5 with every buffer out of band, landing in fresh memory."""
    import pickle

    out = []
    for bucket in buckets:
        buffers: list[pickle.PickleBuffer] = []
        wire = pickle.dumps(bucket, protocol=5, buffer_callback=buffers.append)
        out.append(pickle.loads(wire, buffers=[bytearray(b.raw()) for b in buffers]))
    return out


def test_neighbours_in_one_storage_ship_as_one_buffer_over_that_storage():
    """ZeRO-1/2 keep the trainable parameters in one flat buffer: they ship as that buffer's bytes (one buffer per
    bucket, nothing packed), split at bucket_bytes and at large gaps; others ship as per-tensor views."""
    flat = torch.randn(4096)
    named = [
        ("a", flat[0:100].view(10, 10)),
        ("b", flat[104:204]),  # 16 bytes of padding before it: still one span
        ("tied", flat[104:204]),  # an alias of b (tied weights): same bytes, both names
        ("c", flat[300:400].view(4, 25)),
        ("far", flat[300 + MAX_GAP // 4 + 200: 300 + MAX_GAP // 4 + 300]),  # beyond MAX_GAP: its own run
        ("alone", torch.ones(3, dtype=torch.bfloat16)),
    ]
    buckets = list(iter_tensor_buckets(named, bucket_bytes=1 << 20, version=2))
    spans = [b for b in buckets if isinstance(b, WeightBucket)]
    assert [sorted(b.names) for b in spans] == [["a", "b", "c", "tied"]]
    (span,) = spans
    assert span.buffer.ctypes.data == flat.data_ptr()  # a view of the storage: no copy
    assert span.buffer.size == 400 * 4 and span.offsets[span.names.index("b")] == 104 * 4
    loose = [n for b in buckets if isinstance(b, TensorBucket) for n in b.names]
    assert sorted(loose) == ["alone", "far"]

    received = dict(unpack_buckets(_pickle5_round_trip(buckets), version=2))
    assert sorted(received) == sorted(n for n, _ in named)
    for name, want in named:
        assert torch.equal(received[name], want) and received[name].shape == want.shape, name

    # bucket_bytes bounds a span: 4 tensors of 400 bytes in 1000-byte buckets -> runs of two
    small = list(iter_tensor_buckets([(f"w{i}", flat[i * 100:(i + 1) * 100]) for i in range(4)], 1000, 0))
    assert [b.names for b in small] == [["w0", "w1"], ["w2", "w3"]]
    with pytest.raises(ValueError, match="appear twice"):
        list(iter_tensor_buckets([("a", flat[:2]), ("a", flat[2:4])], 1 << 20, 0))
