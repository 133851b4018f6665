"""RewardActor: scores batches of completion groups (parse -> segment -> metrics -> reward).

A plain class; the pool wraps it with `ray.remote(...).options(...)` using resources from `cfg.reward`.
It owns one heavy resource, the segmenter. Per group: every completion is parsed with the strict grammar
(a failure is reward 0 with its reason code, never an exception); all parsed completions are segmented in
ONE segmenter call, so the image is encoded once; masks are scored against the ground truth with the
paper's reward, and returned as COCO RLE when the request asks for them.
`baselines` scores the blind and oracle prompts (reward_server.baselines) through the same segmenter.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from reward_server import rle
from reward_server.baselines import (
    BaselineScores,
    baseline_masks,
    compute_baselines,
    mask_box,
    prompt_from_dict,
)
from reward_server.parse import FormatError, SegPrompt, parse_completion
from reward_server.scoring import box_giou, combine, score_masks
from reward_server.segmenters import Segmenter, build
from segr1.config import Config, RewardConfig
from segr1.faults import FaultHook
from segr1.protocol import GroupReward, RewardBreakdown, RewardRequest, resolve_arrays
from segr1.threads import thread_count


def build_segmenter(reward: RewardConfig, seed: int = 0) -> Segmenter:
    """The configured backend with its config group's options (`reward.sam2` or `reward.grabcut`)."""
    options = dataclasses.asdict(getattr(reward, reward.segmenter))
    return build(reward.segmenter, seed=seed, **options)


