"""`BenchmarkResult`, the record of one scored benchmark, and its `eval.json` form.

eval.json = {<meta keys, e.g. checkpoint, step>..., "benchmarks": {<name>: {"task", "count", "metrics"}}}
with metrics as fractions in [0, 1] at full precision (keys: segr1.evaluation.sod and .overlap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BenchmarkResult:
    """The metrics of one benchmark."""

    name: str
    task: str
    count: int
    metrics: dict[str, float]


def eval_record(results: Sequence[BenchmarkResult], **meta: Any) -> dict[str, Any]:
    """The `eval.json` content: `meta` (e.g. checkpoint, step) and each benchmark's full-precision metrics."""
    names = [result.name for result in results]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"benchmark names must be unique, repeated: {duplicates}")
    return {**meta, "benchmarks": {result.name: {"task": result.task, "count": result.count,
                                                 "metrics": dict(result.metrics)} for result in results}}


def results_from_record(record: Mapping[str, Any]) -> list[BenchmarkResult]:
    """The inverse of `eval_record` (meta keys are dropped)."""
    if "benchmarks" not in record:
        raise KeyError(f"not an eval record: no 'benchmarks' key among {sorted(record)}")
    return [BenchmarkResult(name, entry["task"], int(entry["count"]), dict(entry["metrics"]))
            for name, entry in record["benchmarks"].items()]
