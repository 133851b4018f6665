"""Rollout engine on plain transformers `generate`: any Qwen2.5-VL-style image-text-to-text model, CPU or GPU.

Prompts with their images are batched with left padding, each repeated `n` times so the G completions of a group
are sampled side by side. The log-probability of every sampled token is recorded under the distribution it was
actually drawn from (after the token mask, temperature and top-p), as the learner's old log-probs need.

    engine = HFEngine(model_path, device="cpu", dtype="float32")
    groups = engine.generate(requests, SamplingParams(n=4, temperature=1.0, max_new_tokens=64, seed=0))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from segr1.chat import encode_prompt, mm_token_type_ids, non_output_token_ids, prompt_text
from segr1.protocol import Completion, GenerationRequest, RolloutGroup, SamplingParams

if TYPE_CHECKING:
    from segr1.config import Config

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """'auto' = bf16 on GPU, fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"dtype: expected auto or one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


class SampledTokenLogprobs(LogitsProcessor):
    """Last logits processor in the chain: remembers the final (processed) distribution of each step.

    At step t the previous step's sampled token is input_ids[:, -1], so its log-prob is gathered then and only
    [B] floats per step are kept, instead of [B, vocab] scores for every step.
    """

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None  # [B, V] log-probs of the last step
        self._gathered: list[torch.Tensor] = []  # each [B]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._gathered.append(self._pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """Log-probs [B, L] of all sampled tokens, given the tokens sampled at the final step ([B])."""
        if self._pending is not None:
            self._gathered.append(self._pending.gather(1, last_tokens[:, None]).squeeze(1))
        out = torch.stack(self._gathered, dim=1) if self._gathered else torch.zeros(len(last_tokens), 0)
        self._pending, self._gathered = None, []
        return out


