"""Read `segr1 eval`'s printed tables back: the cells of each benchmark's row, and the cells eval.json implies."""

from __future__ import annotations

from typing import Any

from segr1.evaluation.report import FOREGROUND_COLUMNS, OVERLAP_COLUMNS


def table_cells(text: str) -> dict[str, list[str]]:
    """Benchmark name -> the other cells of its row, from the printed tables (rich's box characters)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃|").split("│")]
        if len(cells) > 3 and (cells[1].isdigit() or cells[2].isdigit()):  # foreground: n; referring: task, n
            rows[cells[0]] = cells[1:]
    return rows


def expected_cells(record: dict[str, Any]) -> dict[str, list[str]]:
    """The same from an eval.json record: its benchmarks and its blind and oracle rows, at print precision."""
    benchmarks = dict(record["benchmarks"])
    for baseline in record.get("baselines", {}).values():
        benchmarks.update(baseline["benchmarks"])
    rows = {}
    for name, entry in benchmarks.items():
        metrics = entry["metrics"]
        if entry["task"] == "foreground":
            rows[name] = [str(entry["count"])] + [f"{metrics[key]:.3f}" for key, _ in FOREGROUND_COLUMNS]
        else:
            rows[name] = [entry["task"], str(entry["count"])] + [f"{100 * metrics[key]:.1f}"
                                                                 for key, _ in OVERLAP_COLUMNS]
    return rows
