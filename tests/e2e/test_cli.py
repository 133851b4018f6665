"""The `segr1` front door: data synth, eval (on local Ray pools) and predict as a user calls them (subprocesses,
real models)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.e2e import runs
from tests.unit.eval_tables import expected_cells, table_cells

SEGR1 = str(Path(sys.executable).with_name("segr1"))


@pytest.fixture(scope="module")
def tiny_vlm() -> str:
    from rollout.tiny_model import ensure_tiny_vlm

    return ensure_tiny_vlm(str(runs.ROOT / ".cache" / "tiny_vlm"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth.parquet"
    proc = runs.run([SEGR1, "data", "synth", "--out", str(out), "--n", "6", "--seed", "3", "--size", "64"])
    assert "6 synthetic samples" in proc.stdout
    return out


def test_data_synth_writes_the_parquet_schema(synth):
    table = pq.read_table(synth)
    assert table.num_rows == 6
    assert {"sample_id", "image", "mask", "instruction", "task", "width", "height"} <= set(table.column_names)
    assert set(table.column("width").to_pylist()) == {64}


def test_eval_on_the_pools_prints_eval_json_and_resumes(synth, tiny_vlm, tmp_path):
    """The real tiny VLM on a local Ray cluster's rollout and reward pools (2 workers, 2 actors); then the same
    eval interrupted after 3 samples (its CSV cut back, with a half-written line) is resumed."""
    out = tmp_path / "eval.json"
    args = [SEGR1, "eval", "--config", runs.CONFIG, "--checkpoint", tiny_vlm, "--out", str(out),
            f"data.eval={synth}", "data.frame_size=112", "rollout.num_workers=2", "reward.num_actors=2",
            "rollout.max_batch_prompts=2"]
    proc = runs.run(args)
    record = json.loads(out.read_text())
    assert record["n"] == 6 and record["checkpoint"] == str(Path(tiny_vlm).resolve())
    # the printed numbers are eval.json's: policy, blind and oracle rows
    assert table_cells(proc.stdout) == expected_cells(record)
    assert {"eval", "blind (fixed prompt)", "oracle (GT box + point)"} <= set(table_cells(proc.stdout))
    blind, oracle = (record["baselines"][k]["benchmarks"] for k in ("blind", "oracle"))
    assert oracle["oracle (GT box + point)"]["metrics"]["gIoU"] > blind["blind (fixed prompt)"]["metrics"]["gIoU"]

    samples = tmp_path / "eval_samples.csv"
    with samples.open() as file:
        rows = list(csv.DictReader(file))
    assert {r["worker"] for r in rows} == {"rollout-0", "rollout-1"}  # data-parallel over both engines
    assert {r["reward_actor"] for r in rows} <= {"reward-0", "reward-1"}
    lines = samples.read_text().splitlines()
    assert len(lines) == 7 and sorted(line.split(",")[0] for line in lines[1:]) == [str(i) for i in range(6)]
    samples.write_text("\n".join(lines[:4]) + "\n" + lines[4][:30])  # 3 rows kept, the 4th cut mid-line
    out.unlink()
    resumed = runs.run(args)
    assert "6/6 samples" in resumed.stderr and "3 from an earlier run" in resumed.stderr
    assert json.loads(out.read_text()) == record and table_cells(resumed.stdout) == expected_cells(record)
    indices = [line.split(",")[0] for line in samples.read_text().splitlines()[1:]]
    assert sorted(indices) == [str(i) for i in range(6)]  # each sample exactly once


def test_predict_writes_a_mask_of_the_image_size(tiny_vlm, tmp_path):
    image = (np.random.default_rng(0).integers(0, 255, (90, 140, 3))).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    runs.run([SEGR1, "predict", "--checkpoint", tiny_vlm, "--config", runs.CONFIG, "--image",
              str(tmp_path / "in.png"), "--out", str(tmp_path / "mask.png"), "--overlay", str(tmp_path / "ov.png")])
    mask = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (90, 140) and set(np.unique(mask)) <= {0, 255}
    height, width, _ = cv2.imread(str(tmp_path / "ov.png")).shape
    assert width == 448 and height > 448  # the model's 112 px frame upscaled 4x, with a legend strip below


def test_bad_config_key_exits_2_naming_the_key(tmp_path):
    import subprocess

    proc = subprocess.run([SEGR1, "train", "--config", runs.CONFIG, "algorithm.gruop_size=4"], cwd=runs.ROOT,
                          env=runs.env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "algorithm.gruop_size" in proc.stderr


def test_bad_input_is_one_line_and_debug_shows_the_traceback(tmp_path):
    import subprocess

    (tmp_path / "COD10K-v3/Test/Image").mkdir(parents=True)  # no Train/ folder
    args = ["data", "convert", "cod10k", "--root", str(tmp_path / "COD10K-v3"), "--out", str(tmp_path / "x.parquet")]
    plain, debug = (subprocess.run([SEGR1, *flags, *args], cwd=runs.ROOT, env=runs.env(), capture_output=True,
                                   text=True, timeout=120, check=False) for flags in ([], ["--debug"]))
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    missing = tmp_path / "COD10K-v3" / "Train" / "Image"
    assert plain.stderr.splitlines() == [f"segr1: data error: {missing}: missing folder (expected COD10K-v3 images)"]
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("segr1.data.errors.DataError: ")
