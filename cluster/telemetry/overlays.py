"""Overlay images: what the policy prompted and what came out, drawn over the input image.

    overlay = render_overlay(image, gt, pred, boxes=[(10, 10, 60, 60)], points=[(30, 30)], labels=[1])
    panel = render_panel(image, gt, pred, boxes, points, labels, caption="synth-0003  IoU 0.71")
    save_overlay(panel, overlay_path(run_dir, step=10, sample_id="synth-0003"))

`render_overlay` draws at the image's own size. `render_panel` is what a person reads: the image upscaled
(nearest neighbour, by a whole factor) to at least MIN_PANEL_SIDE pixels, the same marks drawn at that size,
and a strip below with an optional caption and a legend of the marks.

Drawn in this order, so later marks stay visible on top of earlier ones:
predicted mask tinted (PRED_TINT at PRED_ALPHA) and outlined in PRED_TINT (so a tinted prediction is not
mistaken for a bluish object of the image), ground-truth contour (GT_COLOUR), prompt boxes
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
MIN_PANEL_SIDE = 384  # a 112 px training frame becomes 448 px: every pixel a 4x4 block, marks readable
LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (0, 0, 0)
# (label, how its swatch is drawn) in the order the marks are drawn
LEGEND = (("ground truth", "contour"), ("predicted mask", "tint"), ("box", "box"),
          ("+ point", "positive"), ("- point", "negative"))
_FONT = cv2.FONT_HERSHEY_SIMPLEX

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

    outline, _ = cv2.findContours(pred.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, outline, -1, PRED_TINT, thickness)
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


def render_panel(
    image: np.ndarray,  # uint8[H, W, 3] RGB
    gt: np.ndarray,  # bool[H, W]
    pred: np.ndarray,  # bool[H, W]
    boxes: Sequence[tuple[int, int, int, int]] = (),
    points: Sequence[tuple[int, int]] = (),
    labels: Sequence[int] = (),
    *,
    caption: str = "",
    min_side: int = MIN_PANEL_SIDE,
) -> np.ndarray:  # uint8[k*H + strip, k*W, 3] RGB
    """The overlay upscaled by k = ceil(min_side / min(H, W)) (nearest), with a legend strip below."""
    height, width = image.shape[:2]
    k = max(1, -(-min_side // min(height, width)))

    def big(a: np.ndarray) -> np.ndarray:  # nearest-neighbour upscale by k
        return np.repeat(np.repeat(a, k, axis=0), k, axis=1)

    # An inclusive pixel box covers k*x1 .. k*(x2+1)-1 once scaled; a point sits at its pixel's centre.
    scaled_boxes = [(k * x1, k * y1, k * (x2 + 1) - 1, k * (y2 + 1) - 1) for x1, y1, x2, y2 in boxes]
    scaled_points = [(k * x + k // 2, k * y + k // 2) for x, y in points]
    drawn = render_overlay(big(image), big(np.asarray(gt, bool)), big(np.asarray(pred, bool)), scaled_boxes,
                           scaled_points, labels)
    return np.concatenate([drawn, legend_strip(drawn.shape[1], caption)], axis=0)


def legend_strip(width: int, caption: str = "") -> np.ndarray:  # uint8[h, width, 3] RGB
    """White strip with the caption (if any) on its first line, then one swatch and label per mark,
    wrapped onto as many lines as the width needs."""
    scale = max(0.4, width / 900)
    thickness = max(1, round(scale * 1.5))
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line_h = text_h + baseline + 8
    swatch = text_h + 2
    items = [(label, kind, cv2.getTextSize(label, _FONT, scale, thickness)[0][0]) for label, kind in LEGEND]
    rows: list[list[tuple[str, str, int]]] = [[]]
    used = 6
    for item in items:
        need = swatch + 6 + item[2] + 16
        if rows[-1] and used + need > width:
            rows.append([])
            used = 6
        rows[-1].append(item)
        used += need
    caption_lines = _wrap(caption, width - 12, scale, thickness)
    strip = np.full((line_h * (len(caption_lines) + len(rows)) + 4, width, 3), LEGEND_BACKGROUND, np.uint8)
    y = line_h - baseline - 2
    for line in caption_lines:
        cv2.putText(strip, line, (6, y), _FONT, scale, LEGEND_TEXT, thickness, cv2.LINE_AA)
        y += line_h
    for row in rows:
        x = 6
        for label, kind, text_w in row:
            _swatch(strip, kind, x, y - text_h, swatch, thickness)
            cv2.putText(strip, label, (x + swatch + 6, y), _FONT, scale, LEGEND_TEXT, thickness, cv2.LINE_AA)
            x += swatch + 6 + text_w + 16
        y += line_h
    return strip


def _wrap(text: str, width: int, scale: float, thickness: int) -> list[str]:
    """Words of `text` on lines no wider than `width` pixels (a longer single word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(joined, _FONT, scale, thickness)[0][0] <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


def _swatch(canvas: np.ndarray, kind: str, x: int, y: int, size: int, thickness: int) -> None:
    """A size x size sample of a mark at (x, y), top-left."""
    far = (x + size - 1, y + size - 1)
    centre, radius = (x + size // 2, y + size // 2), size // 2
    if kind == "contour":
        cv2.rectangle(canvas, (x, y), far, GT_COLOUR, thickness)
    elif kind == "tint":
        area = canvas[y : y + size, x : x + size]
        area[:] = np.rint((1 - PRED_ALPHA) * area + PRED_ALPHA * np.array(PRED_TINT, np.float32)).astype(np.uint8)
        cv2.rectangle(canvas, (x, y), far, PRED_TINT, thickness)
    elif kind == "box":
        cv2.rectangle(canvas, (x, y), far, BOX_COLOUR, thickness)
    elif kind == "positive":
        cv2.circle(canvas, centre, radius, POSITIVE_COLOUR, thickness=-1)
    else:
        cv2.drawMarker(canvas, centre, NEGATIVE_COLOUR, cv2.MARKER_TILTED_CROSS, size, thickness)


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
