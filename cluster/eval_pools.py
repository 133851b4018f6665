"""The Ray pools of `segr1 eval`: rollout workers and reward actors (no learner), and the baselines on them.

    with EvalPools(cfg, checkpoint) as pools:    # rollout.num_workers engines, reward.num_actors segmenters
        pools.rollout.generate(...)              # RolloutPool: requests sharded over the workers
        pools.reward.score(...)                  # RewardPool: groups batched over the actors
        pools.baselines.masks(frames, gts, blind)()   # blind/oracle masks, split over the reward actors

The engines are the training job's (`rollout.engine`: hf on CPU, vllm on GPU), loaded from the checkpoint.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import ray
from ray.exceptions import RayActorError

from reward_server.baselines import prompt_to_dict
from reward_server.parse import SegPrompt
from reward_server.pool import RewardPool
from reward_server.rle import RLE
from rollout.pool import RolloutPool
from segr1.config import Config
from segr1.shards import balanced_shards


class PooledBaselines:
    """cluster.checkpoint_eval.BaselineRunner on a RewardPool's actors (their segmenters: the run's)."""

    def __init__(self, pool: RewardPool, max_retries: int) -> None:
        self.pool = pool
        self.max_retries = max_retries

    def choose(self, images: list[np.ndarray], masks: list[np.ndarray], frame: int) -> SegPrompt:
        return self.pool.baselines(images, masks, [], [], frame).blind  # no eval images: only the choice

    def masks(self, images: list[Any], masks: list[Any], blind: SegPrompt):
        """Contiguous shards, one per actor, started now; the returned callable waits and concatenates
        (a shard whose actor died is re-sent: Ray restarts reward actors)."""
        actors = list(self.pool.actor_handles().values())
        prompt = prompt_to_dict(blind)
        shards = [(a, b) for a, b in balanced_shards(len(images), len(actors)) if b > a]
        pending = [actors[k].baseline_masks.remote(images[a:b], masks[a:b], prompt)
                   for k, (a, b) in enumerate(shards)]

        def wait() -> list[list[RLE]]:
            out: list[list[RLE]] = []
            for k, (a, b) in enumerate(shards):
                for attempt in range(self.max_retries + 1):
                    try:
                        out += ray.get(pending[k])
                        break
                    except RayActorError:
                        if attempt == self.max_retries:
                            raise
                        pending[k] = actors[k].baseline_masks.remote(images[a:b], masks[a:b], prompt)
            return out

        return wait


class EvalPools:
    """Rollout and reward pools sized by config, loaded from `checkpoint`; close() ends their actors."""

    def __init__(self, cfg: Config, checkpoint: str) -> None:
        self.rollout = RolloutPool(cfg, checkpoint, cfg.rollout.num_workers)
        try:
            self.reward = RewardPool(cfg, cfg.reward.num_actors)
        except BaseException:
            self.rollout.shutdown()
            raise
        self.baselines = PooledBaselines(self.reward, cfg.reward.max_retries)

    @property
    def chunk(self) -> int:
        """Samples per round: a full engine batch for every rollout worker."""
        return max(1, self.rollout.cfg.rollout.max_batch_prompts) * self.rollout.size

    def close(self) -> None:
        self.reward.close()
        self.rollout.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
