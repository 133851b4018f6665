"""The paper-style results tables (rich, or plain text); `report` returns them with the `eval.json` record.

Foreground benchmarks are printed as the SOD/COD literature does: S_alpha, weighted F, E-measure (mean, max,
adaptive), F-measure (mean, max, adaptive) and MAE to three decimals ("0.873"). Referring and reasoning benchmarks print cIoU and gIoU in
percent to one decimal ("71.4"). `eval.json` keeps every metric at full precision, as fractions.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from segr1.evaluation.results import BenchmarkResult, eval_record, results_from_record

# (metric key, column header) in paper order
FOREGROUND_COLUMNS = (("S", "S_alpha"), ("wF", "wF_beta"), ("E_mean", "E_mean"), ("E_max", "E_max"),
                      ("E_adp", "E_adp"), ("F_mean", "F_mean"), ("F_max", "F_max"), ("F_adp", "F_adp"),
                      ("MAE", "MAE"), ("gIoU", "mIoU"))
OVERLAP_COLUMNS = (("cIoU", "cIoU"), ("gIoU", "gIoU"))


def _foreground_table(results: Sequence[BenchmarkResult]) -> Table:
    table = Table(title="Foreground segmentation (SOD / COD)")
    table.add_column("benchmark", no_wrap=True)
    table.add_column("n", justify="right")
    for _, header in FOREGROUND_COLUMNS:
        table.add_column(header, justify="right")
    for result in results:
        metrics = result.metrics
        cells = [f"{metrics[key]:.3f}" if key in metrics else "-" for key, _ in FOREGROUND_COLUMNS]
        table.add_row(result.name, str(result.count), *cells)
    return table


def _overlap_table(results: Sequence[BenchmarkResult]) -> Table:
    table = Table(title="Referring / reasoning segmentation (%)")
    table.add_column("benchmark", no_wrap=True)
    table.add_column("task")
    table.add_column("n", justify="right")
    for _, header in OVERLAP_COLUMNS:
        table.add_column(header, justify="right")
    for result in results:
        cells = [f"{100 * result.metrics[key]:.1f}" for key, _ in OVERLAP_COLUMNS]
        table.add_row(result.name, result.task, str(result.count), *cells)
    return table


def results_tables(results: Sequence[BenchmarkResult]) -> Group:
    """A rich renderable: one table for foreground benchmarks, one for referring/reasoning (if present)."""
    foreground = [result for result in results if result.task == "foreground"]
    overlap = [result for result in results if result.task != "foreground"]
    tables = []
    if foreground:
        tables.append(_foreground_table(foreground))
    if overlap:
        tables.append(_overlap_table(overlap))
    return Group(*tables)


def format_results(results: Sequence[BenchmarkResult], *, width: int = 110) -> str:
    """The tables as plain text (no colour codes), e.g. for logs and files."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(results_tables(results))
    return console.file.getvalue()


def format_table(record: Mapping[str, Any], title: str | None = None) -> str:
    """`format_results` of an eval.json record (as `evaluate_predictions` returns it), under `title`."""
    text = format_results(results_from_record(record))
    return f"{title}\n{text}" if title else text


def report(results: Sequence[BenchmarkResult], **meta: Any) -> tuple[str, dict[str, Any]]:
    """(plain-text table, eval.json dict) in one call."""
    return format_results(results), eval_record(results, **meta)
