"""Overlay images: what the policy prompted and what came out, drawn over the input image.

    overlay = render_overlay(image, gt, pred, boxes=[(10, 10, 60, 60)], points=[(30, 30)], labels=[1])
    save_overlay(overlay, overlay_path(run_dir, step=10, sample_id="synth-0003"))

Drawn in this order, so later marks stay visible on top of earlier ones:
predicted mask tinted (PRED_TINT at PRED_ALPHA), ground-truth contour (GT_COLOUR), prompt boxes
(BOX_COLOUR), positive points as filled discs (POSITIVE_COLOUR), negative points as crosses
(NEGATIVE_COLOUR). All colours are RGB; images are RGB throughout the project.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

GT_COLOUR = (0, 255, 0)
PRED_TINT = (0, 110, 255)
PRED_ALPHA = 0.45
BOX_COLOUR = (255, 215, 0)
POSITIVE_COLOUR = (0, 255, 255)
NEGATIVE_COLOUR = (255, 0, 0)

IMAGES_DIR = "images"  # under the run directory

_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def line_thickness(height: int, width: int) -> int:
    """Lines ~1/256 of the short side: visible at 768 px without hiding a 112 px image."""
    return max(1, round(min(height, width) / 256))


def _check_mask(name: str, mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape != (height, width):
        raise ValueError(
            f"{name}: expected a mask of shape {(height, width)} to match the image, got {mask.shape}"
        )
    return mask.astype(bool, copy=False)


def render_overlay(
    image: np.ndarray,  # uint8[H, W, 3] RGB
    gt: np.ndarray,  # bool[H, W]
    pred: np.ndarray,  # bool[H, W]
    boxes: Sequence[tuple[int, int, int, int]] = (),  # (x1, y1, x2, y2) pixels, inclusive
    points: Sequence[tuple[int, int]] = (),  # (x, y) pixels
    labels: Sequence[int] = (),  # 1 = foreground point, 0 = background point
) -> np.ndarray:  # uint8[H, W, 3] RGB, a new array
    """Draw GT contour, predicted mask, boxes and points over a copy of `image`."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    if len(points) != len(labels):
        raise ValueError(f"points/labels: {len(points)} points but {len(labels)} labels")
    height, width = image.shape[:2]
    gt = _check_mask("gt", gt, height, width)
    pred = _check_mask("pred", pred, height, width)
    thickness = line_thickness(height, width)

    canvas = np.ascontiguousarray(image).copy()
    tint = np.array(PRED_TINT, dtype=np.float32)
    canvas[pred] = np.rint((1 - PRED_ALPHA) * canvas[pred] + PRED_ALPHA * tint).astype(np.uint8)

    contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, GT_COLOUR, thickness)

    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), BOX_COLOUR, thickness)

    radius = 2 * thickness + 1
    for (x, y), label in zip(points, labels):
        centre = (int(x), int(y))
        if label == 1:
            cv2.circle(canvas, centre, radius, POSITIVE_COLOUR, thickness=-1)
        else:
            cv2.drawMarker(
                canvas, centre, NEGATIVE_COLOUR, cv2.MARKER_TILTED_CROSS, 2 * radius + 1, thickness
            )
    return canvas


def overlay_path(run_dir: str | Path, step: int, sample_id: str) -> Path:
    """runs/<name>/images/step_<N>_<sample>.png, with the sample id made filename-safe."""
    safe_id = _UNSAFE_FILENAME_CHARS.sub("_", sample_id) or "sample"
    return Path(run_dir) / IMAGES_DIR / f"step_{step}_{safe_id}.png"


def save_overlay(image: np.ndarray, path: str | Path) -> Path:  # image: uint8[H, W, 3] RGB
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):  # cv2 writes BGR
        raise OSError(f"{path}: cv2 could not write the PNG")
    return path
