"""GrabCut segmenter (OpenCV): the CPU backend, with a real signal on real and synthetic images.

Each box initialises one GrabCut run: outside the box is sure background, inside probably foreground;
positive points (small disks) are sure foreground and negative points sure background. The mask of a prompt
set is the union over its boxes. A points-only prompt (pre-RL grammar) starts from "probably background"
everywhere, so the colour model grows the foreground from its positive points.

Each run sees only its box plus a band of context around it: pixels far outside a box are sure background
anyway, and the local band gives a background colour model of what surrounds the object, at a fraction of
the cost of the full frame.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np

from reward_server.parse import Box, Point, SegPrompt, assign_points_to_boxes
from reward_server.segmenters.base import SegmentTiming, check_image


class GrabCutSegmenter:
    """One GrabCut per (prompt set, box); deterministic (OpenCV's RNG is reseeded before every run)."""

    name = "grabcut"

    def __init__(
        self, iterations: int = 5, margin: int = 0, context: float = 1.0, point_radius: int = 3, seed: int = 0
    ) -> None:
        if iterations < 1:
            raise ValueError(f"grabcut iterations must be >= 1, got {iterations}")
        if margin < 0 or context < 0 or point_radius < 0:
            got = f"{margin}, {context}, {point_radius}"
            raise ValueError(f"grabcut margin, context, point_radius must be >= 0, got {got}")
        self.iterations = iterations
        self.margin = margin
        self.context = context
        self.point_radius = point_radius
        self.seed = seed
        self.last_timing = SegmentTiming()

    def segment(
        self, image: np.ndarray, prompts: Sequence[SegPrompt], *, image_id: str | None = None
    ) -> np.ndarray:
        """image uint8[H, W, 3] RGB, N prompt sets -> bool[N, H, W]."""
        height, width = check_image(image)
        image = np.ascontiguousarray(image)
        start = time.perf_counter()
        masks = np.zeros((len(prompts), height, width), dtype=bool)  # [N, H, W]
        for index, prompt in enumerate(prompts):
            for box, points, labels in assign_points_to_boxes(prompt):
                if box is None and not any(labels):
                    continue  # no box and no foreground point: nothing can be foreground
                self._segment_one(image, box, points, labels, out=masks[index])
        # GrabCut has no separate image encoding: all its time is per-prompt work.
        self.last_timing = SegmentTiming(encode_s=0.0, decode_s=time.perf_counter() - start)
        return masks

    def _segment_one(
        self, image: np.ndarray, box: Box | None, points: list[Point], labels: list[int], out: np.ndarray
    ) -> None:
        """OR the GrabCut mask of one box (or of points alone) into out bool[H, W]."""
        height, width = out.shape
        if box is None:
            top, left, bottom, right = 0, 0, height, width
            init = np.full((height, width), cv2.GC_PR_BGD, dtype=np.uint8)
        else:
            x1, y1, x2, y2 = box
            x1, y1 = max(x1 - self.margin, 0), max(y1 - self.margin, 0)
            x2, y2 = min(x2 + self.margin, width - 1), min(y2 + self.margin, height - 1)
            band_x, band_y = int(self.context * (x2 - x1 + 1)) + 1, int(self.context * (y2 - y1 + 1)) + 1
            top, left = max(y1 - band_y, 0), max(x1 - band_x, 0)
            bottom, right = min(y2 + band_y + 1, height), min(x2 + band_x + 1, width)
            init = np.full((bottom - top, right - left), cv2.GC_BGD, dtype=np.uint8)
            init[y1 - top : y2 - top + 1, x1 - left : x2 - left + 1] = cv2.GC_PR_FGD
        for (x, y), label in zip(points, labels):
            value = cv2.GC_FGD if label == 1 else cv2.GC_BGD
            cv2.circle(init, (x - left, y - top), self.point_radius, value, thickness=-1)

        crop = np.ascontiguousarray(image[top:bottom, left:right])
        out[top:bottom, left:right] |= self._grabcut(crop, init)

    def _grabcut(self, crop: np.ndarray, init: np.ndarray) -> np.ndarray:
        """GrabCut from a label map; where it cannot run (no background or no foreground), keep the init."""
        foreground = (init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)
        if foreground.all() or not foreground.any():
            return foreground  # GrabCut needs samples of both classes to fit its colour models
        labels = init.copy()
        cv2.setRNGSeed(self.seed)  # its k-means initialisation draws from OpenCV's RNG
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(
                crop, labels, None, background_model, foreground_model, self.iterations, cv2.GC_INIT_WITH_MASK
            )
        except cv2.error:
            return foreground  # too few pixels of a class for its colour mixture (tiny boxes)
        return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
