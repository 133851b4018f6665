"""DIS5K (dichotomous image segmentation) -> Seg-R1 Parquet.

Layout: `<root>/<part>/im/*.jpg` and `<root>/<part>/gt/*.png` with parts DIS-TR (train), DIS-VD (val),
DIS-TE1..DIS-TE4 (test1..test4). Split "test" converts the four test parts into one file.
"""

from __future__ import annotations

from pathlib import Path

from segr1.data.converters.common import (
    ConvertStats,
    check_split,
    foreground_row,
    pair_folders,
    require_dir,
    write_rows,
)

PARTS = {"train": ("DIS-TR",), "val": ("DIS-VD",), "test1": ("DIS-TE1",), "test2": ("DIS-TE2",),
         "test3": ("DIS-TE3",), "test4": ("DIS-TE4",), "test": ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")}
SPLITS = tuple(PARTS)


def convert(root: str, out: str, split: str = "train", *, allow_unmatched: bool = False) -> ConvertStats:
    check_split("dis5k", split, SPLITS)
    stats = ConvertStats("dis5k", split, str(out))
    rows = []
    for part in PARTS[split]:
        image_dir = require_dir(Path(root) / part / "im", f"DIS5K {part} images")
        mask_dir = require_dir(Path(root) / part / "gt", f"DIS5K {part} masks")
        rows.append((part, pair_folders(image_dir, mask_dir, stats, allow_unmatched=allow_unmatched)))
    source = f"dis5k-{split}"
    # Ids carry the part: stems are unique within a part, not necessarily across the four test parts.
    return write_rows((foreground_row(f"{part}/{stem}", image, mask, source)
                       for part, pairs in rows for stem, image, mask in pairs), stats)
