"""What every converter shares: conversion statistics, folder indexing, image/GT pairing and row writing.

A converter turns a public dataset layout into one Seg-R1 Parquet file. Missing folders and images without
a ground truth are errors that name the path; files that are deliberately left out (wrong split, excluded
subset, not an image) are counted per reason in `ConvertStats.skipped`, never dropped silently.

A bad sample (undecodable image or GT, GT of another size, image without GT, unreadable annotation) stops the
conversion with a `DataError` naming the file, unless `skip_bad`: then that sample is left out, counted under
`BAD_SAMPLE`, and listed (path, reason) in `<out>.skipped.csv` beside the output.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from segr1.data.codec import binarize_gt, decode_image, mask_to_png, read_gray
from segr1.data.errors import DataError
from segr1.data.schema import FOREGROUND_INSTRUCTION, Row
from segr1.data.writer import DatasetWriter
from segr1.errors import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
BAD_SAMPLE = "bad sample, skipped (skip_bad)"
T = TypeVar("T")


def skipped_list_path(out: str | os.PathLike) -> str:
    """Where a `skip_bad` conversion lists its bad samples: `<out>.skipped.csv`."""
    return f"{out}.skipped.csv"


@dataclass
class ConvertStats:
    """What a conversion wrote and what it left out: a count and a first example path per reason."""

    dataset: str
    split: str
    out: str
    skip_bad: bool = False  # leave bad samples out (listed in `skipped_list_path(out)`) instead of failing
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of each bad sample left out

    def skip(self, reason: str, path: str | os.PathLike, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.examples.setdefault(reason, str(path))

    def reject(self, path: str | os.PathLike, reason: str) -> None:
        """Leave out one bad sample (only under `skip_bad`): counted under BAD_SAMPLE and listed."""
        self.skip(BAD_SAMPLE, path)
        self.bad.append((str(path), reason))

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line per outcome, e.g. for the CLI."""
        lines = [f"{self.dataset} {self.split}: wrote {self.rows} rows to {self.out}"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {count} ({reason}), e.g. {self.examples[reason]}")
        if self.skip_bad:
            lines.append(f"  bad samples skipped: {len(self.bad)}, listed in {skipped_list_path(self.out)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "out": self.out, "rows": self.rows,
                "skipped": dict(self.skipped), "bad": [list(item) for item in self.bad]}


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a DataError naming it and what was expected there."""
    if not path.is_dir():
        raise DataError(str(path), f"missing folder (expected {what})")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(str(path), f"missing file (expected {what})")
    return path


def check_split(dataset: str, split: str, splits: Iterable[str]) -> None:
    splits = tuple(splits)
    if split not in splits:
        raise UsageError(f"split: {dataset} has splits {splits}, not {split!r}")


def index_by_stem(folder: Path, stats: ConvertStats) -> dict[str, Path]:
    """Image files of `folder` keyed by file stem; other files are counted as skipped."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            stats.skip("not a regular file", path)
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            stats.skip("not an image file", path)
        elif path.stem in files:
            other = files[path.stem].name
            raise DataError(str(path), f"two files with stem {path.stem!r} (the other is {other})")
        else:
            files[path.stem] = path
    return files


def pair_folders(image_dir: Path, mask_dir: Path, stats: ConvertStats, *,
                 include: Callable[[str], bool] = lambda stem: True, excluded_reason: str = "excluded",
                 allow_unmatched: bool = False) -> list[tuple[str, Path, Path]]:
    """(stem, image path, GT path) for every image of `image_dir` with a same-stem GT in `mask_dir`.

    Images failing `include` are skipped as `excluded_reason`. An image without a GT is an error unless
    `stats.skip_bad` (then it is a listed bad sample) or `allow_unmatched` (then it is counted); GTs without an
    image are counted (e.g. another split's masks).
    """
    images, masks = index_by_stem(image_dir, stats), index_by_stem(mask_dir, stats)
    pairs: list[tuple[str, Path, Path]] = []
    used_masks: set[str] = set()
    for stem, image_path in images.items():
        if not include(stem):
            stats.skip(excluded_reason, image_path)
        elif stem not in masks:
            problem = f"no ground truth with stem {stem!r} in {mask_dir}"
            if stats.skip_bad:
                stats.reject(image_path, problem)
            elif allow_unmatched:
                stats.skip("image without ground truth", image_path)
            else:
                raise DataError(str(image_path), problem)
        else:
            pairs.append((stem, image_path, masks[stem]))
            used_masks.add(stem)
    for stem, mask_path in masks.items():
        if stem not in used_masks and include(stem):
            stats.skip("ground truth without image in this split", mask_path)
        elif stem not in used_masks:
            stats.skip(excluded_reason, mask_path)
    return pairs


def foreground_row(sample_id: str, image_path: Path, mask_path: Path, source: str) -> Row:
    """A foreground row: the image file's bytes as they are, its GT binarised at >128."""
    image_bytes = image_path.read_bytes()
    height, width = decode_image(image_bytes, path=str(image_path), column="file").shape[:2]
    gt = binarize_gt(read_gray(mask_path.read_bytes(), path=str(mask_path)))
    if gt.shape != (height, width):
        raise DataError(str(mask_path), f"ground truth is {gt.shape[1]}x{gt.shape[0]} but image {image_path} "
                        f"is {width}x{height}")
    return Row(sample_id=sample_id, image=image_bytes, mask=mask_to_png(gt > 0),
               instruction=FOREGROUND_INSTRUCTION, task="foreground", source=source, width=width,
               height=height)


def sample_rows(samples: Iterable[T], build: Callable[[T], Iterable[Row]],
                stats: ConvertStats) -> Iterator[Row]:
    """The rows `build(sample)` makes for each sample, all or none per sample.

    A `DataError` or unreadable file while building a sample stops the conversion, or under `stats.skip_bad`
    leaves that sample out (listed in `stats.bad`).
    """
    for sample in samples:
        try:
            rows = list(build(sample))  # whole before yielding, so a bad sample never writes half its rows
        except DataError as error:
            if not stats.skip_bad:
                raise
            stats.reject(error.path, error.problem)
            continue
        except OSError as error:  # e.g. a file that cannot be read (permissions, I/O error)
            if not stats.skip_bad:
                raise
            stats.reject(error.filename or "?", error.strerror or str(error))
            continue
        yield from rows


def write_skipped_list(stats: ConvertStats) -> str:
    """Write `stats.bad` as CSV (path, reason) beside the output; returns its path."""
    path = skipped_list_path(stats.out)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows(stats.bad)
    return path


def write_rows(rows: Iterable[Row], stats: ConvertStats) -> ConvertStats:
    """Stream `rows` into `stats.out`; a failure leaves no file behind. Returns `stats` with the row count.

    Under `stats.skip_bad` the list of bad samples is written too (a header only when there were none, so a
    stale list from an earlier run never stays beside a new output).
    """
    # Rows are built from decoded, size-checked arrays above, so the writer's re-decode is skipped.
    with DatasetWriter(stats.out, validate=False) as writer:
        for row in rows:
            writer.write(row)
    stats.rows = writer.rows_written
    if stats.skip_bad:
        write_skipped_list(stats)
    if stats.rows == 0:
        os.remove(stats.out)
        raise DataError(stats.out, f"{stats.dataset} {stats.split}: no rows to write ({stats.summary()})")
    return stats


def convert_foreground_pairs(pairs: list[tuple[str, Path, Path]], stats: ConvertStats) -> ConvertStats:
    """Write (stem, image, GT) pairs as foreground rows with ids `<dataset>-<split>/<stem>`."""
    source = f"{stats.dataset}-{stats.split}"

    def pair_rows(pair: tuple[str, Path, Path]) -> list[Row]:
        stem, image, mask = pair
        return [foreground_row(f"{source}/{stem}", image, mask, source)]

    return write_rows(sample_rows(pairs, pair_rows, stats), stats)
