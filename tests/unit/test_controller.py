"""The controller's step loop on in-process fakes (tests/unit/fake_pools.py): the order of the stages in sync
and async mode, the staleness bound, `segr1 stop` and `segr1 scale` between steps, the resume cursor,
dynamic sampling, checkpoints kept, fault drills and overlays. No Ray, no models: each test takes milliseconds.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cluster.controller import Controller
from segr1.config import load_config
from tests.unit.fake_pools import FakeData, FakeEvaluator, FakeLog, FakePools, wait_until

B = 2  # prompts per step
G = 2  # completions per prompt


def build(tmp_path, *overrides: str, n: int = 40, pools: FakePools | None = None):
    cfg = load_config(None, [
        f"run.output_dir={tmp_path}", "run.name=unit", "run.steps=2", f"algorithm.group_size={G}",
        f"algorithm.prompts_per_step={B}", "algorithm.baseline_images=0", "checkpoint.every=0",
        "checkpoint.export_hf=false", "logging.overlay_every=0", *overrides])
    pools = pools or FakePools()
    data = FakeData(n)
    log = FakeLog()
    controller = Controller(cfg, pools, data, FakeEvaluator(pools.events), log, model_path="unused")
    return controller, pools, data, log


def batches(data: FakeData) -> list[list[str]]:
    return [data.loaded[i:i + B] for i in range(0, len(data.loaded), B)]


def test_sync_step_runs_generate_score_train_publish_in_order(tmp_path):
    controller, pools, data, log = build(tmp_path)
    history = controller.run()

    first, second = batches(data)
    assert pools.events == [
        ("publish", 1), ("eval", "start", 0),
        ("generate", first, 1), ("score", first), ("train", first), ("publish", 2),
        ("generate", second, 2), ("score", second), ("train", second), ("publish", 3),
        ("eval", "end", 2), ("checkpoint", "step_2"),
    ]
    assert [(row["tag"], row["step"]) for row in history] == [("start", 0), ("end", 2)]
    assert [row["step"] for row in log.rows] == [1, 2] and log.closed
    row = log.rows[0]
    assert row["pipeline/staleness"] == 0 and row["weights/version"] == 2
    assert row["reward/mean"] == 0.5 and row["data/groups_trained"] == B and row["data/sample_ids"] == first
    assert "eval/iou" not in row and log.rows[1]["eval/iou"] == 0.02
    # rewards (0, 1) per group: std-scaled advantages -+0.5 / (unbiased std sqrt(0.5) + eps)
    expected = 0.5 / (np.sqrt(0.5) + 1e-4)
    item = pools.learner.trained[0][0]
    assert item.advantages == pytest.approx([-expected, expected])
    assert item.completion_ids == [[1, 2], [1, 2]] and item.rollout_logprobs == [[-0.5, -0.25]] * 2
    # the wind-down marks, written beside the metrics (the driver adds the start-up ones on a real job)
    import json

    marks = json.loads((tmp_path / "unit" / "timeline.json").read_text())
    assert list(marks) == ["first_step", "last_step_done", "finished"]
    assert marks["first_step"] <= marks["last_step_done"] <= marks["finished"]


def test_async_generates_ahead_and_lags_at_most_max_staleness(tmp_path):
    controller, pools, data, log = build(tmp_path, "algorithm.mode=async", "algorithm.max_staleness=2",
                                         "run.steps=5")
    # a slow learner: each update starts only once every drawn batch has been generated
    pools.learner.before_train = lambda: wait_until(lambda: len(pools.rollout.generated) == len(data.loaded))
    controller.run()

    # step 1 at version 1 with steps 2 and 3 already drawn and generated at version 1 as well; later batches see
    # the version of the update they were drawn during
    assert [e[2] for e in pools.events if e[0] == "generate"] == [1, 1, 1, 2, 3]
    assert [row["pipeline/staleness"] for row in log.rows] == [0, 1, 2, 2, 2]
    assert len(data.loaded) == 5 * B  # nothing drawn past the last step
    trained = [e[1] for e in pools.events if e[0] == "train"]
    assert trained == batches(data)  # trained in draw order


def test_stop_makes_the_next_step_the_last(tmp_path):
    controller, pools, data, log = build(tmp_path, "algorithm.mode=async", "run.steps=10")
    pools.learner.before_train = lambda: len(pools.learner.trained) == 1 and controller.stop()
    history = controller.run()

    assert controller.step == 3 and [row["step"] for row in log.rows] == [1, 2, 3]
    assert history[-1]["tag"] == "end" and history[-1]["step"] == 3
    assert ("checkpoint", "step_3") in pools.events
    assert len(data.loaded) == 3 * B  # the run-ahead drew nothing for the steps that no longer run
    with pytest.raises(RuntimeError, match="ended at step 3"):
        controller.stop()  # the run is over: refused, not dropped


def test_resize_is_applied_between_steps_after_in_flight_batches(tmp_path):
    controller, pools, _, log = build(tmp_path, "algorithm.mode=async", "run.steps=4")
    answers = []

    def during_second_update():
        if len(pools.learner.trained) == 1:
            answers.append(controller.scale(rollout=3, reward=2))

    pools.learner.before_train = during_second_update
    controller.run()

    assert answers == [{"applied": False, "rollout": 3, "reward": 2}]
    at = pools.events.index(("resize", 3, 2))
    before = pools.events[:at]
    trains = [i for i, e in enumerate(pools.events) if e[0] == "train"]
    assert pools.events.index(("publish", 3)) < at < trains[2]  # after step 2's update and broadcast
    assert sum(e[0] == "generate" for e in before) == sum(e[0] == "score" for e in before)  # none in flight
    assert [row["pool/rollout_workers"] for row in log.rows] == [1, 1, 3, 3]
    assert [row["pool/reward_actors"] for row in log.rows] == [1, 1, 2, 2]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_resumed_run_draws_the_same_batches_as_the_uninterrupted_one(tmp_path, mode):
    settings = (f"algorithm.mode={mode}", "run.steps=4", "checkpoint.every=2", "checkpoint.keep=3")
    first, _, _, first_log = build(tmp_path, *settings)
    first.run()
    shutil.rmtree(tmp_path / "unit" / "checkpoints" / "step_4")  # as if the run died after step 2's checkpoint

    resumed, pools, _, log = build(tmp_path, *settings, "resume=true")
    history = resumed.run()

    assert pools.events[:2] == [("load_checkpoint", "step_2"), ("publish", 4)]  # version 3 was saved
    assert [row["step"] for row in log.rows] == [3, 4]
    assert [row["data/sample_ids"] for row in log.rows] == [row["data/sample_ids"] for row in first_log.rows[2:]]
    assert [(row["tag"], row["step"]) for row in history] == [("start", 0), ("start", 2), ("end", 4)]


def test_dynamic_sampling_drops_groups_with_equal_rewards(tmp_path):
    pools = FakePools(reward_of=lambda sample_id, j: 0.3 if sample_id == "s0" else float(j))
    controller, pools, _, log = build(tmp_path, "algorithm.dynamic_sampling=true", "run.steps=1", n=2,
                                      pools=pools)
    controller.run()

    assert [[item.sample_id for item in items] for items in pools.learner.trained] == [["s1"]]
    assert log.rows[0]["data/groups_trained"] == 1


def test_a_step_whose_groups_were_all_dropped_neither_updates_nor_broadcasts(tmp_path):
    pools = FakePools(reward_of=lambda sample_id, j: 0.3)
    controller, pools, _, log = build(tmp_path, "algorithm.dynamic_sampling=true", pools=pools)
    controller.run()

    assert pools.learner.trained == []
    assert [e for e in pools.events if e[0] == "publish"] == [("publish", 1)]
    assert [row["weights/version"] for row in log.rows] == [1, 1]
    assert log.rows[0]["policy/loss"] == 0.0 and log.rows[0]["time/sync_s"] == 0.0


def test_checkpoints_every_n_steps_and_at_the_end_keeping_the_newest(tmp_path):
    controller, pools, _, _ = build(tmp_path, "run.steps=5", "checkpoint.every=2", "checkpoint.keep=2")
    controller.run()

    assert [e[1] for e in pools.events if e[0] == "checkpoint"] == ["step_2", "step_4", "step_5"]
    assert sorted(p.name for p in (tmp_path / "unit" / "checkpoints").iterdir()) == ["step_4", "step_5"]


def test_fault_drill_and_overlays_land_on_their_steps(tmp_path):
    controller, pools, data, _ = build(tmp_path, "faults.kill_reward_actor_at_step=1", "logging.overlay_every=2")
    controller.run()

    # overlays reuse the masks of the step's own scoring: only step 2's first groups asked for them
    assert [r.return_masks for r in pools.reward.requests] == [False] * B + [True] * B
    (given,) = controller.evaluator.overlay_rewards
    assert [r.group_id for r in given] == batches(data)[1] and all(r.masks_rle for r in given)

    kinds = [e[0] for e in pools.events]
    assert kinds.index("kill") == kinds.index("publish", kinds.index("train")) + 1  # after step 1, before step 2
    assert pools.events[kinds.index("kill")] == ("kill", "reward")
    assert ("overlays", 2, batches(data)[1]) in pools.events


def _odd(sample_id: str) -> bool:
    return int(sample_id[1:]) % 2 == 1


def test_dapo_refill_draws_until_the_batch_is_full_and_keeps_the_cursor_exact(tmp_path):
    """Only odd samples have rewards that differ: each step draws batches of B until B of them are kept."""
    pools = FakePools(reward_of=lambda sample_id, j: float(j) if _odd(sample_id) else 0.3)
    controller, pools, data, log = build(tmp_path, "algorithm.dynamic_sampling=true", "algorithm.max_draws=8",
                                         "run.steps=3", n=40, pools=pools)
    controller.run()

    draws, expected_trained, expected_draws = batches(data), [], []
    for _ in range(3):  # replay the rule on the draws in the order they were made
        kept, used = [], 0
        while len(kept) < B:
            kept += [s for s in draws.pop(0) if _odd(s)]
            used += 1
        expected_trained.append(kept[:B])
        expected_draws.append(used)
    assert not draws  # nothing drawn beyond what the steps used
    assert [[item.sample_id for item in items] for items in pools.learner.trained] == expected_trained
    assert [row["data/draws"] for row in log.rows] == expected_draws
    for row in log.rows:
        assert row["data/groups_drawn"] == B * row["data/draws"]
        assert row["data/groups_trained"] == B
        assert row["data/groups_filtered"] == row["data/groups_drawn"] - B
    ids = [i for row in log.rows for i in row["data/sample_ids"]]
    assert ids == data.loaded and len(set(ids)) == len(ids)  # every draw logged once, in order: an exact cursor


def test_dapo_refill_stops_at_max_draws(tmp_path):
    pools = FakePools(reward_of=lambda sample_id, j: 0.3)  # nothing is informative
    controller, pools, data, log = build(tmp_path, "algorithm.dynamic_sampling=true", "algorithm.max_draws=3",
                                         "run.steps=1", n=40, pools=pools)
    controller.run()

    assert len(data.loaded) == 3 * B and pools.learner.trained == []
    assert log.rows[0]["data/draws"] == 3 and log.rows[0]["data/groups_filtered"] == 3 * B


def test_refill_needs_dynamic_sampling_in_sync_mode(tmp_path):
    from segr1.config import ConfigError

    for extra in ([], ["algorithm.dynamic_sampling=true", "algorithm.mode=async"]):
        with pytest.raises(ConfigError, match="algorithm.max_draws"):
            build(tmp_path, "algorithm.max_draws=2", *extra)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_streamed_shards_reach_the_learner_in_draw_order(tmp_path, mode):
    """Three rollout workers whose shards finish last first: each shard is scored as it returns, every group
    once, and the learner sees each batch in draw order, as with one worker (so exact resume holds)."""
    one, one_pools, _, one_log = build(tmp_path / "one", f"algorithm.mode={mode}", "run.steps=3",
                                       "algorithm.prompts_per_step=5")
    one.run()
    three, pools, data, log = build(tmp_path / "three", f"algorithm.mode={mode}", "run.steps=3",
                                    "algorithm.prompts_per_step=5", pools=FakePools(rollout=3))
    three.run()

    drawn = [data.loaded[i:i + 5] for i in range(0, 15, 5)]
    trained = [[item.sample_id for item in items] for items in pools.learner.trained]
    assert trained == drawn == [[item.sample_id for item in items] for items in one_pools.learner.trained]
    assert [e[1] for e in pools.events if e[0] == "score"][:3] == [drawn[0][4:], drawn[0][2:4], drawn[0][:2]]
    scored = [g for e in pools.events if e[0] == "score" for g in e[1]]
    assert sorted(scored) == sorted(s for batch in drawn for s in batch)  # exactly once each
    assert [row["data/sample_ids"] for row in log.rows] == [row["data/sample_ids"] for row in one_log.rows]
    assert all(0.0 <= row["time/reward_exposed_s"] <= row["time/reward_s"] for row in log.rows)



def test_overlong_shaping_enters_the_advantages_and_the_dynamic_sampling_rule(tmp_path):
    from cluster.records import ScoredBatch
    from segr1.config import ConfigError
    from segr1.protocol import Completion, GroupReward, RewardBreakdown, RolloutGroup

    # max_new_tokens 3, buffer 2, factor 0.4: a 1-token completion keeps its reward, a 3-token one loses 0.4
    controller, _, data, log = build(tmp_path, "algorithm.dynamic_sampling=true", "run.steps=1",
                                         "rollout.max_new_tokens=3", "algorithm.overlong_buffer=2",
                                         "algorithm.overlong_factor=0.4", pools=FakePools(reward_of=lambda s, j: 0.3))
    samples = [data.load(0), data.load(1)]
    lengths = {"s0": (1, 3), "s1": (2, 2)}  # s0: rewards (0.3, -0.1) after shaping; s1: (0.1, 0.1), no signal
    groups = [RolloutGroup(s.sample_id, [7], [Completion("t", [5] * n, [-0.1] * n, "stop")
                                              for n in lengths[s.sample_id]], 1, "rollout-0") for s in samples]
    rewards = [GroupReward(s.sample_id, [RewardBreakdown(0.3, 1.0, 0.3, 0.3)] * G) for s in samples]
    items = controller._train_items(ScoredBatch(samples, groups, rewards))
    expected = 0.2 / (0.4 / np.sqrt(2) + 1e-4)  # centred +-0.2 over the unbiased std 0.4 / sqrt(2)
    assert [item.sample_id for item in items] == ["s0"]  # s1's equal shaped rewards are dropped
    assert items[0].advantages == pytest.approx([expected, -expected])

    controller.run()  # every fake completion is 2 tokens long: penalty 0.4 * (2 - 1) / 2
    assert log.rows[0]["reward/overlong_penalty"] == pytest.approx(-0.2)
    assert log.rows[0]["reward/mean"] == pytest.approx(0.3)  # the segmenter's reward is logged unshaped

    for bad in ("algorithm.overlong_buffer=3", "algorithm.overlong_buffer=-1"):
        with pytest.raises(ConfigError, match="algorithm.overlong_buffer"):
            build(tmp_path, "rollout.max_new_tokens=3", bad)
    with pytest.raises(ConfigError, match="algorithm.overlong_factor"):
        build(tmp_path, "algorithm.overlong_buffer=2", "algorithm.overlong_factor=-1")


def test_a_batch_without_advantage_does_not_step_the_optimizer_unless_a_kl_term_pulls(tmp_path):
    # every completion scores the same: every advantage is 0. With beta 0 the gradient is exactly zero, and an
    # Adam step would still move the weights on its old moments, so the update (and its broadcast) is skipped
    controller, pools, _, log = build(tmp_path, "algorithm.beta=0", pools=FakePools(reward_of=lambda s, j: 0.3))
    controller.run()
    assert pools.learner.trained == []
    assert [row["learner/skipped_update"] for row in log.rows] == [1.0, 1.0]
    assert [row["data/groups_trained"] for row in log.rows] == [0, 0]

    # with a KL term the loss still has a gradient toward the reference: the step runs
    controller, pools, _, log = build(tmp_path / "kl", "algorithm.beta=0.04",
                                      pools=FakePools(reward_of=lambda s, j: 0.3))
    controller.run()
    assert len(pools.learner.trained) == 2
    assert [row["learner/skipped_update"] for row in log.rows] == [0.0, 0.0]
