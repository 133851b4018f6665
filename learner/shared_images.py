"""Encode each distinct image of a micro-batch once: the G completions of a group share their prompt's image.

The learner's rows are completions, G per item and so per image, and a plain forward runs the vision tower G
times on the same pixels (36% of a forward + backward of the tiny VLM at G=8; bench/RESULTS.md). Here the tower runs on the
distinct images only (`get_image_features`, transformers' public hook) and each row gets its image's features
through `mm_encoder_outputs`. The rows' features are the same tensor, so autograd sums their G gradients into
one tower backward: the same loss and gradient up to float summation order.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch


def distinct_images(sources: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """(the first row of each distinct image, each row's index among them). A row's source is (item index,
    completion index) (learner.batching), and the rows of one item share its image, so no pixels are compared."""
    firsts: list[int] = []
    index: list[int] = []
    of_item: dict[int, int] = {}
    for row, (item, _) in enumerate(sources):
        if item not in of_item:
            of_item[item] = len(firsts)
            firsts.append(row)
        index.append(of_item[item])
    return firsts, index


@lru_cache(maxsize=8)
def _takes_encoder_outputs(model_class: type) -> bool:
    return "mm_encoder_outputs" in inspect.signature(model_class.forward).parameters


def shared_image_inputs(model: Any, inputs: dict[str, Any], sources: list[tuple[int, int]]) -> dict[str, Any]:
    """`inputs` (a micro-batch's forward kwargs; `sources` its rows') with the image features computed once per
    distinct image in place of the per-row pixels; unchanged when every image is distinct or the model has no
    such hook."""
    module = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    if not hasattr(module, "get_image_features") or not _takes_encoder_outputs(type(module)):
        return inputs
    firsts, index = distinct_images(sources)
    if len(firsts) == len(index):
        return inputs
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    chunks = torch.split(pixels, grid.prod(-1).tolist())
    features = module.get_image_features(torch.cat([chunks[f] for f in firsts]), grid[firsts], return_dict=True)
    features.pooler_output = tuple(features.pooler_output[k] for k in index)  # one entry per row, shared tensors
    out = {k: v for k, v in inputs.items() if k != "pixel_values"}
    out["mm_encoder_outputs"] = {"image": features}
    return out
