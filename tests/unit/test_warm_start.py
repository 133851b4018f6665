"""Warm-start targets: random ones ignore the image; ground-truth ones are the oracle prompt; prompts carry the
rollout's system prompt (the learner must score the prompt the engines see)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoProcessor

from cluster.warm_start import warm_start_items
from reward_server.baselines import oracle_prompt
from reward_server.parse import parse_completion
from rollout.tiny_model import ensure_tiny_vlm
from segr1.chat import FOREGROUND_INSTRUCTION, encode_prompt
from segr1.data.synth import synth_sample
from segr1.protocol import Sample

FRAME = 112


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return ensure_tiny_vlm(str(tmp_path_factory.mktemp("tiny") / "vlm"))


def _samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", *synth_sample(3, i, FRAME), FOREGROUND_INSTRUCTION) for i in range(n)]


def _completions(model_path, items) -> list:
    tokenizer = AutoProcessor.from_pretrained(model_path).tokenizer
    texts = [tokenizer.decode(item.target_ids, skip_special_tokens=True) for item in items]
    return [parse_completion(text, FRAME, FRAME) for text in texts]


def test_ground_truth_targets_are_the_oracle_box_and_point(model_path):
    samples = _samples(4)
    items = warm_start_items(samples, model_path, FRAME, np.random.default_rng(0), targets="ground_truth")
    for sample, prompt in zip(samples, _completions(model_path, items)):
        oracle = oracle_prompt(sample.mask)
        assert (prompt.boxes, prompt.points, prompt.labels) == (oracle.boxes, oracle.points, oracle.labels)
        assert prompt.think  # a thought, as in the random targets


def test_random_targets_do_not_depend_on_the_image(model_path):
    samples = _samples(4)
    blank = [Sample(s.sample_id, np.zeros_like(s.image), s.mask, s.instruction) for s in samples]
    with_images = warm_start_items(samples, model_path, FRAME, np.random.default_rng(0))
    without = warm_start_items(blank, model_path, FRAME, np.random.default_rng(0))
    assert [i.target_ids for i in with_images] == [i.target_ids for i in without]


def test_prompts_carry_the_configured_system_prompt(model_path):
    sample = _samples(1)[0]
    (item,) = warm_start_items([sample], model_path, FRAME, np.random.default_rng(0), system_prompt="{frame}")
    processor = AutoProcessor.from_pretrained(model_path)
    expected, _ = encode_prompt(processor, sample.image, sample.instruction, FRAME, "{frame}")
    default, _ = encode_prompt(processor, sample.image, sample.instruction, FRAME)
    assert list(item.prompt_ids) == list(expected) and list(expected) != list(default)
