"""`SegDataset`: reads a Seg-R1 Parquet file (`segr1.data.schema`) into samples for training and evaluation.

Training sees every image and mask in a square frame (`frame_size`^2, aspect ratio not kept, as the paper
does): the image is resized with bilinear interpolation, the 0/255 mask likewise and then re-binarised at
>127. Evaluation scores at the original size, so `load_original` returns the undistorted image, mask and
ignore map.

The small columns (ids, sizes, texts) are read once; image and mask bytes are read one row group at a time
and the last few groups are cached, so a file larger than memory can still be sampled at random.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import NamedTuple

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segr1.data.codec import decode_image, decode_mask
from segr1.data.errors import DataError
from segr1.data.sampler import EpochSampler  # noqa: F401  (re-exported: the reader and its sampler travel together)
from segr1.data.schema import TASKS, check_columns
from segr1.protocol import Sample

_BYTE_COLUMNS = ("image", "mask", "ignore")


class OriginalSample(NamedTuple):
    """A sample at its original size, for evaluation."""

    image: np.ndarray  # uint8[H, W, 3] RGB
    mask: np.ndarray  # uint8[H, W], 0 background / 255 target
    ignore: np.ndarray | None  # bool[H, W], True = left out of scoring; None when the row has none


def resize_to_frame(image: np.ndarray, mask: np.ndarray, frame_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image uint8[H, W, 3] and mask uint8[H, W] (0/255) -> uint8[F, F, 3] and bool[F, F] (bilinear, >127)."""
    size = (frame_size, frame_size)
    image_frame = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    mask_frame = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR) > 127
    return image_frame, mask_frame


class SegDataset:
    """Random access to the rows of one Parquet dataset file.

    `load(i)` -> `Sample` in the training frame; `load_original(i)` -> `OriginalSample` at the stored size.
    """

    def __init__(self, path: str | os.PathLike, frame_size: int, *, cache_row_groups: int = 4):
        if frame_size < 1:
            raise ValueError(f"frame_size must be >= 1, got {frame_size}")
        self.path = str(path)
        self.frame_size = frame_size
        if not os.path.isfile(self.path):
            raise DataError(self.path, "no such dataset file")
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(self.path, f"not a readable Parquet file ({error})") from error
        check_columns(self._file.schema_arrow, self.path)
        self._has_ignore = "ignore" in self._file.schema_arrow.names
        meta = self._file.read(columns=["sample_id", "instruction", "task", "source", "width", "height"])
        self._ids: list[str] = meta.column("sample_id").to_pylist()
        self._instructions: list[str] = meta.column("instruction").to_pylist()
        self._tasks: list[str] = meta.column("task").to_pylist()
        self._sources: list[str] = meta.column("source").to_pylist()
        self._widths = meta.column("width").to_numpy()
        self._heights = meta.column("height").to_numpy()
        self._check_metadata()
        group_sizes = [self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)]
        self._group_starts = np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int64)
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._cache_size = max(1, cache_row_groups)

    def _check_metadata(self) -> None:
        seen: dict[str, int] = {}
        for row, sample_id in enumerate(self._ids):
            if sample_id in seen:
                problem = f"duplicate sample_id {sample_id!r} (first at row {seen[sample_id]})"
                raise DataError(self.path, problem, row=row, column="sample_id")
            seen[sample_id] = row
        for row, task in enumerate(self._tasks):
            if task not in TASKS:
                problem = f"unknown task {task!r}, expected one of {TASKS}"
                raise DataError(self.path, problem, row=row, column="task")

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def sample_ids(self) -> list[str]:
        return list(self._ids)

    def task(self, index: int) -> str:
        return self._tasks[self._check_index(index)]

    def sample_id(self, index: int) -> str:
        return self._ids[self._check_index(index)]

    def instruction(self, index: int) -> str:
        return self._instructions[self._check_index(index)]

    def source(self, index: int) -> str:
        return self._sources[self._check_index(index)]

    def original_size(self, index: int) -> tuple[int, int]:
        """(height, width) of the stored image, without decoding it."""
        index = self._check_index(index)
        return int(self._heights[index]), int(self._widths[index])

    def _check_index(self, index: int) -> int:
        if not 0 <= index < len(self._ids):
            raise IndexError(f"{self.path}: index {index} out of range for {len(self._ids)} rows")
        return index

    def _row_bytes(self, index: int) -> dict[str, bytes | None]:
        """The byte columns of one row, reading (and caching) its row group."""
        group = int(np.searchsorted(self._group_starts, index, side="right")) - 1
        table = self._cache.get(group)
        if table is None:
            columns = [name for name in _BYTE_COLUMNS if name != "ignore" or self._has_ignore]
            table = self._file.read_row_group(group, columns=columns)
            self._cache[group] = table
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(group)
        offset = index - int(self._group_starts[group])
        return {name: table.column(name)[offset].as_py() for name in table.column_names}

    def load_original(self, index: int) -> OriginalSample:
        """The row at its stored size: RGB image, 0/255 mask and optional ignore map."""
        index = self._check_index(index)
        data = self._row_bytes(index)
        image = decode_image(data["image"], path=self.path, row=index)
        expected = self.original_size(index)
        if image.shape[:2] != expected:
            problem = (f"image is {image.shape[1]}x{image.shape[0]}, "
                       f"width/height columns say {expected[1]}x{expected[0]}")
            raise DataError(self.path, problem, row=index, column="image")
        mask = self._decode_mask(data["mask"], index, "mask", expected)
        ignore = None
        if data.get("ignore") is not None:
            ignore = self._decode_mask(data["ignore"], index, "ignore", expected) > 127
        return OriginalSample(image, mask, ignore)

    def _decode_mask(self, data: bytes | None, index: int, column: str, size: tuple[int, int]) -> np.ndarray:
        mask = decode_mask(data, path=self.path, row=index, column=column)
        if mask.shape != size:
            problem = f"{column} is {mask.shape[1]}x{mask.shape[0]}, image is {size[1]}x{size[0]}"
            raise DataError(self.path, problem, row=index, column=column)
        return mask

    def load(self, index: int) -> Sample:
        """The row in the training frame: image uint8[F, F, 3], mask bool[F, F]."""
        original = self.load_original(index)
        image, mask = resize_to_frame(original.image, original.mask, self.frame_size)
        return Sample(sample_id=self._ids[index], image=image, mask=mask,
                      instruction=self._instructions[index], task=self._tasks[index])

    def __getstate__(self) -> dict:
        # Open file handles do not pickle (e.g. when sent to a Ray actor): reopen on the other side.
        state = self.__dict__.copy()
        state["_file"], state["_cache"] = None, OrderedDict()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._file = pq.ParquetFile(self.path)

    def __repr__(self) -> str:
        return f"SegDataset({self.path!r}, frame_size={self.frame_size}, rows={len(self)})"
