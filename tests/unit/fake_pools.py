"""In-process stand-ins for what the controller drives: pools, training data, evaluator and logger.

They implement the interfaces the controller calls on the real objects (cluster.pools.Pools with its rollout,
reward and learner pools; segr1.data.SegDataset; cluster.evaluate.Evaluator; RunLogger) without Ray or models,
so the step loop runs in milliseconds. Every call is appended to one shared `events` list, in the order it
happened, for tests that assert the loop's order.

Completions are "<sample_id>/<j>"; their reward is `reward_of(sample_id, j)` (default j: every group is
informative). The rollout pool serves at the version last published; the learner's checkpoint is a JSON
file of the extra state the controller gives it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from segr1.protocol import (
    Completion,
    GenerationRequest,
    GroupReward,
    RewardBreakdown,
    RewardRequest,
    RolloutGroup,
    Sample,
    SamplingParams,
    SFTItem,
    TrainItem,
)
from segr1.shards import balanced_shards

FRAME = 8


class FakeData:
    """n samples "s0".."s<n-1>" with blank images; records each load (the loop draws on its own thread)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.loaded: list[str] = []

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Sample:
        self.loaded.append(f"s{index}")
        return Sample(sample_id=f"s{index}", image=np.zeros((FRAME, FRAME, 3), np.uint8),
                      mask=np.zeros((FRAME, FRAME), bool), instruction="find the hidden object")


class FakeRollout:
    """RolloutPool's generate and generate_shards: one contiguous shard per worker (segr1.shards, as the real
    pool cuts them); shards finish last first, the order that most disturbs a caller assuming sample order."""

    def __init__(self, events: list[tuple], size: int) -> None:
        self.events = events
        self.size = size
        self.version = 0  # the weights it serves
        self.generated: list[str] = []  # request ids whose generation finished

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        shards = dict(self.generate_shards(requests, sampling))
        return [group for start in sorted(shards) for group in shards[start]]

    def generate_shards(self, requests: list[GenerationRequest],
                        sampling: SamplingParams) -> Iterator[tuple[int, list[RolloutGroup]]]:
        for i, (a, b) in reversed(list(enumerate(balanced_shards(len(requests), self.size)))):
            if b > a:
                yield a, self._shard(requests[a:b], sampling, worker_id=f"rollout-{i}")

    def _shard(self, requests: list[GenerationRequest], sampling: SamplingParams,
               worker_id: str) -> list[RolloutGroup]:
        ids = [r.request_id for r in requests]
        self.events.append(("generate", ids, self.version))
        groups = [RolloutGroup(request_id=r.request_id, prompt_ids=[7, 8],
                               completions=[Completion(f"{r.request_id}/{j}", [1, 2], [-0.5, -0.25], "stop")
                                            for j in range(sampling.n)],
                               weights_version=self.version, worker_id=worker_id)
                  for r in requests]
        self.generated += ids
        return groups


class FakeReward:
    def __init__(self, events: list[tuple], size: int, reward_of: Callable[[str, int], float]) -> None:
        self.events = events
        self.size = size
        self.reward_of = reward_of
        self.requests: list[RewardRequest] = []

    def submit(self, requests: list[RewardRequest]) -> list[Future]:
        """RewardPool.submit: scored at once, so the futures come back done."""
        out = []
        for reward in self.score(requests):
            future: Future = Future()
            future.set_result(reward)
            out.append(future)
        return out

    def gather(self, futures: list[Future]) -> list[GroupReward]:
        return [future.result(timeout=5) for future in futures]

    def score(self, requests: list[RewardRequest]) -> list[GroupReward]:
        self.events.append(("score", [r.group_id for r in requests]))
        self.requests += requests
        out = []
        for r in requests:
            values = [self.reward_of(r.group_id, j) for j in range(len(r.texts))]
            masks = [{"size": [FRAME, FRAME], "counts": ""}] * len(r.texts) if r.return_masks else None
            out.append(GroupReward(r.group_id, [RewardBreakdown(v, 1.0, v, v) for v in values], masks_rle=masks))
        return out


