"""DUTS (salient objects) -> Seg-R1 Parquet.

Layout: `<root>/DUTS-TR/DUTS-TR-Image/*.jpg` with `<root>/DUTS-TR/DUTS-TR-Mask/*.png`; `DUTS-TE` likewise.
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
_PREFIX = {"train": "DUTS-TR", "test": "DUTS-TE"}


def convert(root: str, out: str, split: str = "train", *, allow_unmatched: bool = False,
            skip_bad: bool = False) -> ConvertStats:
    check_split("duts", split, SPLITS)
    prefix = _PREFIX[split]
    image_dir = require_dir(Path(root) / prefix / f"{prefix}-Image", f"DUTS {split} images")
    mask_dir = require_dir(Path(root) / prefix / f"{prefix}-Mask", f"DUTS {split} masks")
    stats = ConvertStats("duts", split, str(out), skip_bad=skip_bad)
    return convert_foreground_pairs(pair_folders(image_dir, mask_dir, stats, allow_unmatched=allow_unmatched),
                                    stats)
