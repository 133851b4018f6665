"""Binary masks <-> COCO run-length encoding (pycocotools), the form masks take when they cross Ray.

`counts` is kept as an ASCII `str` (not bytes) so an RLE is plain JSON: it can go into eval.json or a log
as is, and pycocotools decodes either form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

RLE = dict[str, Any]  # {"size": [H, W], "counts": str}


def encode_masks(masks: np.ndarray) -> list[RLE]:
    """bool[N, H, W] -> N RLEs (pycocotools wants column-major uint8 [H, W, N])."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    stacked = np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8))  # [H, W, N]
    return [_as_json(rle) for rle in coco_mask.encode(stacked)]


def encode_mask(mask: np.ndarray) -> RLE:
    """bool[H, W] -> one RLE."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    return _as_json(coco_mask.encode(np.asfortranarray(mask.astype(np.uint8))))


def decode_mask(rle: RLE) -> np.ndarray:
    """One RLE -> bool[H, W]."""
    if "size" not in rle or "counts" not in rle:
        raise ValueError(f"an RLE needs 'size' and 'counts', got keys {sorted(rle)}")
    return coco_mask.decode(rle).astype(bool)


def decode_masks(rles: Sequence[RLE]) -> np.ndarray:
    """N RLEs of one size -> bool[N, H, W]."""
    if not rles:
        raise ValueError("decode_masks needs at least one RLE (the frame size comes from them)")
    return np.stack([decode_mask(rle) for rle in rles])


def _as_json(rle: RLE) -> RLE:
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
