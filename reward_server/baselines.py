"""Blind and oracle baselines: what a fixed prompt, and what the ground-truth box, get through the segmenter.

A policy's held-out IoU means little alone: a prompt that never looks at the image can already score well
(a constant near-full-frame box on easy data), and the segmenter caps what any prompt can reach. So every
evaluation reports, through the run's own segmenter:

- **blind**: the best *image-independent* prompt. The family (`blind_candidates`) is square boxes of
  `BOX_SIZES` (fractions of the frame side) at every combination of {start, centre, end} alignment in x and
  y, plus the mean ground-truth box of the training sample, each with and without a positive point at the
  box centre. `choose_blind_prompt` picks the candidate with the highest mean IoU on TRAINING images (the
  first one on ties), so the eval set never tunes it.
- **oracle**: `oracle_prompt(mask)` = the GT's bounding box plus one positive point at the pixel deepest
  inside the mask (largest distance to the background, `cv2.distanceTransform`).

    blind = choose_blind_prompt(segmenter, train_images, train_masks, frame=112)
    blind_iou, oracle_iou = baseline_ious(segmenter, eval_images, eval_masks, blind)   # float64[N] each
    gain = localisation_gain(policy_iou, blind_iou.mean(), oracle_iou.mean())
    # or both steps, as the reward actor runs them, into one record:
    scores = compute_baselines(segmenter, train_images, train_masks, eval_images, eval_masks, frame=112)

IoU is `reward_server.metrics.iou` (0 when prediction and GT are both empty), the reward's and eval/iou's rule.

Cost: choosing segments every candidate on every training image, one `segment` call per image (SAM2
encodes the image once for all candidates). With `FAMILY_SIZE` = 58 candidates, GrabCut (~13 ms per box at
112 px) costs about 0.75 s per image; `max_segments` (default `MAX_SEGMENTS`) caps candidates x images, so
choosing never exceeds ~2048 GrabCut runs (~30 s on one CPU core at 112 px) whatever the sample size asked.
Scoring an eval set is one call of two prompts per image. Results are meant to be computed once per
(eval set, segmenter, frame) and kept in `BaselineCache` (runs/<name>/baselines.json).

Pure: numpy, OpenCV and torch (for the metric); no Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from reward_server.metrics import iou
from reward_server.parse import Box, SegPrompt
from reward_server.segmenters.base import Segmenter

BOX_SIZES = (0.25, 0.5, 0.75, 1.0)  # box side as a fraction of the frame side
ALIGNMENTS = (0.0, 0.5, 1.0)  # where the box sits along an axis: start, centre, end of the free range
MAX_SEGMENTS = 2048  # candidates x training images segmented when choosing the blind prompt
# Bumped whenever the family or the choice rule changes, so cached baselines of an older rule are not reused.
FAMILY_VERSION = 1


# ------------------------------------------------------------------------------------------------- prompts
def mask_box(mask: np.ndarray) -> Box | None:
    """Tight bounding box (x1, y1, x2, y2), inclusive pixels, of bool[H, W]; None for an empty mask.

    A one-pixel-wide side is widened by one pixel (inside the frame), since prompts need x1 < x2, y1 < y2.
    """
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    height, width = mask.shape
    x1, x2 = _widen(int(xs.min()), int(xs.max()), width)
    y1, y2 = _widen(int(ys.min()), int(ys.max()), height)
    return (x1, y1, x2, y2)


def _widen(low: int, high: int, size: int) -> tuple[int, int]:
    if low < high or size < 2:
        return low, high
    return (low, high + 1) if high + 1 < size else (low - 1, high)


def mean_box(masks: Sequence[np.ndarray]) -> Box | None:
    """The mean of the masks' bounding boxes (corner by corner, rounded); empty masks are skipped."""
    boxes = [box for box in (mask_box(np.asarray(m, dtype=bool)) for m in masks) if box is not None]
    if not boxes:
        return None
    x1, y1, x2, y2 = (round(v) for v in np.mean(np.array(boxes, dtype=np.float64), axis=0).tolist())
    return (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))


