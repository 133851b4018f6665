"""Synthetic camouflaged objects: deterministic, one in-frame object of 5-40% area, segmentable by GrabCut."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from segr1.data.dataset import SegDataset
from segr1.data.schema import FOREGROUND_INSTRUCTION, Row, validate_row
from segr1.data.synth import AREA_RANGE, synth_row, synth_sample, synthesize


def test_a_sample_is_a_pure_function_of_seed_and_index():
    image, mask = synth_sample(seed=4, index=11)
    again_image, again_mask = synth_sample(seed=4, index=11)
    assert np.array_equal(image, again_image) and np.array_equal(mask, again_mask)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and mask.dtype == bool
    assert not np.array_equal(synth_sample(4, 12)[0], image)
    assert not np.array_equal(synth_sample(5, 11)[0], image)


@pytest.mark.parametrize("size", [48, 128])
def test_one_object_inside_the_frame_with_area_in_range(size):
    for index in range(60):
        _, mask = synth_sample(0, index, size)
        assert AREA_RANGE[0] - 0.01 <= mask.mean() <= AREA_RANGE[1] + 0.01
        components, _ = cv2.connectedComponents(mask.astype(np.uint8))
        assert components == 2  # background + one object
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any()


def test_object_blends_in_but_differs_in_colour():
    gaps = []
    for index in range(30):
        image, mask = synth_sample(1, index)
        pixels = image.reshape(-1, 3).astype(float)
        gaps.append(np.linalg.norm(pixels[mask.ravel()].mean(0) - pixels[~mask.ravel()].mean(0)))
    # Mean colours differ by about the palette shift (SHIFT_RANGE), never by a lot.
    assert min(gaps) > 20 and max(gaps) < 60


def grabcut_from_box(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(IoU of GrabCut started from the GT's tight box, IoU of the filled box itself)."""
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
    labels = np.zeros(mask.shape, np.uint8)
    models = np.zeros((1, 65)), np.zeros((1, 65))
    rect = (int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1))
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), labels, rect, *models, 5, cv2.GC_INIT_WITH_RECT)
    pred = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    box_fill = mask.sum() / ((x2 - x1 + 1) * (y2 - y1 + 1))
    return (pred & mask).sum() / (pred | mask).sum(), box_fill


def test_grabcut_from_the_box_segments_objects_better_than_the_box():
    scores = np.array([grabcut_from_box(*synth_sample(seed=0, index=index)) for index in range(20)])
    grabcut, box = scores.mean(axis=0)
    assert grabcut >= 0.6
    assert grabcut > box + 0.1


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
