"""SAM2 segmenter with random-weight hiera_t on the CPU: batched decoding matches the released one-box calls.

SAM2 encodes at 1024x1024 whatever the input size (smaller sizes fail inside the model), and one CPU encode
takes seconds, so this module encodes three times in all: once for the main image, twice for the BGR check.
"""

from __future__ import annotations

import numpy as np
import pytest

from reward_server.parse import SegPrompt, assign_points_to_boxes
from reward_server.segmenters import Segmenter, build
from reward_server.segmenters.embedding_cache import EmbeddingCache, image_key
from segr1.data.synth import synth_sample

PROMPTS = [  # eight completions of one group, in a 120x160 frame
    SegPrompt("", [(20, 10, 90, 80)], [(50, 40), (25, 15)], [1, 0]),
    SegPrompt("", [(20, 10, 90, 80), (100, 50, 159, 119)], [(50, 40), (120, 70), (130, 90)], [1, 1, 0]),
    SegPrompt("", [(0, 0, 159, 119)], [(80, 60)], [1]),
    SegPrompt("", [(30, 30, 60, 60)], [(100, 100)], [1]),  # its point is outside: the box goes alone
    SegPrompt("", [], [(70, 50), (10, 110)], [1, 0]),  # points grammar: no box
    SegPrompt("", [(5, 60, 70, 115)], [(40, 90)], [1]),
    SegPrompt("", [(90, 5, 150, 45)], [(120, 20)], [1]),
    SegPrompt("", [(40, 20, 140, 100)], [(90, 60), (45, 25)], [1, 0]),
]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    picture, _ = synth_sample(seed=0, index=4, size=160)
    return np.ascontiguousarray(picture[:120])  # a non-square frame catches (H, W) mix-ups: [120, 160, 3]


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        return build(
            "sam2",
            model_cfg="configs/sam2.1/sam2.1_hiera_t.yaml",
            checkpoint="",
            device="cpu",
            embedding_cache=4,
            decode_batch=3,
            seed=0,
        )


@pytest.fixture(scope="module")
def batched(segmenter, image) -> np.ndarray:
    masks = segmenter.segment(image, PROMPTS)  # the one encode of the main image
    assert not segmenter.last_timing.cache_hit and segmenter.last_timing.encode_s > 0
    return masks


def _released_style_logits(predictor, prompt: SegPrompt, shape: tuple[int, int]) -> np.ndarray:
    """One SAM2 `predict` per box with the points inside it, as the released reward called it.

    Returns the max over boxes of the mask logits [H, W]: the union of the boxes' masks is `logits > 0`.
    """
    union = np.full(shape, -np.inf, np.float32)
    for box, points, labels in assign_points_to_boxes(prompt):
        logits, _, _ = predictor.predict(
            point_coords=np.array(points, np.float32) if points else None,
            point_labels=np.array(labels) if points else None,
            box=None if box is None else np.array(box, np.float32),
            multimask_output=False,
            return_logits=True,
        )
        union = np.maximum(union, logits[0])
    return union


@pytest.fixture(scope="module")
def reference_logits(segmenter, image, batched) -> np.ndarray:
    segmenter.set_image(image)  # cache hit: the predictor holds this image again
    return np.stack([_released_style_logits(segmenter.predictor, p, image.shape[:2]) for p in PROMPTS])


def assert_masks_match(masks: np.ndarray, logits: np.ndarray) -> None:
    """masks == (logits > 0), except where float rounding of a different batch shape flips a logit at ~0.

    Random weights leave about 2% of logits within 1e-3 of the threshold, and the decoder's matrix products
    round differently for different batch sizes, so a rare pixel there may flip; nothing else may differ.
    """
    differ = masks != (logits > 0)
    assert differ.mean() < 1e-3, f"{differ.sum()} pixels differ"
    assert not differ.any() or np.abs(logits[differ]).max() < 1e-3


