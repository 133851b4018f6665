"""`segr1 eval`: a checkpoint's greedy predictions on cfg.data.eval, scored like the papers score them.

    segr1 eval --config configs/eval_cod10k.yaml --checkpoint runs/local_cpu/checkpoints/step_20

In-process, without a Ray cluster: the same RolloutWorker and RewardActor classes the job runs as actors, on
the same rollout-and-score pass (cluster.records). Masks are scored at the ground truth's original size with
the field's reference metrics (segr1.evaluation, on pysodmetrics), and the blind and oracle baselines of
reward_server.baselines are scored the same way, as rows under the policy's table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster import records
from cluster.evaluate import GREEDY_N, baseline_indices
from reward_server.baselines import baseline_masks, choose_blind_prompt, prompt_to_dict
from reward_server.parse import SegPrompt
from reward_server.rle import decode_masks
from segr1.config import Config
from segr1.data.dataset import SegDataset


def evaluate_checkpoint(cfg: Config, checkpoint: str, out: str | None = None) -> dict[str, Any]:
    """`segr1 eval`: greedy predictions of a checkpoint on cfg.data.eval, scored at original size, with the
    blind and oracle prompts' masks scored the same way (rows under the policy's; eval.json "baselines")."""
    from reward_server.actor import RewardActor  # imported here: they pull in torch and the engines
    from rollout.worker import RolloutWorker
    from segr1.evaluation import evaluate_predictions, format_results, results_from_record

    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {checkpoint}")
    if not cfg.data.eval:
        raise ValueError("data.eval: give the Parquet file to evaluate on (e.g. data.eval=cod10k_test.parquet)")
    data = SegDataset(cfg.data.eval, cfg.data.frame_size)
    n = len(data) if cfg.data.eval_size <= 0 else min(cfg.data.eval_size, len(data))
    worker = RolloutWorker(cfg, checkpoint, "eval")
    scorer = RewardActor(cfg, "eval")
    blind, chosen_on = _blind_for_checkpoint_eval(cfg, data, scorer.segmenter)
    preds, blind_preds, oracle_preds, gts, ignores, tasks = [], [], [], [], [], []
    batch = max(1, cfg.rollout.max_batch_prompts)
    sampling = cfg.rollout.sampling_params(GREEDY_N, greedy=True)
    for start in range(0, n, batch):
        samples = [data.load(i) for i in range(start, min(n, start + batch))]
        scored = records.rollout_and_score(worker, scorer, samples, sampling, return_masks=True)
        for i, sample, reward in zip(range(start, start + len(samples)), samples, scored.rewards):
            _, orig_mask, ignore = data.load_original(i)
            preds.append(decode_masks(reward.masks_rle[:1])[0])
            if blind is not None:
                blind_mask, oracle_mask = baseline_masks(scorer.segmenter, sample.image, sample.mask, blind)
                blind_preds.append(blind_mask)
                oracle_preds.append(oracle_mask)
            gts.append(orig_mask)
            ignores.append(ignore)
            tasks.append(sample.task)
    results = evaluate_predictions(preds, gts, ignores, tasks)
    record: dict[str, Any] = {"checkpoint": checkpoint, "data": cfg.data.eval, "n": n, **results}
    table = results_from_record(results)
    if blind is not None:
        blind_record = evaluate_predictions(blind_preds, gts, ignores, tasks, name="blind (fixed prompt)")
        oracle_record = evaluate_predictions(oracle_preds, gts, ignores, tasks, name="oracle (GT box + point)")
        table += results_from_record(blind_record) + results_from_record(oracle_record)
        record["baselines"] = {
            "blind": {"prompt": prompt_to_dict(blind), "chosen_on": chosen_on, **blind_record},
            "oracle": {"prompt": "ground-truth box + deepest interior point", **oracle_record},
        }
    print(f"{Path(cfg.data.eval).name} ({n} samples)\n{format_results(table)}")
    if blind is not None:
        print(f"blind = {prompt_to_dict(blind)} chosen on {chosen_on}")
    out_path = Path(out) if out else Path(checkpoint) / "eval.json"
    out_path.write_text(json.dumps(record, indent=2))
    print(f"wrote {out_path}")
    return record


def _blind_for_checkpoint_eval(cfg: Config, data: SegDataset, segmenter: Any) -> tuple[SegPrompt | None, str]:
    """(blind prompt, where it was chosen) for `segr1 eval`: on algorithm.baseline_images rows of data.train
    when given; otherwise on the eval rows themselves, which flatters the blind baseline (an upper bound on
    what a fixed prompt gets), and says so. (None, "") when baseline_images is 0."""
    count = cfg.algorithm.baseline_images
    if count <= 0:
        return None, ""
    source = SegDataset(cfg.data.train, cfg.data.frame_size) if cfg.data.train else data
    samples = [source.load(i) for i in baseline_indices(len(source), count, cfg.run.seed)]
    where = (f"{len(samples)} rows of data.train ({Path(cfg.data.train).name})" if cfg.data.train
             else f"{len(samples)} rows of the eval set itself (no data.train: an optimistic blind baseline)")
    blind = choose_blind_prompt(segmenter, [s.image for s in samples], [s.mask for s in samples],
                                cfg.data.frame_size)
    return blind, where
