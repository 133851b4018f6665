"""Thread counts of the service actors: the `torch_threads` / `threads` config keys resolved on the actor's node.

    torch.set_num_threads(thread_count(cfg.learner.torch_threads, cfg.learner.num_cpus))

None = the CPUs the actor reserved (Ray's own default: it sets OMP_NUM_THREADS to an actor's num_cpus);
0 = every core of the node the actor runs on, for stages that run alone (a sync run's rollout, reward and
learner take turns, so one Ray CPU each leaves cores idle); N = N. Pure: no torch, no Ray.
"""

from __future__ import annotations

import math
import os


def node_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_count(setting: int | None, reserved_cpus: float) -> int:
    """Threads for an actor: `setting` from config (None, 0 or N) and the CPUs it reserved from Ray."""
    if setting is None:
        return max(1, math.ceil(reserved_cpus))  # a fractional reservation still needs a thread
    if setting < 0:
        raise ValueError(f"thread setting must be None, 0 (all cores) or positive, got {setting}")
    return node_cores() if setting == 0 else setting
