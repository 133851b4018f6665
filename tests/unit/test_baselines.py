"""Blind and oracle baselines (reward_server.baselines): prompts, choice on hand-made scenes, bounds, cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reward_server import baselines
from reward_server.baselines import (
    FAMILY_SIZE,
    BaselineCache,
    baseline_ious,
    blind_candidates,
    cache_key,
    choose_blind_prompt,
    localisation_gain,
    mask_box,
    mean_box,
    oracle_prompt,
    prompt_from_dict,
    prompt_to_dict,
)
from reward_server.segmenters import build
from reward_server.segmenters.base import SegmentTiming

F = 112


class BoxFillSegmenter:
    """A segmenter whose mask is exactly the union of the prompt's boxes (inclusive pixels); counts calls."""

    name = "boxfill"

    def __init__(self) -> None:
        self.last_timing = SegmentTiming()
        self.calls = 0

    def segment(self, image, prompts, *, image_id=None):
        self.calls += 1
        masks = np.zeros((len(prompts), *image.shape[:2]), dtype=bool)
        for index, prompt in enumerate(prompts):
            for x1, y1, x2, y2 in prompt.boxes:
                masks[index, y1 : y2 + 1, x1 : x2 + 1] = True
        return masks


def _scene(rng: np.random.Generator, x: int, y: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright square of `side` px at (x, y) on dark noise: GrabCut separates it from a loose box."""
    image = rng.integers(0, 60, (F, F, 3), dtype=np.uint8)
    mask = np.zeros((F, F), bool)
    mask[y : y + side, x : x + side] = True
    image[mask] = rng.integers(190, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return image, mask


# ------------------------------------------------------------------------------------------------- prompts
def test_oracle_box_is_the_bbox_and_point_is_the_deepest_pixel():
    mask = np.zeros((F, F), bool)
    mask[10:31, 40:61] = True  # 21 x 21 square: the one deepest pixel is its centre (50, 20)
    mask[30:40, 40:45] = True  # a leg below: extends the box, not the depth
    prompt = oracle_prompt(mask)
    assert prompt.boxes == [(40, 10, 60, 39)]
    assert prompt.points == [(50, 20)] and prompt.labels == [1]


def test_oracle_point_lies_inside_a_ring():
    mask = np.zeros((F, F), bool)
    mask[20:80, 20:80] = True
    mask[30:70, 30:70] = False  # a ring: the box centre is background
    (x, y), = oracle_prompt(mask).points
    assert mask[y, x]
    assert oracle_prompt(mask).boxes == [(20, 20, 79, 79)]


def test_oracle_of_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        oracle_prompt(np.zeros((8, 8), bool))


def test_one_pixel_mask_gets_a_box_with_extent():
    mask = np.zeros((10, 10), bool)
    mask[9, 4] = True
    assert mask_box(mask) == (4, 8, 5, 9)  # widened right in x, upwards in y (the frame ends below)


def test_mean_box_averages_corners_and_skips_empty_masks():
    a, b, empty = (np.zeros((F, F), bool) for _ in range(3))
    a[10:21, 10:31] = True  # (10, 10, 30, 20)
    b[30:51, 50:61] = True  # (50, 30, 60, 50)
    assert mean_box([a, b, empty]) == (30, 20, 45, 35)
    assert mean_box([empty]) is None


def test_blind_family_shape():
    prompts = blind_candidates(F, (30, 20, 45, 35))
    assert len(prompts) == FAMILY_SIZE == 58
    boxes = [p.boxes[0] for p in prompts]
    assert (0, 0, F - 1, F - 1) in boxes and (30, 20, 45, 35) in boxes
    assert (28, 28, 83, 83) in boxes  # the centred half-frame box
    assert all(0 <= x1 < x2 < F and 0 <= y1 < y2 < F for x1, y1, x2, y2 in boxes)
    with_point = [p for p in prompts if p.points]
    assert len(with_point) == len(prompts) // 2
    for p in with_point:
        x1, y1, x2, y2 = p.boxes[0]
        assert p.points == [((x1 + x2) // 2, (y1 + y2) // 2)] and p.labels == [1]
    assert len(blind_candidates(F)) == FAMILY_SIZE - 2


# ------------------------------------------------------------------------------------------------- choice
def test_fixed_object_blind_finds_it_exactly():
    """The object is always the centred half-frame square: a grid box, so blind = oracle = 1."""
    rng = np.random.default_rng(0)
    scenes = [_scene(rng, 28, 28, 56) for _ in range(3)]
    segmenter = BoxFillSegmenter()
    blind = choose_blind_prompt(segmenter, [s[0] for s in scenes], [s[1] for s in scenes], F)
    assert blind.boxes == [(28, 28, 83, 83)]
    blind_iou, oracle_iou = baseline_ious(segmenter, [s[0] for s in scenes], [s[1] for s in scenes], blind)
    np.testing.assert_array_equal(blind_iou, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(oracle_iou, [1.0, 1.0, 1.0])


def test_blind_choice_maximises_mean_iou_by_hand():
    """Two training objects, boxes A (top-left quarter) and B (bottom-right quarter): no single box fits
    both; the best blind box is the one scoring 1 on one and its best overlap on the other."""
    a, b = np.zeros((F, F), bool), np.zeros((F, F), bool)
    a[0:28, 0:28] = True  # the top-left 0.25 grid box exactly
    b[84:112, 84:112] = True  # the bottom-right 0.25 grid box exactly
    images = [np.zeros((F, F, 3), np.uint8)] * 2
    blind = choose_blind_prompt(BoxFillSegmenter(), images, [a, b], F)
    # every candidate scores at most (1 + 0) / 2 = 0.5; the first such in family order is the top-left box
    assert blind.boxes == [(0, 0, 27, 27)] and blind.points == []


def test_choice_segments_at_most_max_segments():
    rng = np.random.default_rng(1)
    scenes = [_scene(rng, 10 * i, 10 * i, 20) for i in range(10)]
    segmenter = BoxFillSegmenter()
    choose_blind_prompt(segmenter, [s[0] for s in scenes], [s[1] for s in scenes], F,
                        max_segments=3 * FAMILY_SIZE + 5)
    assert segmenter.calls == 3  # one call per image, each carrying the whole family


def test_grabcut_fixed_object_blind_matches_oracle_and_random_places_do_not():
    """Through the real CPU segmenter: a constant box succeeds on a fixed object, not on scattered ones."""
    grabcut = build("grabcut")
    rng = np.random.default_rng(0)
    fixed = [_scene(rng, 36, 30, 40) for _ in range(4)]
    images, masks = [s[0] for s in fixed], [s[1] for s in fixed]
    blind = choose_blind_prompt(grabcut, images[:2], masks[:2], F)
    blind_iou, oracle_iou = baseline_ious(grabcut, images[2:], masks[2:], blind)
    assert oracle_iou.min() > 0.95 and blind_iou.min() > 0.95

    corners = [(2, 2), (90, 90), (2, 90), (90, 2)]
    scattered = [_scene(rng, x, y, 20) for x, y in corners]
    images, masks = [s[0] for s in scattered], [s[1] for s in scattered]
    blind = choose_blind_prompt(grabcut, images[:2], masks[:2], F)
    blind_iou, oracle_iou = baseline_ious(grabcut, images[2:], masks[2:], blind)
    assert oracle_iou.min() > 0.9
    assert blind_iou.mean() < oracle_iou.mean() - 0.5


def test_empty_gt_oracle_predicts_nothing():
    image = np.zeros((F, F, 3), np.uint8)
    blind = blind_candidates(F)[0]
    blind_iou, oracle_iou = baseline_ious(BoxFillSegmenter(), [image], [np.zeros((F, F), bool)], blind)
    assert blind_iou.tolist() == [0.0] and oracle_iou.tolist() == [0.0]  # the reward's empty-union rule


# ------------------------------------------------------------------------------------------------- gain, cache
def test_localisation_gain_arithmetic():
    assert localisation_gain(0.55, 0.29, 0.86) == pytest.approx(0.26 / 0.57)
    assert localisation_gain(0.29, 0.29, 0.86) == 0.0
    assert localisation_gain(0.86, 0.29, 0.86) == pytest.approx(1.0)
    assert localisation_gain(0.10, 0.30, 0.80) == pytest.approx(-0.4)
    assert math.isnan(localisation_gain(0.5, 0.6, 0.6))


def test_prompt_round_trips_through_json_form():
    prompt = oracle_prompt(np.pad(np.ones((5, 7), bool), 3))
    assert prompt_from_dict(prompt_to_dict(prompt)) == prompt


def test_cache_keys_and_file(tmp_path):
    key = cache_key(eval="abc", segmenter="grabcut", options={"iterations": 5}, frame=112)
    assert key == cache_key(frame=112, segmenter="grabcut", options={"iterations": 5}, eval="abc")
    assert key != cache_key(eval="abc", segmenter="grabcut", options={"iterations": 5}, frame=224)
    assert key != cache_key(eval="abd", segmenter="grabcut", options={"iterations": 5}, frame=112)
    cache = BaselineCache(tmp_path / "run" / "baselines.json")
    assert cache.get(key) is None
    cache.put(key, {"iou_blind": 0.25})
    cache.put("other", {"iou_blind": 0.5})
    assert BaselineCache(cache.path).get(key) == {"iou_blind": 0.25}
    cache.path.write_text("{ torn")
    assert cache.get(key) is None


def test_arrays_digest_sees_content_and_shape():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    b[1, 1] = True
    assert baselines.arrays_digest([a]) == baselines.arrays_digest([a.copy()])
    assert baselines.arrays_digest([a]) != baselines.arrays_digest([b])
    assert baselines.arrays_digest([a]) != baselines.arrays_digest([a.reshape(2, 8)])
