"""Faults inside a step, on the controller's loop over in-process fakes (tests/unit/fake_pools.py).

Each drill is set with its `faults.*` key as a user would, fires inside the call it names, and the run must
finish with every drawn sample trained exactly once per step, in the order an uninterrupted run trains them;
a learner restart must end on the same weights (the fakes' digest of every update, in order). What the pools
do with a death or a hang (replace, requeue, time out) is tested with real Ray actors in
tests/integration/test_rollout_pool.py, test_reward_pool.py and tests/e2e/test_exact_resume.py.
"""

from __future__ import annotations

import time

import pytest

from segr1.config import ConfigError, load_config
from segr1.faults import IN_CALL_KEYS, StageError
from tests.unit.fake_pools import FakePools, wait_until
from tests.unit.test_controller import B, build

CHECKPOINTED = ("run.steps=4", "checkpoint.every=2", "checkpoint.keep=3", "learner.restart_backoff_s=0.5")


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The controller's waits (the restart backoff), recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


def trained_ids(rows: list[dict]) -> list[list[str]]:
    return [row["data/sample_ids"] for row in rows if "step" in row]


def uninterrupted(tmp_path, *settings: str):
    controller, pools, _, log = build(tmp_path / "straight", *settings)
    controller.run()
    return pools, log


@pytest.mark.parametrize("action", ["die", "hang"])
def test_learner_failing_mid_update_restarts_from_the_checkpoint_and_ends_as_an_uninterrupted_run(
        tmp_path, sleeps, action):
    straight, straight_log = uninterrupted(tmp_path, *CHECKPOINTED)
    controller, pools, _, log = build(tmp_path, *CHECKPOINTED, f"faults.{action}_"
                                      f"{'in_' if action == 'die' else ''}learner_step_at_step=2")
    controller.run()

    events = pools.events
    at = events.index(("arm", "learner_step", action))
    assert events[at - 1] == ("checkpoint", "step_2")  # armed as step 3 begins
    restart = events.index(("restart_learner",))
    assert events[restart + 1] == ("load_checkpoint", "step_2") and events[restart + 2][0] == "publish"
    assert sleeps == [0.5]  # restart_backoff_s before the first restart
    # the failed update never happened: steps 3 and 4 were trained once each, on the batches of a straight run
    assert [row["step"] for row in log.rows] == [1, 2, 3, 4]
    assert trained_ids(log.rows) == trained_ids(straight_log.rows)
    assert [[i.sample_id for i in items] for items in pools.learner.trained] == trained_ids(straight_log.rows)[2:]
    assert pools.learner.weights == straight.learner.weights  # the same updates, in the same order
    assert pools.rollout.weights == pools.learner.weights  # the workers serve the restored-then-trained weights
    assert [row["learner/restarts"] for row in log.rows] == [0, 0, 1, 1]


def test_rollout_workers_receive_the_restored_weights_before_they_generate_again(tmp_path, sleeps):
    controller, pools, data, _ = build(tmp_path, *CHECKPOINTED, "faults.die_in_learner_step_at_step=2")
    saved = {}
    save = pools.learner.save_checkpoint
    pools.learner.save_checkpoint = lambda d, extra: (save(d, extra), saved.__setitem__(d, pools.learner.weights))
    controller.run()

    restart = pools.events.index(("restart_learner",))
    publish = next(e for e in pools.events[restart:] if e[0] == "publish")
    generate = next(e for e in pools.events[restart:] if e[0] == "generate")
    assert pools.events.index(publish) < pools.events.index(generate) and generate[2] == publish[1]
    step_2 = next(w for d, w in saved.items() if d.endswith("step_2"))
    # what the workers held when they generated step 3 again: the checkpoint's weights, not the lost update's
    assert generate[1] == data.loaded[2 * B:3 * B]
    assert step_2 != pools.learner.weights


def test_async_learner_restart_redraws_the_batches_in_flight_in_the_same_order(tmp_path, sleeps):
    settings = (*CHECKPOINTED, "algorithm.mode=async", "algorithm.max_staleness=2")
    straight, straight_log = uninterrupted(tmp_path, *settings)
    controller, pools, data, log = build(tmp_path, *settings, "faults.die_in_learner_step_at_step=2")
    # the learner waits for every batch in flight, so the restart finds run-ahead batches to discard
    pools.learner.before_train = lambda: wait_until(lambda: len(pools.rollout.generated) == len(data.loaded))
    controller.run()

    assert trained_ids(log.rows) == trained_ids(straight_log.rows)
    assert pools.learner.weights == straight.learner.weights
    ids = [i for row in log.rows for i in row["data/sample_ids"]]
    assert len(ids) == len(set(ids)) == 4 * B
    assert len(data.loaded) > 4 * B  # batches drawn ahead of the lost update were drawn again


