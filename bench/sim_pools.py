"""Stand-ins for the cluster simulation (bench/cluster_sim.py): pools with the real interfaces whose latencies
come from published GPU figures, slept in real time scaled down by `scale`.

Not a benchmark itself. The rollout pool cuts requests into the real pool's contiguous shards (segr1.shards)
and yields each shard when its simulated generation ends (RolloutPool.generate_shards); the reward pool queues
groups on M actors, each taking the next group when free (RewardPool.submit / gather); the learner sleeps for
its update and the broadcast. Everything else, the loop, async run-ahead and streaming, is the real controller.
Times are kept in simulated seconds (`Clock`); a stand-in sleeps `scale` x its simulated duration.
"""

from __future__ import annotations

import functools
import heapq
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
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
)
from segr1.shards import balanced_shards


@dataclass(frozen=True)
class Calibration:
    """Seconds on the GPU for each piece of work; one rollout worker, reward actor or learner per GPU group.

    decode_step_s: one decode step of a 7B model in vLLM at batch 1, 13.3 ms (about 75 tokens/s): Llama-3.1-8B
      BF16, vLLM 0.23, one A100 40GB, 1024 in / 128 out tokens (johnmusgrave.com/p/vllm-throughput-latency-sweep-on).
      The same sweep gains 6.6x throughput at 8 concurrent requests, so a step at batch b costs
      decode_step_s * (1 + b / decode_knee) with decode_knee = 32 (8 sequences: 1.25x the time, 6.4x tokens/s);
      at 256 sequences this gives 2,130 tokens/s, under the 3,363 tokens/s saturated figure for
      DeepSeek-R1-Distill-Qwen-7B on one A100 80GB (www.morphllm.com/vllm-benchmarks). Qwen2.5-VL-7B's language
      model is a 7B Qwen2: the same class.
    prefill_s: one prompt's prefill, 830 tokens (a 768 px image is 27x27 = 729 merged patches, plus the text):
      2 x 7.6e9 x 830 FLOP at 40% of an A100's 312 TFLOP/s = 0.10 s; its G samples share it (prefix caching).
    sam_encode_s: SAM2.1 Hiera-L, 1/24.2 s: the checkpoint table's 24.2 FPS on an A100 (facebookresearch/sam2
      README, "SAM 2.1 checkpoints"), a whole video frame (encoder, memory attention, decoder): an upper bound
      on one image encoding.
    sam_decode_s: one prompt set through SAM2's mask decoder, 4 ms: an estimate (the SAM paper's ~50 ms for
      the prompt encoder and decoder in a web browser on CPU, Kirillov et al. 2023, sec. 3; a GPU is >10x that).
    learner_flops_per_token: 8 x 7.6e9: forward and backward of the policy (6N) plus the reference model's
      forward (2N), per token of prompt and completion (Kaplan et al. 2020's 6N rule).
    learner_flops_per_s: 8 A100s (312 TFLOP/s BF16 each) at 40% MFU; PaLM reported 46.2% MFU at 540B
      (Chowdhery et al. 2022, table 3), and 40% is a common figure for 7B with ZeRO-3/FSDP.
    sync_s: broadcasting 15.2 GB of BF16 weights over one 400 Gb/s InfiniBand link (0.3 s) plus vLLM loading
      them (an estimate, 0.7 s).
    """

    decode_step_s: float = 0.0133
    decode_knee: float = 32.0
    prefill_s: float = 0.10
    sam_encode_s: float = 1 / 24.2
    sam_decode_s: float = 0.004
    prompt_tokens: int = 830
    learner_flops_per_token: float = 8 * 7.6e9
    learner_flops_per_s: float = 8 * 312e12 * 0.40
    sync_s: float = 1.0

    def shard_s(self, prompts: int, lengths: np.ndarray) -> float:
        """Generation of one shard: its prompts' prefill, then decode steps until its longest completion ends,
        each step at the batch of completions still running. lengths: int[prompts * G] tokens."""
        steps = np.arange(int(lengths.max()))
        alive = (lengths[None, :] > steps[:, None]).sum(axis=1)  # [max_len] sequences in each step
        return prompts * self.prefill_s + float((self.decode_step_s * (1 + alive / self.decode_knee)).sum())

    def group_s(self, completions: int) -> float:
        return self.sam_encode_s + completions * self.sam_decode_s

    def learn_s(self, completion_tokens: int, groups: int) -> float:
        tokens = completion_tokens + groups * self.prompt_tokens
        return tokens * self.learner_flops_per_token / self.learner_flops_per_s


