"""Benchmark: batched torch IoU + S-measure against looping the reference package over the same mask pairs.

Run:  .venv/bin/python bench/metrics.py [--pairs 64] [--size 768] [--repeats 3] [--threads 1]
      (``make bench`` runs it with the defaults.)

One torch thread by default: the reference is single-threaded, and a reward actor runs with one thread too
(Ray sets OMP_NUM_THREADS to the actor's CPU count). ``--threads 0`` keeps torch's default instead; on a
machine whose cores are all busy, several threads make torch wait on each other and the ratio collapses.

Builds ``--pairs`` synthetic (prediction, ground truth) masks in the training frame: elliptical objects, the
prediction a shifted, resized copy with stray blobs, as a segmenter would return. Times
``reward_server.metrics.iou_and_s_measure`` on the whole batch and a Python loop of numpy IoU plus
``py_sod_metrics.Smeasure`` over the pairs, in the same process, best of ``--repeats`` each. Checks that the
values agree to 1e-6 and prints the speed ratio (reference seconds / batched seconds) in wall-clock time and
in CPU time of the process (the second is the fair one on a busy machine, or when torch uses more threads
than the single-threaded reference).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from py_sod_metrics import Smeasure

from reward_server.metrics import iou_and_s_measure


def synthetic_pairs(pairs: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred bool[N, S, S], gt bool[N, S, S]): ellipses and imperfect copies of them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]

    def ellipse(cy, cx, ry, rx):
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1

    pred = np.zeros((pairs, size, size), bool)
    gt = np.zeros((pairs, size, size), bool)
    for i in range(pairs):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        ry, rx = rng.uniform(0.05, 0.3, 2) * size
        gt[i] = ellipse(cy, cx, ry, rx)
        shift, scale = rng.normal(0, 0.03, 2) * size, rng.uniform(0.8, 1.2, 2)
        pred[i] = ellipse(cy + shift[0], cx + shift[1], ry * scale[0], rx * scale[1])
        for _ in range(rng.integers(0, 4)):  # stray false positives
            pred[i] |= ellipse(*(rng.uniform(0, 1, 2) * size), *(rng.uniform(0.01, 0.05, 2) * size))
    return pred, gt


def reference(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair loop: numpy IoU (0 for an empty union) and the package's S-measure on 8-bit maps."""
    ious, s_values = [], []
    for p, g in zip(pred, gt):
        union = np.count_nonzero(p | g)
        ious.append(np.count_nonzero(p & g) / union if union else 0.0)
        meter = Smeasure()
        meter.step(p.astype(np.uint8) * 255, g.astype(np.uint8) * 255)
        s_values.append(meter.sms[0])
    return np.array(ious), np.array(s_values)


def best_time(function, repeats: int):
    """(best wall-clock seconds, best CPU seconds of this process, result) over ``repeats`` calls."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pred, gt = synthetic_pairs(args.pairs, args.size)
    pred_t, gt_t = torch.from_numpy(pred), torch.from_numpy(gt)
    iou_and_s_measure(pred_t[:2], gt_t[:2])  # warm-up: first-call overheads are not the metric's cost
    ours_s, ours_cpu, (ours_iou, ours_sm) = best_time(lambda: iou_and_s_measure(pred_t, gt_t), args.repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref_s, ref_cpu, (ref_iou, ref_sm) = best_time(lambda: reference(pred, gt), args.repeats)

    iou_gap = float(np.max(np.abs(ours_iou.numpy() - ref_iou)))
    s_gap = float(np.max(np.abs(ours_sm.numpy() - ref_sm)))
    print(f"{args.pairs} mask pairs at {args.size}x{args.size}, torch threads {torch.get_num_threads()}")
    print(f"  batched torch iou_and_s_measure: {ours_s * 1000:9.1f} ms wall, {ours_cpu * 1000:9.1f} ms CPU")
    print(f"  loop numpy IoU + pysodmetrics:   {ref_s * 1000:9.1f} ms wall, {ref_cpu * 1000:9.1f} ms CPU")
    print(f"  max |difference|: IoU {iou_gap:.2e}, S-measure {s_gap:.2e}")
    print(
        f"  speed ratio (reference / batched): {ref_s / ours_s:.1f}x wall-clock, {ref_cpu / ours_cpu:.1f}x CPU time"
    )
    assert iou_gap <= 1e-6 and s_gap <= 1e-6, "batched metrics disagree with the reference"


if __name__ == "__main__":
    main()
