"""`segr1 eval`'s loop (cluster.checkpoint_eval) in-process: a scripted engine (the rollout Engine interface)
writes known prompts, a box segmenter turns them into known masks, and the real RewardActor scores them.

Checks: eval.json equals pysodmetrics (and cIoU/gIoU by numpy) computed here on the same masks at the GTs'
original size, for the policy, blind and oracle rows; the printed table shows exactly eval.json's numbers;
an eval interrupted after k samples, with a half-written line at the end of its CSV, resumes without re-running
the logged samples, logs every sample exactly once and writes the same eval.json as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import py_sod_metrics
import pytest

from cluster.checkpoint_eval import (
    LocalBaselines,
    blind_prompt,
    eval_identity,
    eval_indices,
    eval_record,
    evaluate_rows,
)
from frontdoor.eval_checkpoint import report_text
from reward_server.actor import RewardActor
from reward_server.baselines import mask_box, oracle_prompt, prompt_from_dict
from reward_server.parse import SegPrompt, parse_completion, render
from reward_server.segmenters import SegmentTiming
from segr1.config import load_config
from segr1.data.dataset import SegDataset
from segr1.data.synth import synth_row
from segr1.data.writer import DatasetWriter
from segr1.errors import UsageError
from segr1.evaluation import to_original_size
from segr1.evaluation.sample_log import FIELDS, SampleLog
from segr1.protocol import Completion, RolloutGroup
from tests.unit.eval_tables import expected_cells, table_cells

FRAME = 48  # the model's frame; the synthetic originals are 64 px, so every mask is resized back for scoring
N = 8  # rows 0-5 foreground (COD-style), 6-7 referring
CHUNK = 2


class Interrupted(Exception):
    """The scripted engine's stand-in for a kill."""


class ScriptedEngine:
    """rollout.engine.Engine with scripted completions: request id -> text. Raises Interrupted instead of
    generating once `stop_after` requests were served."""

    def __init__(self, script: dict[str, str], stop_after: int | None = None) -> None:
        self.script = script
        self.stop_after = stop_after
        self.generated: list[str] = []

    @property
    def weights_version(self) -> int:
        return 0

    def generate(self, requests, sampling):
        if self.stop_after is not None and len(self.generated) + len(requests) > self.stop_after:
            raise Interrupted
        self.generated += [r.request_id for r in requests]
        return [RolloutGroup(r.request_id, [1], [Completion(self.script[r.request_id], [3] * 5, [-0.1] * 5, "stop")
                                                 for _ in range(sampling.n)], 0, "scripted") for r in requests]

    def update_weights(self, named_tensors, version, *, immutable=False) -> None:
        raise NotImplementedError("an eval never updates weights")


class BoxSegmenter:
    """Segmenter whose mask is the union of the prompt's boxes (borders included): masks known by hand."""

    name = "box"
    last_timing = SegmentTiming()

    def segment(self, image, prompts, *, image_id=None):
        masks = np.zeros((len(prompts), *image.shape[:2]), bool)
        for k, prompt in enumerate(prompts):
            for x1, y1, x2, y2 in prompt.boxes:
                masks[k, y1:y2 + 1, x1:x2 + 1] = True
        return masks


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("eval") / "mixed.parquet"
    with DatasetWriter(path) as writer:
        for i in range(N):
            row = synth_row(5, i, 64)
            writer.write(dataclasses.replace(row, task="referring") if i >= 6 else row)
    return str(path)


def config(data_path: str, *extra: str):
    return load_config(None, [f"data.eval={data_path}", f"data.frame_size={FRAME}", "algorithm.baseline_images=4",
                              "rollout.max_new_tokens=64", *extra])


def script_for(data: SegDataset) -> dict[str, str]:
    """Near misses of each GT's box: shifted by 0..3 px, one grown, one unparseable (reward 0, empty mask)."""
    script = {}
    for i in range(len(data)):
        sample = data.load(i)
        x1, y1, x2, y2 = mask_box(sample.mask)
        shift = i % 4
        box = (x1 + shift, y1, min(x2 + shift, FRAME - 1), y2) if i != 3 else (0, 0, x2, y2)
        script[sample.sample_id] = ("I cannot see it" if i == 5 else
                                    render(SegPrompt(think="scripted", boxes=[box], points=[(box[0], box[1])],
                                                     labels=[1])))
    return script


