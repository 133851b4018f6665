"""Held-out evaluation during training (`segr1 eval` of a checkpoint is frontdoor/eval_checkpoint.py).

The policy decodes greedily (one completion per image) through the same rollout and reward pools as training,
so eval/iou measures exactly what the reward measures.

Every evaluation also reports the baselines of reward_server.baselines through the run's segmenter:
eval/iou_blind (the best image-independent prompt, chosen on `algorithm.baseline_images` training images),
eval/iou_oracle (the ground-truth box plus its deepest point) and eval/localisation_gain =
(eval/iou - blind) / (oracle - blind), left out when oracle <= blind. They are computed once per
(eval set, segmenter, frame) on a reward actor and kept in runs/<name>/baselines.json, so every eval step
and a resumed run reuse them. `segr1 eval` prints the same baselines as rows under the policy's table.

eval/iou_shuffled is the image ablation: each held-out image scored with the greedy prompt the policy wrote for
the NEXT image (greedy decoding is deterministic, so that is what it writes when shown another image's pixels).
A policy that ignores the image (one box for every image, however good) scores the same as eval/iou; one that
reads the image falls well below it. One extra scoring pass, no extra generation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cluster import records
from reward_server.baselines import (
    MAX_SEGMENTS,
    BaselineCache,
    BaselineScores,
    arrays_digest,
    cache_key,
    localisation_gain,
)
from reward_server.parse import FormatError, parse_completion
from reward_server.rle import decode_masks
from segr1.config import Config
from segr1.data.dataset import SegDataset
from segr1.protocol import GroupReward, RolloutGroup, Sample, resolve_arrays

GREEDY_N = 1
G_EVAL = 4  # sampled completions per held-out image: the expected IoU of the policy, not only of its mode
BASELINES_FILE = "baselines.json"  # under the run directory


class Evaluator:
    """Held-out evaluation on `data`; `train` (optional) is where the blind baseline's prompt is chosen."""

    def __init__(self, cfg: Config, data: SegDataset, train: SegDataset | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.train = train
        n = len(data) if cfg.data.eval_size <= 0 else min(cfg.data.eval_size, len(data))
        self.indices = list(range(n))
        self._baselines: BaselineScores | None = None

    def run(self, pools: Any, step: int, log: Any, tag: str) -> dict[str, float]:
        """Greedy decoding (eval/*) and the policy's own sampling (eval/*_sampled, G_EVAL completions each)."""
        samples = [self.data.load(i) for i in self.indices]
        rollout = self.cfg.rollout
        greedy = records.rollout_and_score(pools.rollout, pools.reward, samples,
                                           rollout.sampling_params(GREEDY_N, greedy=True), return_masks=True)
        metrics = _eval_metrics(greedy.rewards, suffix="")
        if not greedy.dropped and len(greedy.groups) > 1:
            ablated = pools.reward.gather(pools.reward.submit(
                records.reward_requests(samples, shifted_groups(greedy.groups))), drop_failed=True)
            if all(r is not None for r in ablated):
                metrics["eval/iou_shuffled"] = records.reward_metrics(ablated)["reward/iou"]
        sampling = rollout.sampling_params(G_EVAL, seed=self.cfg.run.seed * 7919 + step)  # a resumed run: same draws
        sampled = records.rollout_and_score(pools.rollout, pools.reward, samples, sampling)
        metrics.update(_eval_metrics(sampled.rewards, "_sampled"))
        scores = self.baselines(pools, samples)
        if scores is not None:
            metrics.update(baseline_metrics(scores, metrics["eval/iou"]))
        self._overlays(step, samples[:4], greedy.groups[:4], greedy.rewards[:4], log, prefix=f"eval_{tag}")
        return metrics

    def baselines(self, pools: Any, samples: list[Sample]) -> BaselineScores | None:
        """Blind and oracle scores of the eval samples: from memory, else runs/<name>/baselines.json, else
        computed on a reward actor (and stored). None without training data or with baseline_images=0."""
        images = self.cfg.algorithm.baseline_images
        if self._baselines is not None or self.train is None or images <= 0:
            return self._baselines
        train = [self.train.load(i) for i in baseline_indices(len(self.train), images, self.cfg.run.seed)]
        key = baselines_key(self.cfg, samples, train)
        cache = BaselineCache(self.cfg.run_dir / BASELINES_FILE)
        record = cache.get(key)
        if record is not None:
            self._baselines = BaselineScores.from_dict(record)
        else:
            self._baselines = pools.reward.baselines(
                [s.image for s in train], [s.mask for s in train], [s.image for s in samples],
                [s.mask for s in samples], self.cfg.data.frame_size)
            cache.put(key, {**self._baselines.to_dict(), "segmenter": self.cfg.reward.segmenter,
                            "frame": self.cfg.data.frame_size, "eval_ids": [s.sample_id for s in samples]})
        return self._baselines

    def save_overlays(self, step: int, samples: list[Sample], groups: list[RolloutGroup],
                      rewards: list[GroupReward], log: Any) -> None:
        """Overlays of training completions (first completion of each group), from the masks their scoring
        returned (the step asks for masks of the groups it will draw: no second segmenter pass)."""
        self._overlays(step, samples, groups, rewards, log, prefix="train")

    def _overlays(self, step: int, samples: list[Sample], groups: list[RolloutGroup],
                  rewards: list[GroupReward], log: Any, prefix: str) -> None:
        images = []
        for sample, group, reward in zip(samples, groups, rewards):
            if not reward.masks_rle:
                continue
            pred = decode_masks(reward.masks_rle[:1])[0]
            caption = f"{prefix} step {step}  {sample.sample_id}  IoU {reward.breakdowns[0].iou:.2f}"
            pixels, gt = resolve_arrays([sample.image, sample.mask])  # training samples hold ArrayRefs
            image = overlay_of(pixels, gt, pred, group.completions[0].text, self.cfg, caption)
            images.append((f"{prefix}_{sample.sample_id}", image))
        if images:
            log.log_overlays(step, images)


def shifted_groups(groups: list[RolloutGroup]) -> list[RolloutGroup]:
    """Group i carrying the completions of group i+1 (the last those of the first), under group i's id."""
    return [dataclasses.replace(groups[(i + 1) % len(groups)], request_id=g.request_id) for i, g in enumerate(groups)]


def _eval_metrics(rewards: list[GroupReward], suffix: str) -> dict[str, float]:
    means = records.reward_metrics(rewards)
    return {f"eval/reward{suffix}": means["reward/mean"], f"eval/format{suffix}": means["reward/format"],
            f"eval/iou{suffix}": means["reward/iou"], f"eval/s_measure{suffix}": means["reward/s_measure"]}


def baseline_metrics(scores: BaselineScores, policy_iou: float) -> dict[str, float]:
    """eval/iou_blind, eval/iou_oracle and (when oracle > blind) eval/localisation_gain."""
    out = {"eval/iou_blind": scores.mean_blind, "eval/iou_oracle": scores.mean_oracle}
    gain = localisation_gain(policy_iou, scores.mean_blind, scores.mean_oracle)
    if not math.isnan(gain):
        out["eval/localisation_gain"] = gain
    return out


def baseline_indices(n: int, count: int, seed: int) -> list[int]:
    """The training rows the blind prompt is chosen on: `count` distinct rows drawn with the run's seed, in
    order (a random sample, since real data sets are often sorted by class)."""
    if count >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, size=count, replace=False))


