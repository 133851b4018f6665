"""runs/<name>/metrics.jsonl: one JSON object per training step, appended and flushed line by line.

    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        writer.write({"step": 1, "reward/mean": 0.42})
    read_metrics(run_dir / "metrics.jsonl")  # -> [{"step": 1, "reward/mean": 0.42}]

A resumed run reopens the file in append mode. Rows past the checkpoint it resumes from (written after the
last checkpoint, before a crash) and a half-written last line are dropped first, so every step appears once.
Rows without a "step" key (e.g. warm-start progress) are kept.
Non-finite floats are written as null, because JSON has no NaN/Infinity.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self, TextIO

METRICS_FILE = "metrics.jsonl"  # under the run directory


class MetricsFileError(ValueError):
    """A metrics.jsonl line is not a JSON object; the message names the file and line."""


def _plain(key: str, value: Any) -> Any:
    """A JSON-ready copy of one value (numpy/torch scalars unwrapped, NaN/inf -> None)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(key, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(f"{key}.{k}", v) for k, v in value.items()}
    raise TypeError(f"metric {key!r}: cannot write a {type(value).__name__} to metrics.jsonl")


def to_json_line(metrics: Mapping[str, Any]) -> str:
    row = {str(key): _plain(str(key), value) for key, value in metrics.items()}
    return json.dumps(row, allow_nan=False, separators=(",", ":"))


def _parse_row(path: str | Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise MetricsFileError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise MetricsFileError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a metrics.jsonl file, in order; raises MetricsFileError naming file and line."""
    with open(path, encoding="utf-8") as f:
        return [_parse_row(path, number, line) for number, line in enumerate(f, start=1) if line.strip()]


def _kept_lines(path: Path, keep_through_step: int | None) -> tuple[list[str], bool]:
    """Complete lines to keep on resume, and whether anything was dropped."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.endswith("\n"):  # half-written last line of a crashed run
            continue
        if keep_through_step is not None and line.strip():
            step = _parse_row(path, number, line).get("step")
            if isinstance(step, int) and step > keep_through_step:
                continue
        kept.append(line)
    return kept, len(kept) != len(lines)


class MetricsWriter:
    """Appends one JSON line per step to `path`, flushing each line so readers see it at once.

    keep_through_step: on resume, the checkpoint step the run continues from; later rows are dropped
    (or call rewind(step) once that step is known).
    """

    def __init__(self, path: str | Path, keep_through_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = None
        self._open(keep_through_step)

    def _open(self, keep_through_step: int | None) -> None:
        if self.path.exists():
            kept, dropped = _kept_lines(self.path, keep_through_step)
            if dropped:  # rewrite atomically so a crash here cannot lose the kept rows
                tmp = self.path.with_suffix(".jsonl.tmp")
                tmp.write_text("".join(kept), encoding="utf-8")
                os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held until close)

    def rewind(self, step: int) -> None:
        """Drop the rows after `step` (a resumed run continues from that checkpoint) and keep appending."""
        self.close()
        self._open(step)

    def write(self, metrics: Mapping[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError(f"{self.path}: MetricsWriter is closed")
        self._file.write(to_json_line(metrics) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
