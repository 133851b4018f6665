"""Shared test data for the learner tests: the tiny VLM, a config for it, and TrainItem groups with short prompts
(a one-line system prompt keeps sequences around 40 tokens, so a DeepSpeed step takes well under a second)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from segr1.config import Config, load_config
from segr1.protocol import SFTItem, TrainItem

TEST_SYSTEM_PROMPT = "Answer with boxes."
TEST_OVERRIDES = ["learner.lr=1e-3", "learner.micro_batch_size=3", "algorithm.beta=0.04", "rollout.max_new_tokens=16",
                  "run.steps=8"]


def learner_config(*overrides: str) -> Config:
    return load_config(None, [*TEST_OVERRIDES, *overrides])


def make_items(processor, num_groups: int, group_size: int = 4, seed: int = 0) -> list[TrainItem]:
    """Groups with random images, random completion tokens ending in EOS and group-normalised advantages."""
    from learner.grpo import group_advantages
    from segr1.chat import encode_prompt, non_output_token_ids

    rng = np.random.default_rng(seed)
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    forbidden = set(non_output_token_ids(processor.tokenizer)) | {eos, processor.tokenizer.pad_token_id}
    allowed = np.array([t for t in range(len(processor.tokenizer)) if t not in forbidden])
    rewards = torch.tensor(rng.uniform(0, 2, num_groups * group_size))
    advantages = group_advantages(rewards, group_size).tolist()
    items = []
    for g in range(num_groups):
        image = rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)
        prompt, _ = encode_prompt(processor, image, "Segment the object.", 56, system_prompt=TEST_SYSTEM_PROMPT)
        completions = [[int(t) for t in rng.choice(allowed, int(rng.integers(2, 8)))] + [eos]
                       for _ in range(group_size)]
        items.append(TrainItem(f"g{g}", image, prompt, completions, advantages[g * group_size:(g + 1) * group_size],
                               [[0.0] * len(c) for c in completions]))
    return items


def with_logprobs(items: list[TrainItem], logprobs: list[list[list[float]]]) -> list[TrainItem]:
    """The same groups, as if the rollout engine had sampled them with these log-probs."""
    return [dataclasses.replace(item, rollout_logprobs=lp) for item, lp in zip(items, logprobs)]


def make_sft_items(items: list[TrainItem]) -> list[SFTItem]:
    return [SFTItem(i.sample_id, i.image, i.prompt_ids, i.completion_ids[0]) for i in items]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())
