"""cluster.records: the requests each pool receives, built from the records the previous one returned, and the
step's reward arithmetic, on hand-made records with hand-computed values."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cluster import records
from segr1.protocol import (
    ArrayRef,
    Completion,
    GroupReward,
    RewardBreakdown,
    RolloutGroup,
    Sample,
    SamplingParams,
    resolve_arrays,
)
from tests.unit.fake_pools import FakeReward, FakeRollout


def sample(sample_id: str, fill: int) -> Sample:
    return Sample(sample_id, np.full((4, 4, 3), fill, np.uint8), np.eye(4, dtype=bool), f"find {sample_id}")


def group(request_id: str, texts: list[str], version: int = 0) -> RolloutGroup:
    return RolloutGroup(request_id, [5, 6], [Completion(t, [len(t), 0], [-0.1 * len(t)], "stop") for t in texts],
                        weights_version=version)


def test_generation_requests_carry_image_and_instruction_per_sample():
    a, b = sample("a", 1), sample("b", 2)
    requests = records.generation_requests([a, b])
    assert [(r.request_id, r.instruction) for r in requests] == [("a", "find a"), ("b", "find b")]
    assert requests[1].image is b.image  # no copy on the driver


def test_reward_requests_pair_each_group_with_its_own_sample_in_group_order():
    a, b = sample("a", 1), sample("b", 2)
    requests = records.reward_requests([a, b], [group("b", ["x", "yy"]), group("a", ["z"])], return_masks=True)
    assert [r.group_id for r in requests] == ["b", "a"]
    assert requests[0].image is b.image and requests[0].gt_mask is b.mask and requests[1].image is a.image
    assert requests[0].texts == ["x", "yy"] and all(r.return_masks for r in requests)
    assert not records.reward_requests([a], [group("a", ["z"])])[0].return_masks


def breakdowns(*values: float, reason: str = "") -> list[RewardBreakdown]:
    return [RewardBreakdown(v, 1.0 if not reason else 0.0, v / 2, v / 4, reason) for v in values]


def test_group_rewards_flatten_group_major_and_informative_groups_vary():
    rewards = [GroupReward("a", breakdowns(0.5, 0.5)), GroupReward("b", breakdowns(0.0, 1.0))]
    flat = records.group_rewards(rewards)
    assert flat.tolist() == [0.5, 0.5, 0.0, 1.0] and flat.dtype == np.float64
    assert records.is_informative(flat, group_size=2).tolist() == [False, True]


def test_train_items_slice_advantages_per_group_and_keep_versions():
    a, b = sample("a", 1), sample("b", 2)
    groups = [group("a", ["x", "yy"], version=3), group("b", ["zzz", "w"], version=4)]
    items = records.train_items([a, b], groups, np.array([0.1, -0.1, 2.0, -2.0]))
    assert [(i.sample_id, i.advantages, i.weights_version) for i in items] == [
        ("a", [0.1, -0.1], 3), ("b", [2.0, -2.0], 4)]
    assert items[1].image is b.image and items[1].prompt_ids == [5, 6]
    assert items[1].completion_ids == [[3, 0], [1, 0]]
    assert items[1].rollout_logprobs == [[pytest.approx(-0.3)], [pytest.approx(-0.1)]]


def test_reward_metrics_means_and_failure_rates_by_code():
    rewards = [GroupReward("a", breakdowns(1.0, 0.0)),
               GroupReward("b", [*breakdowns(0.0, reason="no_box"), *breakdowns(0.5)])]
    metrics = records.reward_metrics(rewards)
    assert metrics["reward/mean"] == pytest.approx(1.5 / 4)
    assert metrics["reward/format"] == pytest.approx(3 / 4)
    assert metrics["reward/iou"] == pytest.approx(0.75 / 4) and metrics["reward/s_measure"] == pytest.approx(1.5 / 16)
    assert metrics["reward/std"] == pytest.approx(np.std([1.0, 0.0, 0.0, 0.5]))
    assert metrics["reward/fail_no_box"] == pytest.approx(0.25)
    assert records.reward_metrics([])["reward/mean"] == 0.0


def test_rollout_and_score_generates_then_scores_the_same_samples_in_order():
    events: list[tuple] = []
    rollout, reward = FakeRollout(events, size=1), FakeReward(events, size=1, reward_of=lambda sid, j: j / 2)
    a, b = sample("a", 1), sample("b", 2)
    scored = records.rollout_and_score(rollout, reward, [a, b], SamplingParams(n=3), return_masks=True)
    assert events == [("generate", ["a", "b"], 0), ("score", ["a", "b"])]
    assert [s.sample_id for s in scored.samples] == ["a", "b"] and [g.request_id for g in scored.groups] == ["a", "b"]
    assert [[x.reward for x in r.breakdowns] for r in scored.rewards] == [[0.0, 0.5, 1.0]] * 2
    assert reward.requests[0].return_masks and reward.requests[0].texts == ["a/0", "a/1", "a/2"]
    assert scored.rollout_s >= 0.0 and scored.reward_s >= 0.0


def test_rollout_and_score_stores_pixels_once_and_every_record_carries_that_reference():
    """Outside Ray an ArrayRef holds the array itself; the generation, reward and training records share the
    one reference per sample (so under Ray each image enters the object store once per step)."""
    events: list[tuple] = []
    rollout, reward = FakeRollout(events, size=1), FakeReward(events, size=1, reward_of=lambda sid, j: j)
    a, b = sample("a", 1), sample("b", 2)
    scored = records.rollout_and_score(rollout, reward, [a, b], SamplingParams(n=2), masks_first=1)
    refs = scored.samples[1]
    assert isinstance(refs.image, ArrayRef) and refs.image.value is b.image and refs.mask.value is b.mask
    assert (refs.image.shape, refs.image.dtype, refs.mask.dtype) == ((4, 4, 3), "uint8", "bool")
    assert reward.requests[1].image is refs.image and reward.requests[1].gt_mask is refs.mask
    items = records.train_items(scored.samples, scored.groups, np.zeros(4))
    assert items[1].image is refs.image
    assert [r.return_masks for r in reward.requests] == [True, False]  # masks_first=1: the first group only
    assert records.by_reference(scored.samples)[1].image is refs.image  # references are never stored twice


def test_resolve_arrays_returns_the_arrays_behind_references_and_passes_the_rest():
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    ref = ArrayRef.put(image)
    assert resolve_arrays([ref, image, None])[0] is image and resolve_arrays([ref, image, None])[1:] == [image, None]
    assert ref.get() is image
    with pytest.raises(ValueError, match=r"stored as uint8\[2, 2\]"):
        ArrayRef(image, (2, 2), "uint8").get()


def test_streamed_shards_are_scored_as_they_return_and_put_back_in_sample_order():
    """Three rollout shards finish last first; each is scored before the next one generates, every group is
    scored exactly once, and groups, rewards and the masks_first choice follow sample order, not arrival."""
    events: list[tuple] = []
    rollout, reward = FakeRollout(events, size=3), FakeReward(events, size=1, reward_of=lambda sid, j: j)
    samples = [sample(f"s{i}", i) for i in range(7)]  # shards [s0 s1 s2] [s3 s4] [s5 s6]
    scored = records.rollout_and_score(rollout, reward, samples, SamplingParams(n=2), masks_first=4)
    assert events == [("generate", ["s5", "s6"], 0), ("score", ["s5", "s6"]),
                      ("generate", ["s3", "s4"], 0), ("score", ["s3", "s4"]),
                      ("generate", ["s0", "s1", "s2"], 0), ("score", ["s0", "s1", "s2"])]
    ids = [s.sample_id for s in samples]
    assert [g.request_id for g in scored.groups] == [r.group_id for r in scored.rewards] == ids
    assert sorted(r.group_id for r in reward.requests) == ids  # exactly once each
    assert {r.group_id for r in reward.requests if r.return_masks} == {"s0", "s1", "s2", "s3"}
    assert [g.worker_id for g in scored.groups] == ["rollout-0"] * 3 + ["rollout-1"] * 2 + ["rollout-2"] * 2
    assert 0.0 <= scored.reward_exposed_s <= scored.reward_s


def test_exposed_reward_time_is_only_what_scoring_adds_after_the_last_shard():
    """Shards of 20 ms each, scored the moment they are submitted: the reward stage spans the last two shards'
    generation (>= 40 ms) but nothing of it is left once the last shard is back."""
    class Slow(FakeRollout):
        def _shard(self, requests, sampling, worker_id):
            time.sleep(0.02)
            return super()._shard(requests, sampling, worker_id)

    events: list[tuple] = []
    rollout, reward = Slow(events, size=3), FakeReward(events, size=1, reward_of=lambda sid, j: j)
    scored = records.rollout_and_score(rollout, reward, [sample(f"s{i}", i) for i in range(3)], SamplingParams(n=2))
    assert scored.rollout_s >= 0.06 and scored.reward_s >= 0.04
    assert scored.reward_exposed_s == 0.0


def test_a_shard_returned_twice_is_refused_not_scored_twice():
    class Repeating(FakeRollout):
        def generate_shards(self, requests, sampling):
            yield from super().generate_shards(requests, sampling)
            yield 0, self._shard(requests[:1], sampling, worker_id="rollout-0")

    events: list[tuple] = []
    rollout, reward = Repeating(events, size=2), FakeReward(events, size=1, reward_of=lambda sid, j: j)
    with pytest.raises(RuntimeError, match="shard at 0 returned twice"):
        records.rollout_and_score(rollout, reward, [sample("a", 1), sample("b", 2)], SamplingParams(n=2))
    assert sorted(r.group_id for r in reward.requests) == ["a", "b"]


def test_without_streaming_the_whole_reward_time_is_exposed():
    """An in-process worker (segr1 predict, checkpoint eval) has no shards: generate, then score everything."""
    events: list[tuple] = []

    class Plain:  # RolloutWorker's interface: generate only
        def generate(self, requests, sampling):
            return FakeRollout(events, size=2).generate(requests, sampling)

    reward = FakeReward(events, size=1, reward_of=lambda sid, j: j)
    scored = records.rollout_and_score(Plain(), reward, [sample("a", 1), sample("b", 2)], SamplingParams(n=2))
    assert events[-1] == ("score", ["a", "b"]) and [g.request_id for g in scored.groups] == ["a", "b"]
    assert scored.reward_exposed_s == scored.reward_s


def test_concat_batches_sums_the_exposed_reward_time():
    a = records.ScoredBatch([], [], [], rollout_s=1.0, reward_s=0.5, reward_exposed_s=0.25)
    b = records.ScoredBatch([], [], [], rollout_s=2.0, reward_s=1.0, reward_exposed_s=0.5)
    both = records.concat_batches([a, b])
    assert (both.rollout_s, both.reward_s, both.reward_exposed_s) == (3.0, 1.5, 0.75)