def test_a_learner_lost_before_the_first_checkpoint_starts_the_run_over(tmp_path, sleeps, monkeypatch):
    # warm-start targets need the policy's tokenizer; the fake learner only counts them
    monkeypatch.setattr("cluster.controller.warm_start_items", lambda samples, *_, **__: list(samples))
    settings = ("run.steps=3", "algorithm.warm_start.steps=2", "learner.restart_backoff_s=0")
    straight, straight_log = uninterrupted(tmp_path, *settings)
    controller, pools, _, log = build(tmp_path, *settings, "faults.die_in_learner_step_at_step=1")
    history = controller.run()

    assert ("load_checkpoint", "step_0") not in pools.events
    assert sum(e == ("sft", 16) for e in pools.events) == 4  # the warm start ran again on the fresh learner
    assert trained_ids(log.rows) == trained_ids(straight_log.rows)
    assert pools.learner.weights == straight.learner.weights
    assert [(row["tag"], row["step"]) for row in history] == [("start", 0), ("end", 3)]
    shape = [(row.get("warm_start/step"), row.get("step")) for row in log.rows]
    assert shape == [(2, None), (None, 1), (None, 2), (None, 3)]  # the warm start's row once, each step's once
    assert [row["learner/restarts"] for row in log.rows[1:]] == [1, 1, 1]  # all logged after the restart


def test_learner_restarts_are_bounded_with_doubling_backoff_then_the_error_names_stage_actor_and_step(
        tmp_path, sleeps):
    controller, pools, _, _ = build(tmp_path, "learner.max_restarts=2", "learner.restart_backoff_s=1.5")

    def always_dies():
        raise StageError("learner_step", "learner rank 0", "the rank died during train_step (ActorDiedError)")

    pools.learner.before_train = always_dies  # a learner that cannot train at all: every restart fails again
    with pytest.raises(StageError) as failure:
        controller.run()

    assert str(failure.value) == ("stage learner_step failed on learner rank 0 at step 1: the rank died during "
                                  "train_step (ActorDiedError); not restarted again after learner.max_restarts=2")
    assert sleeps == [1.5, 3.0]
    assert pools.events.count(("restart_learner",)) == 2 and controller.learner_restarts == 2


def test_a_learner_that_fails_again_while_restoring_is_restarted_again_within_the_bound(tmp_path, sleeps):
    straight, straight_log = uninterrupted(tmp_path, *CHECKPOINTED)
    controller, pools, _, log = build(tmp_path, *CHECKPOINTED, "faults.die_in_learner_step_at_step=2")
    restart, attempts = pools.restart_learner, []

    def dies_while_loading():
        restart()
        attempts.append(1)
        if len(attempts) == 1:  # the first fresh group dies as it loads the checkpoint
            pools.learner.load_checkpoint = lambda d: (_ for _ in ()).throw(
                StageError("learner_step", "learner rank 0", "the rank died during load_checkpoint (ActorDiedError)"))

    pools.restart_learner = dies_while_loading
    controller.run()

    assert sleeps == [0.5, 1.0] and controller.learner_restarts == 2
    assert trained_ids(log.rows) == trained_ids(straight_log.rows)
    assert pools.learner.weights == straight.learner.weights
    assert [row["learner/restarts"] for row in log.rows] == [0, 0, 2, 2]


@pytest.mark.parametrize("key", ["die_in_generate_at_step", "hang_generate_at_step", "hang_weight_sync_at_step"])
def test_a_rollout_worker_lost_inside_its_call_is_replaced_and_no_prompt_is_lost(tmp_path, key):
    straight, straight_log = uninterrupted(tmp_path, "run.steps=3")
    controller, pools, _, log = build(tmp_path, "run.steps=3", f"faults.{key}=1")
    controller.run()

    assert pools.rollout.replaced == 1
    assert trained_ids(log.rows) == trained_ids(straight_log.rows)
    assert pools.learner.weights == straight.learner.weights
    # the replacement served at the weights of the step it generated for
    assert all(row["rollout/worker_versions"] == {w: row["weights/version"] - 1
                                                  for w in row["rollout/worker_versions"]} for row in log.rows)


@pytest.mark.parametrize("action", ["die_in", "hang"])
def test_a_reward_actor_lost_inside_its_call_has_its_groups_scored_once(tmp_path, action):
    straight, straight_log = uninterrupted(tmp_path, "run.steps=3")
    controller, pools, _, log = build(tmp_path, "run.steps=3", f"faults.{action}_score_at_step=1")
    controller.run()

    assert pools.reward.retried == trained_ids(straight_log.rows)[1]
    assert trained_ids(log.rows) == trained_ids(straight_log.rows)
    assert [row["data/groups_dropped"] for row in log.rows] == [0, 0, 0]
    assert pools.learner.weights == straight.learner.weights


class FirstDrawn:
    """The reward fake's `failing` set: the first sample the run draws, whichever that is."""

    def __init__(self, data) -> None:
        self.data = data

    def __contains__(self, group_id: str) -> bool:
        return group_id == self.data.loaded[0]


