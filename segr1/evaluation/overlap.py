"""Referring / reasoning segmentation metrics: cIoU and gIoU.

    cIoU = sum_i |P_i & G_i| / sum_i |P_i | G_i|      (cumulative: large objects weigh more)
    gIoU = mean_i |P_i & G_i| / |P_i | G_i|            (per-sample, then averaged)
A sample whose prediction and GT are both empty has IoU 1. Pixels marked "ignore" (ReasonSeg) are left out
of both the intersection and the union.
"""

from __future__ import annotations

import numpy as np


def intersection_union(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int]:
    """Pixel counts |P & G| and |P | G| over the pixels not ignored. All bool[H, W]."""
    if pred.shape != gt.shape or (ignore is not None and ignore.shape != gt.shape):
        shapes = (pred.shape, gt.shape, None if ignore is None else ignore.shape)
        raise ValueError(f"pred, gt and ignore must have one shape, got {shapes}")
    pred, gt = pred.astype(bool), gt.astype(bool)
    scored = np.ones_like(gt) if ignore is None else ~ignore.astype(bool)
    return int(np.count_nonzero(pred & gt & scored)), int(np.count_nonzero((pred | gt) & scored))


def sample_iou(intersection: int, union: int) -> float:
    """IoU of one sample; an empty union (empty prediction on an empty GT) is a perfect 1."""
    return 1.0 if union == 0 else intersection / union


class OverlapMetrics:
    """Accumulates cIoU and gIoU over samples; `results()` gives {"cIoU", "gIoU"} as fractions in [0, 1]."""

    def __init__(self) -> None:
        self.total_intersection = 0
        self.total_union = 0
        self.ious: list[float] = []

    @property
    def count(self) -> int:
        return len(self.ious)

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
        """Add one sample (bool[H, W] each); returns its IoU."""
        intersection, union = intersection_union(pred, gt, ignore)
        self.total_intersection += intersection
        self.total_union += union
        self.ious.append(sample_iou(intersection, union))
        return self.ious[-1]

    def results(self) -> dict[str, float]:
        if not self.ious:
            raise ValueError("no predictions were scored")
        cumulative = sample_iou(self.total_intersection, self.total_union)
        return {"cIoU": cumulative, "gIoU": float(np.mean(self.ious))}
