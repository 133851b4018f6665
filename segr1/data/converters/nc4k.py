"""NC4K (a camouflaged-object test set) -> Seg-R1 Parquet. Layout: `<root>/Imgs/*.jpg`, `<root>/GT/*.png`."""

from __future__ import annotations

from pathlib import Path

from segr1.data.converters.common import (
    ConvertStats,
    check_split,
    convert_foreground_pairs,
    pair_folders,
    require_dir,
)

SPLITS = ("test",)


def convert(root: str, out: str, split: str = "test", *, allow_unmatched: bool = False,
            skip_bad: bool = False) -> ConvertStats:
    check_split("nc4k", split, SPLITS)
    image_dir = require_dir(Path(root) / "Imgs", "NC4K images")
    mask_dir = require_dir(Path(root) / "GT", "NC4K masks")
    stats = ConvertStats("nc4k", split, str(out), skip_bad=skip_bad)
    return convert_foreground_pairs(pair_folders(image_dir, mask_dir, stats, allow_unmatched=allow_unmatched),
                                    stats)
