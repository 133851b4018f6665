"""Paper-style evaluation: pysodmetrics for foreground (SOD/COD), cIoU/gIoU for referring and reasoning.

Modules:
- `resize`     `to_original_size`: predictions made in the training frame -> the GT's original size
- `sod`        `SODMetrics`: S, weighted F, E and F (mean/max/adaptive), MAE, computed by pysodmetrics
- `overlap`    `OverlapMetrics`, `intersection_union`, `sample_iou`: cIoU and gIoU with ignore pixels
- `benchmark`  `BenchmarkEvaluator`, `score_dataset`, `evaluate_predictions`: scoring benchmarks end to end
- `results`    `BenchmarkResult` and its eval.json form (`eval_record`, `results_from_record`)
- `report`     paper-style tables: `format_results`, `format_table` (of an eval.json record), `results_tables`
- `sample_log` `SampleLog`: the per-sample CSV `segr1 eval` streams to and resumes from
"""

from segr1.evaluation.benchmark import BenchmarkEvaluator, evaluate_predictions, score_dataset
from segr1.evaluation.overlap import OverlapMetrics, intersection_union, sample_iou
from segr1.evaluation.report import format_results, format_table, report, results_tables
from segr1.evaluation.resize import to_original_size
from segr1.evaluation.results import BenchmarkResult, eval_record, results_from_record
from segr1.evaluation.sod import SOD_KEYS, SODMetrics

__all__ = [
    "SOD_KEYS", "BenchmarkEvaluator", "BenchmarkResult", "OverlapMetrics", "SODMetrics", "eval_record",
    "evaluate_predictions", "format_results", "format_table", "intersection_union", "report",
    "results_from_record", "results_tables", "sample_iou", "score_dataset", "to_original_size",
]
