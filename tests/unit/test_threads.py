"""Thread-count keys (segr1.threads, rollout/learner torch_threads, reward.threads) and the peak-RSS helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cluster.telemetry.memory import memory_line, peak_rss_mb
from reward_server.actor import RewardActor
from reward_server.parse import SegPrompt, render
from segr1.config import ConfigError, load_config
from segr1.data.synth import synth_sample
from segr1.protocol import RewardRequest
from segr1.threads import node_cores, thread_count


def test_thread_count_settings():
    assert thread_count(None, 1.0) == 1 and thread_count(None, 0.5) == 1 and thread_count(None, 3) == 3
    assert thread_count(0, 1.0) == node_cores() and thread_count(5, 1.0) == 5
    with pytest.raises(ValueError):
        thread_count(-1, 1.0)


@pytest.mark.parametrize("key", ["rollout.torch_threads", "reward.threads", "learner.torch_threads"])
def test_negative_thread_keys_are_config_errors(key):
    assert load_config(overrides=[f"{key}=0"]) is not None
    with pytest.raises(ConfigError, match=key):
        load_config(overrides=[f"{key}=-1"])


def _requests(count: int) -> list[RewardRequest]:
    """Groups of four completions on synthetic scenes: a box around the target, a loose one, junk, a miss."""
    out = []
    for index in range(count):
        image, gt = synth_sample(3, index, size=64)
        ys, xs = np.nonzero(gt)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        loose = (max(box[0] - 6, 0), max(box[1] - 6, 0), min(box[2] + 6, 63), min(box[3] + 6, 63))
        texts = [render(SegPrompt("t", [box], [((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)], [1])),
                 render(SegPrompt("t", [loose], [], [])), "no grammar", render(SegPrompt("t", [(0, 0, 9, 9)], [], []))]
        out.append(RewardRequest(f"g{index}", image, gt, texts))
    return out


def test_threaded_grabcut_scores_equal_serial_ones():
    requests = _requests(6)
    reference = RewardActor(load_config(overrides=["reward.segmenter=grabcut"]), "serial")
    serial = reference.score(requests)
    actor = RewardActor(load_config(overrides=["reward.segmenter=grabcut", "reward.threads=3"]), "threaded")
    threaded = actor.score(requests)
    assert [r.group_id for r in threaded] == [r.group_id for r in serial]
    assert [[b.reward for b in r.breakdowns] for r in threaded] == [[b.reward for b in r.breakdowns] for r in serial]
    assert any(b.iou > 0.5 for r in serial for b in r.breakdowns)  # the scenes are segmented, not all zeros
    counted = ("groups", "completions", "masks", "reasons")  # no update lost between threads
    assert {k: actor.stats()[k] for k in counted} == {k: reference.stats()[k] for k in counted}
    assert actor.stats()["groups"] == 6 and actor.stats()["completions"] == 24


def test_peak_rss_of_this_process():
    peak = peak_rss_mb(os.getpid())
    assert peak is not None and peak > 1.0  # a Python process with numpy loaded holds well over a megabyte
    assert peak_rss_mb(2**22 + 12345) is None  # no such pid
    assert memory_line([{"process": "driver", "pid": 1, "peak_rss_mb": 512.4},
                        {"process": "RolloutWorker", "pid": 2, "peak_rss_mb": None}]) == \
        "peak RSS (MB)   driver 512, RolloutWorker ?"
    assert memory_line([]) is None
