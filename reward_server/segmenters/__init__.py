"""Segmentation backends behind one interface (`Segmenter`): `build("sam2" | "grabcut", **options)`.

Backends are imported on demand, so importing this package pulls in neither torch/sam2 nor OpenCV.
"""

from __future__ import annotations

from typing import Any

from reward_server.segmenters.base import Segmenter, SegmentTiming

NAMES = ("sam2", "grabcut")


def build(name: str, **options: Any) -> Segmenter:
    """A segmenter by name; options are the backend's constructor arguments (the config's group fields)."""
    if name == "sam2":
        from reward_server.segmenters.sam2_segmenter import SAM2Segmenter

        return SAM2Segmenter(**options)
    if name == "grabcut":
        from reward_server.segmenters.grabcut_segmenter import GrabCutSegmenter

        return GrabCutSegmenter(**options)
    raise ValueError(f"unknown segmenter {name!r}: expected one of {NAMES}")


__all__ = ["NAMES", "SegmentTiming", "Segmenter", "build"]
