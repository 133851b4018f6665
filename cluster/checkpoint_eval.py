"""`segr1 eval` of a checkpoint over service pools: stream per-sample rows, then score them the papers' way.

    log = SampleLog.open(csv_path, eval_identity(cfg, checkpoint, data_path), fresh=False)
    blind = blind_prompt(cfg, data, log, baselines)            # chosen once, kept in the log's meta
    evaluate_rows(cfg, data, indices, rollout, reward, baselines, log, blind)   # skips rows already logged
    record = eval_record(cfg, data, indices, log)                # eval.json, from the CSV alone

`rollout` is anything with RolloutWorker.generate (the Ray RolloutPool: shards across its workers), `reward`
anything with RewardActor.score (the RewardPool: batches across its actors), `baselines` a BaselineRunner
(`choose` the blind prompt, `masks` of the blind and oracle prompts): cluster.eval_pools builds the Ray ones,
`LocalBaselines` runs a segmenter in-process. No Ray here.

Samples go in chunks (max_batch_prompts per rollout worker); each chunk is decoded greedily, scored with
masks, and its rows appended to the CSV before the next chunk starts. The table is computed afterwards from the
CSV's masks alone, in row order, so an eval resumed after a kill writes the same eval.json as one that was
never interrupted: scores at the GT's original size (segr1.evaluation on pysodmetrics), blind and oracle rows
scored the same way.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cluster import records
from cluster.evaluate import GREEDY_N, baseline_indices
from reward_server.baselines import baseline_masks, choose_blind_prompt, prompt_from_dict, prompt_to_dict
from reward_server.parse import SegPrompt
from reward_server.rle import RLE, decode_mask, encode_masks
from segr1.config import Config
from segr1.data.dataset import SegDataset
from segr1.evaluation import BenchmarkEvaluator
from segr1.evaluation import eval_record as benchmarks_record
from segr1.evaluation.sample_log import SampleLog

POLICY = "eval"
BLIND = "blind (fixed prompt)"
ORACLE = "oracle (GT box + point)"


class BaselineRunner(Protocol):
    def choose(self, images: list[np.ndarray], masks: list[np.ndarray], frame: int) -> SegPrompt:
        """The best image-independent prompt on these (training) frames."""
        ...

    def masks(self, images: list[Any], masks: list[Any], blind: SegPrompt) -> Callable[[], list[list[RLE]]]:
        """Start computing [blind RLE, oracle RLE] per frame (arrays or ArrayRefs); call the result to wait."""
        ...


class LocalBaselines:
    """BaselineRunner on one in-process segmenter (tests; the Ray one is cluster.eval_pools.PooledBaselines)."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter

    def choose(self, images: list[np.ndarray], masks: list[np.ndarray], frame: int) -> SegPrompt:
        return choose_blind_prompt(self.segmenter, images, masks, frame)

    def masks(self, images: list[Any], masks: list[Any], blind: SegPrompt) -> Callable[[], list[list[RLE]]]:
        from segr1.protocol import resolve_arrays

        pixels = resolve_arrays([*images, *masks])
        out = [encode_masks(baseline_masks(self.segmenter, pixels[i], pixels[len(images) + i], blind))
               for i in range(len(images))]
        return lambda: out


def eval_identity(cfg: Config, checkpoint: str, data_path: str) -> dict[str, Any]:
    """What a logged row depends on: a resumed eval must match it in every key (SampleLog refuses otherwise)."""
    weights = sorted((p.name, p.stat().st_size) for p in Path(checkpoint).glob("*.safetensors"))
    reward = cfg.reward
    # w_box enters only when set, so logs written before it existed (w_box = 0) still resume
    weights_of_reward = [reward.w_format, reward.w_iou, reward.w_s] + ([reward.w_box] if reward.w_box else [])
    return {
        "checkpoint": str(Path(checkpoint).resolve()), "weights": weights, "data": str(Path(data_path).resolve()),
        "frame": cfg.data.frame_size, "max_new_tokens": cfg.rollout.max_new_tokens,
        "system_prompt": cfg.rollout.system_prompt, "segmenter": reward.segmenter,
        "segmenter_options": dataclasses.asdict(getattr(reward, reward.segmenter)),
        "parse": reward.parse_options(), "reward_weights": weights_of_reward,
        "baseline_images": cfg.algorithm.baseline_images, "seed": cfg.run.seed,
    }


def eval_indices(cfg: Config, data: SegDataset) -> list[int]:
    n = len(data) if cfg.data.eval_size <= 0 else min(cfg.data.eval_size, len(data))
    return list(range(n))


