"""Synthetic scenes: deterministic; one warm target among 3-4 cool distractors; GrabCut finds the target from
its box, while a box that ignores the image does not."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from reward_server.parse import SegPrompt
from reward_server.segmenters import build
from segr1.data.dataset import SegDataset
from segr1.data.schema import FOREGROUND_INSTRUCTION, Row, validate_row
from segr1.data.synth import AREA_RANGE, DISTRACTOR_HUES, TARGET_HUES, synth_row, synth_sample, synthesize


def test_a_sample_is_a_pure_function_of_seed_and_index():
    image, mask = synth_sample(seed=4, index=11)
    again_image, again_mask = synth_sample(seed=4, index=11)
    assert np.array_equal(image, again_image) and np.array_equal(mask, again_mask)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and mask.dtype == bool
    assert not np.array_equal(synth_sample(4, 12)[0], image)
    assert not np.array_equal(synth_sample(5, 11)[0], image)


@pytest.mark.parametrize("size", [48, 112])
def test_one_target_inside_the_frame_with_area_in_range(size):
    for index in range(40):
        _, mask = synth_sample(0, index, size)
        # rasterising an outline adds or drops up to about a pixel along it: ~3 sqrt(area) / size of the frame
        slack = 3 * np.sqrt(AREA_RANGE[1]) / size
        assert AREA_RANGE[0] - slack <= mask.mean() <= AREA_RANGE[1] + slack
        components, _ = cv2.connectedComponents(mask.astype(np.uint8))
        assert components == 2  # background + the target
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any()


def _hue_saturation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360) and saturation in [0, 1] per pixel."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    return hsv[..., 0] * 2.0, hsv[..., 1] / 255.0


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_the_target_is_the_warm_object_and_cool_distractors_lie_outside_its_box():
    for index in range(30):
        image, mask = synth_sample(2, index, 112)
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # away from soft edges
        target_colour = image[inner].mean(axis=0).round().astype(np.uint8)[None, None]  # [1, 1, 3]
        target_hue = _hue_saturation(target_colour)[0].item()
        assert target_hue >= TARGET_HUES[0] % 360 or target_hue <= TARGET_HUES[1]
        hue, saturation = _hue_saturation(cv2.GaussianBlur(image, (5, 5), 0))  # blur: sensor noise jitters hue
        cool = (hue >= DISTRACTOR_HUES[0]) & (hue <= DISTRACTOR_HUES[1]) & (saturation > 0.4)
        # 3-4 distractors, each 4-8% of the frame like the target: together they cover more than it does
        assert cool[~mask].sum() > mask.sum()
        x1, y1, x2, y2 = _tight_box(mask)
        assert cool[y1:y2 + 1, x1:x2 + 1].sum() < 0.02 * mask.sum()  # no distractor inside the target's box


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float((pred & gt).sum() / max((pred | gt).sum(), 1))


def test_grabcut_finds_the_target_from_its_box_but_not_from_boxes_that_ignore_the_image():
    segmenter = build("grabcut", iterations=5, margin=0, context=1.0, point_radius=3, seed=0)
    fixed = [SegPrompt("", [box], [], []) for box in ((16, 16, 94, 94), (0, 16, 78, 94), (28, 28, 83, 83))]
    oracle, blind = [], np.zeros(len(fixed))
    for index in range(16):
        image, mask = synth_sample(1, index, 112)
        (from_box,) = segmenter.segment(image, [SegPrompt("", [_tight_box(mask)], [], [])])
        oracle.append(_iou(from_box, mask))
        blind += [_iou(pred, mask) for pred in segmenter.segment(image, fixed)]
    assert np.mean(oracle) >= 0.85
    assert blind.max() / 16 <= 0.45  # large central boxes: the best constant boxes of a wider search


def test_synthesize_writes_valid_rows_and_held_out_seed_differs(tmp_path):
    train = synthesize(tmp_path / "train.parquet", n=12, seed=0, size=64)
    held_out = synthesize(tmp_path / "eval.parquet", n=12, seed=1, size=64)
    table = pq.read_table(train)
    assert table.num_rows == 12 and len(set(table.column("sample_id").to_pylist())) == 12
    for index, record in enumerate(table.to_pylist()):
        validate_row(Row(**record), train, index)
        assert record["instruction"] == FOREGROUND_INSTRUCTION and record["task"] == "foreground"
    dataset = SegDataset(train, frame_size=32)
    image, mask = synth_sample(0, 5, 64)
    assert np.array_equal(dataset.load_original(5).image, image)
    assert np.array_equal(dataset.load_original(5).mask > 0, mask)
    train_images = set(table.column("image").to_pylist())
    assert not train_images & set(pq.read_table(held_out).column("image").to_pylist())
    assert synth_row(0, 5, 64).sample_id == dataset.sample_ids[5]