def _centre(box: Box) -> tuple[int, int]:
    x1, y1, x2, y2 = box
    return ((x1 + x2) // 2, (y1 + y2) // 2)


def box_prompt(box: Box, with_centre_point: bool) -> SegPrompt:
    """A prompt of one box, optionally with a positive point at its centre."""
    if with_centre_point:
        return SegPrompt(think="", boxes=[box], points=[_centre(box)], labels=[1])
    return SegPrompt(think="", boxes=[box], points=[], labels=[])


def _grid_boxes(frame: int) -> list[Box]:
    boxes: list[Box] = []
    for size in BOX_SIZES:
        side = max(2, round(size * frame))
        free = frame - side
        for ay in ALIGNMENTS:
            for ax in ALIGNMENTS:
                x1, y1 = round(ax * free), round(ay * free)
                box = (x1, y1, x1 + side - 1, y1 + side - 1)
                if box not in boxes:  # the full-frame box has one position only
                    boxes.append(box)
    return boxes


def blind_candidates(frame: int, mean_gt_box: Box | None = None) -> list[SegPrompt]:
    """The image-independent prompts for a frame x frame image: grid boxes (and the mean GT box, if given),
    each without and with a centre point. Deterministic order (the choice takes the first on ties)."""
    if frame < 2:
        raise ValueError(f"frame must be >= 2 pixels, got {frame}")
    boxes = _grid_boxes(frame)
    if mean_gt_box is not None and mean_gt_box not in boxes:
        boxes.append(tuple(int(v) for v in mean_gt_box))  # type: ignore[arg-type]
    return [box_prompt(box, point) for box in boxes for point in (False, True)]


FAMILY_SIZE = 2 * (len(_grid_boxes(112)) + 1)  # 58: the family with a mean GT box (frames >= 8 px)


def oracle_prompt(mask: np.ndarray) -> SegPrompt:
    """The GT's bounding box plus a positive point at the mask pixel farthest from the background.

    Raises ValueError for an empty mask (no box exists)."""
    mask = np.asarray(mask, dtype=bool)
    box = mask_box(mask)
    if box is None:
        raise ValueError("oracle_prompt: the mask is empty")
    # Pad with background so the frame border counts as the object's edge.
    padded = np.pad(mask, 1).astype(np.uint8)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)  # first deepest pixel, row-major
    return SegPrompt(think="", boxes=[box], points=[(int(x), int(y))], labels=[1])


# ------------------------------------------------------------------------------------------------- scoring
def _ious(masks: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """float64[N] IoU of bool[N, H, W] against one bool[H, W]."""
    # copies: arrays from Ray's object store are read-only, which torch.from_numpy warns about
    pred = torch.from_numpy(np.array(masks, dtype=bool))
    truth = torch.from_numpy(np.array(gt, dtype=bool)).expand_as(pred)
    return iou(pred, truth).numpy()


def _checked(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], frame: int | None = None) -> None:
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    for index, (image, mask) in enumerate(zip(images, masks)):
        if image.shape[:2] != mask.shape:
            raise ValueError(f"sample {index}: image {image.shape[:2]} and mask {mask.shape} differ in size")
        if frame is not None and mask.shape != (frame, frame):
            raise ValueError(f"sample {index}: expected a {frame}x{frame} frame, got {mask.shape}")


def score_candidates(
    segmenter: Segmenter, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
    candidates: Sequence[SegPrompt],
) -> np.ndarray:
    """Mean IoU of each candidate over the images: float64[C]. One segment call per image."""
    _checked(images, masks)
    if not images:
        raise ValueError("score_candidates: no images")
    total = np.zeros(len(candidates), dtype=np.float64)
    for image, mask in zip(images, masks):
        total += _ious(segmenter.segment(image, list(candidates)), mask)
    return total / len(images)


def choose_blind_prompt(
    segmenter: Segmenter, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], frame: int,
    *, max_segments: int = MAX_SEGMENTS,
) -> SegPrompt:
    """The blind candidate with the best mean IoU on (training) images of frame x frame pixels.

    The mean GT box is taken over all given masks; only the first max_segments // len(family) images are
    segmented (at least one), which bounds the cost whatever sample is given."""
    return _choose(segmenter, images, masks, frame, max_segments)[0]


