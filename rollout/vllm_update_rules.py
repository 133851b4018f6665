"""What a weight update for the vLLM engine must contain, checked before anything reaches vLLM's workers.

Updates arrive under the learner's names (transformers 5 `state_dict()` names, e.g.
`model.language_model.layers.0...` for Qwen2.5-VL); they are renamed to the names of the checkpoint the engine
started from (segr1.weight_names: transformers' own renaming rules, so `model.layers.0...`, `visual.*` for a
checkpoint in the published layout, unchanged for one in the transformers-5 layout or a text model), which
vLLM's loader reads. Then:
- every name must be a checkpoint tensor and every shape must match (the HF engine's rule too);
- a vLLM layer must be updated whole: one that receives only some of its tensors (q_proj without k_proj and
  v_proj, which vLLM fuses into one qkv_proj; a weight without its bias) is rebuilt with garbage in the rest,
  and sampling returns NaN log-probs. Layers that receive nothing keep their weights;
- a model with tied embeddings must still receive `lm_head.weight`: without it vLLM keeps the OLD head and
  returns silently wrong log-probs, and `named_parameters()` of a tied HF model lists the shared matrix once,
  as the embedding. The head is added here from the embedding (the tie comes from transformers' model class).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segr1.weight_names import WeightNames, checkpoint_shapes

if TYPE_CHECKING:
    import torch


def with_tied(items: list[tuple[str, torch.Tensor]], tied: Mapping[str, str]) -> list[tuple[str, torch.Tensor]]:
    """`items` plus each tied tensor (e.g. lm_head.weight) as a copy of the name it shares, where missing.
    `tied`: {tied name: source name}, both in the names `items` uses."""
    given = dict(items)
    extra = [(target, given[source]) for target, source in tied.items() if target not in given and source in given]
    return [*items, *extra]


def loading_unit(name: str, fused: dict[str, list[str]]) -> str:
    """The vLLM layer a checkpoint tensor loads into: its module, or the fused layer holding that module
    (model.layers.0.self_attn.k_proj.bias -> model.layers.0.self_attn.qkv_proj)."""
    module = name.rpartition(".")[0]
    parent, _, leaf = module.rpartition(".")
    for fused_name, parts in fused.items():
        if leaf in parts:
            return f"{parent}.{fused_name}"
    return module


@dataclass(frozen=True)
class UpdateRules:
    """The checkpoint's tensor shapes, the vLLM layer each tensor loads into, and the learner -> checkpoint
    names (with the tied tensors)."""

    shapes: dict[str, tuple[int, ...]]
    unit_of: dict[str, str]
    names: WeightNames

    @classmethod
    def for_checkpoint(cls, model_path: str, fused: dict[str, list[str]]) -> UpdateRules:
        """`fused`: vLLM's fused layers and their checkpoint parts, e.g. {"qkv_proj": ["q_proj", ...]}."""
        from transformers import AutoConfig

        shapes = checkpoint_shapes(model_path)
        names = WeightNames.build(shapes, AutoConfig.from_pretrained(model_path))
        for target, source in names.tied.items():  # a tied head is often not saved, but vLLM must receive it
            shapes.setdefault(target, shapes[source])
        return cls(shapes, {name: loading_unit(name, fused) for name in shapes}, names)

    def prepare(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """The update as vLLM must receive it, under checkpoint names; raises ValueError naming every problem
        (module docstring). Unknown names are reported as given."""
        items = with_tied([(self.names.checkpoint_name(n), t) for n, t in named_tensors], self.names.tied)
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
