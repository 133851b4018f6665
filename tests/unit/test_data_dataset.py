"""SegDataset: Parquet rows -> frame-sized samples and original-size GTs, with clear errors on bad files."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segr1.data.codec import encode_png, mask_to_png
from segr1.data.dataset import SegDataset
from segr1.data.errors import DataError
from segr1.data.schema import SCHEMA, Row
from segr1.data.writer import DatasetWriter
from segr1.protocol import Sample


def row(sample_id: str, mask: np.ndarray, colour=(10, 20, 30), **changes) -> Row:
    height, width = mask.shape
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colour
    fields = {"sample_id": sample_id, "image": encode_png(image), "mask": mask_to_png(mask),
              "instruction": f"find {sample_id}", "task": "foreground", "source": "unit", "width": width,
              "height": height}
    fields.update(changes)
    return Row(**fields)


def write(path, rows, *, row_group_size: int = 32, validate: bool = True) -> str:
    with DatasetWriter(path, row_group_size=row_group_size, validate=validate) as writer:
        for item in rows:
            writer.write(item)
    return str(path)


def test_load_resizes_to_the_frame_with_bilinear_then_threshold_127(tmp_path):
    # 2x2 GT with its top-left pixel set, upsampled to 4x4: bilinear weights per axis are (1, .75, .25, 0),
    # so the frame values are 255 * wy * wx and only products > 127/255 survive: 1, .75 and .5625.
    gt = np.array([[True, False], [False, False]])
    path = write(tmp_path / "d.parquet", [row("a", gt, task="reasoning")])
    sample = SegDataset(path, frame_size=4).load(0)
    assert isinstance(sample, Sample)
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    assert sample.mask.dtype == bool and np.array_equal(sample.mask, expected)
    assert sample.image.shape == (4, 4, 3) and (sample.image == (10, 20, 30)).all()
    assert (sample.sample_id, sample.instruction, sample.task) == ("a", "find a", "reasoning")


def test_aspect_ratio_is_not_kept_and_original_is_untouched(tmp_path):
    gt = np.zeros((6, 10), bool)
    gt[:, :5] = True  # left half of a wide image stays the left half of the square frame
    path = write(tmp_path / "d.parquet", [row("wide", gt)])
    dataset = SegDataset(path, frame_size=8)
    assert dataset.load(0).mask[:, :4].all() and not dataset.load(0).mask[:, 4:].any()
    original = dataset.load_original(0)
    assert original.image.shape == (6, 10, 3) and original.ignore is None
    assert np.array_equal(original.mask, np.where(gt, 255, 0))
    assert dataset.original_size(0) == (6, 10)


def test_ignore_column_round_trips_and_files_without_it_load(tmp_path):
    gt = np.eye(4, dtype=bool)
    ignore = np.zeros((4, 4), bool)
    ignore[0, 3] = True
    path = write(tmp_path / "d.parquet", [row("a", gt, ignore=mask_to_png(ignore)), row("b", gt)])
    dataset = SegDataset(path, frame_size=4)
    assert np.array_equal(dataset.load_original(0).ignore, ignore)
    assert dataset.load_original(1).ignore is None
    table = pq.read_table(path).drop_columns(["ignore"])
    pq.write_table(table, tmp_path / "no_ignore.parquet")
    assert SegDataset(tmp_path / "no_ignore.parquet", 4).load_original(0).ignore is None


def test_random_access_across_row_groups_with_a_small_cache(tmp_path):
    rows = [row(f"s{i}", np.eye(3, dtype=bool), colour=(i, i, i)) for i in range(7)]
    path = write(tmp_path / "d.parquet", rows, row_group_size=2)
    dataset = SegDataset(path, frame_size=3, cache_row_groups=1)
    assert len(dataset) == 7 and dataset.sample_ids == [f"s{i}" for i in range(7)]
    for index in (6, 0, 3, 3, 5, 1):
        sample = dataset.load(index)
        assert sample.sample_id == f"s{index}" and (sample.image == index).all()
    with pytest.raises(IndexError, match="index 7 out of range"):
        dataset.load(7)


def test_dataset_pickles_and_reopens_its_file(tmp_path):
    path = write(tmp_path / "d.parquet", [row("a", np.eye(3, dtype=bool))])
    dataset = SegDataset(path, frame_size=3)
    dataset.load(0)
    clone = pickle.loads(pickle.dumps(dataset))
    assert np.array_equal(clone.load(0).mask, dataset.load(0).mask)


def test_missing_file_and_non_parquet_are_named(tmp_path):
    with pytest.raises(DataError, match="no such dataset file"):
        SegDataset(tmp_path / "absent.parquet", 8)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"definitely not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        SegDataset(junk, 8)


def test_missing_column_is_named(tmp_path):
    path = write(tmp_path / "d.parquet", [row("a", np.eye(3, dtype=bool))])
    pq.write_table(pq.read_table(path).drop_columns(["mask"]), tmp_path / "nomask.parquet")
    with pytest.raises(DataError, match=r"nomask\.parquet, column 'mask': missing column"):
        SegDataset(tmp_path / "nomask.parquet", 8)


def test_bad_bytes_and_size_mismatch_name_row_and_column(tmp_path):
    good = row("ok", np.eye(4, dtype=bool))
    rows = [good, dataclasses.replace(good, sample_id="garbled", mask=b"\x89PNG\r\n\x1a\n broken"),
            dataclasses.replace(good, sample_id="small", mask=mask_to_png(np.eye(3, dtype=bool)))]
    dataset = SegDataset(write(tmp_path / "bad.parquet", rows, validate=False), 8)
    dataset.load(0)
    with pytest.raises(DataError, match=r"bad\.parquet, row 1, column 'mask': undecodable image bytes"):
        dataset.load(1)
    with pytest.raises(DataError, match=r"row 2, column 'mask': mask is 3x3, image is 4x4"):
        dataset.load(2)


def test_duplicate_ids_and_unknown_tasks_in_a_file_are_rejected(tmp_path):
    base = row("a", np.eye(2, dtype=bool))
    columns = {name: [getattr(base, name)] * 2 for name in SCHEMA.names}
    pq.write_table(pa.Table.from_pydict(columns, schema=SCHEMA), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"row 1, column 'sample_id': duplicate sample_id 'a' \(first at row"):
        SegDataset(tmp_path / "dup.parquet", 4)
    columns["sample_id"], columns["task"] = ["a", "b"], ["foreground", "segment-anything"]
    pq.write_table(pa.Table.from_pydict(columns, schema=SCHEMA), tmp_path / "task.parquet")
    with pytest.raises(DataError, match=r"row 1, column 'task': unknown task 'segment-anything'"):
        SegDataset(tmp_path / "task.parquet", 4)