def _choose(segmenter: Segmenter, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], frame: int,
            max_segments: int) -> tuple[SegPrompt, int]:
    """(the best blind prompt, how many images were segmented to choose it)."""
    _checked(images, masks, frame)
    if not images:
        raise ValueError("choose_blind_prompt: no images")
    candidates = blind_candidates(frame, mean_box(masks))
    count = max(1, min(len(images), max_segments // len(candidates)))
    scores = score_candidates(segmenter, images[:count], masks[:count], candidates)
    return candidates[int(np.argmax(scores))], count


def baseline_masks(segmenter: Segmenter, image: np.ndarray, mask: np.ndarray, blind: SegPrompt) -> np.ndarray:
    """bool[2, H, W]: the blind prompt's mask and the oracle's, from one segment call (one image encoding).

    For an empty GT the oracle predicts nothing (its mask is all background)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        out = np.zeros((2, *mask.shape), dtype=bool)
        out[0] = segmenter.segment(image, [blind])[0]
        return out
    return segmenter.segment(image, [blind, oracle_prompt(mask)])


def baseline_ious(
    segmenter: Segmenter, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], blind: SegPrompt
) -> tuple[np.ndarray, np.ndarray]:
    """(blind IoU float64[N], oracle IoU float64[N]) on each image."""
    _checked(images, masks)
    blind_iou = np.zeros(len(images), dtype=np.float64)
    oracle_iou = np.zeros(len(images), dtype=np.float64)
    for index, (image, mask) in enumerate(zip(images, masks)):
        blind_iou[index], oracle_iou[index] = _ious(baseline_masks(segmenter, image, mask, blind), mask)
    return blind_iou, oracle_iou


def localisation_gain(policy_iou: float, blind_iou: float, oracle_iou: float) -> float:
    """(policy - blind) / (oracle - blind): 0 = no better than a fixed prompt, 1 = as good as the GT box.

    NaN when the oracle does not beat the blind prompt (the data leave nothing to localise)."""
    span = oracle_iou - blind_iou
    return (policy_iou - blind_iou) / span if span > 1e-9 else math.nan


# ------------------------------------------------------------------------------------------------- record
@dataclass(frozen=True)
class BaselineScores:
    """The baselines of one eval set: the blind prompt used, and per-sample IoUs in eval-set order."""

    blind: SegPrompt
    blind_iou: tuple[float, ...]  # [N]
    oracle_iou: tuple[float, ...]  # [N]
    chosen_on: int  # training images segmented to choose the blind prompt
    seconds: float = 0.0  # time it took to compute

    @property
    def mean_blind(self) -> float:
        return float(np.mean(self.blind_iou)) if self.blind_iou else 0.0

    @property
    def mean_oracle(self) -> float:
        return float(np.mean(self.oracle_iou)) if self.oracle_iou else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"blind": prompt_to_dict(self.blind), "blind_iou": list(self.blind_iou),
                "oracle_iou": list(self.oracle_iou), "chosen_on": self.chosen_on, "seconds": self.seconds,
                "mean_blind": self.mean_blind, "mean_oracle": self.mean_oracle}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> BaselineScores:
        return cls(prompt_from_dict(record["blind"]), tuple(record["blind_iou"]), tuple(record["oracle_iou"]),
                   int(record["chosen_on"]), float(record.get("seconds", 0.0)))


def compute_baselines(
    segmenter: Segmenter, train_images: Sequence[np.ndarray], train_masks: Sequence[np.ndarray],
    eval_images: Sequence[np.ndarray], eval_masks: Sequence[np.ndarray], frame: int,
    *, max_segments: int = MAX_SEGMENTS,
) -> BaselineScores:
    """Choose the blind prompt on the training images, then score it and the oracle on the eval images."""
    start = time.perf_counter()
    blind, chosen_on = _choose(segmenter, train_images, train_masks, frame, max_segments)
    blind_iou, oracle_iou = baseline_ious(segmenter, eval_images, eval_masks, blind)
    return BaselineScores(blind, tuple(blind_iou.tolist()), tuple(oracle_iou.tolist()), chosen_on,
                          time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------- caching
def prompt_to_dict(prompt: SegPrompt) -> dict[str, Any]:
    return {"boxes": [list(b) for b in prompt.boxes], "points": [list(p) for p in prompt.points],
            "labels": list(prompt.labels)}


def prompt_from_dict(record: Mapping[str, Any]) -> SegPrompt:
    return SegPrompt(think="", boxes=[tuple(b) for b in record["boxes"]],  # type: ignore[misc]
                     points=[tuple(p) for p in record["points"]], labels=list(record["labels"]))  # type: ignore[misc]


def arrays_digest(arrays: Sequence[np.ndarray]) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes: identifies an image or mask set by content."""
    sha = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        sha.update(f"{array.dtype}{array.shape}".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def cache_key(**parts: Any) -> str:
    """A short hash of JSON-able parts (eval set digest, segmenter name and options, frame, ...)."""
    text = json.dumps({"family_version": FAMILY_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BaselineCache:
    """Baseline records by cache key in one JSON file (runs/<name>/baselines.json); survives resume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            return {}  # a torn write from a killed run: recompute rather than fail the run
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read().get(key)

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        data = self._read()
        data[key] = dict(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)  # atomic: readers see the old or the new file, never half of one
