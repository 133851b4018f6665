"""Bring a prediction made in the square training frame back to the ground truth's original size.

The model and the segmenter work in an F x F frame (aspect ratio not kept); scoring is done at the GT's
original H x W, as the benchmarks define it. The mask is resized bilinearly and re-binarised at >127, the
same rule that brought the GT into the frame, so a round trip does not grow or shrink objects.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_original_size(mask_frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool[F, F] (any square or rectangular frame) -> uint8[H, W] in {0, 255}, with size = (H, W)."""
    height, width = size
    if mask_frame.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask_frame.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"bad original size {size}")
    as_uint8 = np.where(mask_frame, 255, 0).astype(np.uint8)
    resized = cv2.resize(as_uint8, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(resized > 127, 255, 0).astype(np.uint8)
