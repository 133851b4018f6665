"""The per-sample CSV that `segr1 eval` streams to, and reads back to resume.

    log = SampleLog.open("eval_samples.csv", identity={"checkpoint": ..., "data": ...})
    log.done                      # {row index: row} already evaluated (a resumed eval skips them)
    log.append([row, ...])        # one line per sample, flushed line by line, fsynced per call
    log.meta["blind"] = {...}; log.save_meta()

One CSV line per sample (FIELDS), in the order samples finished; `rows()` gives them in row order. Text that
could hold a line break (the completion) is stored JSON-encoded, so every record is exactly one line and a
line cut short by a killed process is recognisable: it lacks its final newline. Opening the log drops such a
partial last line (it is re-run); a complete line that does not parse is an error naming the file and line.

Beside it, `<name>.meta.json` holds what the rows depend on (`identity`: checkpoint, data, frame, decoding
and segmenter settings) and what must stay fixed across a resume (the blind prompt). Opening a log whose
identity differs is refused, naming the first key that differs, so rows of two evaluations never mix.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from segr1.errors import UsageError

FIELDS = (
    "index", "sample_id", "task",  # the dataset row
    "format", "reward", "iou", "s_measure", "reason", "tokens",  # the reward's parts, in the training frame
    "completion",  # the policy's text, JSON-encoded (one line)
    "mask", "blind_mask", "oracle_mask",  # COCO RLE counts of the frame-sized masks ("" without baselines)
    "worker", "reward_actor",  # where it ran: the rollout worker and the reward actor
)


class SampleLog:
    """Append-only per-sample CSV with its meta file; see the module docstring."""

    def __init__(self, path: Path, meta: dict[str, Any], done: dict[int, dict[str, str]]) -> None:
        self.path = path
        self.meta = meta
        self.done = done
        self._file = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=FIELDS, lineterminator="\n")

    @property
    def meta_path(self) -> Path:
        return meta_path(self.path)

    @classmethod
    def open(cls, path: str | Path, identity: Mapping[str, Any], *, fresh: bool = False) -> SampleLog:
        """Resume the log at `path` (dropping a partial last line), or start it (always, with `fresh`)."""
        path = Path(path)
        identity = json.loads(json.dumps(dict(identity)))  # as it will read back from JSON
        if fresh:
            path.unlink(missing_ok=True)
            meta_path(path).unlink(missing_ok=True)
        if path.is_file():
            meta = _read_meta(path)
            _check_identity(path, meta.get("identity", {}), identity)
            done = _read_rows(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(",".join(FIELDS) + "\n", encoding="utf-8")
            meta, done = {"identity": identity}, {}
        log = cls(path, meta, done)
        log.save_meta()
        return log

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write rows (one line each, flushed one by one) and fsync; they join `done`."""
        for row in rows:
            index = int(row["index"])
            if index in self.done:
                raise ValueError(f"{self.path}: row {index} is already in the log")
            cells = {key: str(row[key]) for key in FIELDS}
            bad = [key for key, value in cells.items() if "\n" in value or "\r" in value]
            if bad:
                raise ValueError(f"{self.path}: row {index}: line break in {bad} (encode it first)")
            self._writer.writerow(cells)
            self._file.flush()  # a killed process loses at most the line it was writing
            self.done[index] = cells
        os.fsync(self._file.fileno())

    def rows(self, indices: Sequence[int]) -> list[dict[str, str]]:
        """The logged rows of `indices`, in that order; an index without a row is an error."""
        missing = [i for i in indices if i not in self.done]
        if missing:
            raise ValueError(f"{self.path}: no row for {len(missing)} samples, e.g. index {missing[0]}")
        return [self.done[i] for i in indices]

    def save_meta(self) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.meta, indent=2))
        tmp.replace(self.meta_path)  # atomic: a kill leaves the old or the new file

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def meta_path(path: Path) -> Path:
    return path.with_name(path.stem + ".meta.json")


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no {meta_path(path).name} beside it, so it cannot be resumed safely; "
                         "remove it or pass --fresh") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{meta_path(path)}: not JSON ({error}); remove it or pass --fresh") from None
    return meta if isinstance(meta, dict) else {}


def _check_identity(path: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for key in [*new, *(key for key in old if key not in new)]:  # the identity's own order: checkpoint first
        if old.get(key) != new.get(key):
            raise UsageError(f"{path}: written for {key}={old.get(key)!r}, this eval has {new.get(key)!r}; "
                             "pass --fresh to start over or --out to write elsewhere")


def _read_rows(path: Path) -> dict[int, dict[str, str]]:
    """Rows by index, after truncating a partial last line (a kill mid-write) off the file."""
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with path.open("r+b") as file:
            file.truncate(len(complete))
    lines = complete.decode("utf-8").splitlines()
    header = ",".join(FIELDS)
    if not lines:  # even the header was cut short
        path.write_text(header + "\n", encoding="utf-8")
        return {}
    if lines[0] != header:
        raise UsageError(f"{path}: not a samples CSV of this version (header {lines[0][:80]!r}); "
                         "pass --fresh to start over")
    done: dict[int, dict[str, str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader(io.StringIO(line)), [])
        if len(cells) != len(FIELDS) or not cells[0].isdigit():
            raise UsageError(f"{path}, line {number}: {len(cells)} fields, expected {len(FIELDS)} starting with "
                             "the row index; pass --fresh to start over")
        row = dict(zip(FIELDS, cells))
        index = int(row["index"])
        if index in done:
            raise UsageError(f"{path}, line {number}: row {index} appears twice; pass --fresh to start over")
        done[index] = row
    return done
