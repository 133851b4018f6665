"""Weight names in both directions between a model's `state_dict()` and its checkpoint files.

transformers 5 names a model's tensors after its module tree (Qwen2.5-VL: `model.language_model.layers.0...`,
`model.visual.blocks.0...`), but reads and writes checkpoints in the published layout (`model.layers.0...`,
`visual.blocks.0...`), renaming on the way in and back on the way out (transformers.conversion_mapping). The
learner ships weights under the first kind of name; a consumer that works from the checkpoint's names, such
as the vLLM engine's update check, needs the second. This module is the one place that translates, using
transformers' own renaming rules for the architecture (not a table of ours):

    names = WeightNames.for_checkpoint(model_path)      # reads config.json and the safetensors headers
    names.checkpoint_name("model.language_model.norm.weight")   # -> "model.norm.weight"
    names.model_name("visual.merger.ln_q.weight")               # -> "model.visual.merger.ln_q.weight"

The checkpoint -> model direction is exactly what `from_pretrained` does to each key of the checkpoint; the
model -> checkpoint direction is its inverse over the checkpoint's actual keys, so both hold for a checkpoint
in either layout (one written in the transformers-5 layout maps onto itself). Names that are not in the table
pass through unchanged, so whoever checks them still sees and rejects an unknown name.

transformers is imported only when a table is built; nothing else heavy is imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def checkpoint_shapes(model_path: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the checkpoint in `model_path`, from the safetensors headers only."""
    from safetensors import safe_open

    files = sorted(Path(model_path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_path}: no *.safetensors weights found")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def meta_model(config: Any) -> Any | None:
    """The architecture's transformers model on the meta device (no memory), or None when transformers has no
    class of that name (then it defines no renaming either)."""
    import torch
    import transformers

    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    if model_class is None:
        return None
    with torch.device("meta"):
        return model_class._from_config(config)


def load_renamer(model: Any):
    """`rename(checkpoint_key) -> model_key`: the renaming `from_pretrained` applies to checkpoint keys."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, rename_source_key

    transforms = get_model_conversion_mapping(model)
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    if converters:  # they fuse or split tensors: one checkpoint tensor is then not one model tensor
        raise NotImplementedError(
            f"{type(model).__name__}: transformers converts (not just renames) its checkpoint tensors "
            f"({converters[0]!r}); weight names cannot be mapped one to one")
    meta_state = model.state_dict()

    def rename(key: str) -> str:
        return rename_source_key(key, transforms, [], model.base_model_prefix, meta_state)[0]

    return rename


@dataclass(frozen=True)
class WeightNames:
    """Model name <-> checkpoint name for every tensor of one checkpoint, and its tied tensors.

    tied: {tied checkpoint name: checkpoint name of the tensor it shares}, e.g. {"lm_head.weight":
    "model.embed_tokens.weight"} for a model with tied embeddings; empty otherwise.
    """

    to_checkpoint: Mapping[str, str]
    to_model: Mapping[str, str]
    tied: Mapping[str, str]

    @classmethod
    def for_checkpoint(cls, model_path: str) -> WeightNames:
        from transformers import AutoConfig

        return cls.build(checkpoint_shapes(model_path), AutoConfig.from_pretrained(model_path))

    @classmethod
    def build(cls, checkpoint_keys: Iterable[str], config: Any) -> WeightNames:
        keys = list(checkpoint_keys)
        model = meta_model(config)
        rename = load_renamer(model) if model is not None else (lambda key: key)
        to_model = {key: rename(key) for key in keys}
        to_checkpoint = {name: key for key, name in to_model.items()}
        if len(to_checkpoint) != len(to_model):
            raise ValueError(f"{type(model).__name__}: two checkpoint tensors map onto one model name")
        tied_model = dict(getattr(model, "all_tied_weights_keys", None) or {})  # {target: source}, when tied
        tied = {to_checkpoint.get(target, target): to_checkpoint.get(source, source)
                for target, source in tied_model.items()}
        return cls(to_checkpoint, to_model, tied)

    def checkpoint_name(self, name: str) -> str:
        """The checkpoint's name for model tensor `name`; a checkpoint name or an unknown name is kept."""
        return self.to_checkpoint.get(name, name)

    def model_name(self, name: str) -> str:
        """The model's name for checkpoint tensor `name`; an unknown name is kept."""
        return self.to_model.get(name, name)

