"""Held-out evaluation during training, and `segr1 eval` of a checkpoint.

During training the policy decodes greedily (one completion per image) through the same rollout and reward
pools as training, so eval/iou measures exactly what the reward measures. `segr1 eval` loads a checkpoint
in-process (the same RolloutWorker and RewardActor classes, without Ray) and scores at the GT's original size
with the field's reference metrics (segr1.evaluation, on pysodmetrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cluster import records
from reward_server.parse import FormatError, parse_completion
from reward_server.rle import decode_masks
from segr1.config import Config
from segr1.data.dataset import SegDataset
from segr1.protocol import GroupReward, RolloutGroup, Sample, SamplingParams

GREEDY_N = 1
G_EVAL = 4  # sampled completions per held-out image: the expected IoU of the policy, not only of its mode


def greedy(cfg: Config) -> SamplingParams:
    return SamplingParams(n=GREEDY_N, temperature=0.0, top_p=1.0, max_new_tokens=cfg.rollout.max_new_tokens)


class Evaluator:
    def __init__(self, cfg: Config, data: SegDataset) -> None:
        self.cfg = cfg
        self.data = data
        n = len(data) if cfg.data.eval_size <= 0 else min(cfg.data.eval_size, len(data))
        self.indices = list(range(n))

    def run(self, pools: Any, step: int, log: Any, tag: str) -> dict[str, float]:
        """Greedy decoding (eval/*) and the policy's own sampling (eval/*_sampled, G_EVAL completions each)."""
        samples = [self.data.load(i) for i in self.indices]
        requests = records.generation_requests(samples)
        groups = pools.rollout.generate(requests, greedy(self.cfg))
        rewards = pools.reward.score(records.reward_requests(samples, groups, return_masks=True))
        metrics = _eval_metrics(rewards, suffix="")
        sampled = pools.rollout.generate(requests, self._sampling(step))
        metrics.update(_eval_metrics(pools.reward.score(records.reward_requests(samples, sampled)), "_sampled"))
        self._overlays(step, samples[:4], groups[:4], rewards[:4], log, prefix=f"eval_{tag}")
        return metrics

    def _sampling(self, step: int) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(n=G_EVAL, temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens,
                              seed=self.cfg.run.seed * 7919 + step)  # the same draws for a resumed run

    def save_overlays(self, step: int, samples: list[Sample], groups: list[RolloutGroup], pools: Any,
                      log: Any) -> None:
        """Overlays of training completions (first completion of each group)."""
        rewards = pools.reward.score(records.reward_requests(samples, groups, return_masks=True))
        self._overlays(step, samples, groups, rewards, log, prefix="train")

    def _overlays(self, step: int, samples: list[Sample], groups: list[RolloutGroup],
                  rewards: list[GroupReward], log: Any, prefix: str) -> None:
        images = []
        for sample, group, reward in zip(samples, groups, rewards):
            if not reward.masks_rle:
                continue
            pred = decode_masks(reward.masks_rle[:1])[0]
            image = overlay_of(sample.image, sample.mask, pred, group.completions[0].text, self.cfg)
            images.append((f"{prefix}_{sample.sample_id}", image))
        if images:
            log.log_overlays(step, images)


def _eval_metrics(rewards: list[GroupReward], suffix: str) -> dict[str, float]:
    means = records.reward_metrics(rewards)
    return {f"eval/reward{suffix}": means["reward/mean"], f"eval/format{suffix}": means["reward/format"],
            f"eval/iou{suffix}": means["reward/iou"], f"eval/s_measure{suffix}": means["reward/s_measure"]}


def overlay_of(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, text: str, cfg: Config) -> np.ndarray:
    """Overlay of a completion: its mask, plus its boxes and points when the text parses (under cfg.reward)."""
    from cluster.telemetry.overlays import render_overlay

    frame, r = cfg.data.frame_size, cfg.reward
    try:
        prompt = parse_completion(text, frame, frame, require_think=r.require_think, max_boxes=r.max_boxes,
                                  max_points=r.max_points, max_chars=r.max_chars, grammar=r.grammar)
    except FormatError:
        return render_overlay(image, gt, pred)
    return render_overlay(image, gt, pred, prompt.boxes, prompt.points, prompt.labels)


def evaluate_checkpoint(cfg: Config, checkpoint: str, out: str | None = None) -> dict[str, Any]:
    """`segr1 eval`: greedy predictions of a checkpoint on cfg.data.eval, scored at original size."""
    from reward_server.actor import RewardActor
    from rollout.worker import RolloutWorker
    from segr1.data.dataset import SegDataset as Dataset
    from segr1.evaluation import evaluate_predictions, format_table

    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {checkpoint}")
    if not cfg.data.eval:
        raise ValueError("data.eval: give the Parquet file to evaluate on (e.g. data.eval=cod10k_test.parquet)")
    data = Dataset(cfg.data.eval, cfg.data.frame_size)
    n = len(data) if cfg.data.eval_size <= 0 else min(cfg.data.eval_size, len(data))
    worker = RolloutWorker(cfg, checkpoint, "eval")
    scorer = RewardActor(cfg, "eval")
    preds, gts, ignores, tasks = [], [], [], []
    batch = max(1, cfg.rollout.max_batch_prompts)
    for start in range(0, n, batch):
        samples = [data.load(i) for i in range(start, min(n, start + batch))]
        groups = worker.generate(records.generation_requests(samples), greedy(cfg))
        rewards = scorer.score(records.reward_requests(samples, groups, return_masks=True))
        for i, reward in zip(range(start, start + len(samples)), rewards):
            _, orig_mask, ignore = data.load_original(i)
            preds.append(decode_masks(reward.masks_rle[:1])[0])
            gts.append(orig_mask)
            ignores.append(ignore)
            tasks.append(samples[i - start].task)
    results = evaluate_predictions(preds, gts, ignores, tasks)
    print(format_table(results, title=f"{Path(cfg.data.eval).name} ({n} samples)"))
    out_path = Path(out) if out else Path(checkpoint) / "eval.json"
    out_path.write_text(json.dumps({"checkpoint": checkpoint, "data": cfg.data.eval, "n": n, **results}, indent=2))
    print(f"wrote {out_path}")
    return results
