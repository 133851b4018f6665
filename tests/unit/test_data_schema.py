"""The Parquet schema, row validation, the codec and DatasetWriter (segr1.data.schema / codec / writer)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from segr1.data.codec import binarize_gt, decode_image, decode_mask, encode_png, mask_to_png
from segr1.data.errors import DataError
from segr1.data.schema import (
    FOREGROUND_INSTRUCTION,
    REQUIRED_COLUMNS,
    SCHEMA,
    Row,
    check_columns,
    referring_instruction,
    validate_row,
)
from segr1.data.writer import DatasetWriter


def make_row(sample_id: str = "a", **changes) -> Row:
    """A valid 8x6 row, with `changes` applied to its fields afterwards."""
    height, width = 6, 8
    image = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    mask = np.zeros((height, width), bool)
    mask[1:3, 2:5] = True
    fields = {"sample_id": sample_id, "image": encode_png(image), "mask": mask_to_png(mask),
              "instruction": FOREGROUND_INSTRUCTION, "task": "foreground", "source": "unit", "width": width,
              "height": height}
    fields.update(changes)
    return Row(**fields)


def test_schema_columns_and_optional_ignore():
    assert SCHEMA.names == ["sample_id", "image", "mask", "ignore", "instruction", "task", "source", "width",
                            "height"]
    assert "ignore" not in REQUIRED_COLUMNS and SCHEMA.field("ignore").nullable
    assert str(SCHEMA.field("width").type) == "int32"


def test_referring_instruction_wording():
    assert referring_instruction("  the man in red ") == "Identify and segment the man in red"


def test_codec_round_trip_keeps_rgb_order_and_mask_values():
    image = np.zeros((3, 4, 3), np.uint8)
    image[..., 0] = 200  # pure red must stay in channel 0 (OpenCV works in BGR internally)
    assert np.array_equal(decode_image(encode_png(image)), image)
    mask = np.array([[True, False], [False, True]])
    assert decode_mask(mask_to_png(mask)).tolist() == [[255, 0], [0, 255]]


def test_binarize_gt_uses_the_pysodmetrics_threshold():
    assert binarize_gt(np.array([[0, 128, 129, 255]], np.uint8)).tolist() == [[0, 0, 255, 255]]


def test_decode_errors_name_file_row_and_column():
    with pytest.raises(DataError, match=r"x\.parquet, row 17, column 'mask': undecodable") as caught:
        decode_mask(b"not a png at all", path="x.parquet", row=17, column="mask")
    assert (caught.value.row, caught.value.column) == (17, "mask")
    colour = encode_png(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="single-channel"):
        decode_mask(colour, path="x.parquet", row=0)


@pytest.mark.parametrize(
    ("changes", "column", "message"),
    [
        ({"sample_id": ""}, "sample_id", "empty sample_id"),
        ({"task": "detection"}, "task", "unknown task"),
        ({"instruction": "  "}, "instruction", "empty instruction"),
        ({"width": 9}, "image", "row says 9x6"),
        ({"height": 0}, "width", "bad size"),
        ({"mask": mask_to_png(np.zeros((5, 8), bool))}, "mask", "mask is 8x5"),
        ({"mask": encode_png(np.full((6, 8), 7, np.uint8))}, "mask", "outside"),
        ({"image": b"\x89PNG broken"}, "image", "undecodable"),
        ({"ignore": encode_png(np.full((6, 8), 1, np.uint8))}, "ignore", "outside"),
    ],
)
def test_validate_row_rejects_bad_rows(changes, column, message):
    with pytest.raises(DataError, match=message) as caught:
        validate_row(make_row(**changes), "d.parquet", 4)
    assert (caught.value.path, caught.value.row, caught.value.column) == ("d.parquet", 4, column)


def test_check_columns_names_the_missing_column():
    schema = SCHEMA.remove(SCHEMA.get_field_index("task"))
    with pytest.raises(DataError, match="missing column") as caught:
        check_columns(schema, "d.parquet")
    assert caught.value.column == "task"
    check_columns(SCHEMA.remove(SCHEMA.get_field_index("ignore")), "d.parquet")  # optional column


def test_writer_streams_row_groups_and_rejects_duplicates(tmp_path):
    path = tmp_path / "d.parquet"
    with DatasetWriter(path, row_group_size=2) as writer:
        for index in range(5):
            writer.write(make_row(f"s{index}"))
        with pytest.raises(DataError, match="duplicate sample_id 's1'"):
            writer.write(make_row("s1"))
    parquet = pq.ParquetFile(path)
    assert [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)] == [2, 2, 1]
    table = parquet.read()
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.column("sample_id").to_pylist() == ["s0", "s1", "s2", "s3", "s4"]
    assert table.column("ignore").null_count == 5


def test_writer_leaves_no_file_when_a_row_is_invalid(tmp_path):
    path = tmp_path / "d.parquet"
    with pytest.raises(DataError, match="row 1, column 'task'"), DatasetWriter(path) as writer:
        writer.write(make_row("ok"))
        writer.write(make_row("bad", task="nope"))
    assert list(tmp_path.iterdir()) == []
