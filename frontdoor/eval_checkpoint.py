"""`segr1 eval`: a checkpoint's greedy predictions on cfg.data.eval, decoded and scored on the service pools.

    segr1 eval --config configs/eval_cod10k.yaml --checkpoint runs/local_cpu/checkpoints/step_20 [--fresh]

Data-parallel over a Ray cluster (a local one unless cluster.address or RAY_ADDRESS names one): the training
job's rollout pool (rollout.num_workers engines, hf on CPU, vllm on GPU) and reward pool (reward.num_actors
segmenters), no learner. Every sample's row (completion, reward parts, RLE masks of the policy, blind and
oracle prompts) is appended to `<out stem>_samples.csv` as soon as its chunk is scored; a rerun resumes,
skipping the rows already there (`--fresh` starts over). When every row is in, the table is computed from
the CSV (cluster.checkpoint_eval: pysodmetrics S, E, wF, F, MAE for SOD/COD, cIoU and gIoU for
referring/reasoning sets, at the GT's original size), written to eval.json and printed with the blind and
oracle rows under the policy's.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from segr1.config import Config

TABLE_WIDTH = 160  # wide enough that no benchmark name or number wraps


def evaluate_checkpoint(cfg: Config, checkpoint: str, out: str | None = None, *,
                        fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) the eval of `checkpoint` on the pools; write eval.json, print the table; the record."""
    from cluster import checkpoint_eval as ce
    from segr1.data.dataset import SegDataset
    from segr1.evaluation.sample_log import SampleLog

    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {checkpoint}")
    if not cfg.data.eval:
        raise ValueError("data.eval: give the Parquet file to evaluate on (e.g. data.eval=cod10k_test.parquet)")
    out_path = Path(out) if out else Path(checkpoint) / "eval.json"
    csv_path = samples_path(out_path)
    data = SegDataset(cfg.data.eval, cfg.data.frame_size)
    indices = ce.eval_indices(cfg, data)
    with SampleLog.open(csv_path, ce.eval_identity(cfg, checkpoint, cfg.data.eval), fresh=fresh) as log:
        if any(i not in log.done for i in indices) or (cfg.algorithm.baseline_images > 0 and "blind" not in log.meta):
            _run_on_pools(cfg, checkpoint, data, indices, log)
        record = ce.eval_record(cfg, data, indices, log)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(_json(record))
    print(f"{Path(cfg.data.eval).name} ({record['n']} samples, format rate {record['format_rate']:.3f})")
    print(report_text(record))
    if "baselines" in record:
        blind = record["baselines"]["blind"]
        print(f"blind = {blind['prompt']} chosen on {blind['chosen_on']}")
    print(f"wrote {out_path} and {csv_path}")
    return record


def samples_path(out_path: Path) -> Path:
    """The per-sample CSV beside eval.json: eval.json -> eval_samples.csv."""
    return out_path.with_name(f"{out_path.stem}_samples.csv")


def report_text(record: dict[str, Any]) -> str:
    """The paper tables of an eval.json record: the policy's benchmarks, then the blind and oracle rows."""
    from segr1.evaluation import format_results, results_from_record

    results = results_from_record(record)
    for name in ("blind", "oracle"):
        if name in record.get("baselines", {}):
            results += results_from_record(record["baselines"][name])
    return format_results(results, width=TABLE_WIDTH)


def _run_on_pools(cfg: Config, checkpoint: str, data: Any, indices: list[int], log: Any) -> None:
    from cluster import checkpoint_eval as ce
    from cluster.eval_pools import EvalPools
    from cluster.job import connect

    # the eval's own local cluster: no dashboard, any free metrics port (a training run may hold the defaults)
    connect(dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, dashboard=False,
                                                                 metrics_export_port=0)))
    with EvalPools(cfg, str(Path(checkpoint).resolve())) as pools:
        blind = ce.blind_prompt(cfg, data, log, pools.baselines)
        ce.evaluate_rows(cfg, data, indices, pools.rollout, pools.reward, pools.baselines, log, blind,
                         chunk=pools.chunk, progress=lambda line: print(line, file=sys.stderr, flush=True))


def _json(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, indent=2)
