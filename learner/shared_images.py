"""Encode each distinct image of a micro-batch once: the G completions of a group share their prompt's image.

The learner's rows are completions, G per image, so a plain forward runs the vision tower G times on the same
pixels (36% of a forward + backward of the tiny VLM at G=8; bench/RESULTS.md). Here the tower runs on the
distinct images only (`get_image_features`, transformers' public hook) and each row gets its image's features
through `mm_encoder_outputs`. The rows' features are the same tensor, so autograd sums their G gradients into
one tower backward: the same loss and gradient up to float summation order.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch


def distinct_images(pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> tuple[list[int], list[int]]:
    """(the first row of each distinct image, each row's index among them), comparing the rows' pixels exactly.

    pixel_values: [sum of patches, D], the rows' patches one image after another; grid_thw: [B, 3]."""
    sizes = grid_thw.prod(-1).tolist()
    chunks = torch.split(pixel_values, sizes)
    firsts: list[int] = []
    index: list[int] = []
    by_key: dict[tuple[int, float], list[int]] = {}  # cheap key first, exact comparison within it
    for row, chunk in enumerate(chunks):
        key = (sizes[row], float(chunk.sum()))
        match = next((k for k in by_key.get(key, []) if torch.equal(chunks[firsts[k]], chunk)), None)
        if match is None:
            match = len(firsts)
            firsts.append(row)
            by_key.setdefault(key, []).append(match)
        index.append(match)
    return firsts, index


@lru_cache(maxsize=8)
def _takes_encoder_outputs(model_class: type) -> bool:
    return "mm_encoder_outputs" in inspect.signature(model_class.forward).parameters


def shared_image_inputs(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """`inputs` (a micro-batch's forward kwargs) with the image features computed once per distinct image in
    place of the per-row pixels; unchanged when every image is distinct or the model has no such hook."""
    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    if not hasattr(module, "get_image_features") or not _takes_encoder_outputs(type(module)):
        return inputs
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    firsts, index = distinct_images(pixels, grid)
    if len(firsts) == len(index):
        return inputs
    chunks = torch.split(pixels, grid.prod(-1).tolist())
    features = module.get_image_features(torch.cat([chunks[f] for f in firsts]), grid[firsts], return_dict=True)
    features.pooler_output = tuple(features.pooler_output[k] for k in index)  # one entry per row, shared tensors
    out = {k: v for k, v in inputs.items() if k != "pixel_values"}
    out["mm_encoder_outputs"] = {"image": features}
    return out
