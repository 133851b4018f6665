"""In-process stand-ins for what the controller drives: pools, training data, evaluator and logger.

They implement the interfaces the controller calls on the real objects (cluster.pools.Pools with its rollout,
reward and learner pools; segr1.data.SegDataset; cluster.evaluate.Evaluator; RunLogger) without Ray or models,
so the step loop runs in milliseconds. Every call is appended to one shared `events` list, in the order it
happened, for tests that assert the loop's order.

Completions are "<sample_id>/<j>"; their reward is `reward_of(sample_id, j)` (default j: every group is
informative). The rollout pool serves at the version last published; the learner's checkpoint is a JSON
file of the extra state the controller gives it, its "weights" a digest of every update applied in order.

Fault drills (`arm_fault`, segr1.faults) behave as the real pools react to them: a rollout worker that dies or
hangs in generate has its shard re-run on a replacement ("replace" event); a reward actor that dies or hangs
has its groups scored again (once each); the learner raises the StageError that LearnerGroup raises. Groups in
`reward.failing` fail for good, as groups do whose retries are spent.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from segr1.faults import StageError
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
        self.armed: dict[str, str] = {}  # stage -> action of a fault drill
        self.replaced = 0  # workers replaced after a drill
        self.weights = ""  # the learner's weights digest it last received

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
        if self.armed.pop("generate", None):  # the worker died or hung mid-call: a replacement re-runs it
            self.replaced += 1
            self.events.append(("replace", worker_id, ids))
            worker_id = f"rollout-{self.size + self.replaced - 1}"
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
        self.armed: dict[str, str] = {}  # stage -> action of a fault drill
        self.failing: set[str] = set()  # group ids whose scoring fails for good (retries spent)
        self.retried: list[str] = []  # group ids scored again after a drill

    def submit(self, requests: list[RewardRequest]) -> list[Future]:
        """RewardPool.submit: scored at once, so the futures come back done."""
        if self.armed.pop("score", None):  # the actor died or hung mid-call: its groups are requeued
            self.retried += [r.group_id for r in requests]
            self.events.append(("requeue", [r.group_id for r in requests]))
        out = []
        for request, reward in zip(requests, self.score(requests)):
            future: Future = Future()
            if request.group_id in self.failing:
                future.set_exception(StageError("score", "reward-0", f"reward group {request.group_id!r} lost "
                                                "4 times to dying or hung actors; reward.max_retries=3"))
            else:
                future.set_result(reward)
            out.append(future)
        return out

    def gather(self, futures: list[Future], drop_failed: bool = False) -> list[GroupReward | None]:
        out: list[GroupReward | None] = []
        for future in futures:
            try:
                out.append(future.result(timeout=5))
            except StageError:
                if not drop_failed:
                    raise
                out.append(None)
        return out

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
        self.weights = "init"  # digest of every update applied, in order: equal digests, equal training
        self.armed: dict[str, str] = {}  # stage -> action of a fault drill

    def train_step(self, items: list[TrainItem]) -> dict[str, float]:
        self.before_train()
        action = self.armed.pop("learner_step", None)
        if action:  # what LearnerGroup raises when rank 0 dies or hangs in the update
            detail = ("the rank died during train_step (ActorDiedError)" if action == "die"
                      else "train_step did not return within learner.timeout_s=3600s (ranks 0)")
            raise StageError("learner_step", "learner rank 0", detail)
        self.events.append(("train", [i.sample_id for i in items]))
        self.trained.append(items)
        self._update([[i.sample_id, i.advantages] for i in items])
        return {"policy/loss": 0.5, "policy/kl": 0.01, "policy/clip_frac": 0.0}

    def sft_step(self, items: list[SFTItem]) -> dict[str, float]:
        self.events.append(("sft", len(items)))
        self._update(len(items))
        return {"sft/loss": 1.0}

    def _update(self, what: Any) -> None:
        self.weights = hashlib.sha256(json.dumps([self.weights, what]).encode()).hexdigest()[:16]

    def publish_weights(self) -> tuple[int, list[Any]]:
        self.version += 1
        return self.version, []

    def reset_reference(self) -> None:
        self.events.append(("reset_reference",))

    def reset_optimizer(self) -> None:
        self.events.append(("reset_optimizer",))

    def save_checkpoint(self, directory: str, extra_state: dict[str, Any]) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)  # a replayed step rewrites an interrupted write
        if self.armed.pop("save_checkpoint", None):  # the rank died mid-write: the state file never lands
            raise StageError("learner_step", "learner rank 0", "the rank died during save_checkpoint (ActorDiedError)")
        (Path(directory) / "state.json").write_text(json.dumps({"version": self.version, "weights": self.weights,
                                                                "extra": extra_state}))
        self.events.append(("checkpoint", Path(directory).name))

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        state = json.loads((Path(directory) / "state.json").read_text())
        self.version, self.weights = state["version"], state["weights"]
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
        if self.rollout.armed.pop("weight_sync", None):  # a worker hung receiving: replaced at these weights
            self.rollout.replaced += 1
            self.events.append(("replace", "rollout-0", "weight_sync"))
        self.rollout.version, self.rollout.weights = version, self.learner.weights
        self.events.append(("publish", version))
        return version

    def resize(self, rollout: int | None = None, reward: int | None = None) -> None:
        self.events.append(("resize", rollout, reward))
        self.rollout.size = rollout if rollout is not None else self.rollout.size
        self.reward.size = reward if reward is not None else self.reward.size

    def kill_one(self, which: str) -> None:
        self.events.append(("kill", which))

    def arm_fault(self, stage: str, action: str) -> None:
        self.events.append(("arm", stage, action))
        target = {"learner_step": self.learner, "score": self.reward}.get(stage, self.rollout)
        target.armed[stage] = action

    def restart_learner(self) -> None:
        """A fresh learner (initial weights, version 0); a test's before_train hook carries over."""
        self.events.append(("restart_learner",))
        hook = self.learner.before_train
        self.learner = FakeLearner(self.events)
        self.learner.before_train = hook

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
