"""The controller: owns the three pools and runs the GRPO step loop of SEG-R1.md.

One step:  draw B prompts -> generate G completions each -> score them -> group advantages
           -> one learner update -> broadcast the new weights -> log.
Sync mode (the paper's) generates every batch with the newest weights. Async mode generates the next batch
while the learner trains on this one, so rollouts may lag the learner by up to `algorithm.max_staleness`
versions; the learner corrects with the rollout log-probs (importance ratio, clipped when clip_low is set).

The class is plain and receives what it drives (pools, training data, evaluator, logger), so the loop runs
as well on in-process fakes (tests/unit/test_controller.py) as on Ray actors. `Controller.from_config` builds
the real parts; the job (cluster/job.py) does that inside a named, threaded Ray actor so that `segr1 scale`
can resize the pools while `run()` is in progress.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from cluster import records
from cluster.checkpoint_dirs import load_latest, save
from cluster.evaluate import Evaluator
from cluster.records import ScoredBatch
from cluster.requests import RunRequests
from cluster.telemetry.timeline import Timeline
from cluster.warm_start import warm_start_items
from learner.grpo import group_advantages, overlong_penalty
from segr1.config import Config
from segr1.data.dataset import EpochSampler, SegDataset
from segr1.faults import StageError, due
from segr1.protocol import Sample

OVERLAYS = 2  # training overlays per overlay step: the first groups of the batch


class Controller:
    """The step loop over `pools` (.rollout, .reward, .learner, publish_weights, resize, kill_one, metrics).

    data: the training set (`load(i)`, `len`); evaluator: held-out evaluation and overlays (cluster.evaluate);
    log: where step rows and overlays go (cluster.telemetry.logger.RunLogger); model_path: the policy's
    tokenizer, for the warm start's targets.
    """

    def __init__(self, cfg: Config, pools: Any, data: Any, evaluator: Any, log: Any, model_path: str,
                 timeline: Timeline | None = None) -> None:
        self.cfg = cfg
        # start-up and wind-down marks (cluster/telemetry/timeline.py), from the driver's start when it gave one
        self.timeline = timeline or Timeline(origin=time.time())
        self.model_path = model_path
        self.data = data
        self.sampler = EpochSampler(len(data), seed=cfg.run.seed)
        self.pools = pools
        self.evaluator = evaluator
        self.log = log
        self.step = 0
        self.version = 0
        self.latest: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.last_step = cfg.run.steps  # lowered by `segr1 stop`
        self.requests = RunRequests()  # `segr1 scale` / `segr1 stop`, applied between steps
        # async mode: (data cursor before the draw, batch in flight), oldest first
        self._ahead: deque[tuple[dict[str, Any], Future]] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segr1-rollout-ahead")
        self.learner_restarts = 0  # learner groups restarted from a checkpoint after a failure (metrics)
        self._fired: set[object] = set()  # fault drills already fired: each fires once, also across a restart

    @classmethod
    def from_config(cls, cfg: Config, model_path: str, train_path: str, eval_path: str,
                    timeline: Timeline | None = None) -> Controller:
        """The job's controller: Ray pools, the Parquet data sets, the evaluator and the run's logger."""
        from cluster.pools import Pools
        from cluster.sample_reader import RemoteSamples
        from cluster.telemetry.logger import RunLogger

        train = SegDataset(train_path, cfg.data.frame_size)
        evaluator = Evaluator(cfg, SegDataset(eval_path, cfg.data.frame_size), train=train)
        log = RunLogger(cfg, cfg.run_dir, tui=False)  # the driver draws the live view
        pools = Pools(cfg, model_path)
        if timeline is not None:
            timeline.mark("actors_ready")
        # pixels are loaded and stored by a reader actor: the controller handles ids and references only
        return cls(cfg, pools, RemoteSamples(train), evaluator, log, model_path, timeline)

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> list[dict[str, Any]]:
        """Train to the last step (evaluating, logging, checkpointing); returns the evaluation history, one
        row per evaluation with its "step" and "tag", the one before the first step included."""
        cfg = self.cfg
        if cfg.resume:
            self._resume()
        self._broadcast()  # rollout workers start from the learner's weights (and version)
        if self.step == 0 and cfg.algorithm.warm_start.steps > 0:
            self._warm_start()
            self.timeline.mark("warm_start_done")
        self._evaluate(tag="start")
        self.timeline.mark("first_step")
        try:
            while self.step < self.last_step:
                self._apply_requests()
                self._faults()
                try:
                    metrics = self.train_step()
                except StageError as error:
                    if error.service != "learner":
                        raise error.at_step(self.step + 1) from None
                    self._restart_learner(error.at_step(self.step + 1))  # back to the newest checkpoint
                    continue
                self.step += 1
                metrics["step"] = self.step
                last = self.step == self.last_step
                if cfg.algorithm.eval_every and self.step % cfg.algorithm.eval_every == 0 and not last:
                    metrics.update(self._evaluate(tag=f"step_{self.step}"))
                if last:
                    metrics.update(self._evaluate(tag="end"))
                self._log(metrics)
                if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or last:
                    try:
                        self._checkpoint()
                    except StageError as error:  # the write stays incomplete (no state file): never loaded
                        if error.service != "learner":
                            raise error.at_step(self.step) from None
                        self._restart_learner(error.at_step(self.step))  # replays the steps since the last one
        finally:
            self.requests.close(f"run {cfg.run.name!r} ended at step {self.step} of {self.last_step}")
        self.timeline.mark("last_step_done")
        self._wait_ahead()
        self._finish()
        return self.history

    def train_step(self) -> dict[str, Any]:
        """Draw prompts, generate, score, compute advantages, update, broadcast."""
        algo = self.cfg.algorithm
        t0 = time.perf_counter()
        batch = self._next_batch()
        if algo.mode == "async":
            self._run_ahead()  # the next batches generate while the learner trains on this one
        items = self._train_items(batch)
        draws = [batch]
        while len(items) < algo.prompts_per_step and len(draws) < algo.max_draws:  # DAPO refill (sync mode)
            draws.append(self._collect(self.step, self._draw(), draw=len(draws)))
            items += self._train_items(draws[-1])
        if len(draws) > 1:
            batch = records.concat_batches(draws)
            items = items[:algo.prompts_per_step]

        trained_version = self.version  # the weights this update starts from
        t_learn = time.perf_counter()
        # no update, so nothing new to broadcast, when dynamic sampling dropped every group, or when no
        # completion carries an advantage and no KL term pulls (beta 0): the gradient is zero, but Adam would
        # still move every weight on its old moments
        signal = any(a != 0.0 for item in items for a in item.advantages) or algo.beta > 0
        if items and signal:
            stats = self.pools.learner.train_step(items)
            learn_s = time.perf_counter() - t_learn
            sync_s = self._broadcast()
        else:
            stats = {"policy/loss": 0.0, "policy/kl": 0.0, "policy/clip_frac": 0.0}
            learn_s = sync_s = 0.0

        step_s = time.perf_counter() - t0
        completions = sum(len(g.completions) for g in batch.groups)  # every draw's, trained or filtered
        metrics: dict[str, Any] = {
            **records.reward_metrics(batch.rewards),
            **stats,
            "time/rollout_s": batch.rollout_s,
            "time/reward_s": batch.reward_s,
            "time/reward_exposed_s": batch.reward_exposed_s,  # reward time not hidden behind generation
            "time/learn_s": learn_s,
            "time/sync_s": sync_s,
            "time/step_s": step_s,
            "throughput/samples_per_s": completions / step_s,
            "weights/version": self.version,
            "pipeline/staleness": max(trained_version - g.weights_version for g in batch.groups),
            "data/groups_trained": len(items) if signal else 0,
            "learner/skipped_update": float(not (items and signal)),  # no gradient signal: Adam not stepped
            "data/groups_drawn": len(batch.samples),  # scored, plus dropped ones
            "data/groups_filtered": len(batch.groups) - len(items),  # equal rewards, or a refill surplus
            "data/draws": len(draws),
            "data/groups_dropped": len(batch.dropped),  # their scoring failed for good: not trained, not faked
            "learner/restarts": self.learner_restarts,
            "reward/overlong_penalty": float(self._overlong(batch).mean()),  # 0 unless algorithm.overlong_buffer
            "data/epoch": self.sampler.state_dict()["epoch"],
            "data/sample_ids": [s.sample_id for s in batch.samples],
            "rollout/worker_versions": {g.worker_id: g.weights_version for g in batch.groups},
            **self.pools.metrics(),
        }
        if self._overlay_step(self.step):
            by_id = {s.sample_id: s for s in batch.samples}  # a dropped group has a sample but no group
            self.evaluator.save_overlays(self.step + 1, [by_id[g.request_id] for g in batch.groups[:OVERLAYS]],
                                         batch.groups[:OVERLAYS], batch.rewards[:OVERLAYS], self.log)
        return metrics

    # ------------------------------------------------------------------------------------------ stages
    def _next_batch(self) -> ScoredBatch:
        if self._ahead:
            return self._ahead.popleft()[1].result()
        return self._collect(self.step, self._draw())

    def _draw(self) -> list[Sample]:
        """The next B prompts; drawn on the loop's thread, so the data order never depends on timing."""
        return [self.data.load(i) for i in self.sampler.next_batch(self.cfg.algorithm.prompts_per_step)]

    def _run_ahead(self) -> None:
        """Async mode: keep up to `max_staleness` future batches in flight (one worker thread: in order).

        A batch generated k batches ahead is trained on at most k versions after the weights it saw."""
        algo = self.cfg.algorithm
        while len(self._ahead) < algo.max_staleness and self.step + 1 + len(self._ahead) < self.last_step:
            cursor = self.sampler.state_dict()  # a checkpoint taken now resumes from the oldest pending draw
            step = self.step + 1 + len(self._ahead)
            self._ahead.append((cursor, self._executor.submit(self._collect, step, self._draw())))

    def _train_items(self, batch: ScoredBatch) -> list[Any]:
        """The batch's groups as learner items with group advantages; with dynamic sampling only the groups
        whose rewards differ (an all-equal group has zero advantage everywhere: no gradient)."""
        algo = self.cfg.algorithm
        rewards = records.group_rewards(batch.rewards) + self._overlong(batch)  # [B*G]
        advantages = group_advantages(torch.from_numpy(rewards), algo.group_size, scale=algo.adv_scale,
                                      eps=algo.adv_eps).numpy()  # [B*G]
        items = records.train_items(batch.samples, batch.groups, advantages)
        if algo.dynamic_sampling:
            keep = records.is_informative(rewards, algo.group_size)
            items = [item for item, k in zip(items, keep) if k]
        return items

    def _overlong(self, batch: ScoredBatch) -> np.ndarray:
        """DAPO's soft overlong penalty of each completion (float64[B*G], <= 0; zeros when it is off)."""
        lengths = torch.tensor([len(c.token_ids) for g in batch.groups for c in g.completions])  # [B*G]
        algo = self.cfg.algorithm
        return overlong_penalty(lengths, self.cfg.rollout.max_new_tokens, algo.overlong_buffer,
                                algo.overlong_factor).numpy()

    def _collect(self, step: int, samples: list[Sample], draw: int = 0) -> ScoredBatch:
        """Generate G completions for B prompts and score them (runs in a thread in async mode). `draw` > 0:
        a refill draw of the same step, sampled from its own random stream."""
        sampling = self.cfg.rollout.sampling_params(
            self.cfg.algorithm.group_size, seed=self.cfg.run.seed * 1_000_003 + step + draw * 10_000_019)
        # the step that draws overlays gets its first groups' masks with their rewards (no second scoring); a
        # group whose scoring failed for good is dropped and counted, never given a reward it did not earn
        try:
            return records.rollout_and_score(self.pools.rollout, self.pools.reward, samples, sampling,
                                             masks_first=OVERLAYS if self._overlay_step(step) else 0,
                                             drop_failed=True)
        except StageError as error:
            raise error.at_step(step + 1) from None

    def _overlay_step(self, step: int) -> bool:
        """Whether the update from `step` (0-based; its row is step + 1) draws training overlays."""
        every = self.cfg.logging.overlay_every
        return bool(every) and (step + 1) % every == 0

    def _broadcast(self) -> float:
        """Publish the learner's weights to every rollout worker; returns seconds spent."""
        t0 = time.perf_counter()
        self.version = self.pools.publish_weights()
        return time.perf_counter() - t0

    def _warm_start(self, log: bool = True) -> None:
        """Supervised warm start (algorithm.warm_start.targets: random coordinates by default, localisation left to RL).
        log=False: a replay after a learner restart, whose rows (the same, it is seeded) are logged already."""
        ws = self.cfg.algorithm.warm_start
        rng = np.random.default_rng(self.cfg.run.seed + 17)
        for i in range(ws.steps):
            indices = rng.integers(0, len(self.data), size=ws.batch_size)
            items = warm_start_items([self.data.load(int(j)) for j in indices], self.model_path,
                                     self.cfg.data.frame_size, rng, targets=ws.targets,
                                     system_prompt=self.cfg.rollout.system_prompt or None)
            stats = self.pools.learner.sft_step(items)
            if log and ((i + 1) % 10 == 0 or i + 1 == ws.steps):
                self._log({"warm_start/step": i + 1, **stats})
        self.pools.learner.reset_reference()  # the RL stage's reference is its own starting point
        self.pools.learner.reset_optimizer()  # and its Adam moments start fresh
        self._broadcast()

    def _evaluate(self, tag: str) -> dict[str, float]:
        metrics = self.evaluator.run(self.pools, self.step, self.log, tag=tag)
        self.history.append({"step": self.step, "tag": tag, **metrics})
        return metrics

    def _wait_ahead(self) -> None:
        """Let in-flight batches finish (they are kept: their samples are drawn and will be trained on)."""
        for _, future in self._ahead:
            future.result()

    # ------------------------------------------------------------------------------------------ scaling
    def scale(self, rollout: int | None = None, reward: int | None = None,
              wait_s: float | None = None) -> dict[str, Any]:
        """Called from `segr1 scale` while run() is in progress; applied at the next step boundary.

        With `wait_s`, returns once applied: the pool sizes and the step the resized pools first serve.
        """
        sizes = {k: v for k, v in (("rollout", rollout), ("reward", reward)) if v is not None}
        return self.requests.scale(sizes, wait_s)

    def stop(self) -> dict[str, int]:
        """Called from `segr1 stop`: the next step to start is the last (evaluated and checkpointed as such)."""
        self.requests.stop()
        return {"step": self.step}

    def _apply_requests(self) -> None:
        if self.requests.stop_requested():
            self.last_step = min(self.last_step, self.step + 1)
        sizes, waiters = self.requests.take_scale()
        if not waiters:
            return
        try:
            self._wait_ahead()  # never resize under an in-flight batch
            self.pools.resize(rollout=sizes.get("rollout"), reward=sizes.get("reward"))
        except Exception as e:
            self.requests.answer(waiters, error=f"resize {sizes} failed: {type(e).__name__}: {e}")
            raise
        self.requests.answer(waiters, result={"rollout": self.pools.rollout.size, "reward": self.pools.reward.size,
                                              "before_step": self.step + 1})

    def _faults(self) -> None:
        """Fault drills due before this step (segr1.faults): kills now, in-call faults armed for the next call.
        Each fires once per job process, so the steps a learner restart replays run clean."""
        faults = self.cfg.faults
        for key, which in (("kill_reward_actor_at_step", "reward"), ("kill_rollout_worker_at_step", "rollout")):
            if getattr(faults, key) == self.step and key not in self._fired:
                self._fired.add(key)
                self.pools.kill_one(which)
        for stage, action in due(faults, self.step):
            if (stage, action) not in self._fired:
                self._fired.add((stage, action))
                self.pools.arm_fault(stage, action)

    def _restart_learner(self, error: StageError) -> None:
        """The learner died or hung: a fresh group from the newest checkpoint (or from the start when there is
        none yet), after a backoff; the rollout workers get the restored weights. At most learner.max_restarts
        times per run, then the error ends the run."""
        learner = self.cfg.learner
        for _, future in self._ahead:  # batches drawn after the checkpoint: redrawn from its cursor, in order
            future.exception()  # wait for it; discarded whether it finished or failed
        self._ahead.clear()
        while True:
            if self.learner_restarts >= learner.max_restarts:
                raise StageError(error.stage, error.actor, f"{error.detail}; not restarted again after "
                                 f"learner.max_restarts={learner.max_restarts}", error.step) from error
            self.learner_restarts += 1
            wait_s = learner.restart_backoff_s * 2 ** (self.learner_restarts - 1)
            print(f"segr1: {error}; restarting the learner ({self.learner_restarts} of {learner.max_restarts}) "
                  f"from the newest checkpoint in {wait_s:g} s", flush=True)
            time.sleep(wait_s)
            try:
                self.pools.restart_learner()
                state = load_latest(self.cfg, self.pools.learner)
                break
            except StageError as again:  # the new group failed too (while loading): another restart
                error = again.at_step(error.step)
        if state is not None:
            self._restore(state)
            self._broadcast()
            return
        self.step, self.version = 0, 0  # no checkpoint yet: the run starts over (its start eval is kept)
        self.sampler = EpochSampler(len(self.data), seed=self.cfg.run.seed)
        self.log.rewind(0)
        self.history = self.history[:1]
        self._broadcast()
        if self.cfg.algorithm.warm_start.steps > 0:
            self._warm_start(log=False)

    # ------------------------------------------------------------------------------------------ state
    def progress(self) -> dict[str, Any]:
        """Latest metrics for the live terminal view and `segr1 status`."""
        return {"step": self.step, "steps": self.last_step, **self.latest}

    def _log(self, metrics: dict[str, Any]) -> None:
        self.latest = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
        self.log.log_step(metrics)

    def _checkpoint(self) -> None:
        save(self.cfg, self.pools.learner, self.step, {
            "step": self.step, "version": self.version, "sampler": self._resume_cursor(),
            "history": self.history})

    def _resume_cursor(self) -> dict[str, Any]:
        """The data cursor a resumed run starts from: before the in-flight batch, whose rollouts are not saved."""
        return self._ahead[0][0] if self._ahead else self.sampler.state_dict()

    def _resume(self) -> None:
        state = load_latest(self.cfg, self.pools.learner)
        if state is not None:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        """The loop's state as checkpointed with the learner's (which load_latest restored already)."""
        self.step, self.version = int(state["step"]), int(state["version"])
        self.log.rewind(self.step)  # rows logged after the checkpoint are replayed, so drop them
        self.sampler.load_state_dict(state["sampler"])
        self.history = list(state.get("history", []))

    def _finish(self) -> None:
        if self.cfg.checkpoint.export_hf:
            self.pools.learner.export_hf(str(self.cfg.run_dir / "hf_model"))
        self.log.close()
        self.timeline.mark("finished")
        self.timeline.write(self.cfg.run_dir)
        self._executor.shutdown(wait=True)