class FakeLearner:
    def __init__(self, events: list[tuple]) -> None:
        self.events = events
        self.version = 0
        self.trained: list[list[TrainItem]] = []
        self.before_train: Callable[[], None] = lambda: None  # a test's hook, run inside each update

    def train_step(self, items: list[TrainItem]) -> dict[str, float]:
        self.before_train()
        self.events.append(("train", [i.sample_id for i in items]))
        self.trained.append(items)
        return {"policy/loss": 0.5, "policy/kl": 0.01, "policy/clip_frac": 0.0}

    def sft_step(self, items: list[SFTItem]) -> dict[str, float]:
        self.events.append(("sft", len(items)))
        return {"sft/loss": 1.0}

    def publish_weights(self) -> tuple[int, list[Any]]:
        self.version += 1
        return self.version, []

    def reset_reference(self) -> None:
        self.events.append(("reset_reference",))

    def reset_optimizer(self) -> None:
        self.events.append(("reset_optimizer",))

    def save_checkpoint(self, directory: str, extra_state: dict[str, Any]) -> None:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "state.json").write_text(json.dumps({"version": self.version, "extra": extra_state}))
        self.events.append(("checkpoint", Path(directory).name))

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        state = json.loads((Path(directory) / "state.json").read_text())
        self.version = state["version"]
        self.events.append(("load_checkpoint", Path(directory).name))
        return state["extra"]

    def export_hf(self, directory: str) -> None:
        self.events.append(("export_hf",))


class FakePools:
    """cluster.pools.Pools' interface over the fakes above."""

    def __init__(self, rollout: int = 1, reward: int = 1,
                 reward_of: Callable[[str, int], float] = lambda sample_id, j: float(j)) -> None:
        self.events: list[tuple] = []
        self.learner = FakeLearner(self.events)
        self.rollout = FakeRollout(self.events, rollout)
        self.reward = FakeReward(self.events, reward, reward_of)

    def publish_weights(self) -> int:
        version, _ = self.learner.publish_weights()
        self.rollout.version = version
        self.events.append(("publish", version))
        return version

    def resize(self, rollout: int | None = None, reward: int | None = None) -> None:
        self.events.append(("resize", rollout, reward))
        self.rollout.size = rollout if rollout is not None else self.rollout.size
        self.reward.size = reward if reward is not None else self.reward.size

    def kill_one(self, which: str) -> None:
        self.events.append(("kill", which))

    def metrics(self) -> dict[str, Any]:
        return {"pool/rollout_workers": self.rollout.size, "pool/reward_actors": self.reward.size}


class FakeEvaluator:
    """eval/iou = step / 100, so rows show which step each evaluation saw."""

    def __init__(self, events: list[tuple]) -> None:
        self.events = events
        self.overlay_rewards: list[list[GroupReward]] = []  # what each save_overlays call was given

    def run(self, pools: Any, step: int, log: Any, tag: str) -> dict[str, float]:
        self.events.append(("eval", tag, step))
        return {"eval/iou": step / 100}

    def save_overlays(self, step: int, samples: list[Sample], groups: list[RolloutGroup],
                      rewards: list[GroupReward], log: Any) -> None:
        self.events.append(("overlays", step, [s.sample_id for s in samples]))
        self.overlay_rewards.append(rewards)


class FakeLog:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.closed = False

    def log_step(self, metrics: dict[str, Any]) -> None:
        self.rows.append(dict(metrics))

    def rewind(self, step: int) -> None:
        self.rows = [row for row in self.rows if row.get("step", 0) <= step]

    def log_overlays(self, step: int, images: list[tuple[str, np.ndarray]]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll until `condition()` holds (for hooks that wait on the controller's run-ahead thread)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.001)