def trim_at_stop(tokens: list[int], logprobs: list[float], stop_ids: set[int]) -> tuple[list[int], list[float], str]:
    """Cut a generated row after its first stop token (kept); padding after it is dropped."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: i + 1], logprobs[: i + 1], "stop"
    return tokens, logprobs, "length"


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, T] and attention_mask [B, T], padded on the left so every row ends at the last column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


class HFEngine:
    """Generation with transformers; weights updated in place from HF-named tensors."""

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        dtype: str = "auto",
        system_prompt: str | None = None,
        max_batch_prompts: int = 32,
        attn_implementation: str = "sdpa",
    ) -> None:
        self.device = device
        self.system_prompt = system_prompt or None
        self.max_batch_prompts = max_batch_prompts
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)  # text-only: a bare tokenizer
        # A text-only checkpoint (the text twin bench/rollout.py also runs on vLLM) loads as a causal LM. Its
        # prompt is the same chat text with the image placeholder kept as ordinary tokens; the image only sets
        # the frame size.
        self.multimodal = hasattr(AutoConfig.from_pretrained(model_path), "vision_config")
        model_class = AutoModelForImageTextToText if self.multimodal else AutoModelForCausalLM
        self.model = model_class.from_pretrained(
            model_path, dtype=resolve_dtype(dtype, device), attn_implementation=attn_implementation
        ).to(device).eval()
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.stop_ids = sorted((set(eos) | {self.tokenizer.eos_token_id}) - {None})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.masked_ids = sorted(set(non_output_token_ids(self.tokenizer)) - set(self.stop_ids))
        # Sampling is defined only by SamplingParams: drop the checkpoint's own defaults (e.g. repetition penalty).
        self.model.generation_config = GenerationConfig(eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        self.image_token_id = getattr(self.model.config, "image_token_id", None)
        self._version = 0
        self._borrowed: set[str] = set()  # weights served from immutable object-store buffers (never written)
        # every state_dict name -> its Parameter or buffer (tied weights: one Parameter under both names)
        self._weights = {**dict(self.model.named_parameters(remove_duplicate=False)),
                         **dict(self.model.named_buffers(remove_duplicate=False))}

    @classmethod
    def from_config(cls, cfg: Config, model_path: str) -> HFEngine:
        device = "cuda" if cfg.rollout.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        return cls(
            model_path, device=device, dtype=cfg.model.dtype, system_prompt=cfg.rollout.system_prompt or None,
            max_batch_prompts=cfg.rollout.max_batch_prompts, attn_implementation=cfg.model.attn_implementation,
        )

    @property
    def weights_version(self) -> int:
        return self._version

    # ------------------------------------------------------------------------------------------- generation
    def encode(self, request: GenerationRequest) -> tuple[list[int], dict[str, torch.Tensor]]:
        """Prompt ids and vision tensors of one request (frame size = the image's side)."""
        height, width = request.image.shape[:2]
        if height != width:
            raise ValueError(f"request {request.request_id}: image must be a square frame, got {height}x{width}")
        if not self.multimodal:
            text = prompt_text(self.processor, request.instruction, width, self.system_prompt)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"], {}
        return encode_prompt(self.processor, request.image, request.instruction, width, self.system_prompt)

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        if sampling.n < 1 or sampling.max_new_tokens < 1:
            raise ValueError(f"sampling: n and max_new_tokens must be >= 1, got {sampling}")
        encoded = [self.encode(r) for r in requests]
        groups: list[RolloutGroup] = []
        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices, enabled=sampling.seed is not None):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            for start in range(0, len(requests), self.max_batch_prompts):
                stop = start + self.max_batch_prompts
                groups += self._generate_batch(requests[start:stop], encoded[start:stop], sampling)
        return groups

    def _logits_processors(self, sampling: SamplingParams) -> tuple[LogitsProcessorList, SampledTokenLogprobs]:
        recorder = SampledTokenLogprobs()
        chain: list[LogitsProcessor] = []
        if sampling.temperature > 0 and sampling.temperature != 1.0:
            chain.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.temperature > 0 and sampling.top_p < 1.0:
            chain.append(TopPLogitsWarper(sampling.top_p))
        return LogitsProcessorList([*chain, recorder]), recorder

    def _generate_batch(
        self, requests: list[GenerationRequest], encoded: list[tuple[list[int], dict]], sampling: SamplingParams
    ) -> list[RolloutGroup]:
        n = sampling.n
        rows = [prompt_ids for prompt_ids, _ in encoded for _ in range(n)]  # request-major: r0s0, r0s1, ...
        input_ids, attention_mask = left_pad(rows, self.pad_id)  # [B*n, T]
        vision = {}
        if self.multimodal:
            pixel_values = torch.cat([v["pixel_values"] for _, v in encoded for _ in range(n)])  # [sum P, D]
            grid_thw = torch.cat([v["image_grid_thw"] for _, v in encoded for _ in range(n)])  # [B*n, 3]
            vision = {
                "mm_token_type_ids": mm_token_type_ids(input_ids, self.image_token_id).to(self.device),
                "pixel_values": pixel_values.to(self.device, self.model.dtype),
                "image_grid_thw": grid_thw.to(self.device),
            }
        config = GenerationConfig(
            do_sample=sampling.temperature > 0, max_new_tokens=sampling.max_new_tokens, temperature=1.0,
            top_p=1.0, top_k=0, eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
            suppress_tokens=self.masked_ids or None,  # applied before the chain below (temperature, top-p)
        )
        processors, recorder = self._logits_processors(sampling)
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            **vision,
            generation_config=config,
            logits_processor=processors,
        )
        new_tokens = out[:, input_ids.shape[1]:]  # [B*n, L]
        logprobs = recorder.finish(new_tokens[:, -1]).cpu().tolist()
        new_tokens = new_tokens.cpu().tolist()
        stop_ids = set(self.stop_ids)
        groups = []
        for i, (request, (prompt_ids, _)) in enumerate(zip(requests, encoded)):
            completions = []
            for row in range(i * n, (i + 1) * n):
                tokens, lps, reason = trim_at_stop(new_tokens[row], logprobs[row], stop_ids)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                completions.append(Completion(text=text, token_ids=tokens, logprobs=lps, finish_reason=reason))
            groups.append(RolloutGroup(
                request_id=request.request_id, prompt_ids=list(prompt_ids), completions=completions,
                weights_version=self._version,
            ))
        return groups

    # ------------------------------------------------------------------------------------------- weights
    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int, *,
                       immutable: bool = False) -> None:
        """Load HF-named tensors into the model in place (dtype/device converted); all checked before any load.

        With `immutable` (object-store buffers), a tensor already in the model's dtype and device becomes the
        parameter's storage instead of being copied: no copy per worker, and the workers of a node share one
        copy of the weights. The model only reads its weights, so the read-only shared memory is never written.
        """
        live = self._weights
        items = list(named_tensors)  # views into the received buffers: cheap to hold while checking
        unknown = [name for name, _ in items if name not in live]
        mismatched = [
            f"{name}: got {tuple(t.shape)}, model has {tuple(live[name].shape)}"
            for name, t in items if name in live and tuple(t.shape) != tuple(live[name].shape)
        ]
        if unknown or mismatched:
            raise ValueError(
                f"update_weights(version={version}): {len(unknown)} unknown name(s) {unknown[:5]}, "
                f"{len(mismatched)} shape mismatch(es) {mismatched[:5]}"
            )
        for name, tensor in items:
            target = live[name]
            if immutable and tensor.dtype == target.dtype and tensor.device == target.device:
                target.data = tensor  # the module keeps its Parameter object; only its storage changes
                self._borrowed.add(name)
            elif name in self._borrowed:  # never write into a borrowed buffer: it is shared and read-only
                target.data = tensor.to(dtype=target.dtype, device=target.device, copy=True)
                self._borrowed.discard(name)
            else:
                target.copy_(tensor)
        self._version = int(version)
