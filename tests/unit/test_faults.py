"""segr1.faults: the in-call drill hook (die exits the process, hang blocks) and StageError's message."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import pytest

from segr1.config import FaultsConfig
from segr1.faults import IN_CALL_KEYS, STAGES, FaultHook, StageError, due


def test_a_die_drill_exits_the_process_from_inside_the_call_and_only_its_stage_fires():
    code = ("from segr1.faults import FaultHook\n"
            "hook = FaultHook(); hook.arm('score', 'die')\n"
            "hook.fire('generate'); print('other stage: no fault', flush=True)\n"
            "hook.fire('score'); print('survived')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 17 and proc.stdout == "other stage: no fault\n"


def test_a_hang_drill_blocks_its_call_and_fires_once():
    hook = FaultHook()
    hook.arm("generate", "hang")
    started = threading.Event()

    def call():
        started.set()
        hook.fire("generate")

    hung = threading.Thread(target=call, daemon=True)  # never returns: left to die with the test process
    hung.start()
    started.wait()
    hung.join(timeout=0.3)
    assert hung.is_alive()
    hook.fire("generate")  # disarmed: a retried call goes through


def test_arming_an_unknown_stage_or_action_is_refused():
    with pytest.raises(ValueError, match="unknown stage 'rollout' or action 'die'"):
        FaultHook().arm("rollout", "die")
    with pytest.raises(ValueError, match="unknown stage 'score' or action 'explode'"):
        FaultHook().arm("score", "explode")


def test_due_lists_the_drills_of_a_step_and_every_key_names_a_stage_with_a_timeout():
    faults = FaultsConfig(die_in_generate_at_step=2, hang_weight_sync_at_step=2, hang_score_at_step=3)
    assert due(faults, 2) == [("generate", "die"), ("weight_sync", "hang")]
    assert due(faults, 3) == [("score", "hang")] and due(faults, 0) == []
    assert {stage for stage, _ in IN_CALL_KEYS.values()} == set(STAGES)


def test_stage_error_names_stage_actor_and_step_and_crosses_processes_as_itself():
    error = StageError("generate", "rollout-1", "generate did not return within rollout.timeout_s=5s")
    assert str(error) == "stage generate failed on rollout-1: generate did not return within rollout.timeout_s=5s"
    located = pickle.loads(pickle.dumps(error.at_step(4)))
    assert isinstance(located, StageError) and located.step == 4 and located.service == "rollout"
    assert str(located).startswith("stage generate failed on rollout-1 at step 4: ")
    assert located.at_step(9).step == 4  # the first step named stays
    assert StageError("weight_sync", "learner rank 0", "x").service == "learner"
