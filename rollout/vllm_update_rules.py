"""What a weight update for the vLLM engine must contain, checked before anything reaches vLLM's workers.

vLLM loads HF-named tensors, but it neither rejects every bad update nor fails loudly on some, so the engine
checks each update against the checkpoint it started from:
- every name must be a checkpoint tensor and every shape must match (the HF engine's rule too);
- a vLLM layer must be updated whole: one that receives only some of its tensors (q_proj without k_proj and
  v_proj, which vLLM fuses into one qkv_proj; a weight without its bias) is rebuilt with garbage in the rest,
  and sampling returns NaN log-probs. Layers that receive nothing keep their weights;
- a model with tied embeddings must still receive `lm_head.weight`: without it vLLM keeps the OLD head and
  returns silently wrong log-probs, and `named_parameters()` of a tied HF model lists the shared matrix once,
  as the embedding. The head is added here from the embedding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LM_HEAD, EMBED = "lm_head.weight", "model.embed_tokens.weight"


def with_tied_lm_head(items: list[tuple[str, torch.Tensor]], tied: bool) -> list[tuple[str, torch.Tensor]]:
    """`items` plus lm_head.weight = the embedding, when the model is tied and the head is missing."""
    names = {name for name, _ in items}
    if not tied or LM_HEAD in names or EMBED not in names:
        return items
    return [*items, (LM_HEAD, dict(items)[EMBED])]


def loading_unit(name: str, fused: dict[str, list[str]]) -> str:
    """The vLLM layer a checkpoint tensor loads into: its module, or the fused layer holding that module
    (model.layers.0.self_attn.k_proj.bias -> model.layers.0.self_attn.qkv_proj)."""
    module = name.rpartition(".")[0]
    parent, _, leaf = module.rpartition(".")
    for fused_name, parts in fused.items():
        if leaf in parts:
            return f"{parent}.{fused_name}"
    return module


def checkpoint_shapes(model_path: str) -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes of the checkpoint in `model_path` (from the safetensors headers only)."""
    from safetensors import safe_open

    files = sorted(Path(model_path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_path}: no *.safetensors weights to check weight updates against")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


@dataclass(frozen=True)
class UpdateRules:
    """The checkpoint's tensor shapes, the vLLM layer each tensor loads into, and whether the head is tied."""

    shapes: dict[str, tuple[int, ...]]
    unit_of: dict[str, str]
    tied: bool

    @classmethod
    def for_checkpoint(cls, model_path: str, fused: dict[str, list[str]], tied: bool) -> UpdateRules:
        """`fused`: vLLM's fused layers and their checkpoint parts, e.g. {"qkv_proj": ["q_proj", ...]}."""
        shapes = checkpoint_shapes(model_path)
        if tied:
            shapes.setdefault(LM_HEAD, shapes[EMBED])
        return cls(shapes, {name: loading_unit(name, fused) for name in shapes}, tied)

    def prepare(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """The update as vLLM must receive it; raises ValueError naming every problem (module docstring)."""
        items = with_tied_lm_head(list(named_tensors), self.tied)
        given = {name for name, _ in items}
        unknown = sorted(given - self.shapes.keys())
        mismatched = [
            f"{name}: got {tuple(t.shape)}, model has {self.shapes[name]}"
            for name, t in items if name in self.shapes and tuple(t.shape) != self.shapes[name]
        ]
        touched = {self.unit_of[name] for name in given & self.unit_of.keys()}
        incomplete = sorted(n for n, unit in self.unit_of.items() if unit in touched and n not in given)
        if unknown or mismatched or incomplete:
            raise ValueError(
                f"{len(unknown)} unknown name(s) {unknown[:5]}, {len(mismatched)} shape mismatch(es) "
                f"{mismatched[:5]}, {len(incomplete)} tensor(s) missing from partly updated layers "
                f"{incomplete[:5]} (vLLM reloads a layer only whole)"
            )
        return items
