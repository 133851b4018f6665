"""Tests of cluster.telemetry.overlays: which pixels get which colour, PNG round trip, file names."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cluster.telemetry.overlays import (
    BOX_COLOUR,
    GT_COLOUR,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    PRED_ALPHA,
    PRED_TINT,
    overlay_path,
    render_overlay,
    save_overlay,
)

GREY = 100


@pytest.fixture()
def scene():
    """A grey 64x64 image; GT square rows/cols 20..39; prediction square 10..29; one box; two points."""
    image = np.full((64, 64, 3), GREY, np.uint8)
    gt = np.zeros((64, 64), bool)
    gt[20:40, 20:40] = True
    pred = np.zeros((64, 64), bool)
    pred[10:30, 10:30] = True
    prompts = {"boxes": [(5, 5, 50, 50)], "points": [(45, 45), (12, 56)], "labels": [1, 0]}
    return {"image": image, "gt": gt, "pred": pred, **prompts}


def test_overlay_shape_dtype_and_input_untouched(scene):
    before = scene["image"].copy()
    out = render_overlay(**scene)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out is not scene["image"] and np.array_equal(scene["image"], before)


def test_overlay_marks_expected_pixels(scene):
    out = render_overlay(**scene)  # 64 px: lines are 1 px thick, point discs have radius 3
    tinted = np.rint((1 - PRED_ALPHA) * GREY + PRED_ALPHA * np.array(PRED_TINT)).astype(np.uint8)
    assert tuple(out[5, 30]) == BOX_COLOUR  # top edge of the box (row y1)
    assert tuple(out[30, 50]) == BOX_COLOUR  # right edge (column x2, inclusive)
    assert tuple(out[20, 35]) == GT_COLOUR  # top edge of the GT square, outside the prediction
    assert tuple(out[39, 30]) == GT_COLOUR  # bottom edge (last GT row)
    assert tuple(out[45, 45]) == POSITIVE_COLOUR and tuple(out[45, 47]) == POSITIVE_COLOUR  # disc
    assert tuple(out[56, 12]) == NEGATIVE_COLOUR and tuple(out[54, 10]) == NEGATIVE_COLOUR  # tilted cross
    assert tuple(out[12, 15]) == tuple(tinted)  # prediction interior, away from every line
    assert tuple(out[10, 15]) == PRED_TINT and tuple(out[15, 29]) == PRED_TINT  # prediction outline
    assert tuple(out[30, 30]) == (GREY, GREY, GREY)  # inside GT, outside prediction: untouched
    assert tuple(out[60, 60]) == (GREY, GREY, GREY)  # background


def test_overlay_without_prompts_draws_only_masks(scene):
    out = render_overlay(scene["image"], scene["gt"], np.zeros_like(scene["pred"]))
    changed = np.any(out != GREY, axis=2)
    contour = np.zeros_like(changed)
    contour[20:40, 20:40] = True
    contour[21:39, 21:39] = False  # a 1 px ring on the GT square's border
    assert np.array_equal(changed, contour)


def test_overlay_rejects_bad_inputs(scene):
    with pytest.raises(ValueError, match=r"gt: expected a mask of shape \(64, 64\)"):
        render_overlay(scene["image"], scene["gt"][:32], scene["pred"])
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        render_overlay(scene["image"], scene["gt"], scene["pred"], points=[(1, 1), (2, 2)], labels=[1])
    with pytest.raises(ValueError, match="image: expected uint8"):
        render_overlay(scene["image"].astype(np.float32), scene["gt"], scene["pred"])


def test_save_overlay_round_trips_rgb(tmp_path, scene):
    out = render_overlay(**scene)
    path = save_overlay(out, overlay_path(tmp_path, step=10, sample_id="cod10k/COD10K-CAM-1 a"))
    assert path == tmp_path / "images" / "step_10_cod10k_COD10K-CAM-1_a.png"
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), out)  # PNG is lossless