def completion_lengths(sample_id: str, group: int, max_tokens: int, seed: int) -> np.ndarray:
    """int[G] tokens per completion, uniform in [max/4, max] (reasoning plus prompts, some hitting the cap),
    fixed per (sample, seed) so every mode generates the same work."""
    rng = np.random.default_rng([seed, zlib.crc32(sample_id.encode())])
    return np.minimum(rng.integers(max_tokens // 4, max_tokens + 1, size=group), max_tokens)


class SimRollout:
    """RolloutPool.generate over `size` workers, each shard slept for its simulated generation (no streaming:
    the controller then scores the whole batch after it)."""

    def __init__(self, cal: Calibration, size: int, scale: float) -> None:
        self.cal, self.size, self.scale, self.version = cal, size, scale, 0

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        shards = dict(self._shards(requests, sampling))
        return [group for start in sorted(shards) for group in shards[start]]

    def _shards(self, requests: list[GenerationRequest],
                sampling: SamplingParams) -> Iterator[tuple[int, list[RolloutGroup]]]:
        start_t = time.perf_counter()
        timed = []
        for a, b in balanced_shards(len(requests), self.size):
            if b > a:
                lengths = [completion_lengths(r.request_id, sampling.n, sampling.max_new_tokens, sampling.seed or 0)
                           for r in requests[a:b]]
                timed.append((self.cal.shard_s(b - a, np.concatenate(lengths)), a, requests[a:b], lengths))
        timed.sort(key=lambda t: t[0])
        for seconds, a, shard, lengths in timed:  # in the order they finish
            time.sleep(max(start_t + seconds * self.scale - time.perf_counter(), 0.0))
            yield a, [RolloutGroup(r.request_id, [0] * 4,
                                   [Completion("", *_tokens(int(n)), "stop") for n in lens],
                                   weights_version=self.version, worker_id=f"rollout-{a}")
                      for r, lens in zip(shard, lengths)]


@functools.cache
def _tokens(n: int) -> tuple[list[int], list[float]]:
    """Token ids and log-probs of an n-token completion, shared between completions: building them is the
    stand-in's cost, which the overhead column must not count (copying them for the learner is the controller's)."""
    return [1] * n, [-0.5] * n


class StreamingRollout(SimRollout):
    """With RolloutPool.generate_shards: the controller scores each shard as it returns."""

    def generate_shards(self, requests: list[GenerationRequest],
                        sampling: SamplingParams) -> Iterator[tuple[int, list[RolloutGroup]]]:
        return self._shards(requests, sampling)


class SimReward:
    """RewardPool's submit / gather / score over `size` actors: a group goes to the actor free first and takes
    one SAM2 encoding plus G decodes; a timer thread resolves each future when its simulated time is up."""

    def __init__(self, cal: Calibration, size: int, scale: float) -> None:
        self.cal, self.size, self.scale = cal, size, scale
        self._free_at = [0.0] * size  # perf_counter when each actor is next free
        self._due: list[tuple[float, int, Future, GroupReward]] = []
        self._count = 0
        self._lock = threading.Condition()
        threading.Thread(target=self._timer, daemon=True).start()

    def submit(self, requests: list[RewardRequest]) -> list[Future]:
        now, out = time.perf_counter(), []
        with self._lock:
            for r in requests:
                actor = min(range(self.size), key=self._free_at.__getitem__)
                done = max(now, self._free_at[actor]) + self.cal.group_s(len(r.texts)) * self.scale
                self._free_at[actor] = done
                reward = GroupReward(r.group_id, [RewardBreakdown(float(j % 2), 1.0, 0.5, 0.5)
                                                  for j in range(len(r.texts))])
                future: Future = Future()
                self._count += 1
                heapq.heappush(self._due, (done, self._count, future, reward))
                out.append(future)
            self._lock.notify()
        return out

    def gather(self, futures: list[Future], drop_failed: bool = False) -> list[GroupReward]:
        return [future.result() for future in futures]

    def score(self, requests: list[RewardRequest]) -> list[GroupReward]:
        return self.gather(self.submit(requests))

    def _timer(self) -> None:
        while True:
            with self._lock:
                while not self._due:
                    self._lock.wait()
                wait = self._due[0][0] - time.perf_counter()
                if wait > 0:
                    self._lock.wait(timeout=wait)
                    continue
                _, _, future, reward = heapq.heappop(self._due)
            future.set_result(reward)


class SimLearner:
    def __init__(self, cal: Calibration, scale: float, learn_factor: float = 1.0) -> None:
        self.cal, self.scale, self.learn_factor = cal, scale, learn_factor
        self.version = 0

    def train_step(self, items: list[Any]) -> dict[str, float]:
        tokens = sum(len(ids) for item in items for ids in item.completion_ids)
        time.sleep(self.cal.learn_s(tokens, len(items)) * self.learn_factor * self.scale)
        return {"policy/loss": 0.0, "policy/kl": 0.0, "policy/clip_frac": 0.0}

    def save_checkpoint(self, directory: str, extra_state: dict[str, Any]) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "state.json").write_text("{}")

    def export_hf(self, directory: str) -> None:
        pass


class SimPools:
    """cluster.pools.Pools' interface over the stand-ins."""

    def __init__(self, cal: Calibration, workers: int, actors: int, scale: float, streaming: bool,
                 learn_factor: float = 1.0) -> None:
        self.cal, self.scale = cal, scale
        self.rollout = (StreamingRollout if streaming else SimRollout)(cal, workers, scale)
        self.reward = SimReward(cal, actors, scale)
        self.learner = SimLearner(cal, scale, learn_factor)

    def publish_weights(self) -> int:
        time.sleep(self.cal.sync_s * self.scale)
        self.learner.version += 1
        self.rollout.version = self.learner.version
        return self.learner.version

    def metrics(self) -> dict[str, Any]:
        return {"pool/rollout_workers": self.rollout.size, "pool/reward_actors": self.reward.size}


class SimData:
    """n prompts with 1-pixel images: the pixels' size does not enter the simulated times."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Sample:
        return Sample(f"s{index}", np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), bool), "segment")


class NoEval:
    def run(self, pools: Any, step: int, log: Any, tag: str) -> dict[str, float]:
        return {}


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def log_step(self, metrics: dict[str, Any]) -> None:
        self.rows.append(metrics)

    def rewind(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass
