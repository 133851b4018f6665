"""Evaluation: cIoU/gIoU by hand, SOD metrics against pysodmetrics itself, resize-back, benchmarks, report."""

from __future__ import annotations

import cv2
import numpy as np
import py_sod_metrics
import pytest

from segr1.data.codec import encode_png, mask_to_png
from segr1.data.dataset import SegDataset, resize_to_frame
from segr1.data.fixtures import voc_scene
from segr1.data.schema import Row
from segr1.data.synth import synthesize
from segr1.data.writer import DatasetWriter
from segr1.evaluation import (
    BenchmarkEvaluator,
    BenchmarkResult,
    OverlapMetrics,
    SODMetrics,
    eval_record,
    evaluate_predictions,
    format_results,
    format_table,
    intersection_union,
    report,
    score_dataset,
    to_original_size,
)


def pixels(shape, *coords) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for y, x in coords:
        mask[y, x] = True
    return mask


def test_ciou_and_giou_by_hand():
    metrics = OverlapMetrics()
    # sample 1: |P| = 4, |G| = 4, overlap 2 -> I = 2, U = 6, IoU = 1/3
    pred = pixels((3, 4), (0, 0), (0, 1), (0, 2), (0, 3))
    gt = pixels((3, 4), (0, 2), (0, 3), (1, 2), (1, 3))
    assert metrics.update(pred, gt) == pytest.approx(1 / 3)
    # sample 2: empty prediction on an empty GT scores 1 and adds nothing to the totals
    assert metrics.update(np.zeros((5, 5), bool), np.zeros((5, 5), bool)) == 1.0
    # sample 3: |P| = 2 inside |G| = 8 -> I = 2, U = 8, IoU = 1/4
    gt3 = np.zeros((4, 4), bool)
    gt3[:2] = True
    assert metrics.update(pixels((4, 4), (0, 0), (1, 1)), gt3) == 0.25
    results = metrics.results()
    assert results["cIoU"] == pytest.approx((2 + 0 + 2) / (6 + 0 + 8))
    assert results["gIoU"] == pytest.approx((1 / 3 + 1 + 1 / 4) / 3)
    assert metrics.count == 3


def test_ignore_pixels_leave_both_intersection_and_union():
    pred = pixels((2, 4), (0, 0), (0, 1), (0, 2))
    gt = pixels((2, 4), (0, 1), (0, 2), (0, 3))
    assert intersection_union(pred, gt) == (2, 4)
    # ignoring a shared pixel and a prediction-only pixel: I = 1, U = 2
    assert intersection_union(pred, gt, pixels((2, 4), (0, 0), (0, 1), (1, 3))) == (1, 2)
    metrics = OverlapMetrics()
    metrics.update(pred, gt, ignore=np.ones((2, 4), bool))  # everything ignored: empty union -> 1
    assert metrics.results() == {"cIoU": 1.0, "gIoU": 1.0}
    with pytest.raises(ValueError, match="one shape"):
        intersection_union(pred, gt, np.zeros((3, 3), bool))


def soft_predictions():
    """Real VOC instance GTs with imperfect soft predictions (blurred, shifted, one empty, one inverted)."""
    scene = voc_scene()
    for number, mask in enumerate(scene.masks[:6]):
        gt = np.where(mask, 255, 0).astype(np.uint8)
        pred = cv2.GaussianBlur(np.roll(gt, 3 * number, axis=1), (0, 0), 2.0 + number)
        if number == 4:
            pred = np.zeros_like(gt)
        if number == 5:
            pred = 255 - pred
        yield pred, gt


def test_sod_metrics_equal_pysodmetrics_called_directly():
    ours = SODMetrics()
    reference = {"s": py_sod_metrics.Smeasure(), "e": py_sod_metrics.Emeasure(),
                 "wf": py_sod_metrics.WeightedFmeasure(), "mae": py_sod_metrics.MAE()}
    with pytest.warns(UserWarning):  # the package's classic F-measure: deprecated, but the published one
        reference["f"] = py_sod_metrics.Fmeasure()
    for pred, gt in soft_predictions():
        ours.update(pred, gt)
        for metric in reference.values():
            metric.step(pred=pred, gt=gt)
    results = ours.results()
    e = reference["e"].get_results()["em"]
    f = reference["f"].get_results()["fm"]
    expected = {"S": reference["s"].get_results()["sm"], "wF": reference["wf"].get_results()["wfm"],
                "E_mean": e["curve"].mean(), "E_max": e["curve"].max(), "E_adp": e["adp"],
                "F_mean": f["curve"].mean(), "F_max": f["curve"].max(), "F_adp": f["adp"],
                "MAE": reference["mae"].get_results()["mae"]}
    assert results == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert 0.2 < results["S"] < 0.95  # imperfect predictions: not a degenerate all-0 / all-1 comparison


def test_sod_metrics_input_checks():
    metrics = SODMetrics()
    with pytest.raises(TypeError, match="uint8"):
        metrics.update(np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="original size"):
        metrics.update(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="no predictions"):
        metrics.results()


def test_to_original_size_by_hand():
    # 2x2 frame -> 4x4: bilinear weights per axis (1, .75, .25, 0); kept where 255 * wy * wx > 127
    up = to_original_size(pixels((2, 2), (0, 0)), (4, 4))
    assert up.dtype == np.uint8 and up.tolist() == [[255, 255, 0, 0], [255, 255, 0, 0], [0] * 4, [0] * 4]
    # 2x2 frame -> 2x6 (H, W): the left column covers weights (1, 1, .67, .33, 0, 0) -> three columns
    wide = to_original_size(pixels((2, 2), (0, 0), (1, 0)), (2, 6))
    assert wide.tolist() == [[255, 255, 255, 0, 0, 0]] * 2


