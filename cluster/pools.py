"""The three service pools of one job, assembled from config: rollout workers, reward actors, learner ranks.

Each pool creates its own Ray actors from its config group (resources, counts); this object only holds them
together, moves weights from the learner to the rollout workers, resizes, restarts the learner group after it
failed, and arms fault drills (segr1.faults) or kills an actor for them.

Weight transport (`learner.sync.transport`): the Ray object store (one put per bucket, every worker gets the
refs; the CPU default), or a collective group of learner rank 0 and the rollout workers (NCCL between GPUs;
`auto` picks it when both sides have GPUs; cluster/weight_sync.py forms it). The group is re-formed whenever
the rollout pool changes size.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import ray

from cluster import weight_sync
from learner.group import LearnerGroup
from reward_server.pool import RewardPool
from rollout.pool import RolloutPool
from segr1.config import Config


class Pools:
    def __init__(self, cfg: Config, model_path: str) -> None:
        self.cfg = cfg
        self.model_path = model_path
        # Start-up overlaps: the learner ranks (DeepSpeed, model, optimizer) and the reward actors (segmenter)
        # load while the rollout pool waits for its workers, instead of one pool after another
        self.learner = LearnerGroup(cfg, model_path, wait=False)
        self.reward = RewardPool(cfg, cfg.reward.num_actors)  # does not wait: actors answer when loaded
        self.rollout = RolloutPool(cfg, model_path, cfg.rollout.num_workers)
        self.learner.wait_ready()
        self.collective = weight_sync.collective_backend(cfg)  # None = object store
        self._group_members: list[Any] | None = None

    def publish_weights(self) -> int:
        """Learner weights -> every rollout worker. Returns the new version."""
        if self.collective is not None:
            members = self.rollout.actors()
            if members != self._group_members:  # first sync, or the pool changed: (re)form the group
                weight_sync.connect(self.learner, members, self.collective)
                self._group_members = members
            return weight_sync.broadcast(self.learner, members, self.cfg.learner.sync.timeout_s)
        version, bucket_refs = self.learner.publish_weights()
        self.rollout.update_weights(bucket_refs, version)
        return version

    def resize(self, rollout: int | None = None, reward: int | None = None) -> None:
        if rollout is not None and rollout != self.rollout.size:
            self.rollout.resize(rollout)  # new workers receive the current weights before they serve
            if self.collective is not None:
                self.publish_weights()  # re-forms the group and brings new members to the newest weights
        if reward is not None and reward != self.reward.size:
            self.reward.resize(reward)

    def restart_learner(self) -> None:
        """A fresh learner group in place of one that died or hung (its actors killed, its bundles freed); the
        caller loads a checkpoint into it. The weight-sync group is re-formed at the next publish."""
        with contextlib.suppress(Exception):  # best effort: its actors may be dead or unreachable already
            self.learner.shutdown()
        self.learner = LearnerGroup(self.cfg, self.model_path)
        self._group_members = None

    def arm_fault(self, stage: str, action: str) -> None:
        """Fault drill (segr1.faults): `action` inside the next `stage` call of one actor: the first rollout
        worker (generate, weight_sync), the first reward actor (score), learner rank 0 (learner_step)."""
        if stage == "learner_step":
            self.learner.arm_fault(stage, action)
        elif stage == "score":
            ray.get(next(iter(self.reward.actor_handles().values())).arm_fault.remote(stage, action))
        else:
            ray.get(self.rollout.actors()[0].arm_fault.remote(stage, action))

    def kill_one(self, which: str) -> None:
        """Fault drill: kill one actor of a pool without restart bookkeeping; the pool must recover."""
        actors = list(self.reward.actor_handles().values()) if which == "reward" else self.rollout.actors()
        if actors:
            ray.kill(random.choice(actors), no_restart=False)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pool/rollout_workers": self.rollout.size,
            "pool/reward_actors": self.reward.size,
        }
        for prefix, stats in (("rollout_pool", self.rollout.stats()), ("reward_pool", self.reward.stats())):
            for key, value in stats.items():
                if isinstance(value, (int, float)):
                    out[f"{prefix}/{key}"] = value
        return out

