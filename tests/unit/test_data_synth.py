"""Synthetic scenes: deterministic; one striped target among 3-4 smooth distractors; GrabCut finds the target from
its box, while the best prompt that ignores the image does not (measured with the product's own baselines)."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from reward_server.segmenters import build
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


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _edge_strength(image: np.ndarray) -> np.ndarray:
    """Per-pixel gradient magnitude of the lightly blurred luminance (the blur removes the sensor grain)."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32), (3, 3), 0)
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))


def test_the_target_is_the_striped_object_and_distractors_lie_outside_its_box():
    for index in range(30):
        image, mask = synth_sample(2, index, 112)
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # away from its outline
        saturation = cv2.cvtColor(cv2.GaussianBlur(image, (5, 5), 0), cv2.COLOR_RGB2HSV)[..., 1] / 255.0
        others = cv2.erode((saturation > 0.4).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        others &= ~cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        edges = _edge_strength(image)
        # stripes: a strong edge every few pixels inside the target; distractors are smooth inside
        assert edges[inner].mean() > 2 * edges[others].mean(), index
        # 3-4 distractors, each 4-8% of the frame like the target: together they cover more than it does
        saturated = saturation > 0.4
        assert saturated[~mask].sum() > mask.sum()
        x1, y1, x2, y2 = _tight_box(mask)
        ring = ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert (saturated & ring)[y1:y2 + 1, x1:x2 + 1].sum() < 0.02 * mask.sum()  # no distractor in its box


@pytest.mark.slow
def test_the_embedded_task_needs_the_image_blind_at_most_035_oracle_at_least_080():
    """The issue's bar, through the product's own baselines: the best image-independent prompt (chosen on 32
    training images) scores at most 0.35 IoU on 64 held-out images, the ground-truth box at least 0.80."""
    from reward_server.baselines import compute_baselines

    segmenter = build("grabcut", iterations=5, margin=0, context=1.0, point_radius=3, seed=0)
    train = [synth_sample(0, i, 112) for i in range(32)]
    held_out = [synth_sample(1, i, 112) for i in range(64)]
    scores = compute_baselines(segmenter, [im for im, _ in train], [m for _, m in train],
                               [im for im, _ in held_out], [m for _, m in held_out], frame=112)
    assert scores.mean_blind <= 0.35, scores.blind
    assert scores.mean_oracle >= 0.80


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