def run_eval(cfg, data_path: str, out: Path, engine: ScriptedEngine, *, fresh: bool = False,
             checkpoint: Path | None = None) -> dict:
    """What `segr1 eval` does, with in-process stand-ins for the two pools; writes and returns eval.json."""
    data = SegDataset(data_path, cfg.data.frame_size)
    indices = eval_indices(cfg, data)
    segmenter = BoxSegmenter()
    baselines = LocalBaselines(segmenter)
    checkpoint = checkpoint or out.parent / "ckpt"
    checkpoint.mkdir(exist_ok=True)
    with SampleLog.open(out.with_name("eval_samples.csv"), eval_identity(cfg, str(checkpoint), data_path),
                        fresh=fresh) as log:
        blind = blind_prompt(cfg, data, log, baselines)
        evaluate_rows(cfg, data, indices, engine, RewardActor(cfg, segmenter=segmenter), baselines, log, blind,
                      chunk=CHUNK)
        record = eval_record(cfg, data, indices, log)
    out.write_text(json.dumps(record))
    return record


def box_mask(prompt: SegPrompt) -> np.ndarray:
    return BoxSegmenter().segment(np.zeros((FRAME, FRAME, 3), np.uint8), [prompt])[0]


def reference_metrics(preds: list[np.ndarray], data: SegDataset, rows: range) -> dict[str, float]:
    """pysodmetrics called directly (classic F-measure, as published) on frame masks resized to the original."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure: deprecated in the package, but the published numbers
        s, e, wf, f, mae = (py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure(), py_sod_metrics.WeightedFmeasure(),
                            py_sod_metrics.Fmeasure(), py_sod_metrics.MAE())
    for pred, i in zip(preds, rows):
        gt = data.load_original(i).mask
        pred_original = to_original_size(pred, gt.shape)
        for metric in (s, e, wf, f, mae):
            metric.step(pred=pred_original, gt=gt)
    em, fm = e.get_results()["em"], f.get_results()["fm"]
    return {"S": s.get_results()["sm"], "wF": wf.get_results()["wfm"], "E_mean": em["curve"].mean(),
            "E_max": em["curve"].max(), "E_adp": em["adp"], "F_mean": fm["curve"].mean(), "F_max": fm["curve"].max(),
            "F_adp": fm["adp"], "MAE": mae.get_results()["mae"]}


def overlap_metrics(preds: list[np.ndarray], data: SegDataset, rows: range) -> dict[str, float]:
    inter, union = [], []
    for pred, i in zip(preds, rows):
        gt = data.load_original(i).mask > 128
        pred_original = to_original_size(pred, gt.shape) > 127
        inter.append(np.count_nonzero(pred_original & gt))
        union.append(np.count_nonzero(pred_original | gt))
    return {"cIoU": sum(inter) / sum(union), "gIoU": float(np.mean([a / b for a, b in zip(inter, union)]))}


def check_benchmarks(benchmarks: dict, name: str, preds: list[np.ndarray], data: SegDataset) -> None:
    foreground, referring = benchmarks[f"{name}/foreground"], benchmarks[f"{name}/referring"]
    assert foreground["count"] == 6 and referring["count"] == 2
    expected = reference_metrics(preds[:6], data, range(6))
    assert {k: foreground["metrics"][k] for k in expected} == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert foreground["metrics"]["gIoU"] == pytest.approx(overlap_metrics(preds[:6], data, range(6))["gIoU"])
    assert referring["metrics"] == pytest.approx(overlap_metrics(preds[6:], data, range(6, N)), rel=1e-12)


def test_eval_json_equals_pysodmetrics_on_the_scripted_masks(data_path, tmp_path):
    cfg = config(data_path)
    data = SegDataset(data_path, FRAME)
    script = script_for(data)
    record = run_eval(cfg, data_path, tmp_path / "eval.json", ScriptedEngine(script))

    policy = [box_mask(parse_completion(script[data.sample_ids[i]], FRAME, FRAME)) for i in range(N) if i != 5]
    policy.insert(5, np.zeros((FRAME, FRAME), bool))  # sample 5 wrote no prompt: an empty mask
    check_benchmarks(record["benchmarks"], "eval", policy, data)
    assert 0.1 < record["benchmarks"]["eval/foreground"]["metrics"]["S"] < 0.99  # imperfect, not degenerate
    assert record["n"] == N and record["format_rate"] == pytest.approx(7 / 8)

    blind = box_mask(prompt_from_dict(record["baselines"]["blind"]["prompt"]))
    check_benchmarks(record["baselines"]["blind"]["benchmarks"], "blind (fixed prompt)", [blind] * N, data)
    oracle = [box_mask(oracle_prompt(data.load(i).mask)) for i in range(N)]
    check_benchmarks(record["baselines"]["oracle"]["benchmarks"], "oracle (GT box + point)", oracle, data)
    assert "rows of the eval set itself" in record["baselines"]["blind"]["chosen_on"]

    with (tmp_path / "eval_samples.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["index"]) for r in rows] == list(range(N)) and tuple(rows[0]) == FIELDS
    assert rows[5]["reason"] and float(rows[5]["reward"]) == 0.0
    assert json.loads(rows[0]["completion"]) == script[data.sample_ids[0]]
    assert {(r["worker"], r["reward_actor"]) for r in rows} == {("scripted", "reward-0")}


def test_the_printed_table_shows_eval_jsons_numbers(data_path, tmp_path):
    cfg = config(data_path)
    record = run_eval(cfg, data_path, tmp_path / "eval.json", ScriptedEngine(script_for(SegDataset(data_path, FRAME))))
    printed = table_cells(report_text(record))
    assert printed == expected_cells(record) and len(printed) == 6  # 3 rows (policy, blind, oracle) x 2 tasks
    assert printed["eval/foreground"][1] == f"{record['benchmarks']['eval/foreground']['metrics']['S']:.3f}"


def test_an_interrupted_eval_resumes_each_sample_exactly_once(data_path, tmp_path):
    cfg = config(data_path)
    data = SegDataset(data_path, FRAME)
    script = script_for(data)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ckpt = tmp_path / "ckpt"
    straight = run_eval(cfg, data_path, tmp_path / "a" / "eval.json", ScriptedEngine(script), checkpoint=ckpt)

    out = tmp_path / "b" / "eval.json"
    with pytest.raises(Interrupted):  # killed while generating the third chunk: 2 chunks (k = 4 rows) logged
        run_eval(cfg, data_path, out, ScriptedEngine(script, stop_after=2 * CHUNK), checkpoint=ckpt)
    csv_path = out.with_name("eval_samples.csv")
    assert len(csv_path.read_text().splitlines()) == 1 + 2 * CHUNK
    full_line = (tmp_path / "a" / "eval_samples.csv").read_text().splitlines()[1 + 2 * CHUNK]
    with csv_path.open("a") as file:  # and a kill in the middle of writing the next row
        file.write(full_line[:len(full_line) // 2])

    engine = ScriptedEngine(script)
    resumed = run_eval(cfg, data_path, out, engine, checkpoint=ckpt)
    assert engine.generated == data.sample_ids[2 * CHUNK:]  # the logged rows were not run again
    indices = [int(r["index"]) for r in csv.DictReader(csv_path.open())]
    assert sorted(indices) == list(range(N))  # every sample exactly once, the half line replaced
    assert resumed == straight and json.loads(out.read_text()) == straight

    again = ScriptedEngine(script)  # a finished eval reruns nothing and writes the same record
    assert run_eval(cfg, data_path, out, again, checkpoint=ckpt) == straight and again.generated == []


def test_a_log_of_another_eval_or_a_broken_line_is_refused_by_name(data_path, tmp_path):
    cfg = config(data_path, "data.eval_size=2")
    script = script_for(SegDataset(data_path, FRAME))
    run_eval(cfg, data_path, tmp_path / "eval.json", ScriptedEngine(script))
    with pytest.raises(UsageError, match="written for max_new_tokens=64, this eval has 32"):
        run_eval(config(data_path, "data.eval_size=2", "rollout.max_new_tokens=32"), data_path,
                 tmp_path / "eval.json", ScriptedEngine(script))
    engine = ScriptedEngine(script)  # --fresh: starts over
    run_eval(config(data_path, "data.eval_size=2", "rollout.max_new_tokens=32"), data_path, tmp_path / "eval.json",
             engine, fresh=True)
    assert len(engine.generated) == 2

    csv_path = tmp_path / "eval_samples.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], "7,broken", lines[1]]) + "\n")
    with pytest.raises(UsageError, match=r"eval_samples.csv, line 2: 2 fields"):
        SampleLog.open(csv_path, json.loads((tmp_path / "eval_samples.meta.json").read_text())["identity"])
