"""Tests of the batched IoU and S-measure: hand-computed values and agreement with the pysodmetrics package."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from py_sod_metrics import Smeasure

from reward_server import metrics
from reward_server.metrics import iou, iou_and_s_measure, s_measure


def reference_s(pred: np.ndarray, gt: np.ndarray, measure: type[Smeasure] = Smeasure) -> float:
    """The package's S-measure of pred float[H, W] in [0, 1] and gt bool[H, W], fed as 8-bit maps."""
    meter = measure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the package's own NaN cases warn
        meter.step(np.round(pred.astype(np.float64) * 255).astype(np.uint8), gt.astype(np.uint8) * 255)
    return float(meter.sms[0])


class ZeroForEmptyQuadrant(Smeasure):
    """The package with this module's documented convention: a zero-size quadrant scores 0 (weight 0)."""

    def ssim(self, pred, gt):
        return 0.0 if pred.size == 0 else super().ssim(pred, gt)


class ExactArithmetic(ZeroForEmptyQuadrant):
    """The package's quadrant formula evaluated in exact rationals, free of float rounding of means."""

    def ssim(self, pred, gt):
        if pred.size == 0:
            return 0.0
        p, g, n = (
            [Fraction(float(v)) for v in pred.ravel()],
            [Fraction(int(v)) for v in gt.ravel()],
            pred.size,
        )
        x, y = sum(p) / n, sum(g) / n
        eps = Fraction(np.spacing(1))
        sx = sum((a - x) ** 2 for a in p) / (n - 1 + eps)
        sy = sum((b - y) ** 2 for b in g) / (n - 1 + eps)
        sxy = sum((a - x) * (b - y) for a, b in zip(p, g)) / (n - 1 + eps)
        alpha, beta = 4 * x * y * sxy, (x * x + y * y) * (sx + sy)
        return float(alpha / (beta + eps)) if alpha != 0 else float(beta == 0)


def ours(pred: np.ndarray, gt: np.ndarray) -> float:
    return s_measure(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]).item()


def test_iou_hand_computed_and_empty_union_is_zero():
    pred = torch.tensor(
        [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 1]]], dtype=torch.bool
    )
    gt = torch.tensor(
        [[[0, 1, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 1]]], dtype=torch.bool
    )
    assert iou(pred, gt).tolist() == [1 / 3, 0.0, 1.0]
    assert iou(pred, gt).dtype == torch.float64


def test_s_measure_hand_computed():
    gt = np.array([[1, 0], [0, 0]], dtype=bool)
    # Perfect: object term 1 (every region constant and right), every quadrant's SSIM is the 0/0 case -> 1.
    assert ours(gt.astype(float), gt) == pytest.approx(1.0, abs=1e-12)
    # Empty prediction: object = 0.25 * 0 + 0.75 * 2/(1+1) = 0.75; each 1-pixel/constant quadrant scores 1.
    assert ours(np.zeros((2, 2)), gt) == pytest.approx(0.5 * 0.75 + 0.5 * 1.0, abs=1e-12)
    # All-background GT: S = 1 - mean(P); all-foreground GT: S = mean(P).
    assert ours(np.array([[1.0, 0.0], [0.0, 0.0]]), np.zeros((2, 2), bool)) == pytest.approx(0.75)
    assert ours(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((2, 2), bool)) == pytest.approx(0.25)
    assert reference_s(np.zeros((2, 2)), gt) == pytest.approx(0.875, abs=1e-12)  # the package agrees


