"""The segmenter interface: one image, many prompt sets -> one mask per prompt set.

A segmenter turns the prompts parsed from G completions of one group into G binary masks. Every backend
encodes (or models) the image once per call and decodes all prompt sets against it; each mask is the union
over its prompt set's boxes, with points sent to the boxes that contain them (`parse.assign_points_to_boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from reward_server.parse import SegPrompt


@dataclass(frozen=True)
class SegmentTiming:
    """Seconds spent in the last `segment` call: image encoding (0 on an embedding-cache hit) and decoding."""

    encode_s: float = 0.0
    decode_s: float = 0.0
    cache_hit: bool = False


@runtime_checkable
class Segmenter(Protocol):
    """What the reward actor needs from a segmentation backend."""

    name: str
    last_timing: SegmentTiming

    def segment(
        self, image: np.ndarray, prompts: Sequence[SegPrompt], *, image_id: str | None = None
    ) -> np.ndarray:
        """image uint8[H, W, 3] RGB, N prompt sets -> bool[N, H, W]. `image_id` keys any embedding cache."""
        ...


def check_image(image: np.ndarray) -> tuple[int, int]:
    """Validate an RGB frame and return (height, width); the error names what is wrong."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be uint8[H, W, 3] RGB, got {dtype} with shape {shape}")
    return image.shape[0], image.shape[1]


def union_into(masks: np.ndarray, owners: Sequence[int], decoded: np.ndarray) -> None:
    """OR each decoded mask [n, H, W] into masks[owner] (a prompt set may own several boxes of one batch)."""
    for row, owner in enumerate(owners):
        masks[owner] |= decoded[row]
