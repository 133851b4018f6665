"""Glue between the services' records: what each service receives, built from what the last one returned.

`rollout_and_score` is the one pass samples -> generate -> score that training, evaluation and `segr1 predict`
share; the rest are pure functions of protocol records and numbers (no Ray), so the step loop stays a readable
list of stages.

Pixels travel by reference: `rollout_and_score` stores each sample's image and mask once (`by_reference`) and
the generation, reward and training records all carry those references, so a step sends each image's bytes
into the object store once instead of pickling it into three records (bench/driver_bytes.py measures it).
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from segr1.faults import StageError
from segr1.protocol import (
    ArrayRef,
    GenerationRequest,
    GroupReward,
    RewardRequest,
    RolloutGroup,
    Sample,
    SamplingParams,
    TrainItem,
)


@dataclass(frozen=True)
class ScoredBatch:
    """Samples with their rollout groups and rewards (one each, in sample order), and the seconds each took.

    samples hold their pixels as ArrayRefs (by_reference), the ones the requests carried: train_items and the
    overlays reuse them without storing the pixels again. rollout_s: until the last shard was generated;
    reward_s: from the first group sent to the reward pool until the last was scored; reward_exposed_s: the
    part of reward_s after generation ended (equal to reward_s when nothing streams). dropped: ids of samples
    whose group could not be scored (drop_failed): they have a sample but no group or reward.
    """

    samples: list[Sample]
    groups: list[RolloutGroup]
    rewards: list[GroupReward]
    rollout_s: float = 0.0
    reward_s: float = 0.0
    reward_exposed_s: float = 0.0
    dropped: list[str] = dataclasses.field(default_factory=list)


def rollout_and_score(rollout: Any, reward: Any, samples: list[Sample], sampling: SamplingParams, *,
                      return_masks: bool = False, masks_first: int = 0, drop_failed: bool = False) -> ScoredBatch:
    """Generate `sampling.n` completions per sample on `rollout` and score them on `reward`.

    rollout: anything with RolloutWorker.generate (the Ray RolloutPool, or a worker in-process);
    reward: anything with RewardActor.score (the RewardPool, or an actor in-process).
    When rollout streams shards (RolloutPool.generate_shards) and reward takes groups as they come
    (RewardPool.submit / gather), each shard's groups are scored while later shards still generate.
    return_masks: the rewards also carry each completion's mask (COCO RLE), for overlays and evaluation;
    masks_first: only the first that many groups do (training overlays), when return_masks is False.
    drop_failed: a group whose scoring failed for good (the reward pool spent its retries) is left out and
    listed in `dropped`, not given a reward; StageError when every group failed. Needs a streaming reward pool.
    """
    samples = by_reference(samples)
    requests = generation_requests(samples)
    if hasattr(rollout, "generate_shards") and hasattr(reward, "submit"):
        return _streamed(rollout, reward, samples, requests, sampling, return_masks, masks_first, drop_failed)
    t0 = time.perf_counter()
    groups = rollout.generate(requests, sampling)
    t1 = time.perf_counter()
    rewards = reward.score(reward_requests(samples, groups, return_masks=return_masks, masks_first=masks_first))
    reward_s = time.perf_counter() - t1
    return ScoredBatch(samples, groups, rewards, rollout_s=t1 - t0, reward_s=reward_s, reward_exposed_s=reward_s)


def _streamed(rollout: Any, reward: Any, samples: list[Sample], requests: list[GenerationRequest],
              sampling: SamplingParams, return_masks: bool, masks_first: int, drop_failed: bool) -> ScoredBatch:
    """rollout_and_score with each shard scored as it returns. Groups and rewards are put back in sample
    order (shards finish in any order), and each group is submitted exactly once."""
    groups: list[RolloutGroup | None] = [None] * len(requests)
    futures: list[Future | None] = [None] * len(requests)
    scored_at: list[float] = []  # perf_counter at each group's result (list.append is thread-safe)
    t0 = time.perf_counter()
    first_submit = None
    for start, shard in rollout.generate_shards(requests, sampling):
        if any(g is not None for g in groups[start:start + len(shard)]):
            raise RuntimeError(f"rollout shard at {start} returned twice")
        groups[start:start + len(shard)] = shard
        first_submit = first_submit or time.perf_counter()
        submitted = reward.submit(reward_requests(
            samples[start:start + len(shard)], shard, return_masks=return_masks, masks_first=masks_first - start))
        for future in submitted:
            future.add_done_callback(lambda _: scored_at.append(time.perf_counter()))
        futures[start:start + len(shard)] = submitted
    t1 = time.perf_counter()
    if any(g is None for g in groups):
        raise RuntimeError(f"rollout returned {sum(g is not None for g in groups)} of {len(groups)} groups")
    rewards = reward.gather(futures, drop_failed=drop_failed)
    # the last group's scoring time (a callback may still be running as gather returns: then now)
    t2 = max(scored_at) if len(scored_at) == len(futures) else time.perf_counter()
    return _without_failed(ScoredBatch(samples, groups, rewards, rollout_s=t1 - t0,
                                       reward_s=max(t2 - (first_submit or t1), 0.0),
                                       reward_exposed_s=max(t2 - t1, 0.0)))


def _without_failed(batch: ScoredBatch) -> ScoredBatch:
    """The batch without the groups whose reward is None (scoring failed for good), their ids in `dropped`."""
    failed = [g.request_id for g, r in zip(batch.groups, batch.rewards) if r is None]
    if not failed:
        return batch
    if len(failed) == len(batch.groups):
        raise StageError("score", "reward pool", f"every group of the batch failed to score ({len(failed)}); "
                         "see reward.timeout_s and reward.max_retries")
    kept = [(g, r) for g, r in zip(batch.groups, batch.rewards) if r is not None]
    return dataclasses.replace(batch, groups=[g for g, _ in kept], rewards=[r for _, r in kept], dropped=failed)


def concat_batches(batches: list[ScoredBatch]) -> ScoredBatch:
    """Several draws of one step as one batch (DAPO refill): groups in draw order, seconds summed."""
    return ScoredBatch(
        samples=[s for b in batches for s in b.samples], groups=[g for b in batches for g in b.groups],
        rewards=[r for b in batches for r in b.rewards], rollout_s=sum(b.rollout_s for b in batches),
        reward_s=sum(b.reward_s for b in batches), reward_exposed_s=sum(b.reward_exposed_s for b in batches),
        dropped=[i for b in batches for i in b.dropped])


def by_reference(samples: list[Sample]) -> list[Sample]:
    """The samples with image and mask stored once each (ArrayRef.put: the object store under Ray, else the
    array itself); pixels that are already references are kept."""
    return [dataclasses.replace(s, image=_ref(s.image), mask=_ref(s.mask)) for s in samples]


def _ref(pixels: Any) -> ArrayRef:
    return pixels if isinstance(pixels, ArrayRef) else ArrayRef.put(pixels)


def generation_requests(samples: list[Sample]) -> list[GenerationRequest]:
    return [GenerationRequest(request_id=s.sample_id, image=s.image, instruction=s.instruction) for s in samples]


def reward_requests(samples: list[Sample], groups: list[RolloutGroup], return_masks: bool = False,
                    masks_first: int = 0) -> list[RewardRequest]:
    """One reward request per group: the image and GT cross once, with all G completion texts. Masks come
    back for every group with return_masks, else for the first `masks_first` groups."""
    by_id = {s.sample_id: s for s in samples}
    return [
        RewardRequest(group_id=g.request_id, image=by_id[g.request_id].image, gt_mask=by_id[g.request_id].mask,
                      texts=[c.text for c in g.completions], return_masks=return_masks or i < masks_first)
        for i, g in enumerate(groups)
    ]


def group_rewards(rewards: list[GroupReward]) -> np.ndarray:
    """Rewards of all completions, group after group: float64[N = groups * G]."""
    return np.array([b.reward for r in rewards for b in r.breakdowns], dtype=np.float64)


def is_informative(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """bool[groups]: False where every completion of the group got the same reward (zero advantage signal)."""
    grouped = rewards.reshape(-1, group_size)
    return grouped.max(axis=1) > grouped.min(axis=1)


def train_items(samples: list[Sample], groups: list[RolloutGroup], advantages: np.ndarray) -> list[TrainItem]:
    """Pack each group with its per-completion advantages (advantages: float[groups * G], group-major)."""
    by_id = {s.sample_id: s for s in samples}
    items, offset = [], 0
    for g in groups:
        n = len(g.completions)
        items.append(TrainItem(
            sample_id=g.request_id, image=by_id[g.request_id].image, prompt_ids=list(g.prompt_ids),
            completion_ids=[list(c.token_ids) for c in g.completions],
            advantages=[float(a) for a in advantages[offset:offset + n]],
            rollout_logprobs=[list(c.logprobs) for c in g.completions], weights_version=g.weights_version))
        offset += n
    return items


def reward_metrics(rewards: list[GroupReward]) -> dict[str, float]:
    """Means of the reward and its parts over all completions of a step, plus the parse-failure rate by code."""
    parts = [b for r in rewards for b in r.breakdowns]
    n = max(len(parts), 1)
    out = {
        "reward/mean": sum(b.reward for b in parts) / n,
        "reward/format": sum(b.format for b in parts) / n,
        "reward/iou": sum(b.iou for b in parts) / n,
        "reward/s_measure": sum(b.s_measure for b in parts) / n,
        "reward/box_giou": sum(b.box_giou for b in parts) / n,
        "reward/std": float(np.std([b.reward for b in parts])) if parts else 0.0,
    }
    for b in parts:
        if b.reason:
            key = f"reward/fail_{b.reason}"
            out[key] = out.get(key, 0.0) + 1.0 / n
    return out
