"""`skip_bad`: converters leave bad samples out, count them and list them beside the output; without it the
first bad sample is an error naming its file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from segr1.data.convert import convert
from segr1.data.converters.common import BAD_SAMPLE, skipped_list_path
from segr1.data.dataset import SegDataset
from segr1.data.errors import DataError
from tests.unit.test_data_converters import put_gt, put_image


def read_list(out: Path) -> list[list[str]]:
    with open(skipped_list_path(out), newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def cod10k_with_two_bad_samples(root: Path) -> dict[str, Path]:
    """Train split: samples 1 and 4 good, 2 with a corrupt image, 3 with a GT of another size."""
    stems = {k: f"COD10K-CAM-1-Aquatic-1-Fish-{k}" for k in (1, 2, 3, 4)}
    for k, stem in stems.items():
        put_image(root / "Train/Image" / f"{stem}.jpg")
        put_gt(root / "Train/GT_Object" / f"{stem}.png", height=10 if k == 3 else 12)
    corrupt = root / "Train/Image" / f"{stems[2]}.jpg"
    corrupt.write_bytes(b"this is not a JPEG")
    return {"corrupt": corrupt, "mismatched": root / "Train/GT_Object" / f"{stems[3]}.png",
            "good": [stems[1], stems[4]]}


def test_skip_bad_converts_the_good_samples_and_lists_the_bad_ones(tmp_path):
    fixture = cod10k_with_two_bad_samples(tmp_path / "COD10K-v3")
    out = tmp_path / "cod.parquet"
    stats = convert("cod10k", str(tmp_path / "COD10K-v3"), str(out), skip_bad=True)
    assert stats.rows == 2 and stats.skipped == {BAD_SAMPLE: 2}
    assert SegDataset(out, frame_size=8).sample_ids == [f"cod10k-train/{stem}" for stem in fixture["good"]]
    header, corrupt, mismatched = read_list(out)
    assert header == ["path", "reason"]
    assert corrupt[0] == str(fixture["corrupt"]) and corrupt[1].startswith("undecodable image bytes (18 bytes")
    assert mismatched[0] == str(fixture["mismatched"])
    assert mismatched[1].startswith("ground truth is 16x10 but image ") and mismatched[1].endswith("is 16x12")
    assert f"bad samples skipped: 2, listed in {out}.skipped.csv" in stats.summary()


def test_without_skip_bad_the_first_bad_sample_is_an_error_and_nothing_is_written(tmp_path):
    fixture = cod10k_with_two_bad_samples(tmp_path / "COD10K-v3")
    out = tmp_path / "cod.parquet"
    with pytest.raises(DataError, match=rf"^{fixture['corrupt']}, column 'file': undecodable image bytes"):
        convert("cod10k", str(tmp_path / "COD10K-v3"), str(out))
    assert not out.exists() and not Path(skipped_list_path(out)).exists()


def test_skip_bad_lists_an_image_without_ground_truth(tmp_path):
    root = tmp_path / "NC4K"
    put_image(root / "Imgs/1.jpg")
    put_gt(root / "GT/1.png")
    put_image(root / "Imgs/2.jpg")
    out = tmp_path / "nc4k.parquet"
    stats = convert("nc4k", str(root), str(out), skip_bad=True)
    assert stats.rows == 1 and stats.skipped == {BAD_SAMPLE: 1}
    assert read_list(out)[1] == [str(root / "Imgs/2.jpg"), f"no ground truth with stem '2' in {root / 'GT'}"]


def test_skip_bad_writes_a_header_only_list_when_all_samples_are_good(tmp_path):
    root = tmp_path / "NC4K"
    put_image(root / "Imgs/1.jpg")
    put_gt(root / "GT/1.png")
    out = tmp_path / "nc4k.parquet"
    Path(skipped_list_path(out)).write_text("path,reason\nstale,from an earlier run\n")
    assert convert("nc4k", str(root), str(out), skip_bad=True).rows == 1
    assert read_list(out) == [["path", "reason"]]


def test_skip_bad_drops_a_reasonseg_sample_with_an_unreadable_annotation(tmp_path):
    split = tmp_path / "ReasonSeg/val"
    for stem in ("a", "b"):
        put_image(split / f"{stem}.jpg")
        shape = {"label": "target", "points": [[1, 1], [10, 1], [10, 8]]}
        (split / f"{stem}.json").write_text(json.dumps({"text": ["what is it?"], "shapes": [shape]}))
    (split / "b.json").write_bytes(b"{not json")
    out = tmp_path / "reason.parquet"
    stats = convert("reasonseg", str(tmp_path / "ReasonSeg"), str(out), skip_bad=True)
    assert stats.rows == 1 and SegDataset(out, 8).sample_ids == ["reasonseg-val/a/0"]
    (path, reason), = read_list(out)[1:]
    assert path == str(split / "b.json") and reason.startswith("unreadable LabelMe json")
