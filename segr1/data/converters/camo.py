"""CAMO -> Seg-R1 Parquet. Layout: `<root>/Images/{Train,Test}/*.jpg` and one `<root>/GT/*.png` folder.

The GT folder mixes both splits, so masks are paired by file stem with the chosen split's images; the
other split's masks are counted as skipped.
"""

from __future__ import annotations

from pathlib import Path

from segr1.data.converters.common import (
    ConvertStats,
    check_split,
    convert_foreground_pairs,
    pair_folders,
    require_dir,
)

SPLITS = ("train", "test")
_FOLDERS = {"train": "Train", "test": "Test"}


def convert(root: str, out: str, split: str = "train", *, allow_unmatched: bool = False,
            skip_bad: bool = False) -> ConvertStats:
    check_split("camo", split, SPLITS)
    image_dir = require_dir(Path(root) / "Images" / _FOLDERS[split], f"CAMO {split} images")
    mask_dir = require_dir(Path(root) / "GT", "CAMO masks (train and test together)")
    stats = ConvertStats("camo", split, str(out), skip_bad=skip_bad)
    pairs = pair_folders(image_dir, mask_dir, stats, allow_unmatched=allow_unmatched)
    return convert_foreground_pairs(pairs, stats)
