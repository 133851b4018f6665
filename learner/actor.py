"""LearnerActor: one DeepSpeed training rank of the policy VLM (a plain class; Ray wraps it in learner.group).

Each rank holds a DeepSpeed engine (ZeRO stage from config; gloo on CPU, NCCL on GPU) and, when beta > 0,
a frozen reference model for the KL term. One `train_step` call trains on one rollout batch: by default (the
released recipe) exactly one optimizer step. The rank's completions are split into micro-batches, each
micro-batch loss is weighted by its share of the GLOBAL batch (sequences for seq-mean aggregation, tokens for
token-mean), and gradients accumulate until `step()` averages them over ranks. So the update equals the
full-batch GRPO objective whatever the micro-batch size or rank count.

PPO reuse: `algorithm.epochs` passes over the batch, each cut into `algorithm.mini_batches` mini-batches of
whole groups, one optimizer step each (weights then are shares of the mini-batch). The old log-probs are then
the learner's own, computed once before the first update. The lr schedule advances once per rollout batch, as
veRL does (TRL steps it per optimizer step): `learner.warmup_steps` and the decay horizon `run.steps` count
GRPO steps whatever the reuse. Engine/learner mismatch: `policy/engine_kl` compares the learner's pre-update
log-probs with the engine's every step; `algorithm.tis_cap` reweighs tokens by truncated importance sampling.

    actor = LearnerActor(cfg, model_path, rank=0, world_size=1, master_addr="127.0.0.1", master_port=29500)
    stats = actor.train_step(items)           # {"policy/loss": ..., "policy/kl": ..., ...}
    version, bucket_refs = actor.publish_weights()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from learner import checkpoint as ckpt
from learner import step_math
from learner.batching import MicroBatch, micro_batches, mini_batch_records, sft_records, train_records
from learner.deepspeed_config import build_ds_config, lr_lambda
from learner.logprobs import completion_logprobs
from learner.models import (
    full_state_dict,
    gathered,
    load_vlm,
    resolve_device,
    resolve_dtype,
    trainable_weights,
)
from segr1.chat import image_inputs, non_output_token_ids
from segr1.config import Config
from segr1.faults import FaultHook
from segr1.protocol import SFTItem, TrainItem, resolve_arrays
from segr1.rendezvous import pin_gloo_to, tcp_store
from segr1.threads import thread_count
from segr1.weight_sync import WeightSyncGroup, send_weights
from segr1.weights import iter_tensor_buckets


class LearnerActor:
    def __init__(self, cfg: Config, model_path: str, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 29500) -> None:
        import deepspeed
        from transformers import AutoProcessor

        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        if cfg.learner.torch_threads is not None:  # None: Ray's OMP_NUM_THREADS (the CPUs this rank reserved)
            torch.set_num_threads(thread_count(cfg.learner.torch_threads, cfg.learner.num_cpus))
        self.device = resolve_device()
        self.dtype = resolve_dtype(cfg.model.dtype, self.device)
        # DeepSpeed reads the rendezvous from the environment (torchrun style); Ray gives each rank one device
        os.environ.update(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world_size),
                          MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
        if self.device.type == "cpu":
            # DeepSpeed's shared-memory all-reduce serves inference only, yet it is compiled (minutes of C++)
            # at init when marked compatible; training on CPU uses gloo, so skip it
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if backend == "gloo":
            pin_gloo_to(master_addr)
        # our own rendezvous listens on master_addr only (DeepSpeed's env:// store would listen everywhere);
        # DeepSpeed then adopts the initialised default group
        if not torch.distributed.is_initialized():  # several in-process learners (tests) share one group
            store = tcp_store(master_addr, master_port, rank, world_size)
            torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world_size)
        deepspeed.init_distributed(dist_backend=backend)
        torch.manual_seed(cfg.run.seed)  # identical initial state on every rank

        self.processor = AutoProcessor.from_pretrained(model_path)
        model = load_vlm(model_path, cfg.model, self.dtype, self.device, trainable=True)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=build_ds_config(cfg.learner, world_size=world_size, bf16=self.dtype == torch.bfloat16),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lr_lambda(cfg.learner.lr_schedule, cfg.learner.warmup_steps, cfg.run.steps)),
        )
        self.reference: torch.nn.Module | None = None
        self.reference_from_policy = False  # True after reset_reference(): the checkpoint must carry it
        if cfg.algorithm.beta != 0:
            ref_device = torch.device("cpu") if cfg.learner.ref_offload else self.device
            self.reference = load_vlm(model_path, cfg.model, self.dtype, ref_device, trainable=False)
        config = self.engine.module.config
        self.image_token_id: int = config.image_token_id
        self.video_token_id: int | None = getattr(config, "video_token_id", None)
        eos = self.engine.module.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids: list[int] = sorted({*eos, self.processor.tokenizer.eos_token_id} - {None})
        self.pad_id: int = self.processor.tokenizer.pad_token_id
        # the same never-sampled special tokens the rollout engines mask, so both score one distribution
        self.masked_ids = sorted(set(non_output_token_ids(self.processor.tokenizer)) - set(self.eos_ids))
        self.step = 0  # GRPO steps (rollout batches) trained
        self.version = 0  # weights version: 0 = the checkpoint the rollout workers loaded from disk
        self._loaded = False  # True from load_checkpoint to the next publish: the weights are `version`'s
        self._sync_group: WeightSyncGroup | None = None
        self._faults = FaultHook()  # fault drills (segr1.faults): armed by the controller, fired mid-call

    # ------------------------------------------------------------------------------------------ training
    def train_step(self, items: list[TrainItem]) -> dict[str, float]:
        """GRPO on this rank's share of one rollout batch: `algorithm.epochs` passes of `algorithm.mini_batches`
        optimizer steps (1 x 1 by default); stats are global (all-reduced) and cover the whole batch."""
        algo = self.cfg.algorithm
        self._faults.fire("learner_step")  # a drill: die or hang at the start of the update
        records = train_records(items, self._vision(items))
        parts = step_math.mini_batch_count(len(items), algo.mini_batches, self.world_size, self.device)
        minis = [self._micro_batches(part) for part in mini_batch_records(records, parts)]
        plans = [step_math.LossWeights.build(batches, algo.agg, self.world_size, self.device) for batches in minis]
        flat = [mb for batches in minis for mb in batches]
        refs = self._reference_logprobs(flat) if self.reference is not None else [None] * len(flat)
        refs = self._regroup(refs, minis)
        # Reusing the batch needs the pre-update policy's log-probs before the first update. One update per batch
        # does not: there the pre-update policy IS the current one, and its log-probs are the first (only)
        # forward's, detached. The learner's old log-probs replace the engine's when asked, when the batch is
        # reused, and with TIS (whose weights already correct engine -> learner; the ratio must not do it twice).
        reuse = algo.epochs > 1 or algo.mini_batches > 1
        learner_old = reuse or self.cfg.learner.recompute_old_logp or algo.tis_cap is not None
        olds = self._old_logprobs(minis) if reuse else None
        sums = step_math.StatSums(self.device)
        self.engine.train()
        lr = self.current_lr()
        grad_norms = []
        for epoch in range(algo.epochs):
            for m, batches in enumerate(minis):
                for index, (mb, real) in enumerate(self._lockstep(batches)):
                    i = min(index, len(batches) - 1)  # lock-step padding repeats the last micro-batch
                    mb = mb.to(self.device, self.dtype)
                    logp, entropy = self._logprobs(self.engine, mb, with_entropy=True)
                    pre_update = olds[m][i] if olds is not None else logp.detach()  # [B, C]
                    engine_kl, tis_sum, tis = step_math.mismatch_sums(pre_update, mb, algo.tis_cap)
                    old = pre_update if learner_old else mb.rollout_logprobs
                    loss, kl_sum, clipped = step_math.grpo_loss(logp, old, refs[m][i], mb, algo,
                                                                self.cfg.rollout.max_new_tokens, is_weights=tis)
                    weight = plans[m].weight(mb) if real else 0.0
                    self.engine.backward(loss * weight, scale_wrt_gas=False)
                    if real:
                        sums.add(mb, loss.detach() * weight, kl_sum, clipped, entropy, first_pass=epoch == 0,
                                 engine_kl_sum=engine_kl, tis_weight_sum=tis_sum)
                last = epoch == algo.epochs - 1 and m == len(minis) - 1
                grad_norms.append(self._step(advance_schedule=last))
        self.step += 1
        stats = sums.reduce(self.world_size, optimizer_steps=len(grad_norms))
        if algo.tis_cap is None:
            del stats["policy/tis_weight_mean"]
        return {**stats, "policy/grad_norm": sum(grad_norms) / len(grad_norms), "policy/lr": lr,
                "policy/optimizer_steps": float(len(grad_norms))}

    def sft_step(self, items: list[SFTItem]) -> dict[str, float]:
        """Warm start: one optimizer step of token-mean cross-entropy on the targets, at warm_start.lr.

        The lr schedule is not advanced: it belongs to the GRPO stage."""
        batches = self._micro_batches(sft_records(items, self._vision(items)))
        plan = step_math.LossWeights.build(batches, "token-mean", self.world_size, self.device)
        sums = step_math.StatSums(self.device)
        self.engine.train()
        for mb, real in self._lockstep(batches):
            mb = mb.to(self.device, self.dtype)
            logp, _ = self._logprobs(self.engine, mb, temperature=1.0)  # SFT: the model's own distribution
            loss = -(logp * mb.loss_mask).sum() / mb.loss_mask.sum().clamp(min=1)  # token mean of this batch
            weight = plan.weight(mb) if real else 0.0
            self.engine.backward(loss * weight, scale_wrt_gas=False)
            if real:
                sums.add(mb, loss.detach() * weight)
        optimizer = self.engine.optimizer
        saved_lrs = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = self.cfg.algorithm.warm_start.lr
        try:
            grad_norm = self._step(advance_schedule=False)  # keep the GRPO schedule where it is
        finally:
            for group, lr in zip(optimizer.param_groups, saved_lrs):
                group["lr"] = lr
        stats = sums.reduce(self.world_size)
        return {"sft/loss": stats["policy/loss"], "sft/tokens": stats["policy/tokens"],
                "sft/grad_norm": grad_norm, "sft/lr": self.cfg.algorithm.warm_start.lr}

    def logprobs(self, items: list[TrainItem]) -> list[list[list[float]]]:
        """Teacher-forced log-probs of every completion token (no EOS truncation), per item and completion."""
        records = train_records(items, self._vision(items))
        out: list[list[list[float]]] = [[[] for _ in item.completion_ids] for item in items]
        self.engine.eval()
        with torch.no_grad():
            for mb, real in self._lockstep(self._micro_batches(records)):
                logp, _ = self._logprobs(self.engine, mb.to(self.device, self.dtype))
                for row, (i, j) in enumerate(mb.sources if real else []):
                    out[i][j] = logp[row, : int(mb.completion_lengths[row])].cpu().tolist()
        return out

    def reset_optimizer(self) -> None:
        """Forget Adam's moment estimates (a new stage starts here): the warm start's cross-entropy gradients
        are no guide to the scale or direction of the policy gradient that follows."""
        optimizer = self.engine.optimizer
        inner = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps the torch optimizer
        inner.state.clear()  # torch optimizers rebuild their state lazily at the next step

    def reset_reference(self) -> None:
        """Make the current policy the reference (a new stage starts here, e.g. after the warm start)."""
        if self.reference is None:
            return
        module = self.engine.module
        with gathered(list(module.parameters())):
            self.reference.load_state_dict(module.state_dict())
        self.reference_from_policy = True

    def arm_fault(self, stage: str, action: str) -> None:
        """Fault drill: `action` (die | hang) inside this rank's next `stage` call (learner_step)."""
        self._faults.arm(stage, action)

    # ------------------------------------------------------------------------------------------ weights
    def weights_version(self) -> int:
        return self.version

    def publish_weights(self) -> tuple[int, list[Any]]:
        """Bump the version; rank 0 puts the trainable weights into the object store as buckets (one put each).

        Each put copies the weights straight from the parameters into shared memory (segr1.weights: no packing
        copy first), so the parameters may change again as soon as this returns.

        Every rank must call it (ZeRO-3 gathers collectively); ranks > 0 return no refs."""
        import ray

        self._next_version()
        named = trainable_weights(self.engine.module)
        refs: list[Any] = []
        with gathered([p for _, p in named]):
            if self.rank == 0:
                bucket_bytes = self.cfg.learner.sync.bucket_mb << 20
                refs = [ray.put(bucket) for bucket in iter_tensor_buckets(named, bucket_bytes, self.version)]
        return self.version, refs

    def join_weight_sync(self, host: str, port: int, world_size: int, backend: str) -> None:
        """Rank 0 joins the collective weight-sync group as its sender (group rank 0)."""
        if self.rank == 0:
            self._sync_group = WeightSyncGroup(host, port, 0, world_size, backend)

    def broadcast_weights(self) -> int:
        """Bump the version and broadcast over the sync group (rollout workers call receive_weights meanwhile)."""
        self._next_version()
        named = trainable_weights(self.engine.module)
        with gathered([p for _, p in named]):
            if self.rank == 0:
                if self._sync_group is None:
                    raise RuntimeError("broadcast_weights: call join_weight_sync first")
                send_weights(self._sync_group, named, self.cfg.learner.sync.bucket_mb << 20, self.version)
        return self.version

    def _next_version(self) -> None:
        """New weights get a new version; the first publish after load_checkpoint sends the weights that the
        checkpoint's version already names, so a resumed run counts versions as the uninterrupted one did."""
        if not self._loaded:
            self.version += 1
        self._loaded = False

    # ------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str, extra_state: dict[str, Any]) -> None:
        """Checkpoint directory `directory`, a local path or a URI (layout and commit in learner/checkpoint.py);
        every rank must call it."""
        ckpt.save_learner(self, directory, extra_state)

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        """Exact resume from a local path or a URI: weights, optimizer, lr schedule, RNG, step and version;
        returns extra_state."""
        extra = ckpt.load_learner(self, directory)
        self._loaded = True
        return extra

    def export_hf(self, directory: str) -> None:
        ckpt.export_hf(self, Path(directory))

    # ------------------------------------------------------------------------------------------ helpers
    def current_lr(self) -> float:
        return float(self.engine.optimizer.param_groups[0]["lr"])

    def _logprobs(self, model: Any, mb: MicroBatch, with_entropy: bool = False,
                  temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs [B, C] under the distribution the rollout engine sampled from (its temperature, its mask)."""
        if temperature is None:
            rollout_t = self.cfg.rollout.temperature
            temperature = rollout_t if rollout_t > 0 else 1.0  # greedy rollouts: score the model's own softmax
        return completion_logprobs(model, mb, image_token_id=self.image_token_id,
                                   video_token_id=self.video_token_id, temperature=temperature,
                                   with_entropy=with_entropy, masked_ids=self.masked_ids,
                                   encode_images_once=self.cfg.learner.encode_images_once)

    def _vision(self, items: list[Any]) -> list[dict[str, torch.Tensor]]:
        images = resolve_arrays([item.image for item in items])  # ArrayRefs: one object-store fetch for all
        return [image_inputs(self.processor, [image]) for image in images]

    def _micro_batches(self, records: list[Any]) -> list[MicroBatch]:
        return micro_batches(records, self.cfg.learner.micro_batch_size, self.eos_ids, self.pad_id)

    def _lockstep(self, batches: list[MicroBatch]) -> list[tuple[MicroBatch, bool]]:
        return step_math.lockstep(batches, self.world_size, self.device, self.cfg.learner.zero_stage == 3)

    def _old_logprobs(self, minis: list[list[MicroBatch]]) -> list[list[torch.Tensor]]:
        """The pre-update policy's log-probs [B, C] of every micro-batch of every mini-batch, before any update
        (in training mode, as the update's forwards; lock-step passes for ZeRO-3, padding results dropped)."""
        self.engine.train()
        out: list[list[torch.Tensor]] = []
        with torch.no_grad():
            for batches in minis:
                passes = [self._logprobs(self.engine, mb.to(self.device, self.dtype))[0]
                          for mb, _ in self._lockstep(batches)]
                out.append(passes[:len(batches)])  # padding passes run only for ZeRO-3's collective gathers
        return out

    @staticmethod
    def _regroup(values: list[Any], minis: list[list[MicroBatch]]) -> list[list[Any]]:
        """A flat per-micro-batch list cut back into the mini-batches' shape."""
        out, start = [], 0
        for batches in minis:
            out.append(values[start:start + len(batches)])
            start += len(batches)
        return out

    def _reference_logprobs(self, batches: list[MicroBatch]) -> list[torch.Tensor]:
        """Reference log-probs [B, C] per micro-batch, all computed before training; an offloaded reference
        visits the device once for the whole step."""
        assert self.reference is not None
        if self.cfg.learner.ref_offload:
            self.reference.to(self.device)
        try:
            with torch.no_grad():
                return [self._logprobs(self.reference, mb.to(self.device, self.dtype))[0] for mb in batches]
        finally:
            if self.cfg.learner.ref_offload:
                self.reference.to("cpu")

    def _step(self, advance_schedule: bool = True) -> float:
        """Optimizer step (DeepSpeed averages gradients over ranks and clips); returns the pre-clip grad norm.

        advance_schedule=False leaves the lr schedule where it is (DeepSpeed steps its scheduler in every step)."""
        local_norm = float("nan")
        if self.cfg.learner.zero_stage == 0 and self.world_size == 1:
            # DeepSpeed keeps the norm only for its ZeRO/bf16 optimizers; with one rank the local grads are global
            grads = [p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None]
            local_norm = float(torch.stack(grads).norm()) if grads else 0.0
        self._loaded = False  # the weights change: the next publish names them with a new version
        scheduler = self.engine.lr_scheduler
        if not advance_schedule:
            self.engine.lr_scheduler = None
        try:
            self.engine.step()
        finally:
            self.engine.lr_scheduler = scheduler
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else local_norm  # NaN: ZeRO-0 on several ranks does not report it

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copy of the whole policy state dict (gathered under ZeRO-3); for tests and export."""
        module = self.engine.module
        with gathered(list(module.parameters())):
            return full_state_dict(module)
