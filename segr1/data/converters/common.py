"""What every converter shares: conversion statistics, folder indexing, image/GT pairing and row writing.

A converter turns a public dataset layout into one Seg-R1 Parquet file. Missing folders and images without
a ground truth are errors that name the path; files that are deliberately left out (wrong split, excluded
subset, not an image) are counted per reason in `ConvertStats.skipped`, never dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from segr1.data.codec import binarize_gt, decode_image, mask_to_png, read_gray
from segr1.data.errors import DataError
from segr1.data.schema import FOREGROUND_INSTRUCTION, Row
from segr1.data.writer import DatasetWriter

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


@dataclass
class ConvertStats:
    """What a conversion wrote and what it left out: a count and a first example path per reason."""

    dataset: str
    split: str
    out: str
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, path: str | os.PathLike, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.examples.setdefault(reason, str(path))

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line per outcome, e.g. for the CLI."""
        lines = [f"{self.dataset} {self.split}: wrote {self.rows} rows to {self.out}"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {count} ({reason}), e.g. {self.examples[reason]}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "out": self.out, "rows": self.rows,
                "skipped": dict(self.skipped)}


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
        raise ValueError(f"{dataset} has splits {splits}, not {split!r}")


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
    `allow_unmatched` (then it is counted); GTs without an image are counted (e.g. another split's masks).
    """
    images, masks = index_by_stem(image_dir, stats), index_by_stem(mask_dir, stats)
    pairs: list[tuple[str, Path, Path]] = []
    used_masks: set[str] = set()
    for stem, image_path in images.items():
        if not include(stem):
            stats.skip(excluded_reason, image_path)
        elif stem not in masks:
            if not allow_unmatched:
                raise DataError(str(image_path), f"no ground truth with stem {stem!r} in {mask_dir}")
            stats.skip("image without ground truth", image_path)
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


def write_rows(rows: Iterable[Row], stats: ConvertStats) -> ConvertStats:
    """Stream `rows` into `stats.out`; a failure leaves no file behind. Returns `stats` with the row count."""
    # Rows are built from decoded, size-checked arrays above, so the writer's re-decode is skipped.
    with DatasetWriter(stats.out, validate=False) as writer:
        for row in rows:
            writer.write(row)
    stats.rows = writer.rows_written
    if stats.rows == 0:
        os.remove(stats.out)
        raise DataError(stats.out, f"{stats.dataset} {stats.split}: no rows to write ({stats.summary()})")
    return stats


def convert_foreground_pairs(pairs: list[tuple[str, Path, Path]], stats: ConvertStats) -> ConvertStats:
    """Write (stem, image, GT) pairs as foreground rows with ids `<dataset>-<split>/<stem>`."""
    source = f"{stats.dataset}-{stats.split}"
    rows = (foreground_row(f"{source}/{stem}", image, mask, source) for stem, image, mask in pairs)
    return write_rows(rows, stats)
