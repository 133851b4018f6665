"""LearnerGroup with a hung rank: the update is abandoned after `learner.timeout_s` with an error naming the stage
and the rank (the job then restarts the group from its newest checkpoint: tests/unit/test_controller_faults.py
on fakes, tests/e2e/test_exact_resume.py with a learner that dies)."""

from __future__ import annotations

import time

import pytest

from segr1.faults import StageError
from tests.integration.learner_helpers import learner_config, make_items

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_hung_update_fails_after_the_learner_timeout_naming_stage_and_rank(model_path, processor):
    import ray

    from learner.group import LearnerGroup

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # the timeout bounds every learner call, yet the only one made under it here is the hung update
        group = LearnerGroup(learner_config("learner.timeout_s=3"), model_path)
        group.arm_fault("learner_step", "hang")
        started = time.monotonic()
        with pytest.raises(StageError, match=r"^stage learner_step failed on learner rank 0: train_step did not "
                                             r"return within learner.timeout_s=3s \(ranks 0\)$"):
            group.train_step(make_items(processor, num_groups=2))
        assert 3 <= time.monotonic() - started < 20
        group.shutdown()  # kills the hung rank, frees its bundle: what Pools.restart_learner does first
    finally:
        ray.shutdown()
