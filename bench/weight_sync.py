"""Benchmark: learner -> 2 rollout workers weight broadcast over the Ray object store, against the memcpy floor.

Run:  .venv/bin/python bench/weight_sync.py [--hidden 768] [--layers 4] [--bucket-mb 256] [--repeats 3]

Builds a Qwen2.5-VL-architecture model of ~150 MB (fp32; the tiny VLM's tokenizer and processor with wider and
deeper layers), starts a real LearnerActor (DeepSpeed, in this process) and two real RolloutWorker Ray actors
(HF engine) on it, then times the whole sync as the controller does: `publish_weights` (pack into buckets, one
`ray.put` each) followed by every worker's `update_weights` (zero-copy `ray.get`, copy into the engine's model).

The floor is the time one memcpy of the model's bytes takes on this machine (copy bandwidth measured in the same
run, large tensor copy, best of --repeats). The broadcast needs at least three such copies on the critical path
(pack, object-store put, copy into each worker's model; the workers copy in parallel), so ~3x is the target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: bench/rollout.py would shadow the `rollout` package

import torch

from bench.common import load_average, median, print_table


def build_model(out_dir: Path, hidden: int, layers: int) -> int:
    """Widen the tiny VLM (same tokenizer/processor) to `hidden` x `layers`; returns the weight bytes."""
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from rollout.tiny_model import ensure_tiny_vlm

    tiny = Path(ensure_tiny_vlm(str(out_dir.parent / "tiny_vlm")))
    shutil.copytree(tiny, out_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    config = AutoConfig.from_pretrained(tiny)
    config.text_config.hidden_size = hidden
    config.text_config.intermediate_size = 4 * hidden
    config.text_config.num_hidden_layers = layers
    config.text_config.layer_types = ["full_attention"] * layers
    config.text_config.num_attention_heads = hidden // 64  # head_dim 64: the tiny model's mrope sections fit
    config.text_config.num_key_value_heads = hidden // 64
    config.vision_config.out_hidden_size = hidden  # the merger feeds the language model directly
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(out_dir)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def copy_seconds(nbytes: int, repeats: int) -> float:
    """Best time of one copy of `nbytes` between warm buffers: the faster of torch's multi-threaded copy and
    numpy's single memcpy, best of `repeats` (the most favourable floor, not the typical one)."""
    import numpy as np

    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in before timing
    times = []
    for copy in (lambda: dst.copy_(src), lambda: np.copyto(dst.numpy(), src.numpy())):
        for _ in range(repeats):
            start = time.perf_counter()
            copy()
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--bucket-mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    from learner.actor import LearnerActor
    from learner.models import trainable_weights
    from learner.nccl_sync import free_port
    from rollout.worker import RolloutWorker
    from segr1.config import load_config

    work = Path(tempfile.mkdtemp(prefix="segr1-bench-sync-"))
    try:
        model_dir = work / "model"
        model_bytes = build_model(model_dir, args.hidden, args.layers)
        cfg = load_config(None, [f"learner.sync.bucket_mb={args.bucket_mb}", "algorithm.beta=0",
                                 "model.dtype=float32", "rollout.num_cpus=1"])
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        workers = [ray.remote(RolloutWorker).options(num_cpus=1).remote(cfg, str(model_dir), f"rollout-{i}")
                   for i in range(2)]
        learner = LearnerActor(cfg, str(model_dir), 0, 1, "127.0.0.1", free_port())
        ray.get([w.weights_version.remote() for w in workers])  # both engines loaded
        sync_bytes = sum(p.numel() * p.element_size() for _, p in trainable_weights(learner.engine.module))

        floor_s = copy_seconds(sync_bytes, args.repeats)
        rows, totals = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            version, refs = learner.publish_weights()
            published = time.perf_counter()
            ray.get([w.update_weights.remote(refs, version) for w in workers])
            done = time.perf_counter()
            del refs  # free the object-store copy before the next round
            totals.append(done - start)
            rows.append((version, published - start, done - published, done - start, (done - start) / floor_s))
        print_table(
            f"weight sync: {sync_bytes / 2**20:.0f} MB ({model_bytes / 2**20:.0f} MB model) to 2 workers, "
            f"{args.bucket_mb} MB buckets; memcpy floor {floor_s * 1e3:.1f} ms "
            f"({sync_bytes / floor_s / 2**30:.2f} GiB/s); {load_average()}",
            ["version", "publish s", "workers update s", "total s", "x floor"], rows)
        print(f"RATIO sync / memcpy floor = {median(totals) / floor_s:.2f}x (median of {args.repeats}; goal <= 3x)")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
