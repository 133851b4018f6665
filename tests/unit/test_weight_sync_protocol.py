"""segr1.weight_sync: both ends of the collective protocol in one process, over gloo on CPU (two threads, one
group of two ranks), and the transport choice. No Ray: the actor assembly is tested in
tests/integration/test_weight_sync.py."""

from __future__ import annotations

import threading

import pytest
import torch

from cluster.weight_sync import collective_backend
from segr1.config import load_config
from segr1.rendezvous import free_port
from segr1.weight_sync import WeightSyncGroup, receive_weights, send_weights, sync_backend


def test_receiver_gets_every_tensor_bit_identical_with_its_version_and_dtype():
    weights = {"a.weight": torch.randn(5, 3), "b.bias": torch.arange(7, dtype=torch.int64),
               "c.half": torch.randn(4, 4).to(torch.bfloat16), "d.flag": torch.tensor([True, False])}
    port, errors, sent = free_port("127.0.0.1"), [], []

    def learner() -> None:
        try:
            group = WeightSyncGroup("127.0.0.1", port, 0, 2, backend="gloo", timeout_s=30)
            sent.append(send_weights(group, weights.items(), bucket_bytes=64, version=7))  # several buckets
        except Exception as e:  # noqa: BLE001  re-raised by the test below
            errors.append(e)

    sender = threading.Thread(target=learner, daemon=True)
    sender.start()
    group = WeightSyncGroup("127.0.0.1", port, 1, 2, backend="gloo", timeout_s=30)
    version, tensors = receive_weights(group)
    received = {name: t.clone() for name, t in tensors}
    sender.join(timeout=30)
    assert not errors and not sender.is_alive() and version == 7
    assert list(received) == list(weights)
    for name, tensor in weights.items():
        assert received[name].dtype == tensor.dtype and torch.equal(received[name], tensor)
    assert sent[0] >= sum(t.numel() * t.element_size() for t in weights.values())


def test_only_group_rank_0_sends():
    group = WeightSyncGroup.__new__(WeightSyncGroup)
    group.rank = 1
    with pytest.raises(ValueError, match="rank 1"):
        send_weights(group, [], bucket_bytes=64, version=1)


def test_transport_choice_follows_config_and_gpus():
    assert sync_backend("auto", has_gpu=True) == "nccl" and sync_backend("gloo", has_gpu=False) == "gloo"
    with pytest.raises(ValueError, match="needs GPUs"):
        sync_backend("nccl", has_gpu=False)
    assert collective_backend(load_config(None, [])) is None  # CPU default: the object store
    on_gpus = ["learner.num_gpus=1", "rollout.num_gpus=1"]
    assert collective_backend(load_config(None, on_gpus)) == "nccl"
    assert collective_backend(load_config(None, [*on_gpus, "learner.sync.transport=object_store"])) is None