class RewardActor:
    """Turns RewardRequests into GroupRewards with one segmenter."""

    def __init__(self, cfg: Config, actor_id: str = "reward-0", segmenter: Segmenter | None = None) -> None:
        self.cfg = cfg
        self.actor_id = actor_id
        # Every actor builds the same segmenter (random test weights included: the seed is the run's).
        if segmenter is None:
            segmenter = build_segmenter(cfg.reward, seed=cfg.run.seed)
        self.segmenter = segmenter
        self._started = time.monotonic()
        self._counts: Counter[str] = Counter()
        self._seconds: Counter[str] = Counter()
        self._lock = threading.Lock()  # counters are updated from the scoring threads
        self._faults = FaultHook()  # fault drills (segr1.faults): armed by the controller, fired mid-call
        # reward.threads: GrabCut scores groups on that many threads, one segmenter each (it keeps per-call
        # timing; cv2 seeds its RNG per call and per thread, so masks do not depend on the thread count);
        # SAM2 gives the threads to torch. None keeps Ray's sizing (one group at a time).
        threads = thread_count(cfg.reward.threads, cfg.reward.num_cpus) if cfg.reward.threads is not None else 1
        self._pool: ThreadPoolExecutor | None = None
        if threads > 1 and self.segmenter.name == "grabcut":
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"{actor_id}-score")
            self._local = threading.local()
        elif cfg.reward.threads is not None:
            torch.set_num_threads(threads)

    def score(self, requests: list[RewardRequest]) -> list[GroupReward]:
        """Score each group; the results are in request order."""
        start = time.perf_counter()
        pixels = resolve_arrays([p for r in requests for p in (r.image, r.gt_mask)])  # one fetch for all refs
        requests = [dataclasses.replace(r, image=pixels[2 * i], gt_mask=pixels[2 * i + 1])
                    for i, r in enumerate(requests)]
        self._faults.fire("score")  # a drill: die or hang once the call has started
        if self._pool is not None and len(requests) > 1:
            results = list(self._pool.map(self._score_group, requests))
        else:
            results = [self._score_group(request) for request in requests]
        self._seconds["busy_s"] += time.perf_counter() - start
        return results

    def _thread_segmenter(self) -> Segmenter:
        """This thread's segmenter: the actor's own one outside the scoring pool, a private one inside it."""
        if self._pool is None or threading.current_thread() is threading.main_thread():
            return self.segmenter
        if not hasattr(self._local, "segmenter"):
            self._local.segmenter = build_segmenter(self.cfg.reward, seed=self.cfg.run.seed)
        return self._local.segmenter

    def baselines(
        self, train_images: list[np.ndarray], train_masks: list[np.ndarray], eval_images: list[np.ndarray],
        eval_masks: list[np.ndarray], frame: int,
    ) -> BaselineScores:
        """The blind prompt chosen on the training images, and blind and oracle IoUs on the eval images."""
        start = time.perf_counter()
        scores = compute_baselines(self.segmenter, train_images, train_masks, eval_images, eval_masks, frame)
        self._seconds["baselines_s"] += time.perf_counter() - start
        return scores

    def baseline_masks(self, images: list[Any], masks: list[Any], blind: dict[str, Any]) -> list[list[rle.RLE]]:
        """[blind mask, oracle mask] as RLEs for each (image, GT) in the frame: the blind prompt (as
        baselines.prompt_to_dict writes it) and the GT's oracle prompt through this actor's segmenter."""
        start = time.perf_counter()
        pixels = resolve_arrays([*images, *masks])  # ArrayRefs: one object-store fetch for all
        prompt, count = prompt_from_dict(blind), len(images)
        out = [rle.encode_masks(baseline_masks(self.segmenter, pixels[i], pixels[count + i], prompt))
               for i in range(count)]
        self._seconds["baselines_s"] += time.perf_counter() - start
        return out

    def health(self) -> dict[str, Any]:
        return {"actor_id": self.actor_id, "ok": True, "segmenter": self.segmenter.name, "pid": os.getpid()}

    def stats(self) -> dict[str, Any]:
        """Totals since the actor started: groups, completions, failures per reason code, seconds."""
        return {
            "actor_id": self.actor_id,
            "uptime_s": time.monotonic() - self._started,
            "groups": self._counts["groups"],
            "completions": self._counts["completions"],
            "masks": self._counts["masks"],
            "reasons": {
                key.removeprefix("reason/"): n for key, n in self._counts.items() if key.startswith("reason/")
            },
            **dict(self._seconds),
        }

    def arm_fault(self, stage: str, action: str) -> None:
        """Fault drill: `action` (die | hang) inside this actor's next `stage` call (score)."""
        self._faults.arm(stage, action)

    # ------------------------------------------------------------------------------------------ one group
    def _score_group(self, request: RewardRequest) -> GroupReward:
        image, gt = _checked_inputs(request)
        height, width = gt.shape
        parsed: dict[int, SegPrompt] = {}
        reasons: dict[int, str] = {}
        for index, text in enumerate(request.texts):
            try:
                parsed[index] = self._parse(text, width, height)
            except FormatError as error:
                reasons[index] = error.code

        masks = np.zeros((len(request.texts), height, width), dtype=bool)  # [G, H, W]
        encode_s = decode_s = 0.0
        if parsed:
            order = sorted(parsed)
            segmenter = self._thread_segmenter()
            masks[order] = segmenter.segment(image, [parsed[i] for i in order])  # one encode per group
            encode_s, decode_s = segmenter.last_timing.encode_s, segmenter.last_timing.decode_s

        breakdowns = self._breakdowns(masks, gt, parsed, reasons)
        with self._lock:
            self._counts.update(groups=1, completions=len(request.texts), masks=len(parsed))
            self._counts.update(f"reason/{code}" for code in reasons.values())
            self._seconds.update(encode_s=encode_s, decode_s=decode_s)
        return GroupReward(
            group_id=request.group_id,
            breakdowns=breakdowns,
            masks_rle=rle.encode_masks(masks) if request.return_masks else None,
            encode_s=encode_s,
            decode_s=decode_s,
            actor_id=self.actor_id,
        )

    def _parse(self, text: str, width: int, height: int) -> SegPrompt:
        return parse_completion(text, width, height, **self.cfg.reward.parse_options())

    def _breakdowns(
        self, masks: np.ndarray, gt: np.ndarray, parsed: dict[int, SegPrompt], reasons: dict[int, str]
    ) -> list[RewardBreakdown]:
        """Reward parts per completion; one that did not parse scores 0 with its reason code."""
        reward = self.cfg.reward
        count = masks.shape[0]
        gt_box = mask_box(gt)  # once per group: every completion is graded against the same GT box
        ious, s_values = score_masks(
            torch.from_numpy(masks),  # [G, H, W]
            torch.from_numpy(gt).expand(count, *gt.shape),  # [G, H, W], a view: one GT for the group
            s_alpha=reward.s_alpha,
            segr1_bug_compat=reward.segr1_bug_compat,
        )
        return combine(
            [index in parsed for index in range(count)],
            ious,
            s_values,
            [reasons.get(index, "") for index in range(count)],
            w_format=reward.w_format,
            w_iou=reward.w_iou,
            w_s=reward.w_s,
            box=[box_giou(parsed[index].boxes, gt_box) if index in parsed else 0.0 for index in range(count)],
            w_box=reward.w_box,
        )


def _checked_inputs(request: RewardRequest) -> tuple[np.ndarray, np.ndarray]:
    """The request's image and GT as arrays of matching frames; a clear error names the group otherwise."""
    image, gt = np.asarray(request.image), np.asarray(request.gt_mask)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype}{list(image.shape)}"
        raise ValueError(f"group {request.group_id!r}: image must be uint8[H, W, 3], got {got}")
    if gt.shape != image.shape[:2]:
        frame = list(image.shape[:2])
        raise ValueError(f"group {request.group_id!r}: gt_mask shape {list(gt.shape)} != image frame {frame}")
    return image, np.array(gt, dtype=bool)  # a writable copy: arrays from Ray's object store are read-only