def test_frame_round_trip_preserves_real_masks():
    # GT -> the paper's 768 frame (bilinear, >127) -> back to 375x500: thin chair legs and bottles survive.
    scene = voc_scene()
    for mask in scene.masks:
        _, frame_mask = resize_to_frame(scene.image, np.where(mask, 255, 0).astype(np.uint8), 768)
        back = to_original_size(frame_mask, mask.shape) > 0
        assert (back & mask).sum() / (back | mask).sum() > 0.99


def test_score_dataset_resizes_back_and_matches_direct_scoring(tmp_path):
    dataset = SegDataset(synthesize(tmp_path / "s.parquet", n=5, seed=3, size=48), frame_size=32)
    predictions = [(index, dataset.load(index).mask) for index in range(5)]
    result = score_dataset(dataset, predictions, "synthetic")
    direct = SODMetrics()
    for index, frame_mask in predictions:
        pred = to_original_size(frame_mask, dataset.original_size(index))
        direct.update(pred, dataset.load_original(index).mask)
    assert result.task == "foreground" and result.count == 5
    assert {key: result.metrics[key] for key in direct.results()} == direct.results()
    assert result.metrics["gIoU"] > 0.9
    with pytest.raises(ValueError, match="predicted twice"):
        score_dataset(dataset, predictions + predictions[:1], "synthetic")
    with pytest.raises(ValueError, match="no predictions"):
        score_dataset(dataset, [], "synthetic")


def test_reasoning_benchmark_leaves_ignore_pixels_out(tmp_path):
    gt, ignore = pixels((2, 2), (0, 0)), pixels((2, 2), (1, 1))
    row = Row(sample_id="r", image=encode_png(np.zeros((2, 2, 3), np.uint8)), mask=mask_to_png(gt),
              instruction="which?", task="reasoning", source="unit", width=2, height=2,
              ignore=mask_to_png(ignore))
    with DatasetWriter(tmp_path / "r.parquet") as writer:
        writer.write(row)
    dataset = SegDataset(tmp_path / "r.parquet", frame_size=2)
    result = score_dataset(dataset, [(0, pixels((2, 2), (0, 0), (1, 1)))], "ReasonSeg-val")
    assert result.metrics == {"cIoU": 1.0, "gIoU": 1.0}  # the extra predicted pixel is ignored
    evaluator = BenchmarkEvaluator("ReasonSeg-val", "reasoning")
    evaluator.add(pixels((2, 2), (0, 0), (0, 1)), dataset.load_original(0))
    assert evaluator.result().metrics == {"cIoU": 0.5, "gIoU": 0.5}


def test_report_prints_paper_style_and_records_full_precision():
    cod = {"S": 0.8734, "wF": 0.82, "E_mean": 0.926, "E_max": 0.93, "E_adp": 0.9, "F_mean": 0.8,
           "F_max": 0.85, "F_adp": 0.84, "MAE": 0.0312, "cIoU": 0.7, "gIoU": 0.71}
    results = [BenchmarkResult("COD10K-test", "foreground", 2026, cod),
               BenchmarkResult("RefCOCOg-val", "referring", 4896, {"cIoU": 0.71049, "gIoU": 0.6666})]
    text = format_results(results)
    for expected in ("COD10K-test", "0.873", "0.031", "2026", "RefCOCOg-val", "71.0", "66.7"):
        assert expected in text
    assert "\x1b[" not in text  # plain text, no terminal colour codes
    record = eval_record(results, checkpoint="runs/x/checkpoints/step_10", step=10)
    assert record["step"] == 10 and record["benchmarks"]["COD10K-test"]["metrics"]["S"] == 0.8734
    assert record["benchmarks"]["RefCOCOg-val"] == {"task": "referring", "count": 4896,
                                                    "metrics": {"cIoU": 0.71049, "gIoU": 0.6666}}
    assert report(results, step=10) == (text, eval_record(results, step=10))
    with pytest.raises(ValueError, match="repeated"):
        eval_record(results + results[:1])


def test_evaluate_predictions_groups_tasks_and_resizes_frame_masks():
    gt_wide = np.zeros((2, 6), np.uint8)
    gt_wide[:, :3] = 255
    referring_gt = np.where(pixels((2, 2), (0, 0), (0, 1)), 255, 0).astype(np.uint8)
    record = evaluate_predictions(
        preds=[pixels((2, 2), (0, 0), (1, 0)),  # frame-sized: resized to 2x6 -> exactly the left half
               pixels((2, 2), (0, 0))],  # already at the GT's size: I = 1, U = 2
        gts=[gt_wide, referring_gt], ignores=[None, None], tasks=["foreground", "referring"], name="mix")
    foreground, referring = record["benchmarks"]["mix/foreground"], record["benchmarks"]["mix/referring"]
    assert foreground["count"] == 1 and foreground["metrics"]["gIoU"] == 1.0
    assert foreground["metrics"]["MAE"] == 0.0 and foreground["metrics"]["S"] == pytest.approx(1.0)
    assert referring == {"task": "referring", "count": 1, "metrics": {"cIoU": 0.5, "gIoU": 0.5}}
    text = format_table(record, title="mixed (2 samples)")
    assert text.startswith("mixed (2 samples)\n") and "mix/referring" in text and "50.0" in text
    with pytest.raises(ValueError, match="1 predictions, 2 GTs"):
        evaluate_predictions([gt_wide], [gt_wide, gt_wide], [None], ["foreground"])
