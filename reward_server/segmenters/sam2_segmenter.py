"""SAM2 segmenter: encode the image once per group, decode every completion's boxes in batched calls.

The released Seg-R1 reward rebuilt SAM2 and re-encoded the image for every completion and every box. The
image embedding depends only on the image, so here one encoder pass (or an embedding-cache hit) serves all
prompt sets, and the prompt decoder runs on batches of boxes that carry the same number of points.

Why batches share a point count: SAM2 appends one "not a point" token to every prompt, and padding shorter
point lists with more such tokens (label -1) changes the decoder's attention and hence the mask. Grouping by
point count computes exactly what a one-box-at-a-time call computes (up to float rounding, which can flip a
pixel whose logit is within ~1e-3 of the threshold). Settings follow the paper: box and its points in one
call, `multimask_output=False`, mask threshold 0, SAM2's default post-processing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from reward_server.parse import SegPrompt, assign_points_to_boxes
from reward_server.segmenters.base import SegmentTiming, check_image, union_into
from reward_server.segmenters.embedding_cache import EmbeddingCache, image_key

logger = logging.getLogger(__name__)

# Boxes per decoder call when decode_batch=0. On a GPU one call for all boxes is fastest. On two CPU cores
# (hiera_t, 768 frame) 4 boxes per call beat 1 (per-call overhead, ~2x slower) and 8 or 16 (larger tensors).
AUTO_DECODE_BATCH = {"cuda": 256, "cpu": 4}


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class SAM2Segmenter:
    """SAM2 image predictor with one encode per image and batched decodes (see the module docstring)."""

    name = "sam2"

    def __init__(
        self,
        model_cfg: str = "configs/sam2.1/sam2.1_hiera_l.yaml",
        checkpoint: str | None = "",
        device: str = "auto",
        bgr_compat: bool = False,
        embedding_cache: int = 8,
        bf16: bool = True,
        decode_batch: int = 0,
        seed: int = 0,
    ) -> None:
        from sam2.build_sam import build_sam2  # heavy import, only for this backend
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if decode_batch < 0:
            raise ValueError(f"sam2 decode_batch must be >= 0 (0 = auto), got {decode_batch}")
        self.device = resolve_device(device)
        if checkpoint and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"reward.sam2.checkpoint: no such file {checkpoint!r}")
        if not checkpoint:
            message = (
                f"SAM2 built with RANDOM weights ({model_cfg}, seed {seed}): masks are meaningless. "
                "Set reward.sam2.checkpoint to a SAM2.1 checkpoint for real rewards; random weights are for "
                "tests."
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
        with torch.random.fork_rng(devices=[]):  # same seed -> same random model in every actor
            torch.manual_seed(seed)
            model = build_sam2(model_cfg, checkpoint or None, device=str(self.device))
        self._predictor = SAM2ImagePredictor(model, mask_threshold=0.0)
        self.bgr_compat = bgr_compat
        self.decode_batch = decode_batch or AUTO_DECODE_BATCH[self.device.type]
        self._bf16 = bf16 and self.device.type == "cuda"
        self._cache = EmbeddingCache(embedding_cache)
        self.last_timing = SegmentTiming()

    def segment(
        self, image: np.ndarray, prompts: Sequence[SegPrompt], *, image_id: str | None = None
    ) -> np.ndarray:
        """image uint8[H, W, 3] RGB, N prompt sets -> bool[N, H, W]; the image is encoded at most once."""
        height, width = check_image(image)
        # One decoder job per (prompt set, box); jobs with equal point counts share a decoder call.
        batches: dict[tuple[bool, int], list[tuple[int, tuple | None, list, list]]] = defaultdict(list)
        for index, prompt in enumerate(prompts):
            for box, points, labels in assign_points_to_boxes(prompt):
                if box is None and not points:
                    continue  # nothing to prompt with: the mask stays empty
                batches[(box is None, len(points))].append((index, box, points, labels))

        masks = np.zeros((len(prompts), height, width), dtype=bool)  # [N, H, W]
        if not batches:
            self.last_timing = SegmentTiming()
            return masks
        start = time.perf_counter()
        cache_hit = self.set_image(image, image_id)
        encoded = time.perf_counter()
        for jobs in batches.values():
            for chunk_start in range(0, len(jobs), self.decode_batch):
                chunk = jobs[chunk_start : chunk_start + self.decode_batch]
                owners = [job[0] for job in chunk]
                union_into(masks, owners, self._decode([job[1:] for job in chunk], height, width))
        self.last_timing = SegmentTiming(
            encode_s=encoded - start, decode_s=time.perf_counter() - encoded, cache_hit=cache_hit
        )
        return masks

    def set_image(self, image: np.ndarray, image_id: str | None = None) -> bool:
        """Make `image` the predictor's current image; return True if its embedding came from the cache."""
        # The channel order is part of the key: the same pixels embed differently with bgr_compat.
        key = (image_id if image_id is not None else image_key(image), self.bgr_compat)
        cached = self._cache.get(key)
        if cached is not None:
            self._restore_embedding(cached)
            return True
        # The released code fed SAM2 a BGR image (the compat flag reproduces it); SAM2 expects RGB.
        pixels = np.ascontiguousarray(image[..., ::-1]) if self.bgr_compat else image
        with self._autocast():
            self._predictor.set_image(pixels)
        self._cache.put(key, self._current_embedding())
        return False

    def _decode(self, jobs: list[tuple], height: int, width: int) -> np.ndarray:
        """One decoder call for jobs (box | None, points, labels) of equal point counts -> bool[n, H, W]."""
        boxes = None if jobs[0][0] is None else np.array([job[0] for job in jobs], dtype=np.float32)  # [n, 4]
        coords = labels = None
        if jobs[0][1]:
            coords = np.array([job[1] for job in jobs], dtype=np.float32)  # [n, P, 2] (x, y)
            labels = np.array([job[2] for job in jobs], dtype=np.int64)  # [n, P]
        with self._autocast():
            masks, _, _ = self._predictor.predict(
                point_coords=coords, point_labels=labels, box=boxes, multimask_output=False
            )
        return masks.reshape(len(jobs), height, width) > 0.5  # predict returns {0, 1} floats

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # The predictor keeps the current image's features in private fields; saving and restoring them is what
    # lets one encoder pass serve later groups on the same image.
    def _current_embedding(self) -> dict:
        return {"features": self._predictor._features, "orig_hw": list(self._predictor._orig_hw)}

    def _restore_embedding(self, cached: dict) -> None:
        self._predictor.reset_predictor()
        self._predictor._features = cached["features"]
        self._predictor._orig_hw = list(cached["orig_hw"])
        self._predictor._is_image_set = True

    @property
    def cache(self) -> EmbeddingCache:
        return self._cache

    @property
    def predictor(self):
        """The underlying `SAM2ImagePredictor` (for reference comparisons and the benchmark)."""
        return self._predictor
