"""The rollout engine interface and the factory that picks an engine from the config.

An engine owns one copy of the policy and turns prompts into sampled completions:

    engine = build_engine(cfg, model_path)
    groups = engine.generate(requests, SamplingParams(n=4, max_new_tokens=400, seed=0))
    engine.update_weights(named_tensors, version=7)   # HF parameter names, in place

Engines: `hf` (rollout.hf_engine.HFEngine, any Qwen2.5-VL-style model, CPU or GPU) and `vllm`
(rollout.vllm_engine.VLLMEngine, imported only when asked for, since vLLM lives in its own environment).
Each engine class offers `from_config(cfg, model_path)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from segr1.protocol import GenerationRequest, RolloutGroup, SamplingParams

if TYPE_CHECKING:
    import torch

    from segr1.config import Config

TINY_MODEL = "tiny"  # model.path value that selects the offline tiny VLM


@runtime_checkable
class Engine(Protocol):
    """What a RolloutWorker needs from an engine."""

    @property
    def weights_version(self) -> int:
        """Version of the weights currently loaded (0 = as loaded from disk)."""
        ...

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[RolloutGroup]:
        """`sampling.n` completions per request, groups in request order."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int, *,
                       immutable: bool = False) -> None:
        """Load HF-named tensors in place (a subset is fine); unknown names or wrong shapes are errors.

        `immutable`: the tensors never change and stay valid while referenced (object-store buffers), so an
        engine may serve from them instead of copying."""
        ...


def resolve_model_path(cfg: Config, model_path: str | None = None) -> str:
    """The policy's HF directory: `model_path` if given, else cfg.model.path; "tiny" builds (once) the offline
    tiny VLM and names it by its absolute path. A bare name that is no directory is an error (a hub id such as
    "Qwen/Qwen2.5-VL-7B-Instruct" is passed on)."""
    path = model_path or cfg.model.path
    if path == TINY_MODEL:
        from rollout.tiny_model import ensure_tiny_vlm

        return str(Path(ensure_tiny_vlm(cfg.model.tiny_dir, seed=cfg.model.tiny_seed)).resolve())
    if not Path(path).exists() and "/" not in path.strip("./"):
        raise FileNotFoundError(f"model.path: no model directory at {path!r}")
    return path


def build_engine(cfg: Config, model_path: str) -> Engine:
    """The engine named by cfg.rollout.engine, loaded from `model_path` ("tiny" is resolved first)."""
    path = resolve_model_path(cfg, model_path)
    if cfg.rollout.engine == "hf":
        from rollout.hf_engine import HFEngine

        return HFEngine.from_config(cfg, path)
    if cfg.rollout.engine == "vllm":
        from rollout.vllm_engine import VLLMEngine  # lazy: vLLM is only installed in its own environment

        return VLLMEngine.from_config(cfg, path)
    raise ValueError(f"rollout.engine: unknown engine {cfg.rollout.engine!r} (expected 'hf' or 'vllm')")
