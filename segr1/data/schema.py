"""The Parquet schema of a Seg-R1 dataset, and validation of its rows.

One row is one segmentation task: an image, the mask to find in it, and the text shown to the model.

| column        | type             | meaning                                                               |
|---------------|------------------|-----------------------------------------------------------------------|
| `sample_id`   | string           | unique within the file                                                |
| `image`       | binary           | the ORIGINAL image file's bytes (PNG or JPEG), never re-encoded       |
| `mask`        | binary           | PNG, one uint8 channel, the image's size: 0 background, 255 target   |
| `ignore`      | binary, nullable | PNG like `mask`; 255 = left out of scoring (ReasonSeg); else null     |
| `instruction` | string           | the task text shown to the model                                      |
| `task`        | string           | "foreground" (SOD/COD), "referring" (RefCOCO) or "reasoning"          |
| `source`      | string           | dataset and split, e.g. "cod10k-train", or "synthetic"                |
| `width`       | int32            | original image width in pixels                                        |
| `height`      | int32            | original image height in pixels                                       |

The `ignore` column is optional when reading: files without it have no ignore pixels. Masks are stored already
binarised ({0, 255}); converters binarise source GTs at >128, the threshold `pysodmetrics` applies, so
scoring the stored mask equals scoring the source GT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from segr1.data.codec import decode_image, decode_mask
from segr1.data.errors import DataError

SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("mask", pa.binary(), nullable=False),
        pa.field("ignore", pa.binary(), nullable=True),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ],
    metadata={b"format": b"segr1-dataset/1"},
)
OPTIONAL_COLUMNS = frozenset({"ignore"})
REQUIRED_COLUMNS = tuple(name for name in SCHEMA.names if name not in OPTIONAL_COLUMNS)

TASKS = ("foreground", "referring", "reasoning")

# Seg-R1 trains every foreground sample (camouflaged, salient, DIS) with one fixed instruction.
FOREGROUND_INSTRUCTION = "segment the primary objects"


def referring_instruction(expression: str) -> str:
    """The instruction for a referring expression, as the paper's referring evaluation phrases it."""
    return f"Identify and segment {expression.strip()}"


@dataclass(frozen=True)
class Row:
    """One dataset row before it is written (see the module docstring for the columns)."""

    sample_id: str
    image: bytes
    mask: bytes
    instruction: str
    task: str
    source: str
    width: int
    height: int
    ignore: bytes | None = None


def check_columns(schema: pa.Schema, path: str) -> None:
    """Raise DataError naming the first required column that `schema` lacks or types differently."""
    for name in SCHEMA.names:
        expected = SCHEMA.field(name).type
        if name not in schema.names:
            if name in OPTIONAL_COLUMNS:
                continue
            raise DataError(path, f"missing column (columns present: {schema.names})", column=name)
        actual = schema.field(name).type
        # Readers accept large_* variants: they carry the same values.
        compatible = {pa.string(): (pa.large_string(),), pa.binary(): (pa.large_binary(),)}
        if actual != expected and actual not in compatible.get(expected, ()):
            raise DataError(path, f"type {actual}, expected {expected}", column=name)


def validate_row(row: Row, path: str, index: int) -> None:
    """Check one row fully (decodes image and masks); raise DataError naming file, row and column.

    Checks: non-empty id and instruction, known task, positive size, image and mask decodable at that size,
    mask and ignore strictly {0, 255}.
    """
    if not row.sample_id:
        raise DataError(path, "empty sample_id", row=index, column="sample_id")
    if not row.instruction.strip():
        raise DataError(path, "empty instruction", row=index, column="instruction")
    if row.task not in TASKS:
        raise DataError(path, f"unknown task {row.task!r}, expected one of {TASKS}", row=index, column="task")
    if row.width <= 0 or row.height <= 0:
        raise DataError(path, f"bad size {row.width}x{row.height}", row=index, column="width")
    image = decode_image(row.image, path=path, row=index)
    if image.shape[:2] != (row.height, row.width):
        problem = f"image is {image.shape[1]}x{image.shape[0]}, row says {row.width}x{row.height}"
        raise DataError(path, problem, row=index, column="image")
    for column, data in (("mask", row.mask), ("ignore", row.ignore)):
        if data is None:
            continue
        mask = decode_mask(data, path=path, row=index, column=column)
        if mask.shape != image.shape[:2]:
            raise DataError(path, f"{column} is {mask.shape[1]}x{mask.shape[0]}, image is "
                            f"{image.shape[1]}x{image.shape[0]}", row=index, column=column)
        values = np.unique(mask)
        if not set(values.tolist()) <= {0, 255}:
            problem = f"values {values[:8].tolist()} outside {{0, 255}}"
            raise DataError(path, problem, row=index, column=column)
