"""Benchmark: the reward pool against the released Seg-R1 call pattern, side by side in one run.

Both score the same 4 synthetic images x G=8 completions with random-weight SAM2 hiera_t on the CPU:
- pool: a RewardPool actor encodes each image once and decodes all completions' boxes in batched calls;
- released style: one `set_image` (a full encoder pass) per completion and per box, then one `predict`.
It checks that both give the same masks, prints the speed-up (goal: >= 0.7 * G) and GrabCut's masks/s at
this frame and at the embedded CPU default's (configs/local_cpu.yaml).
Not a test: it takes a few minutes on two cores.

    .venv/bin/python bench/reward_pool.py [--images 4] [--group-size 8] [--frame 384]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import ray

from reward_server.parse import SegPrompt, assign_points_to_boxes, parse_completion, render
from reward_server.pool import RewardPool
from reward_server.rle import decode_masks
from reward_server.segmenters import build
from segr1.config import Config, load_config
from segr1.data.synth import synth_sample
from segr1.protocol import RewardRequest

LOCAL_CPU = "configs/local_cpu.yaml"  # the embedded default: its frame is where GrabCut runs in `make train`
SAM2_TINY = [
    "reward.segmenter=sam2",
    "reward.sam2.model_cfg=configs/sam2.1/sam2.1_hiera_t.yaml",
    "reward.sam2.device=cpu",
]


def make_requests(images: int, group_size: int, frame: int, seed: int = 0) -> list[RewardRequest]:
    """G plausible completions per image: jittered boxes around the object (sometimes two), 1-3 points."""
    rng = np.random.default_rng(seed)
    requests = []
    for index in range(images):
        image, mask = synth_sample(seed=seed, index=index, size=frame)
        ys, xs = np.nonzero(mask)
        texts = []
        for _ in range(group_size):
            boxes = []
            for _ in range(1 if rng.random() < 0.75 else 2):
                jitter = rng.integers(-frame // 16, frame // 16 + 1, 4)
                x1, y1 = np.clip([xs.min() + jitter[0], ys.min() + jitter[1]], 0, frame - 2)
                x2 = int(np.clip(xs.max() + jitter[2], x1 + 1, frame - 1))
                y2 = int(np.clip(ys.max() + jitter[3], y1 + 1, frame - 1))
                boxes.append((int(x1), int(y1), x2, y2))
            picks = rng.integers(0, len(xs), rng.integers(1, 4))
            points = [(int(xs[p]), int(ys[p])) for p in picks]
            texts.append(render(SegPrompt("the object", boxes, points, [1] * len(points))))
        requests.append(RewardRequest(f"bench-{index}", image, mask, texts, return_masks=True))
    return requests


def warm_up_request(frame: int) -> RewardRequest:
    """One group on an image outside the benchmark: a process's first SAM2 encode is about 2x slower."""
    return make_requests(1, 1, frame, seed=99)[0]


def released_style(cfg: Config, requests: list[RewardRequest]) -> tuple[list[np.ndarray], float, int]:
    """Re-encode the image per completion and box, as the released reward did. -> masks, seconds, encodes."""
    sam2 = cfg.reward.sam2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # random weights: expected here
        predictor = build(
            "sam2", model_cfg=sam2.model_cfg, checkpoint="", device="cpu", seed=cfg.run.seed
        ).predictor
    predictor.set_image(warm_up_request(requests[0].gt_mask.shape[0]).image)
    all_masks, encodes = [], 0
    start = time.perf_counter()
    for request in requests:
        height, width = request.gt_mask.shape
        masks = np.zeros((len(request.texts), height, width), bool)
        for index, text in enumerate(request.texts):
            for box, points, labels in assign_points_to_boxes(parse_completion(text, width, height)):
                predictor.set_image(request.image)
                encodes += 1
                mask, _, _ = predictor.predict(
                    point_coords=np.array(points, np.float32) if points else None,
                    point_labels=np.array(labels) if points else None,
                    box=np.array(box, np.float32),
                    multimask_output=False,
                )
                masks[index] |= mask[0] > 0.5
        all_masks.append(masks)
    return all_masks, time.perf_counter() - start, encodes


def pool_run(cfg: Config, requests: list[RewardRequest]) -> tuple[list[np.ndarray], float, dict]:
    """Score through a one-actor RewardPool, warmed up before the clock starts. -> masks, seconds, stats."""
    with RewardPool(cfg, num_actors=1) as pool:
        pool.score([warm_up_request(requests[0].gt_mask.shape[0])])
        pool.stats()  # start the throughput window here
        start = time.perf_counter()
        results = pool.score(requests)
        seconds = time.perf_counter() - start
        stats = pool.stats()
    return [decode_masks(result.masks_rle) for result in results], seconds, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--frame", type=int, default=384, help="image side (SAM2 encodes at 1024 regardless)")
    args = parser.parse_args()
    group = args.group_size
    requests = make_requests(args.images, group, args.frame)
    completions = args.images * group

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # The actor gets both cores, as the released-style loop in this process does.
        sam2_cfg = load_config(
            overrides=[*SAM2_TINY, "reward.num_cpus=2", f"reward.max_batch_groups={args.images}"]
        )
        pool_masks, pool_s, pool_stats = pool_run(sam2_cfg, requests)
        grabcut_cfg = load_config(overrides=["reward.segmenter=grabcut", "reward.num_cpus=2"])
        _, grabcut_s, _ = pool_run(grabcut_cfg, requests)
        default_frame = load_config(LOCAL_CPU).data.frame_size
        _, grabcut_small_s, _ = pool_run(grabcut_cfg, make_requests(args.images, group, default_frame))
    finally:
        ray.shutdown()
    released_masks, released_s, encodes = released_style(sam2_cfg, requests)

    differing = [int((a != b).sum()) for a, b in zip(pool_masks, released_masks)]
    ratio = released_s / pool_s
    print(
        f"{args.images} images x G={group} completions, SAM2 hiera_t random weights, CPU, frame {args.frame}"
    )
    print(f"released style: {released_s:7.1f} s  ({encodes} image encodes, one per completion and box)")
    print(
        f"reward pool   : {pool_s:7.1f} s  ({args.images} encodes; actor encode "
        f"{pool_stats['encode_s']:.1f} s, decode {pool_stats['decode_s']:.1f} s)"
    )
    pixels = sum(mask.size for mask in pool_masks)
    agreement = "identical" if not any(differing) else f"{sum(differing)} of {pixels} pixels differ"
    print(f"same masks    : {agreement}")
    print(
        f"speed-up      : {ratio:.2f}x  (goal >= 0.7 * G = {0.7 * group:.1f}: "
        f"{'met' if ratio >= 0.7 * group else 'NOT met'})"
    )
    print(
        f"grabcut pool  : {completions / grabcut_s:7.1f} masks/s  ({completions} masks in {grabcut_s:.2f} s, "
        f"frame {args.frame}); {completions / grabcut_small_s:.1f} masks/s at frame {default_frame}"
    )


if __name__ == "__main__":
    main()
