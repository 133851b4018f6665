"""The evaluator's baselines: computed once through the reward service, cached with the run, reused by a
resumed run, recomputed for another eval set, segmenter or frame; and the eval/* arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cluster.evaluate import BASELINES_FILE, Evaluator, baseline_indices, baseline_metrics
from reward_server.actor import RewardActor
from reward_server.baselines import BaselineScores, blind_candidates
from segr1.config import load_config
from segr1.data.dataset import SegDataset
from segr1.data.synth import synthesize
from tests.unit.test_baselines import BoxFillSegmenter


class LocalRewardPool:
    """The reward pool's `baselines` on an in-process RewardActor (what the Ray pool runs on an actor)."""

    def __init__(self, cfg):
        self.segmenter = BoxFillSegmenter()
        self.actor = RewardActor(cfg, "reward-local", segmenter=self.segmenter)
        self.calls = 0

    def baselines(self, *args):
        self.calls += 1
        return self.actor.baselines(*args)


class Pools:
    def __init__(self, cfg):
        self.reward = LocalRewardPool(cfg)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return (synthesize(root / "train.parquet", n=6, seed=0, size=48),
            synthesize(root / "eval.parquet", n=3, seed=1, size=48))


def _setup(tmp_path, data_files, *overrides):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=unit", "reward.segmenter=grabcut",
                             "data.frame_size=32", "algorithm.baseline_images=4", *overrides])
    train, evals = (SegDataset(path, cfg.data.frame_size) for path in data_files)
    evaluator = Evaluator(cfg, evals, train=train)
    samples = [evals.load(i) for i in evaluator.indices]
    return cfg, evaluator, samples


def test_computed_once_then_reused_from_memory_and_from_the_run_file(tmp_path, data_files):
    cfg, evaluator, samples = _setup(tmp_path, data_files)
    pools = Pools(cfg)
    first = evaluator.baselines(pools, samples)
    assert pools.reward.calls == 1 and pools.reward.segmenter.calls == 4 + 3  # 4 train + 3 eval images
    assert len(first.blind_iou) == len(first.oracle_iou) == 3 and first.chosen_on == 4
    assert evaluator.baselines(pools, samples) is first and pools.reward.calls == 1

    _, resumed, samples = _setup(tmp_path, data_files)  # a resumed run: a new process, same run directory
    fresh = Pools(cfg)
    assert resumed.baselines(fresh, samples) == first
    assert fresh.reward.calls == 0 and fresh.reward.segmenter.calls == 0

    stored = json.loads((cfg.run_dir / BASELINES_FILE).read_text())
    (record,) = stored.values()
    assert record["segmenter"] == "grabcut" and record["frame"] == 32 and len(record["eval_ids"]) == 3
    assert record["mean_oracle"] == pytest.approx(np.mean(first.oracle_iou))


@pytest.mark.parametrize("change", ["data.frame_size=40", "reward.grabcut.iterations=2", "data.eval_size=2",
                                    "reward.segmenter=sam2", "algorithm.baseline_images=3"])
def test_another_eval_set_segmenter_or_frame_recomputes(tmp_path, data_files, change):
    cfg, evaluator, samples = _setup(tmp_path, data_files)
    evaluator.baselines(Pools(cfg), samples)
    cfg, changed, samples = _setup(tmp_path, data_files, change)
    pools = Pools(cfg)
    changed.baselines(pools, samples)
    assert pools.reward.calls == 1
    assert len(json.loads((cfg.run_dir / BASELINES_FILE).read_text())) == 2  # both kept, by key


def test_no_training_data_or_zero_images_means_no_baselines(tmp_path, data_files):
    cfg, evaluator, samples = _setup(tmp_path, data_files, "algorithm.baseline_images=0")
    pools = Pools(cfg)
    assert evaluator.baselines(pools, samples) is None and pools.reward.calls == 0
    cfg, evaluator, samples = _setup(tmp_path, data_files)
    evaluator.train = None
    assert evaluator.baselines(pools, samples) is None and pools.reward.calls == 0


def test_baseline_metrics_arithmetic():
    blind = blind_candidates(32)[0]
    scores = BaselineScores(blind, (0.2, 0.4), (0.8, 1.0), chosen_on=2)
    metrics = baseline_metrics(scores, policy_iou=0.6)
    assert metrics == pytest.approx({"eval/iou_blind": 0.3, "eval/iou_oracle": 0.9,
                                     "eval/localisation_gain": 0.5})
    flat = BaselineScores(blind, (0.5,), (0.5,), chosen_on=1)
    assert baseline_metrics(flat, 0.7) == {"eval/iou_blind": 0.5, "eval/iou_oracle": 0.5}  # gain undefined


def test_baseline_indices_are_a_seeded_sorted_sample():
    assert baseline_indices(5, 8, seed=0) == [0, 1, 2, 3, 4]
    picked = baseline_indices(100, 10, seed=3)
    assert picked == sorted(set(picked)) and len(picked) == 10 and picked == baseline_indices(100, 10, seed=3)
    assert picked != baseline_indices(100, 10, seed=4) and picked != list(range(10))
