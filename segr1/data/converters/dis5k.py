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
    sample_rows,
    write_rows,
)
from segr1.data.schema import Row

PARTS = {"train": ("DIS-TR",), "val": ("DIS-VD",), "test1": ("DIS-TE1",), "test2": ("DIS-TE2",),
         "test3": ("DIS-TE3",), "test4": ("DIS-TE4",), "test": ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")}
SPLITS = tuple(PARTS)


def convert(root: str, out: str, split: str = "train", *, allow_unmatched: bool = False,
            skip_bad: bool = False) -> ConvertStats:
    check_split("dis5k", split, SPLITS)
    stats = ConvertStats("dis5k", split, str(out), skip_bad=skip_bad)
    rows = []
    for part in PARTS[split]:
        image_dir = require_dir(Path(root) / part / "im", f"DIS5K {part} images")
        mask_dir = require_dir(Path(root) / part / "gt", f"DIS5K {part} masks")
        rows.append((part, pair_folders(image_dir, mask_dir, stats, allow_unmatched=allow_unmatched)))
    source = f"dis5k-{split}"

    def part_rows(sample: tuple[str, str, Path, Path]) -> list[Row]:
        part, stem, image, mask = sample
        # Ids carry the part: stems are unique within a part, not necessarily across the four test parts.
        return [foreground_row(f"{part}/{stem}", image, mask, source)]

    samples = [(part, *pair) for part, pairs in rows for pair in pairs]
    return write_rows(sample_rows(samples, part_rows, stats), stats)
