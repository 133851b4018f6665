"""Fault injection and stage failures: the names that the config, the actors, the pools and the controller share.

Faults are drills set in config (`faults.*`, all -1 = off). Two kinds land *inside* a call, so recovery is
exercised where real failures happen rather than at a step's edge:

- `die_in_<stage>_at_step`: the actor's process exits from inside its next call of that stage (its result
  is lost, as when a node dies mid-call);
- `hang_<stage>_at_step`: that call never returns (a hung collective, a stuck driver); the stage's timeout
  must catch it.

The controller arms a drill on one actor (`arm_fault`) when the step it names begins (0 = the first step),
once per job process; the armed actor fires it in its next call of the stage (`FaultHook.fire`). A replacement
actor starts unarmed, so a retried call succeeds. Every stage has a timeout key in the config (`STAGES`).

`StageError` is how a pool reports a stage that failed for good (its retries spent, or a service that cannot
retry): it names the stage, the actor and, once the controller adds it, the step.

Pure: no Ray import.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

# stage -> (service that runs it, config key of its timeout)
STAGES: dict[str, tuple[str, str]] = {
    "generate": ("rollout", "rollout.timeout_s"),
    "score": ("reward", "reward.timeout_s"),
    "learner_step": ("learner", "learner.timeout_s"),
    "weight_sync": ("rollout", "learner.sync.timeout_s"),
}
ACTIONS = ("die", "hang")


def fault_key(action: str, stage: str) -> str:
    """The `faults.*` key of an in-call drill, e.g. die_in_generate_at_step, hang_weight_sync_at_step."""
    return f"{action}_in_{stage}_at_step" if action == "die" else f"{action}_{stage}_at_step"


IN_CALL_KEYS: dict[str, tuple[str, str]] = {fault_key(a, s): (s, a) for a in ACTIONS for s in STAGES
                                            if (a, s) != ("die", "weight_sync")}  # a death there is a generate's


def due(faults: object, step: int) -> list[tuple[str, str]]:
    """(stage, action) of the in-call drills that `faults` (a FaultsConfig) sets for `step`, in key order."""
    return [where for key, where in IN_CALL_KEYS.items() if getattr(faults, key) == step]


class FaultHook:
    """Held by each actor: armed by a drill, fired from inside the stage's call (once)."""

    def __init__(self) -> None:
        self._armed: dict[str, str] = {}  # stage -> action

    def arm(self, stage: str, action: str) -> None:
        if stage not in STAGES or action not in ACTIONS:
            raise ValueError(f"fault drill: unknown stage {stage!r} or action {action!r}")
        self._armed[stage] = action

    def fire(self, stage: str) -> None:
        """Inside the stage's call: exit the process, or block forever, if a drill is armed for it."""
        action = self._armed.pop(stage, None)
        if action == "die":
            os._exit(17)  # no cleanup, no exception: the caller sees the actor die mid-call
        if action == "hang":
            threading.Event().wait()  # never set: only the caller's timeout (and a kill) ends this call


@dataclass(eq=False)  # compared and hashed by identity, as exceptions are
class StageError(RuntimeError):
    """A stage failed for good: which stage (`STAGES`), on which actor, at which step (-1: not known yet)."""

    stage: str
    actor: str
    detail: str
    step: int = -1

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def service(self) -> str:
        return STAGES[self.stage][0] if not self.actor.startswith("learner") else "learner"

    def at_step(self, step: int) -> StageError:
        """The same failure with the step it happened in (the loop knows it; the pools do not)."""
        return self if self.step >= 0 else StageError(self.stage, self.actor, self.detail, step)

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step >= 0 else ""
        return f"stage {self.stage} failed on {self.actor}{where}: {self.detail}"

    def __reduce__(self):  # crosses Ray as itself (dataclass exceptions do not pickle by default)
        return StageError, (self.stage, self.actor, self.detail, self.step)
