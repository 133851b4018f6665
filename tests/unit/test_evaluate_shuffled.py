"""eval/iou_shuffled, the image ablation: a policy that writes one box for every image scores the same with the
prompts shuffled across images; one that boxes each image's own object falls. Through the real Evaluator and
RewardActor (box-fill segmenter), with a scripted engine in place of the model."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

from cluster.evaluate import Evaluator, shifted_groups
from reward_server.actor import RewardActor
from segr1.config import load_config
from segr1.protocol import Completion, RolloutGroup, Sample, resolve_arrays
from tests.unit.test_baselines import BoxFillSegmenter

FRAME = 32
# each image holds one square object; its box, as the image's marker pixel encodes it
BOXES = [(2, 2, 9, 9), (20, 3, 28, 11), (4, 19, 12, 27), (18, 18, 27, 27)]


def _samples() -> list[Sample]:
    out = []
    for i, (x1, y1, x2, y2) in enumerate(BOXES):
        image = np.zeros((FRAME, FRAME, 3), np.uint8)
        image[0, 0, 0] = i  # what a "seeing" policy reads
        mask = np.zeros((FRAME, FRAME), bool)
        mask[y1:y2 + 1, x1:x2 + 1] = True
        out.append(Sample(f"s{i}", image, mask, "find it"))
    return out


class ScriptedRollout:
    """generate_shards of one worker; `write(image)` is the policy."""

    def __init__(self, write):
        self.write = write

    def generate_shards(self, requests, sampling):
        yield 0, [RolloutGroup(r.request_id, [1], [Completion(self.write(resolve_arrays([r.image])[0]), [1], [-0.1], "stop")
                                                   for _ in range(sampling.n)], 0)
                  for r in requests]


class LocalReward:
    def __init__(self, cfg):
        self.actor = RewardActor(cfg, "reward-local", segmenter=BoxFillSegmenter())

    def submit(self, requests):
        futures = []
        for reward in self.actor.score(requests):
            future: Future = Future()
            future.set_result(reward)
            futures.append(future)
        return futures

    def gather(self, futures, drop_failed=False):
        return [f.result() for f in futures]


class Pools:
    def __init__(self, cfg, write):
        self.rollout, self.reward = ScriptedRollout(write), LocalReward(cfg)


class Log:
    def log_overlays(self, step, images):
        pass


def _completion(box) -> str:
    x1, y1, x2, y2 = box
    return f"<think>t</think> <bbox>[{x1},{y1},{x2},{y2}]</bbox>, <points>[[{x1},{y1}]]</points>, <labels>[1]</labels>"


def _run(tmp_path, write) -> dict[str, float]:
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=unit", "data.frame_size=32",
                             "algorithm.baseline_images=0", "reward.segmenter=grabcut"])
    samples = _samples()

    class Data:
        def __len__(self):
            return len(samples)

        def load(self, i):
            return samples[i]

    return Evaluator(cfg, Data()).run(Pools(cfg, write), step=0, log=Log(), tag="t")


def test_a_policy_that_ignores_the_image_scores_the_same_shuffled(tmp_path):
    metrics = _run(tmp_path, lambda image: _completion((0, 0, 15, 15)))
    assert metrics["eval/iou"] > 0 and metrics["eval/iou_shuffled"] == pytest.approx(metrics["eval/iou"])


def test_a_policy_that_reads_the_image_falls_when_shuffled(tmp_path):
    metrics = _run(tmp_path, lambda image: _completion(BOXES[int(image[0, 0, 0])]))
    assert metrics["eval/iou"] == pytest.approx(1.0)
    assert metrics["eval/iou_shuffled"] == pytest.approx(0.0)  # the objects do not overlap


def test_shifted_groups_gives_each_group_its_successors_completions():
    groups = [RolloutGroup(f"g{i}", [i], [Completion(f"t{i}", [i], [0.0], "stop")], 0) for i in range(3)]
    shifted = shifted_groups(groups)
    assert [g.request_id for g in shifted] == ["g0", "g1", "g2"]
    assert [g.completions[0].text for g in shifted] == ["t1", "t2", "t0"]
