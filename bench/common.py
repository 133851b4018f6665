"""Helpers shared by the cluster benchmarks (bench/pipeline.py, bench/scheduling.py): machine load and tables.

Not a benchmark itself. Scripts import it as `bench.common` after putting the project root first on sys.path
(run as `python bench/x.py`, the bench folder leads sys.path and `bench/rollout.py` would shadow the `rollout`
package).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def load_average() -> str:
    """The 1/5/15-minute load averages against the core count: other jobs on the machine skew timings."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def load_1min() -> float:
    """The 1-minute load average (runnable processes; above the core count means CPU contention)."""
    return os.getloadavg()[0]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown-style table (pastes into bench/RESULTS.md as is); floats keep 3 significant decimals."""
    table = Table(box=box.MARKDOWN)
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(f"{cell:.3f}" if isinstance(cell, float) else str(cell) for cell in row))
    console = Console(width=200)
    console.print(f"\n{title}", soft_wrap=True)  # above the table: a table title would wrap to its width
    console.print(table)
