"""ReasonSeg converter on real jpg + LabelMe json files: target vs ignore polygons, questions, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segr1.data.convert import convert
from segr1.data.dataset import SegDataset
from segr1.data.errors import DataError

HEIGHT, WIDTH = 10, 12


def box_polygon(x1: int, y1: int, x2: int, y2: int) -> list[list[float]]:
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def put_sample(folder: Path, stem: str, shapes: list[tuple[str, list]], texts,
               encoding: str = "utf-8") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{stem}.jpg"), np.full((HEIGHT, WIDTH, 3), 120, np.uint8))
    annotation = {"text": texts, "is_sentence": True, "imageHeight": HEIGHT, "imageWidth": WIDTH,
                  "shapes": [{"label": label, "points": points, "shape_type": "polygon", "group_id": None}
                             for label, points in shapes]}
    (folder / f"{stem}.json").write_bytes(json.dumps(annotation, ensure_ascii=False).encode(encoding))


def region(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    """Inclusive pixel rectangle, as a filled and outlined integer polygon covers it."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y1:y2 + 1, x1:x2 + 1] = True
    return mask


def test_target_ignore_and_painting_order(tmp_path):
    split = tmp_path / "ReasonSeg" / "val"
    # a: large target with a smaller ignore hole (drawn after, so it wins); a deprecated 'flag' shape.
    put_sample(split, "a", [("target", box_polygon(1, 1, 9, 8)), ("ignore", box_polygon(3, 3, 5, 5)),
                            ("flag", box_polygon(0, 0, 2, 2))],
               ["What would you sit on?", "Which object offers a seat?"])
    # b: the target lies inside a larger ignore region; the smaller target is painted last and is kept.
    # Fractional vertices are truncated, as the benchmark's reference masks were drawn.
    shapes = [("target", box_polygon(4.9, 4.2, 6.7, 6.9)), ("ignore", box_polygon(2, 2, 10, 9))]
    put_sample(split, "b", shapes, "Where is the café cup?", encoding="cp1252")
    (split / "notes.txt").write_text("readme")
    (split / "orphan.json").write_text("{}")
    stats = convert("reasonseg", str(tmp_path / "ReasonSeg"), str(tmp_path / "val.parquet"), split="val")
    assert stats.rows == 2
    assert stats.skipped == {"deprecated 'flag' shape": 1, "further questions (all_texts=False)": 1,
                             "neither image nor json": 1, "json without image": 1}
    dataset = SegDataset(tmp_path / "val.parquet", frame_size=5)
    a, b = dataset.load_original(0), dataset.load_original(1)
    assert np.array_equal(a.mask > 0, region(1, 8, 1, 9) & ~region(3, 5, 3, 5))
    assert np.array_equal(a.ignore, region(3, 5, 3, 5))
    assert np.array_equal(b.mask > 0, region(4, 6, 4, 6))
    assert np.array_equal(b.ignore, region(2, 9, 2, 10) & ~region(4, 6, 4, 6))
    instructions = [dataset.load(i).instruction for i in (0, 1)]
    assert instructions == ["What would you sit on?", "Where is the café cup?"]
    assert {dataset.task(0), dataset.source(1)} == {"reasoning", "reasonseg-val"}


def test_all_texts_gives_one_row_per_question(tmp_path):
    put_sample(tmp_path / "val", "a", [("target", box_polygon(1, 1, 4, 4))], ["first?", "second?", " "])
    stats = convert("reasonseg", str(tmp_path), str(tmp_path / "x.parquet"), all_texts=True)
    dataset = SegDataset(tmp_path / "x.parquet", 4)
    assert stats.rows == 2 and dataset.sample_ids == ["reasonseg-val/a/0", "reasonseg-val/a/1"]
    assert dataset.load_original(0).ignore is None  # no ignore shape: the column stays null


def test_errors_name_the_file(tmp_path):
    split = tmp_path / "val"
    put_sample(split, "a", [("target", box_polygon(1, 1, 4, 4))], ["q?"])
    (split / "a.json").unlink()
    with pytest.raises(DataError, match=r"a\.jpg: no LabelMe json a\.json"):
        convert("reasonseg", str(tmp_path), str(tmp_path / "x.parquet"))
    put_sample(split, "a", [("target", [[1, 1], [2, 2]])], ["q?"])
    with pytest.raises(DataError, match=r"a\.json: shape 0: a polygon needs >= 3 points"):
        convert("reasonseg", str(tmp_path), str(tmp_path / "x.parquet"))
    put_sample(split, "a", [("target", box_polygon(1, 1, 4, 4))], [])
    with pytest.raises(DataError, match=r"a\.json: no question under key 'text'"):
        convert("reasonseg", str(tmp_path), str(tmp_path / "x.parquet"))
    with pytest.raises(DataError, match=r"test: missing folder"):
        convert("reasonseg", str(tmp_path), str(tmp_path / "x.parquet"), split="test")
