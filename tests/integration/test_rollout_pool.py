"""RolloutPool with real Ray actors on the tiny VLM: sharded generation, weight broadcast over the object store,
late joiners at the latest version, shrinking, and a worker that dies mid-run."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from rollout.hf_engine import HFEngine
from rollout.pool import RolloutPool
from rollout.tiny_model import ensure_tiny_vlm
from segr1.config import load_config
from segr1.protocol import GenerationRequest, SamplingParams
from segr1.weights import pack_buckets

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return ensure_tiny_vlm(str(tmp_path_factory.mktemp("tiny") / "vlm"))


@pytest.fixture(scope="module")
def pool(ray_cluster, model_path):
    cfg = load_config(overrides=["rollout.num_cpus=1", "rollout.max_batch_prompts=8"])
    pool = RolloutPool(cfg, model_path, num_workers=2)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def local(model_path) -> HFEngine:
    """The same engine in this process: the reference a worker's output must equal."""
    return HFEngine(model_path, dtype="float32", max_batch_prompts=8)


def _request(i: int) -> GenerationRequest:
    image = np.random.default_rng(i).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    return GenerationRequest(f"req-{i}", image, "Segment the main object.")


def _new_weights(engine: HFEngine, seed: int) -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    state = engine.model.state_dict()
    return [(name, state[name] + 0.5 * torch.randn(state[name].shape, generator=gen))
            for name in ("lm_head.weight", "model.language_model.layers.0.mlp.up_proj.weight")]


def test_two_workers_split_requests_and_keep_order(pool, local):
    requests = [_request(i) for i in range(5)]
    groups = pool.generate(requests, SamplingParams(n=3, max_new_tokens=10, seed=7))
    assert [g.request_id for g in groups] == [r.request_id for r in requests]
    assert [g.worker_id for g in groups] == ["rollout-0"] * 3 + ["rollout-1"] * 2
    assert all(len(g.completions) == 3 for g in groups)
    # shard i samples with seed + i: each shard equals the same call on a local engine
    expected = (local.generate(requests[:3], SamplingParams(n=3, max_new_tokens=10, seed=7))
                + local.generate(requests[3:], SamplingParams(n=3, max_new_tokens=10, seed=8)))
    assert [[c.token_ids for c in g.completions] for g in groups] == \
        [[c.token_ids for c in g.completions] for g in expected]
    stats = pool.stats()
    assert stats["workers"] == 2 and stats["completions"] >= 15 and stats["tokens_per_s"] > 0
    # streamed: the same shards, each once with the index of its first request, in the order they finish
    shards = dict(pool.generate_shards(requests, SamplingParams(n=3, max_new_tokens=10, seed=7)))
    assert sorted(shards) == [0, 3]
    assert [[c.token_ids for c in g.completions] for g in shards[0] + shards[3]] == \
        [[c.token_ids for c in g.completions] for g in expected]


def test_update_weights_reaches_every_worker_and_late_joiners(pool, local):
    same = [_request(0), _request(0)]  # one per worker
    before = pool.generate(same, GREEDY)
    update = _new_weights(local, seed=0)
    buckets = pack_buckets(iter(update), bucket_bytes=64 << 10, version=1)  # several buckets
    assert len(buckets) > 1
    pool.update_weights([ray.put(b) for b in buckets], version=1)
    assert [s["weights_version"] for s in pool.stats()["per_worker"]] == [1, 1]

    after = pool.generate(same, GREEDY)
    local.update_weights(update, version=1)
    reference = local.generate([_request(0)], GREEDY)[0].completions[0].token_ids
    assert after[0].completions[0].token_ids == after[1].completions[0].token_ids == reference
    assert after[0].completions[0].token_ids != before[0].completions[0].token_ids
    assert {g.weights_version for g in after} == {1}

    pool.resize(3)  # the new worker must hold version 1 before it serves anything
    _, newcomer = pool.workers[2]
    assert ray.get(newcomer.stats.remote())["completions"] == 0
    assert ray.get(newcomer.weights_version.remote()) == 1
    three = pool.generate([_request(0)] * 3, GREEDY)
    assert [g.worker_id for g in three] == ["rollout-0", "rollout-1", "rollout-2"]
    assert all(g.completions[0].token_ids == reference and g.weights_version == 1 for g in three)

    pool.resize(2)
    assert pool.size == 2 and [w for w, _ in pool.workers] == ["rollout-0", "rollout-1"]


def test_dead_workers_are_replaced_at_the_latest_weights(pool, local):
    first_dead_id, first_dead = pool.workers[1]
    ray.kill(first_dead)  # asynchronous: the actor dies shortly after
    deadline = time.monotonic() + 60
    while pool.stats()["dead_workers"] != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pool.stats()["dead_workers"] == 1  # reported, not raised
    update = _new_weights(local, seed=2)
    pool.update_weights(pack_buckets(iter(update), bucket_bytes=1 << 20, version=2), version=2)  # plain buckets
    local.update_weights(update, version=2)
    assert pool.workers[1][0] != first_dead_id and pool.stats()["weights_versions"] == [2, 2]

    second_dead_id, second_dead = pool.workers[0]
    ray.kill(second_dead)
    groups = pool.generate([_request(0), _request(0)], GREEDY)  # shard 0 is re-run on a fresh worker
    assert pool.size == 2 and pool.workers[0][0] != second_dead_id
    assert [g.worker_id for g in groups] == [w for w, _ in pool.workers]
    assert {g.weights_version for g in groups} == {2}
    reference = local.generate([_request(0)], GREEDY)[0].completions[0].token_ids
    assert groups[0].completions[0].token_ids == groups[1].completions[0].token_ids == reference


def test_bad_bucket_type_is_rejected(pool):
    with pytest.raises(TypeError, match="item 0 is dict"):
        pool.update_weights([{"not": "a bucket"}], version=9)


def test_a_streamed_shard_whose_worker_died_is_rerun_and_yielded_once(pool):
    dead_id, dead = pool.workers[0]
    ray.kill(dead)
    shards = list(pool.generate_shards([_request(0), _request(1)], GREEDY))
    assert sorted(start for start, _ in shards) == [0, 1]  # each shard exactly once
    assert pool.workers[0][0] != dead_id
    assert {start: [g.request_id for g in groups] for start, groups in shards} == {0: ["req-0"], 1: ["req-1"]}
