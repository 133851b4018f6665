"""Benchmark: learner -> 2 rollout workers weight broadcast over the Ray object store, against the memcpy floor.

Run:  .venv/bin/python bench/weight_sync.py [--hidden 768] [--layers 4] [--bucket-mb 256] [--repeats 6] [--step-s 1.5]

Builds a Qwen2.5-VL-architecture model of ~150 MB (fp32; the tiny VLM's tokenizer and processor with wider and
deeper layers), starts a real LearnerActor (DeepSpeed, in this process) and real RolloutWorker Ray actors (HF
engine) on it, then times the whole sync as the controller does: `publish_weights` (one `ray.put` per bucket,
copying straight from the parameters) followed by every worker's `update_weights`. Two pairs of workers, side
by side in one run: serving from the object store's buffers (rollout.zero_copy_weights=true, the default) and
copying them into each worker's own model (false).

The floor is the time one memcpy of the model's bytes takes on this machine (copy bandwidth measured in the same
run, large tensor copy, best of --repeats). Serving from the store leaves one copy on the critical path (the
put), copying into the models two (the workers copy in parallel).

Syncs are --step-s apart, as training steps would separate them: Ray frees an object's shared memory about a
second after its last reference goes, and until then a new put must fault in fresh pages (~5x slower). A run
pays that in its first syncs only, so the table shows them and the ratio is the median of the later ones.
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


def time_syncs(learner, workers, rounds: int, step_s: float, floor_s: float) -> list[tuple]:
    """`rounds` syncs `step_s` apart: (version, publish s, workers update s, total s, x floor) each."""
    import ray

    rows = []
    for _ in range(rounds):
        time.sleep(step_s)  # the training step between two syncs
        start = time.perf_counter()
        version, refs = learner.publish_weights()
        published = time.perf_counter()
        ray.get([w.update_weights.remote(refs, version) for w in workers])
        done = time.perf_counter()
        del refs  # the workers hold what they serve; the store frees the previous version
        rows.append((version, published - start, done - published, done - start, (done - start) / floor_s))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--bucket-mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=6, help="syncs per mode (the first two are cold)")
    parser.add_argument("--step-s", type=float, default=1.5, help="seconds between syncs (a training step)")
    args = parser.parse_args()
    cold = 2

    import ray

    from learner.actor import LearnerActor
    from learner.models import trainable_weights
    from rollout.worker import RolloutWorker
    from segr1.config import load_config
    from segr1.rendezvous import free_port

    work = Path(tempfile.mkdtemp(prefix="segr1-bench-sync-"))
    try:
        model_dir = work / "model"
        model_bytes = build_model(model_dir, args.hidden, args.layers)
        common = [f"learner.sync.bucket_mb={args.bucket_mb}", "algorithm.beta=0", "model.dtype=float32",
                  "rollout.num_cpus=1"]
        cfg = load_config(None, common)
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        modes = {"serve from store": True, "copy into model": False}
        workers = {
            mode: [ray.remote(RolloutWorker).options(num_cpus=1).remote(
                load_config(None, [*common, f"rollout.zero_copy_weights={share}"]), str(model_dir),
                f"rollout-{i}") for i in range(2)]
            for mode, share in modes.items()
        }
        learner = LearnerActor(cfg, str(model_dir), 0, 1, "127.0.0.1", free_port())
        ray.get([w.weights_version.remote() for pair in workers.values() for w in pair])  # engines loaded
        sync_bytes = sum(p.numel() * p.element_size() for _, p in trainable_weights(learner.engine.module))

        floor_s = copy_seconds(sync_bytes, args.repeats)
        ratios = {}
        for mode, pair in workers.items():
            rows = time_syncs(learner, pair, args.repeats, args.step_s, floor_s)
            ratios[mode] = median([row[3] for row in rows[cold:]]) / floor_s
            print_table(
                f"weight sync, {mode}: {sync_bytes / 2**20:.0f} MB ({model_bytes / 2**20:.0f} MB model) to 2 "
                f"workers, {args.bucket_mb} MB buckets, {args.step_s} s apart; memcpy floor {floor_s * 1e3:.1f} ms "
                f"({sync_bytes / floor_s / 2**30:.2f} GiB/s); {load_average()}",
                ["version", "publish s", "workers update s", "total s", "x floor"], rows)
        for mode, ratio in ratios.items():
            print(f"{mode}: {ratio:.2f}x the floor (median of syncs {cold + 1}..{args.repeats})")
        print(f"RATIO sync / memcpy floor = {ratios['serve from store']:.2f}x (serving from the store, the "
              f"default; goal <= 3x); copying into each model {ratios['copy into model']:.2f}x")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