def baselines_key(cfg: Config, eval_samples: list[Sample], train_samples: list[Sample]) -> str:
    """What the baselines depend on: the eval and training pixels, the segmenter and its options, the frame."""
    return cache_key(
        eval=arrays_digest([a for s in eval_samples for a in (s.image, s.mask)]),
        train=arrays_digest([a for s in train_samples for a in (s.image, s.mask)]),
        segmenter=cfg.reward.segmenter,
        options=dataclasses.asdict(getattr(cfg.reward, cfg.reward.segmenter)),
        seed=cfg.run.seed,  # the segmenter's seed (random SAM2 test weights depend on it)
        frame=cfg.data.frame_size,
        max_segments=MAX_SEGMENTS,
    )


def overlay_of(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, text: str, cfg: Config,
               caption: str = "") -> np.ndarray:
    """A readable panel of a completion (>= 384 px, legend below): its mask, plus its boxes and points when
    the text parses (under cfg.reward)."""
    from cluster.telemetry.overlays import render_panel

    frame = cfg.data.frame_size
    try:
        prompt = parse_completion(text, frame, frame, **cfg.reward.parse_options())
    except FormatError as error:
        return render_panel(image, gt, pred, caption=f"{caption}  (no prompt: {error.code})".strip())
    return render_panel(image, gt, pred, prompt.boxes, prompt.points, prompt.labels, caption=caption)
