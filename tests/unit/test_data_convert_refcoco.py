"""RefCOCO converter on a real refs pickle and COCO instances.json (polygon, RLE, uncompressed RLE masks)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segr1.data.convert import convert
from segr1.data.dataset import SegDataset
from segr1.data.errors import DataError
from segr1.errors import UsageError

HEIGHT, WIDTH = 8, 10


def rectangle(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


# Expected masks, written by hand. The polygon's corners lie on pixel edges (COCO's continuous coordinates),
# so the rectangle (2,1)-(6,4) covers pixel columns 2..5 and rows 1..3.
POLYGON_MASK = rectangle(1, 4, 2, 6)
RLE_MASK = rectangle(5, 8, 0, 3)
UNCOMPRESSED_MASK = rectangle(0, 2, 7, 10)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's iscrowd format: run lengths over the column-major pixels, starting with a zero run."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"counts": runs if flat[0] == 0 else [0, *runs], "size": [HEIGHT, WIDTH]}


def build_refcoco(root: Path, split_by: str = "unc", dataset: str = "refcoco") -> Path:
    """root/<dataset>/refs(<split_by>).p, root/<dataset>/instances.json, root/images/train2014/*.jpg."""
    images_dir = root / "images" / "train2014"
    images_dir.mkdir(parents=True)
    for image_id in (1, 2):
        image = np.full((HEIGHT, WIDTH, 3), 40 * image_id, np.uint8)
        cv2.imwrite(str(images_dir / f"COCO_train2014_{image_id:012d}.jpg"), image)
    compressed = mask_utils.encode(np.asfortranarray(RLE_MASK))
    compressed["counts"] = compressed["counts"].decode("ascii")
    annotations = [
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [2, 1, 4, 3], "area": 12,
         "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 5, 3, 3], "area": 9,
         "segmentation": compressed},
        {"id": 21, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [7, 0, 3, 2], "area": 6,
         "segmentation": uncompressed_rle(UNCOMPRESSED_MASK)},
    ]
    instances = {"images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": HEIGHT,
                             "width": WIDTH} for i in (1, 2)],
                 "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    dataset_dir = root / dataset
    dataset_dir.mkdir()
    (dataset_dir / "instances.json").write_text(json.dumps(instances))

    def ref(ref_id, image_id, ann_id, split, sentences):
        return {"ref_id": ref_id, "image_id": image_id, "ann_id": ann_id, "split": split, "category_id": 1,
                "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                "sent_ids": [s[0] for s in sentences],
                "sentences": [{"sent_id": sid, "sent": text, "raw": text.title(), "tokens": text.split()}
                              for sid, text in sentences]}

    refs = [ref(0, 1, 11, "val", [(100, "man on left"), (101, "guy in red")]),
            ref(1, 1, 12, "val", [(102, "bottom corner thing")]),
            ref(2, 2, 21, "val", [(103, "top right")]),
            ref(3, 2, 21, "train", [(104, "not in val")])]
    with open(dataset_dir / f"refs({split_by}).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return root


def test_one_row_per_expression_with_decoded_masks(tmp_path):
    root = build_refcoco(tmp_path / "refer")
    stats = convert("refcoco", str(root), str(tmp_path / "val.parquet"), split="val")
    assert stats.rows == 4 and stats.skipped == {"refs of other splits": 1}
    dataset = SegDataset(tmp_path / "val.parquet", frame_size=4)
    assert dataset.sample_ids == [f"refcoco-val/{sid}" for sid in (100, 101, 102, 103)]
    expected = [POLYGON_MASK, POLYGON_MASK, RLE_MASK, UNCOMPRESSED_MASK]
    instructions = ["Identify and segment man on left", "Identify and segment guy in red",
                    "Identify and segment bottom corner thing", "Identify and segment top right"]
    for index in range(4):
        assert np.array_equal(dataset.load_original(index).mask, expected[index] * 255), index
        sample = dataset.load(index)
        assert (sample.instruction, sample.task) == (instructions[index], "referring")
    assert dataset.load_original(3).image.mean() == pytest.approx(80, abs=2)


def test_one_per_image_draws_one_seeded_expression_per_image(tmp_path):
    root = build_refcoco(tmp_path / "refer")
    first = convert("refcoco", str(root), str(tmp_path / "a.parquet"), "val", one_per_image=True, seed=7)
    convert("refcoco", str(root), str(tmp_path / "b.parquet"), "val", one_per_image=True, seed=7)
    assert first.rows == 2 and first.skipped["expressions not drawn (one_per_image)"] == 2
    ids = SegDataset(tmp_path / "a.parquet", 4).sample_ids
    assert ids == SegDataset(tmp_path / "b.parquet", 4).sample_ids
    assert ids[0] in {"refcoco-val/100", "refcoco-val/101", "refcoco-val/102"} and ids[1] == "refcoco-val/103"
    drawn = {tuple(SegDataset(convert("refcoco", str(root), str(tmp_path / f"s{seed}.parquet"), split="val",
                                      one_per_image=True, seed=seed).out, 4).sample_ids) for seed in range(8)}
    assert len(drawn) > 1  # the draw depends on the seed


def test_refcocog_uses_umd_refs_and_its_own_splits(tmp_path):
    root = build_refcoco(tmp_path / "refer", split_by="umd", dataset="refcocog")
    stats = convert("refcoco", str(root), str(tmp_path / "g.parquet"), split="val", dataset="refcocog")
    assert stats.rows == 4 and SegDataset(tmp_path / "g.parquet", 4).source(0) == "refcocog-val"
    with pytest.raises(UsageError, match="refcocog has splits"):
        convert("refcoco", str(root), str(tmp_path / "g.parquet"), split="testA", dataset="refcocog")
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: missing file"):
        convert("refcoco", str(root), str(tmp_path / "g.parquet"), "val", dataset="refcocog", split_by="unc")


def test_missing_image_annotation_and_corrupt_pickle_are_named(tmp_path):
    root = build_refcoco(tmp_path / "refer")
    instances = json.loads((root / "refcoco/instances.json").read_text())
    original = json.dumps(instances)
    instances["annotations"] = [ann for ann in instances["annotations"] if ann["id"] != 21]
    (root / "refcoco/instances.json").write_text(json.dumps(instances))
    with pytest.raises(DataError, match=r"instances\.json: has no annotation 21 \(referred to by ref 2\)"):
        convert("refcoco", str(root), str(tmp_path / "x.parquet"), split="val")
    (root / "refcoco/instances.json").write_text(original)
    (root / "images/train2014/COCO_train2014_000000000002.jpg").unlink()
    with pytest.raises(DataError, match=r"000000000002\.jpg: missing image file of image_id 2"):
        convert("refcoco", str(root), str(tmp_path / "x.parquet"), split="val")
    (root / "refcoco/refs(unc).p").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: unreadable refs pickle"):
        convert("refcoco", str(root), str(tmp_path / "x.parquet"), split="val")


def test_skip_bad_leaves_out_an_image_that_is_missing_and_keeps_the_others(tmp_path):
    root = build_refcoco(tmp_path / "refer")
    missing = root / "images/train2014/COCO_train2014_000000000002.jpg"
    missing.unlink()
    stats = convert("refcoco", str(root), str(tmp_path / "x.parquet"), split="val", skip_bad=True)
    assert stats.rows == 3 and stats.bad == [(str(missing), "missing image file of image_id 2")]
    assert SegDataset(tmp_path / "x.parquet", 4).sample_ids == [f"refcoco-val/{sid}" for sid in (100, 101, 102)]
    (root / "refcoco/instances.json").write_text("{not json")
    with pytest.raises(DataError, match=r"instances\.json: unreadable COCO instances json \(JSONDecodeError"):
        convert("refcoco", str(root), str(tmp_path / "x.parquet"), split="val")