# ------------------------------------------------------------------------------------------------ baselines
def blind_prompt(cfg: Config, data: SegDataset, log: SampleLog, baselines: BaselineRunner) -> SegPrompt | None:
    """The blind prompt of this eval: from the log's meta when resuming, else chosen (on
    algorithm.baseline_images rows of data.train, or of the eval set itself without one) and stored there.
    None when algorithm.baseline_images is 0."""
    count = cfg.algorithm.baseline_images
    if count <= 0:
        return None
    if "blind" not in log.meta:
        source = SegDataset(cfg.data.train, cfg.data.frame_size) if cfg.data.train else data
        samples = [source.load(i) for i in baseline_indices(len(source), count, cfg.run.seed)]
        where = (f"{len(samples)} rows of data.train ({Path(cfg.data.train).name})" if cfg.data.train
                 else f"{len(samples)} rows of the eval set itself (no data.train: an optimistic blind baseline)")
        blind = baselines.choose([s.image for s in samples], [s.mask for s in samples], cfg.data.frame_size)
        log.meta.update(blind=prompt_to_dict(blind), chosen_on=where)
        log.save_meta()
    return prompt_from_dict(log.meta["blind"])


# ------------------------------------------------------------------------------------------------ streaming
def evaluate_rows(cfg: Config, data: SegDataset, indices: Sequence[int], rollout: Any, reward: Any,
                  baselines: BaselineRunner | None, log: SampleLog, blind: SegPrompt | None, *,
                  chunk: int, progress: Callable[[str], None] = lambda line: None) -> int:
    """Decode, score and log every index not yet in the log, `chunk` samples at a time; returns how many ran."""
    todo = [i for i in indices if i not in log.done]
    sampling = cfg.rollout.sampling_params(GREEDY_N, greedy=True)
    start_time, ran = time.perf_counter(), 0
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        samples = records.by_reference([data.load(i) for i in part])  # pixels stored once for both passes
        pending = None  # the blind and oracle masks are segmented while the engines generate
        if blind is not None and baselines is not None:
            pending = baselines.masks([s.image for s in samples], [s.mask for s in samples], blind)
        scored = records.rollout_and_score(rollout, reward, samples, sampling, return_masks=True)
        base = pending() if pending is not None else None
        if [g.request_id for g in scored.groups] != [s.sample_id for s in samples]:
            raise RuntimeError("rollout groups came back out of sample order: rows would get others' masks")
        log.append([_row(i, data.task(i), group, score, None if base is None else base[k])
                    for k, (i, group, score) in enumerate(zip(part, scored.groups, scored.rewards))])
        ran += len(part)
        rate = ran / (time.perf_counter() - start_time)
        progress(f"eval: {len(log.done)}/{len(indices)} samples ({rate:.2f} samples/s, "
                 f"{len(indices) - len(todo)} from an earlier run)")
    return ran


def _row(index: int, task: str, group: Any, score: Any, base: list[RLE] | None) -> dict[str, Any]:
    completion, parts = group.completions[0], score.breakdowns[0]
    return {
        "index": index, "sample_id": group.request_id, "task": task, "format": parts.format,
        "reward": parts.reward, "iou": parts.iou, "s_measure": parts.s_measure, "reason": parts.reason,
        "tokens": len(completion.token_ids), "completion": json.dumps(completion.text),
        "mask": score.masks_rle[0]["counts"], "blind_mask": base[0]["counts"] if base else "",
        "oracle_mask": base[1]["counts"] if base else "", "worker": group.worker_id, "reward_actor": score.actor_id,
    }


# ------------------------------------------------------------------------------------------------ scoring
def eval_record(cfg: Config, data: SegDataset, indices: Sequence[int], log: SampleLog) -> dict[str, Any]:
    """eval.json from the logged rows of `indices`: the policy's benchmarks (one per task), its format rate
    and mean frame reward, and the blind and oracle rows scored the same way (when the log has them)."""
    rows = log.rows(indices)
    frame = cfg.data.frame_size
    tasks = [row["task"] for row in rows]
    with_baselines = "blind" in log.meta
    kinds = (POLICY, BLIND, ORACLE) if with_baselines else (POLICY,)
    evaluators = {kind: _evaluators(kind, tasks) for kind in kinds}
    for index, row in zip(indices, rows):
        original = data.load_original(index)
        for kind, column in zip(kinds, ("mask", "blind_mask", "oracle_mask")):
            pred = decode_mask({"size": [frame, frame], "counts": row[column]})
            evaluators[kind][row["task"]].add(pred, original)

    def benchmarks(kind: str) -> dict[str, Any]:
        return benchmarks_record([e.result() for e in evaluators[kind].values()])

    record: dict[str, Any] = {
        "checkpoint": log.meta["identity"]["checkpoint"], "data": log.meta["identity"]["data"], "n": len(rows),
        "samples": log.path.name, "format_rate": float(np.mean([float(r["format"]) for r in rows])),
        "reward": float(np.mean([float(r["reward"]) for r in rows])), **benchmarks(POLICY),
    }
    if with_baselines:
        record["baselines"] = {
            "blind": {"prompt": log.meta["blind"], "chosen_on": log.meta["chosen_on"], **benchmarks(BLIND)},
            "oracle": {"prompt": "ground-truth box + deepest interior point", **benchmarks(ORACLE)},
        }
    return record


def _evaluators(name: str, tasks: Sequence[str]) -> dict[str, BenchmarkEvaluator]:
    """One evaluator per task in order of first appearance, named `name`, or `name/<task>` when tasks mix."""
    order = list(dict.fromkeys(tasks))
    return {task: BenchmarkEvaluator(f"{name}/{task}" if len(order) > 1 else name, task) for task in order}