def random_batch(rng: np.random.Generator, kind: str, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """``size`` random (pred float[H, W], gt bool[H, W]) pairs of one random frame, stacked."""
    height, width = rng.integers(2, 48, size=2)
    fg_share = rng.uniform(0.02, 0.98, size=(size, 1, 1))
    gt = rng.random((size, height, width)) < fg_share
    if kind == "float":
        pred = rng.random((size, height, width)) * rng.uniform(0.2, 1.0, size=(size, 1, 1))
    elif kind == "levels":  # few distinct values: many ties and constant patches
        pred = rng.integers(0, 4, size=(size, height, width)) / 3.0
    elif kind == "blob":  # a noisy version of the GT, as a segmenter would give
        pred = (gt ^ (rng.random((size, height, width)) < 0.1)).astype(float)
    else:
        pred = (rng.random((size, height, width)) < rng.random((size, 1, 1))).astype(float)
    return pred, gt


@pytest.mark.parametrize("kind", ["float", "levels", "blob", "binary"])
def test_agrees_with_pysodmetrics_on_random_masks(kind):
    rng = np.random.default_rng(["float", "levels", "blob", "binary"].index(kind))
    for _ in range(12):
        pred, gt = random_batch(rng, kind)
        got = s_measure(torch.from_numpy(pred), torch.from_numpy(gt)).tolist()
        got_bool = s_measure(torch.from_numpy(pred > 0.5), torch.from_numpy(gt)).tolist()
        for i in range(len(pred)):
            expected = reference_s(pred[i], gt[i])
            if np.isnan(expected):  # GT centroid on the last row or column
                expected = reference_s(pred[i], gt[i], ZeroForEmptyQuadrant)
            assert got[i] == pytest.approx(expected, abs=1e-6)
            if kind in ("blob", "binary"):  # bool masks take their own path to the same value
                assert got_bool[i] == pytest.approx(expected, abs=1e-6)


def edge_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    noise = rng.random((24, 32))
    one_pixel, thin, last_row, last_col, corner = (np.zeros((24, 32), bool) for _ in range(5))
    one_pixel[10, 12] = True
    thin[:, 5] = True
    last_row[23, 3:30] = True
    last_col[2:20, 31] = True
    corner[23, 31] = True
    return {
        "empty_pred": (np.zeros((24, 32)), noise < 0.3),
        "full_pred": (np.ones((24, 32)), noise < 0.3),
        "all_zero_gt": (noise, np.zeros((24, 32), bool)),
        "all_one_gt": (noise, np.ones((24, 32), bool)),
        "one_pixel_object": (noise, one_pixel),
        "one_pixel_hit": (one_pixel.astype(float), one_pixel),
        "thin_object": (noise, thin),
        "centroid_last_row": (noise, last_row),
        "centroid_last_col": (noise, last_col),
        "centroid_corner": (noise, corner),
        "single_pixel_frame": (np.array([[0.4]]), np.array([[True]])),
        "single_row": (noise[:1], noise[:1] < 0.5),
        "single_column": (noise[:, :1], noise[:, :1] < 0.5),
    }


# A centroid on the last row or column leaves a quadrant of zero width or height: the package returns NaN.
NAN_IN_PACKAGE = {"centroid_last_row", "centroid_last_col", "centroid_corner", "single_row", "single_column"}


@pytest.mark.parametrize("name", sorted(edge_cases()))
def test_edge_cases_are_finite_and_match_the_package_where_it_is_finite(name):
    pred, gt = edge_cases()[name]
    value = ours(pred, gt)
    assert np.isfinite(value)
    expected = reference_s(pred, gt)
    assert np.isnan(expected) == (name in NAN_IN_PACKAGE)
    if np.isnan(expected):
        expected = reference_s(pred, gt, ZeroForEmptyQuadrant)
    assert value == pytest.approx(expected, abs=1e-6)


def test_constant_non_binary_prediction_follows_exact_arithmetic():
    """The documented deviation: numpy's rounded mean makes the package score such quadrants 0, not 1."""
    gt = np.zeros((17, 13), bool)
    gt[8:13, 3:4] = True
    pred = np.full((17, 13), 20 / 255)
    exact = reference_s(pred, gt, ExactArithmetic)
    assert ours(pred, gt) == pytest.approx(exact, abs=1e-9)
    assert reference_s(pred, gt) != pytest.approx(exact, abs=1e-3)  # the package's float artefact


def test_batch_results_do_not_depend_on_batching_or_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    pred = torch.from_numpy(rng.random((7, 20, 30)))
    gt = torch.from_numpy(rng.random((7, 20, 30)) < 0.4)
    gt[2] = False
    gt[3] = True
    together = s_measure(pred, gt)
    alone = torch.cat([s_measure(pred[i : i + 1], gt[i : i + 1]) for i in range(7)])
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 2 * 20 * 30)  # chunks of two samples
    chunked = s_measure(pred, gt)
    assert torch.equal(together, alone) and torch.equal(together, chunked)


def test_iou_and_s_measure_match_the_separate_functions_and_accept_broadcast_gt():
    rng = np.random.default_rng(4)
    pred = torch.from_numpy(rng.random((5, 33, 17)) < 0.5)
    one_gt = torch.from_numpy(rng.random((33, 17)) < 0.3)
    gt = one_gt.expand(5, 33, 17)  # a stride-0 view, as a reward actor passes one GT for its group
    both = iou_and_s_measure(pred, gt)
    assert torch.equal(both[0], iou(pred, gt))
    assert torch.allclose(both[1], s_measure(pred, gt), atol=1e-12, rtol=0)
    assert torch.allclose(both[1], s_measure(pred.double(), gt.contiguous()), atol=1e-12, rtol=0)


def test_training_frame_size_agrees_with_the_package():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:768, :768]
    for i in range(2):
        cy, cx, r = rng.integers(200, 560), rng.integers(200, 560), rng.integers(50, 190)
        gt = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        pred = (yy - cy - 20 * i) ** 2 + (xx - cx + 15) ** 2 < (r + 10) ** 2
        expected = reference_s(pred.astype(float), gt)
        got_iou, got_s = iou_and_s_measure(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
        assert got_s.item() == pytest.approx(expected, abs=1e-6)
        assert got_iou.item() == pytest.approx((pred & gt).sum() / (pred | gt).sum(), abs=1e-12)


def test_empty_batch_and_bad_inputs():
    empty = torch.zeros(0, 4, 4, dtype=torch.bool)
    assert s_measure(empty, empty).shape == (0,) and iou_and_s_measure(empty, empty)[1].shape == (0,)
    gt = torch.zeros(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        s_measure(torch.zeros(1, 4, 5), gt)
    with pytest.raises(ValueError, match="gt must be bool"):
        s_measure(torch.zeros(1, 4, 4), gt.float())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s_measure(torch.full((1, 4, 4), 1.5), gt)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s_measure(torch.full((1, 4, 4), float("nan")), gt)
    with pytest.raises(ValueError, match="pred must be bool"):
        iou(torch.zeros(1, 4, 4), gt)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(6)
    pred = torch.from_numpy(rng.random((4, 64, 48)) < 0.5)
    gt = torch.from_numpy(rng.random((4, 64, 48)) < 0.3)
    on_gpu = [t.cpu() for t in iou_and_s_measure(pred.cuda(), gt.cuda())]
    on_cpu = iou_and_s_measure(pred, gt)
    assert torch.allclose(on_gpu[0], on_cpu[0]) and torch.allclose(on_gpu[1], on_cpu[1], atol=1e-12)
    assert torch.allclose(s_measure(pred.double().cuda(), gt.cuda()).cpu(), s_measure(pred.double(), gt))
