"""Scoring one benchmark: predictions in the training frame -> original size -> the task's metrics.

    evaluator = BenchmarkEvaluator("COD10K-test", task="foreground")
    for index in range(len(dataset)):
        evaluator.add(predicted_mask_in_frame, dataset.load_original(index))   # bool[F, F]
    result = evaluator.result()            # BenchmarkResult(name, task, count, metrics)

Foreground benchmarks (SOD/COD) get the pysodmetrics keys plus cIoU/gIoU of the binary masks; referring
and reasoning benchmarks get cIoU/gIoU with ReasonSeg's ignore pixels left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from segr1.data.dataset import OriginalSample, SegDataset
from segr1.data.schema import TASKS
from segr1.evaluation.overlap import OverlapMetrics
from segr1.evaluation.resize import to_original_size
from segr1.evaluation.results import BenchmarkResult, eval_record
from segr1.evaluation.sod import SODMetrics


class BenchmarkEvaluator:
    """Accumulates the metrics of one benchmark (one task) over its samples."""

    def __init__(self, name: str, task: str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}, expected one of {TASKS}")
        self.name, self.task = name, task
        self._sod = SODMetrics() if task == "foreground" else None
        self._overlap = OverlapMetrics()

    def add_original(self, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """One sample at the GT's original size: pred uint8[H, W] 0..255, gt uint8[H, W], ignore bool."""
        if self._sod is not None:
            self._sod.update(pred, gt)
        self._overlap.update(pred > 127, gt > 128, ignore)

    def add(self, pred_frame: np.ndarray, original: OriginalSample) -> None:
        """One sample predicted in the frame (bool[F, F]); scored at the original size of `original`."""
        pred = to_original_size(pred_frame, original.mask.shape)
        self.add_original(pred, original.mask, original.ignore)

    def result(self) -> BenchmarkResult:
        metrics = dict(self._sod.results()) if self._sod is not None else {}
        metrics.update(self._overlap.results())
        return BenchmarkResult(self.name, self.task, self._overlap.count, metrics)


def score_dataset(dataset: SegDataset, predictions: Iterable[tuple[int, np.ndarray]],
                  name: str) -> BenchmarkResult:
    """Score (row index, bool[F, F] prediction) pairs against `dataset`'s original-size GTs.

    All scored rows must share one task (a benchmark is one task); each row may be scored at most once.
    """
    evaluator: BenchmarkEvaluator | None = None
    scored: set[int] = set()
    for index, pred_frame in predictions:
        if index in scored:
            raise ValueError(f"{name}: row {index} ({dataset.sample_ids[index]}) was predicted twice")
        scored.add(index)
        task = dataset.task(index)
        if evaluator is None:
            evaluator = BenchmarkEvaluator(name, task)
        elif task != evaluator.task:
            raise ValueError(f"{name}: row {index} has task {task!r}, earlier rows {evaluator.task!r}")
        evaluator.add(pred_frame, dataset.load_original(index))
    if evaluator is None:
        raise ValueError(f"{name}: no predictions to score")
    return evaluator.result()


def evaluate_predictions(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                         ignores: Sequence[np.ndarray | None], tasks: Sequence[str], *,
                         name: str = "eval") -> dict[str, Any]:
    """Score aligned lists of samples, one benchmark per task; returns the `eval.json` record (`eval_record`).

    preds: bool masks at any size (frame-sized ones are resized to their GT's size with `to_original_size`)
    or uint8 0..255 maps already at the GT's size; gts: uint8[H, W] original-size GTs; ignores: bool[H, W]
    or None. The benchmark is called `name`, or `name/<task>` when the samples mix tasks.
    """
    if not len(preds) == len(gts) == len(ignores) == len(tasks):
        counts = f"{len(preds)} predictions, {len(gts)} GTs, {len(ignores)} ignore maps, {len(tasks)} tasks"
        raise ValueError(f"lists must align: {counts}")
    if not preds:
        raise ValueError(f"{name}: no predictions to score")
    mixed = len(set(tasks)) > 1
    evaluators: dict[str, BenchmarkEvaluator] = {}
    for pred, gt, ignore, task in zip(preds, gts, ignores, tasks, strict=True):
        if task not in evaluators:
            evaluators[task] = BenchmarkEvaluator(f"{name}/{task}" if mixed else name, task)
        if pred.dtype == bool:
            pred = to_original_size(pred, gt.shape)
        evaluators[task].add_original(pred, gt, ignore)
    return eval_record([evaluator.result() for evaluator in evaluators.values()])
