"""Foreground converters (COD10K, CAMO, NC4K, DUTS, DIS5K) and the registry, on real files in real layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from segr1.data.convert import CONVERTERS, convert, splits
from segr1.data.dataset import SegDataset
from segr1.data.errors import DataError
from segr1.data.schema import FOREGROUND_INSTRUCTION
from segr1.errors import UsageError


def put_image(path: Path, height: int = 12, width: int = 16, shade: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, 3), shade, np.uint8)
    image[:, : width // 2, 2] = 200
    cv2.imwrite(str(path), image)
    return path


def put_gt(path: Path, height: int = 12, width: int = 16, *, colour: bool = False) -> np.ndarray:
    """A GT with soft values around the object (as real GTs have); returns the expected stored mask."""
    gray = np.zeros((height, width), np.uint8)
    gray[2:8, 3:9] = 255
    gray[8, 3:9] = 128  # exactly 128: background under pysodmetrics' >128 rule
    gray[2:8, 9] = 129  # just above: foreground
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.merge([gray, gray, gray]) if colour else gray)
    expected = np.zeros((height, width), np.uint8)
    expected[2:8, 3:10] = 255
    return expected


def test_registry_names_splits_and_unknown_name():
    assert set(CONVERTERS) == {"cod10k", "camo", "nc4k", "duts", "dis5k", "refcoco", "reasonseg"}
    assert splits("cod10k") == ("train", "test") and splits("nc4k") == ("test",)
    assert "test3" in splits("dis5k")
    with pytest.raises(UsageError, match="unknown dataset 'coco'"):
        convert("coco", "/nowhere", "x.parquet")


def test_cod10k_keeps_camouflaged_images_and_counts_the_rest(tmp_path):
    root = tmp_path / "COD10K-v3"
    names = ["COD10K-CAM-1-Aquatic-1-BatFish-1", "COD10K-CAM-3-Flying-53-Bird-3"]
    for name in names:
        put_image(root / "Train/Image" / f"{name}.jpg")
        expected = put_gt(root / "Train/GT_Object" / f"{name}.png")
    put_image(root / "Train/Image/COD10K-NonCAM-5-Background-1-Bridge-1.jpg")
    (root / "Train/Image/Thumbs.db").write_bytes(b"x")
    stats = convert("cod10k", str(root), str(tmp_path / "cod.parquet"), split="train")
    assert stats.rows == 2
    assert stats.skipped == {"not camouflaged (COD10K-NonCAM)": 1, "not an image file": 1}
    assert "NonCAM" in stats.examples["not camouflaged (COD10K-NonCAM)"] and "skipped 1" in stats.summary()
    dataset = SegDataset(tmp_path / "cod.parquet", frame_size=8)
    assert dataset.sample_ids == [f"cod10k-train/{name}" for name in names]
    original = dataset.load_original(1)
    assert np.array_equal(original.mask, expected)
    assert original.image.shape == (12, 16, 3)
    sample = dataset.load(0)
    assert (sample.instruction, sample.task, dataset.source(0)) == (FOREGROUND_INSTRUCTION, "foreground",
                                                                    "cod10k-train")


def test_image_bytes_are_stored_as_they_are(tmp_path):
    image_path = put_image(tmp_path / "nc4k/Imgs/1.jpg")
    put_gt(tmp_path / "nc4k/GT/1.png")
    convert("nc4k", str(tmp_path / "nc4k"), str(tmp_path / "nc4k.parquet"))  # default split: test
    assert pq.read_table(tmp_path / "nc4k.parquet").column("image")[0].as_py() == image_path.read_bytes()


def test_missing_folder_and_unmatched_image_are_errors_naming_the_path(tmp_path):
    root = tmp_path / "COD10K-v3"
    with pytest.raises(DataError, match=r"COD10K-v3: missing folder \(expected the cod10k dataset root\)"):
        convert("cod10k", str(root), str(tmp_path / "x.parquet"), split="train")
    put_image(root / "Test/Image/COD10K-CAM-1-A-1-B-1.jpg")
    with pytest.raises(DataError, match=r"Train/Image: missing folder"):
        convert("cod10k", str(root), str(tmp_path / "x.parquet"), split="train")
    put_image(root / "Test/Image/COD10K-CAM-1-A-1-B-2.jpg")
    put_gt(root / "Test/GT_Object/COD10K-CAM-1-A-1-B-1.png")
    with pytest.raises(DataError, match=r"COD10K-CAM-1-A-1-B-2\.jpg: no ground truth"):
        convert("cod10k", str(root), str(tmp_path / "x.parquet"), split="test")
    assert not (tmp_path / "x.parquet").exists()
    stats = convert("cod10k", str(root), str(tmp_path / "x.parquet"), split="test", allow_unmatched=True)
    assert stats.rows == 1 and stats.skipped == {"image without ground truth": 1}


def test_camo_pairs_the_mixed_gt_folder_by_stem(tmp_path):
    root = tmp_path / "CAMO"
    for name in ("camourflage_00001", "camourflage_00002"):
        put_image(root / "Images/Train" / f"{name}.jpg")
        put_gt(root / "GT" / f"{name}.png")
    put_image(root / "Images/Test/camourflage_00003.jpg")
    put_gt(root / "GT/camourflage_00003.png")
    train = convert("camo", str(root), str(tmp_path / "train.parquet"), split="train")
    assert train.rows == 2 and train.skipped == {"ground truth without image in this split": 1}
    test = convert("camo", str(root), str(tmp_path / "test.parquet"), split="test")
    assert test.rows == 1 and test.skipped == {"ground truth without image in this split": 2}
    assert SegDataset(tmp_path / "test.parquet", 8).sample_ids == ["camo-test/camourflage_00003"]


def test_duts_reads_colour_gts_and_checks_sizes(tmp_path):
    root = tmp_path / "DUTS"
    put_image(root / "DUTS-TR/DUTS-TR-Image/ILSVRC2012_test_00000004.jpg")
    expected = put_gt(root / "DUTS-TR/DUTS-TR-Mask/ILSVRC2012_test_00000004.png", colour=True)
    stats = convert("duts", str(root), str(tmp_path / "duts.parquet"))
    assert stats.rows == 1
    assert np.array_equal(SegDataset(tmp_path / "duts.parquet", 8).load_original(0).mask, expected)
    put_image(root / "DUTS-TE/DUTS-TE-Image/a.jpg", height=12)
    put_gt(root / "DUTS-TE/DUTS-TE-Mask/a.png", height=10)
    with pytest.raises(DataError, match=r"a\.png: ground truth is 16x10 but image .*a\.jpg is 16x12"):
        convert("duts", str(root), str(tmp_path / "te.parquet"), split="test")


def test_dis5k_test_split_joins_the_four_parts(tmp_path):
    root = tmp_path / "DIS5K"
    for part in ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4"):
        put_image(root / part / "im/1#Accessories#1#Bag#1.jpg")  # same stem in every part
        put_gt(root / part / "gt/1#Accessories#1#Bag#1.png")
    stats = convert("dis5k", str(root), str(tmp_path / "dis.parquet"), split="test")
    assert stats.rows == 4
    dataset = SegDataset(tmp_path / "dis.parquet", 8)
    assert dataset.sample_ids == [f"DIS-TE{k}/1#Accessories#1#Bag#1" for k in (1, 2, 3, 4)]
    with pytest.raises(DataError, match=r"DIS-VD/im: missing folder"):
        convert("dis5k", str(root), str(tmp_path / "vd.parquet"), split="val")


def test_wrong_split_and_empty_result_are_errors(tmp_path):
    with pytest.raises(UsageError, match=r"nc4k has splits \('test',\), not 'train'"):
        convert("nc4k", str(tmp_path), str(tmp_path / "x.parquet"), split="train")
    (tmp_path / "nc4k/Imgs").mkdir(parents=True)
    (tmp_path / "nc4k/GT").mkdir(parents=True)
    with pytest.raises(DataError, match="no rows to write"):
        convert("nc4k", str(tmp_path / "nc4k"), str(tmp_path / "x.parquet"))
    assert not (tmp_path / "x.parquet").exists()
