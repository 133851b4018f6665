"""RewardPool on a real local Ray cluster with GrabCut actors: order, fault tolerance, timeouts, resizing."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray

from reward_server.actor import RewardActor
from reward_server.parse import SegPrompt, render
from reward_server.pool import RewardPool
from reward_server.rle import decode_masks
from segr1.config import load_config
from segr1.data.synth import synth_sample
from segr1.protocol import ArrayRef, RewardRequest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]  # conftest: one Ray per module

BASE = ["reward.segmenter=grabcut", "reward.num_cpus=0.5", "reward.max_batch_groups=2"]


def _requests(count: int, size: int = 128, group_size: int = 4) -> list[RewardRequest]:
    """Groups of G completions on synthetic images: mostly good prompts, one malformed per group."""
    requests = []
    for index in range(count):
        image, mask = synth_sample(seed=7, index=index, size=size)
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        centre = (int(xs.mean()), int(ys.mean()))
        texts = [render(SegPrompt("t", [box], [centre], [1]))]
        texts += [
            render(SegPrompt("t", [(box[0], box[1], box[2] - k, box[3])], [(0, 0)], [0]))
            for k in range(1, group_size - 1)
        ]
        texts.append("no grammar here")
        requests.append(RewardRequest(f"g{index}", image, mask, texts, return_masks=True))
    return requests


def _wait_until_ready(pool: RewardPool) -> None:
    ray.get([handle.health.remote() for handle in pool.actor_handles().values()])


def test_results_in_order_and_equal_to_a_local_actor():
    cfg = load_config(overrides=BASE)
    requests = _requests(6, size=96)
    reference = RewardActor(cfg).score(requests)
    with RewardPool(cfg, num_actors=2) as pool:
        results = pool.score(requests)
        stats = pool.stats()
    assert [r.group_id for r in results] == [r.group_id for r in requests]
    assert [r.breakdowns for r in results] == [r.breakdowns for r in reference]
    assert {r.actor_id for r in results} == {"reward-0", "reward-1"}  # both actors got work
    for result, request in zip(results, requests):
        masks = decode_masks(result.masks_rle)
        assert masks.shape == (len(request.texts), *request.gt_mask.shape) and not masks[-1].any()
        assert result.breakdowns[-1].reason == "no_think"
    assert (
        stats["groups_total"] == 6 and stats["masks_total"] == 6 * 3
    )  # the malformed ones are not segmented
    assert stats["groups_per_s"] > 0 and stats["masks_per_s"] == pytest.approx(3 * stats["groups_per_s"])
    assert stats["actors"] == 2 and stats["queue_depth"] == 0 and stats["retries_total"] == 0


def test_requests_by_reference_score_like_requests_by_value():
    """Image and mask as ArrayRefs (object-store references, resolved in the actor): the same rewards and masks
    as the same pixels sent by value, and the records the driver sends shrink to a few hundred bytes."""
    import dataclasses
    import pickle

    cfg = load_config(overrides=BASE)
    by_value = _requests(3, size=96)
    by_ref = [dataclasses.replace(r, image=ArrayRef.put(r.image), gt_mask=ArrayRef.put(r.gt_mask)) for r in by_value]
    assert all(isinstance(r.image.value, ray.ObjectRef) for r in by_ref)  # Ray is up: stored, not kept
    assert max(len(pickle.dumps(r)) for r in by_ref) < 2_000 < 96 * 96 * 3
    with RewardPool(cfg, num_actors=1) as pool:
        expected, got = pool.score(by_value), pool.score(by_ref)
    assert [r.breakdowns for r in got] == [r.breakdowns for r in expected]
    assert [r.masks_rle for r in got] == [r.masks_rle for r in expected]


def test_timeout_names_the_pending_groups():
    cfg = load_config(overrides=[*BASE, "reward.timeout_s=0.05"])
    # the backstop: every call is killed after 0.05 s, and its groups wait for the actor's restart meanwhile
    pending = (r"3 of 3 groups not scored within \(reward.max_retries \+ 2\) x reward.timeout_s=0.05s.*: "
               r"g0 \((reward-0|queued)\), g1 \((reward-0|queued)\)")
    with RewardPool(cfg, num_actors=1) as pool, pytest.raises(TimeoutError, match=pending):
        pool.score(_requests(3, size=256))


def test_resize_grows_and_drains():
    cfg = load_config(overrides=BASE)
    requests = _requests(8, size=160)
    with RewardPool(cfg, num_actors=1) as pool:
        pool.resize(3)
        assert pool.size == 3
        grown = pool.score(requests)
        futures = pool.submit(requests)
        pool.resize(1)  # two actors stop taking work and are killed once their calls return
        shrunk = [future.result(timeout=120) for future in futures]
        assert pool.size == 1
        deadline = time.monotonic() + 30
        while pool.stats()["draining"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.stats()["draining"] == 0 and list(pool.actor_handles()) == ["reward-0"]
        after = pool.score(requests[:2])
    assert len({r.actor_id for r in grown}) >= 2
    assert [r.breakdowns for r in shrunk] == [r.breakdowns for r in grown]
    assert {r.actor_id for r in after} == {"reward-0"}
    with pytest.raises(ValueError, match="pool size must be >= 1, got 0"):
        RewardPool.resize(pool, 0)


def test_a_bad_request_fails_alone_with_its_group_id():
    cfg = load_config(overrides=[*BASE, "reward.max_batch_groups=1"])
    good, bad = _requests(2, size=64)
    bad = RewardRequest("broken", bad.image, bad.gt_mask[:10], bad.texts)
    with RewardPool(cfg, num_actors=1) as pool:
        ok, failed = pool.submit([good, bad])
        assert ok.result(timeout=60).group_id == "g0"
        with pytest.raises(ValueError, match="group 'broken': gt_mask shape"):
            failed.result(timeout=60)


def test_baselines_on_an_actor_equal_a_local_actors():
    """RewardPool.baselines runs the same computation as an in-process RewardActor (same segmenter config)."""
    cfg = load_config(overrides=BASE)
    train = [synth_sample(seed=11, index=i, size=48) for i in range(3)]
    evals = [synth_sample(seed=12, index=i, size=48) for i in range(2)]
    args = ([s[0] for s in train], [s[1] for s in train], [s[0] for s in evals], [s[1] for s in evals], 48)
    reference = RewardActor(cfg).baselines(*args)
    with RewardPool(cfg, num_actors=2) as pool:
        scores = pool.baselines(*args)
        after = pool.score(_requests(1, size=48))  # the actor serves groups again afterwards
    assert scores.blind == reference.blind and scores.chosen_on == 3
    assert scores.blind_iou == reference.blind_iou and scores.oracle_iou == reference.oracle_iou
    assert len(after) == 1 and after[0].group_id == "g0"


def test_gather_returns_groups_submitted_shard_by_shard_in_the_order_given():
    """Streaming rewards: shards are submitted as they come back from rollout (here the later one first) and
    gathered in sample order, each group once."""
    cfg = load_config(overrides=BASE)
    requests = _requests(4, size=96)
    reference = RewardActor(cfg).score(requests)
    with RewardPool(cfg, num_actors=2) as pool:
        late = pool.submit(requests[2:])
        early = pool.submit(requests[:2])
        results = pool.gather(early + late)
        assert pool.stats()["groups_total"] == 4
    assert [r.group_id for r in results] == ["g0", "g1", "g2", "g3"]
    assert [r.breakdowns for r in results] == [r.breakdowns for r in reference]
