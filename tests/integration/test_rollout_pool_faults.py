"""RolloutPool faults inside a call, with real Ray actors on the tiny VLM.

Drills are armed on a worker (`arm_fault`) before the call, so they land inside it every time: the worker's
process exits from inside `generate` (its shard generated, never returned), or `generate` / `update_weights`
never returns until `rollout.timeout_s` / `learner.sync.timeout_s`. The shard must come back once, from a
replacement at the latest weights, token for token what a local engine at those weights generates.
"""

from __future__ import annotations

import time

import pytest

from rollout.pool import RolloutPool
from segr1.config import load_config
from segr1.faults import StageError
from segr1.weights import pack_buckets
from tests.integration.test_rollout_pool import GREEDY, _new_weights, _request

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

TIMEOUTS = ["rollout.timeout_s=20", "learner.sync.timeout_s=10"]  # calls here take a second or two


@pytest.fixture(scope="module")
def local(model_path):
    from rollout.hf_engine import HFEngine

    return HFEngine(model_path, dtype="float32", max_batch_prompts=8)


@pytest.fixture(scope="module")
def pool(ray_cluster, model_path, local):
    """Two workers at version 1 (weights that differ from the checkpoint's), as the local engine."""
    cfg = load_config(overrides=["rollout.num_cpus=1", "rollout.max_batch_prompts=8", *TIMEOUTS])
    pool = RolloutPool(cfg, model_path, num_workers=2)
    update = _new_weights(local, seed=5)
    pool.update_weights(pack_buckets(iter(update), bucket_bytes=1 << 20, version=1), version=1)
    local.update_weights(update, version=1)
    yield pool
    pool.shutdown()


def _arm(pool: RolloutPool, index: int, stage: str, action: str) -> str:
    worker_id, actor = pool.workers[index]
    ray.get(actor.arm_fault.remote(stage, action))
    return worker_id


@pytest.mark.parametrize("action", ["die", "hang"])
def test_a_worker_lost_while_it_generates_has_its_prompts_rerun_once_by_a_replacement(pool, local, action):
    lost = _arm(pool, 0, "generate", action)
    started = time.monotonic()
    groups = pool.generate([_request(0), _request(1)], GREEDY)

    assert [g.request_id for g in groups] == ["req-0", "req-1"]  # each prompt once, in order
    assert pool.workers[0][0] != lost and groups[0].worker_id == pool.workers[0][0]
    assert {g.weights_version for g in groups} == {pool.weights_version}  # the replacement at the latest weights
    expected = [local.generate([_request(i)], GREEDY)[0].completions[0].token_ids for i in (0, 1)]
    assert [g.completions[0].token_ids for g in groups] == expected
    if action == "hang":
        assert time.monotonic() - started >= 20  # only rollout.timeout_s ended the hung call


def test_a_worker_that_hangs_taking_new_weights_is_replaced_at_those_weights(pool, local):
    lost = _arm(pool, 1, "weight_sync", "hang")
    update = _new_weights(local, seed=6)
    pool.update_weights(pack_buckets(iter(update), bucket_bytes=1 << 20, version=2), version=2)
    local.update_weights(update, version=2)

    assert pool.workers[1][0] != lost and pool.stats()["weights_versions"] == [2, 2]
    groups = pool.generate([_request(0), _request(0)], GREEDY)
    reference = local.generate([_request(0)], GREEDY)[0].completions[0].token_ids
    assert [g.completions[0].token_ids for g in groups] == [reference, reference]


def test_a_shard_whose_retries_are_spent_fails_naming_stage_and_worker(ray_cluster, model_path):
    cfg = load_config(overrides=["rollout.num_cpus=1", "rollout.max_retries=0", *TIMEOUTS])
    pool = RolloutPool(cfg, model_path, num_workers=1)
    try:
        lost = _arm(pool, 0, "generate", "die")
        with pytest.raises(StageError, match=rf"^stage generate failed on {lost}: the worker died during generate "
                                             r"\(\w+\); its 1 prompts were tried 1 times \(rollout.max_retries=0\)$"):
            pool.generate([_request(0)], GREEDY)
    finally:
        pool.shutdown()
