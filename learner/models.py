"""Loading the policy and reference VLMs for the learner, and naming the weights that get broadcast.

Names are always the HF model's own `state_dict()` names (e.g. `model.language_model.layers.0...`,
`lm_head.weight`), which is what rollout engines load. A tied `lm_head.weight` is listed explicitly even though
it shares storage with the embeddings: vLLM silently keeps a stale head otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from segr1.config import ModelConfig

VISION_PREFIXES = ("model.visual.", "visual.")  # Qwen2.5-VL vision tower + merger (transformers 5 / 4 names)


def resolve_device() -> torch.device:
    """The GPU Ray assigned to this process (it is always index 0 of CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`model.dtype`: auto = bf16 on GPU, fp32 on CPU (CPU bf16 matmuls are slow and lossy)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def is_vision_weight(name: str) -> bool:
    return name.startswith(VISION_PREFIXES)


def load_vlm(model_path: str, model_cfg: ModelConfig, dtype: torch.dtype, device: torch.device,
             *, trainable: bool) -> torch.nn.Module:
    """An HF image-text-to-text model from `model_path`; frozen and in eval mode unless `trainable`."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(
        model_path, dtype=dtype, attn_implementation=model_cfg.attn_implementation)
    model.to(device)
    if not trainable:
        model.eval().requires_grad_(False)
        return model
    if model_cfg.freeze_vision:
        for name, param in model.named_parameters():
            if is_vision_weight(name):
                param.requires_grad_(False)
    if model_cfg.gradient_checkpointing:
        # non-reentrant checkpointing works with frozen inputs (a frozen vision tower) and with ZeRO-3 hooks
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def trainable_weights(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(HF name, parameter) of every trainable weight, tied aliases included (same Parameter, both names)."""
    return [(name, value) for name, value in model.state_dict(keep_vars=True).items()
            if isinstance(value, torch.nn.Parameter) and value.requires_grad]


@contextlib.contextmanager
def gathered(params: list[torch.nn.Parameter], modifier_rank: int | None = None) -> Iterator[None]:
    """Full tensors inside the block: ZeRO-3 partitions are all-gathered (written back from `modifier_rank`
    on exit when given); a no-op for unpartitioned parameters (ZeRO 0-2)."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank):
        yield


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copy of the whole state dict; call inside `gathered(...)` under ZeRO-3."""
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