def test_a_group_whose_scoring_failed_for_good_is_dropped_and_counted_never_rewarded_zero(tmp_path):
    pools = FakePools(reward_of=lambda sample_id, j: 1.0 + j)  # every earned reward is >= 1
    controller, pools, data, log = build(tmp_path, "run.steps=2", pools=pools)
    pools.reward.failing = FirstDrawn(data)
    controller.run()

    lost = data.loaded[0]
    assert [row["data/groups_dropped"] for row in log.rows] == [1, 0]
    row = log.rows[0]
    assert lost in row["data/sample_ids"]
    assert row["data/groups_drawn"] == B and row["data/groups_trained"] == B - 1
    assert row["reward/mean"] == 1.5  # the mean of the groups scored: no zero stands in for the dropped one
    assert all(item.sample_id != lost for items in pools.learner.trained for item in items)
    ids = [i for r in log.rows for i in r["data/sample_ids"]]
    assert ids == data.loaded  # drawn and logged once each, the dropped one included


def test_a_step_whose_every_group_failed_to_score_ends_the_run_naming_stage_and_step(tmp_path):
    controller, pools, _, _ = build(tmp_path, "run.steps=3")
    pools.reward.failing = {f"s{i}" for i in range(40)}
    with pytest.raises(StageError, match=r"^stage score failed on reward pool at step 1: every group of the batch "
                                         r"failed to score \(2\)"):
        controller.run()
    assert pools.learner.trained == []


def test_a_stage_that_failed_for_good_names_the_step_of_its_batch_in_async_mode(tmp_path):
    controller, pools, data, _ = build(tmp_path, "run.steps=4", "algorithm.mode=async")
    shard = pools.rollout._shard

    def third_batch_fails(requests, sampling, worker_id):
        if len(data.loaded) > 2 * B and requests[0].request_id == data.loaded[2 * B]:
            raise StageError("generate", "rollout-0", "generate did not return within rollout.timeout_s=5s; "
                             "its 2 prompts were tried 2 times (rollout.max_retries=1)")
        return shard(requests, sampling, worker_id)

    pools.rollout._shard = third_batch_fails
    with pytest.raises(StageError, match=r"^stage generate failed on rollout-0 at step 3: generate did not return"):
        controller.run()


def test_each_drill_is_armed_once_as_its_step_begins_even_when_a_restart_replays_that_step(tmp_path, sleeps):
    drills = [f"faults.{key}={step}" for key, step in (("hang_score_at_step", 2), ("die_in_generate_at_step", 2),
                                                        ("die_in_learner_step_at_step", 2))]
    controller, pools, _, log = build(tmp_path, *CHECKPOINTED, "checkpoint.every=1", *drills)
    controller.run()

    arms = [e for e in pools.events if e[0] == "arm"]
    assert arms == [("arm", "generate", "die"), ("arm", "learner_step", "die"), ("arm", "score", "hang")]  # key order
    first_arm = pools.events.index(arms[0])
    assert pools.events[first_arm - 1] == ("checkpoint", "step_2")
    assert pools.events.count(("restart_learner",)) == 1 and [row["step"] for row in log.rows] == [1, 2, 3, 4]


def test_every_in_call_drill_key_is_in_the_config_schema():
    cfg = load_config(None, [f"faults.{key}=3" for key in IN_CALL_KEYS])
    assert all(getattr(cfg.faults, key) == 3 for key in IN_CALL_KEYS)


@pytest.mark.parametrize("override, message", [
    ("rollout.timeout_s=0", "rollout.timeout_s: must be > 0 seconds, got 0.0"),
    ("learner.sync.timeout_s=-1", "learner.sync.timeout_s: must be > 0 seconds, got -1.0"),
    ("learner.max_restarts=-1", "learner.max_restarts: must be >= 0, got -1"),
])
def test_stage_timeouts_and_restart_bounds_are_validated(override, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        load_config(None, [override])


def test_a_learner_lost_while_writing_a_checkpoint_restarts_from_the_previous_one_and_ends_as_a_straight_run(
        tmp_path, sleeps):
    straight, straight_log = uninterrupted(tmp_path, *CHECKPOINTED)
    controller, pools, _, log = build(tmp_path, *CHECKPOINTED)
    fired = []

    def die_in_the_step_4_save() -> None:  # armed while step 4 trains: its checkpoint write is the one lost
        if controller.step == 3 and not fired:
            pools.learner.armed["save_checkpoint"] = "die"
            fired.append(True)

    pools.learner.before_train = die_in_the_step_4_save
    controller.run()

    events = pools.events
    restart = events.index(("restart_learner",))
    assert events[restart + 1] == ("load_checkpoint", "step_2")  # the interrupted step_4 write is never loaded
    assert [row["step"] for row in log.rows] == [1, 2, 3, 4]  # steps 3-4 replayed: each row logged once
    assert trained_ids(log.rows) == trained_ids(straight_log.rows)
    assert pools.learner.weights == straight.learner.weights
    assert [e for e in events if e[0] == "checkpoint"][-1] == ("checkpoint", "step_4")
    assert [row["learner/restarts"] for row in log.rows] == [0, 0, 1, 1]
