"""RewardPool faults inside a call, on a real local Ray cluster with GrabCut actors.

The drills are armed on the actor (`arm_fault`) before the groups are sent, so they land inside the score call
every time: the actor's process exits from inside it, or the call never returns until `reward.timeout_s`.
"""

from __future__ import annotations

import pytest
import ray

from reward_server.actor import RewardActor
from reward_server.pool import RewardPool
from segr1.config import load_config
from segr1.faults import StageError
from tests.integration.test_reward_pool import BASE, _requests, _wait_until_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]  # conftest: one Ray per module


def _arm(pool: RewardPool, actor_id: str, action: str) -> None:
    ray.get(pool.actor_handles()[actor_id].arm_fault.remote("score", action))


@pytest.mark.parametrize("action", ["die", "hang"])
def test_an_actor_lost_inside_its_call_has_each_group_scored_exactly_once(action):
    """One actor: the lost call's groups wait for Ray to restart it (no retry is spent on the restart)."""
    cfg = load_config(overrides=[*BASE, "reward.timeout_s=5"])  # a call takes well under a second here
    requests = _requests(6, size=96)
    reference = RewardActor(cfg).score(requests)
    with RewardPool(cfg, num_actors=1) as pool:
        _wait_until_ready(pool)
        _arm(pool, "reward-0", action)
        results = pool.score(requests)
        stats = pool.stats()
    # the two calls the actor held (reward.max_batch_groups=2 groups each) went back to the queue, once each
    assert stats["retries_total"] == 4
    assert [r.group_id for r in results] == [f"g{i}" for i in range(6)]  # each once, in order
    assert [r.breakdowns for r in results] == [r.breakdowns for r in reference]
    assert stats["groups_total"] == 6


def test_a_group_whose_retries_are_spent_fails_naming_stage_group_and_actor_and_can_be_dropped():
    # The backstop (TimeoutError) comes (max_retries + 2) x timeout_s after gather: one timeout_s after the kill.
    # Ray reports the killed call's actor death 1.3-1.7 s after the kill on an idle 2-core machine; with
    # timeout_s=2 a loaded machine crossed that line once in CI. 5 s leaves ample room for the StageError.
    cfg = load_config(overrides=[*BASE, "reward.timeout_s=5", "reward.max_retries=0"])
    with RewardPool(cfg, num_actors=1) as pool:
        _wait_until_ready(pool)
        _arm(pool, "reward-0", "hang")
        futures = pool.submit(_requests(1, size=96))
        with pytest.raises(StageError, match=r"^stage score failed on reward-0: reward group 'g0' lost 1 times to "
                                             r"dying or hung actors \(last reward-0: hung past reward.timeout_s=5s, "
                                             r"killed\); reward.max_retries=0$"):
            pool.gather(futures)
        assert pool.gather(futures, drop_failed=True) == [None]  # dropped, never a made-up reward
