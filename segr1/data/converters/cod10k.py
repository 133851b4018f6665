"""COD10K-v3 -> Seg-R1 Parquet.

Layout: `<root>/{Train,Test}/Image/*.jpg` and `<root>/{Train,Test}/GT_Object/*.png`.

The COD protocol uses only the camouflaged images (`COD10K-CAM-*`: 3040 train, 2026 test); the
`COD10K-NonCAM-*` images have no object and are counted as skipped, not converted.
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


def is_camouflaged(stem: str) -> bool:
    return stem.startswith("COD10K-CAM-")


def convert(root: str, out: str, split: str = "train", *, allow_unmatched: bool = False,
            skip_bad: bool = False) -> ConvertStats:
    check_split("cod10k", split, SPLITS)
    split_dir = Path(root) / _FOLDERS[split]
    image_dir = require_dir(split_dir / "Image", "COD10K-v3 images")
    mask_dir = require_dir(split_dir / "GT_Object", "COD10K-v3 object masks")
    stats = ConvertStats("cod10k", split, str(out), skip_bad=skip_bad)
    pairs = pair_folders(image_dir, mask_dir, stats, include=is_camouflaged,
                         excluded_reason="not camouflaged (COD10K-NonCAM)", allow_unmatched=allow_unmatched)
    return convert_foreground_pairs(pairs, stats)