@pytest.mark.slow  # SAM2 encodes take seconds on the CPU
def test_batched_equals_one_box_at_a_time(batched, reference_logits):
    assert batched.shape == (len(PROMPTS), 120, 160) and batched.dtype == bool
    # random weights still give varied, non-trivial masks, so the comparison below means something
    coverage = batched.mean(axis=(1, 2))
    assert ((coverage > 0.01) & (coverage < 0.99)).all()
    assert len({mask.tobytes() for mask in batched}) == len(PROMPTS)
    assert_masks_match(batched, reference_logits)


@pytest.mark.slow  # SAM2 encodes take seconds on the CPU
def test_batch_size_does_not_change_masks(segmenter, image, reference_logits):
    default = segmenter.decode_batch
    try:
        segmenter.decode_batch = 256  # every box of a point count in one call, as on a GPU
        assert_masks_match(segmenter.segment(image, PROMPTS), reference_logits)
        assert segmenter.last_timing.cache_hit  # no re-encode: the embedding cache served the image
        one_by_one = np.concatenate([segmenter.segment(image, [prompt]) for prompt in PROMPTS])
        assert_masks_match(one_by_one, reference_logits)
    finally:
        segmenter.decode_batch = default


@pytest.mark.slow  # SAM2 encodes take seconds on the CPU
def test_padding_points_with_not_a_point_changes_the_mask(segmenter, image, batched):
    """Why decoder batches share a point count: padding with label -1 is not neutral in SAM2."""
    segmenter.set_image(image)
    box = np.array([20, 10, 90, 80], np.float32)
    plain, _, _ = segmenter.predictor.predict(
        np.array([[50, 40]], np.float32), np.array([1]), box, multimask_output=False, return_logits=True
    )
    padded, _, _ = segmenter.predictor.predict(
        np.array([[50, 40], [0, 0]], np.float32),
        np.array([1, -1]),
        box,
        multimask_output=False,
        return_logits=True,
    )
    assert np.abs(plain - padded).max() > 1e-3


@pytest.mark.slow  # SAM2 encodes take seconds on the CPU
def test_bgr_compat_feeds_swapped_channels(segmenter, image, batched):
    default = segmenter.bgr_compat
    try:
        segmenter.bgr_compat = True
        compat = segmenter.segment(image, PROMPTS)  # encodes the channel-swapped image
        assert not segmenter.last_timing.cache_hit
        segmenter.bgr_compat = False
        swapped_input = segmenter.segment(np.ascontiguousarray(image[..., ::-1]), PROMPTS)
    finally:
        segmenter.bgr_compat = default
    assert np.array_equal(compat, swapped_input)
    assert not np.array_equal(compat, batched)


@pytest.mark.slow  # SAM2 encodes take seconds on the CPU
def test_no_prompts_means_no_encode(segmenter):
    blank = np.zeros((30, 40, 3), np.uint8)
    masks = segmenter.segment(blank, [SegPrompt("", [], [], [])])
    assert masks.shape == (1, 30, 40) and not masks.any() and segmenter.last_timing.encode_s == 0


def test_embedding_cache_is_a_bounded_lru():
    cache = EmbeddingCache(max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2
    assert cache.get("b") is None and (cache.hits, cache.misses) == (3, 1)
    disabled = EmbeddingCache(max_entries=0)
    disabled.put("a", 1)
    assert len(disabled) == 0
    with pytest.raises(ValueError, match="cache size"):
        EmbeddingCache(max_entries=-1)


def test_image_key_depends_on_content_and_shape():
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert image_key(image) == image_key(image.copy())
    assert image_key(image) != image_key(image.reshape(4, 2, 3))
    changed = image.copy()
    changed[1, 3, 2] += 1
    assert image_key(image) != image_key(changed)


def test_bad_options_fail_before_building(tmp_path):
    with pytest.raises(FileNotFoundError, match="reward.sam2.checkpoint: no such file"):
        build("sam2", model_cfg="configs/sam2.1/sam2.1_hiera_t.yaml", checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="decode_batch must be >= 0"):
        build("sam2", model_cfg="configs/sam2.1/sam2.1_hiera_t.yaml", decode_batch=-1)
