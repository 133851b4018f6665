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


def test_random_boxes_cover_the_frame_and_stay_valid():
    """Every box a target could have gets probability: small boxes off-centre in each quadrant, none spanning
    the frame, all parseable (x1 < x2, y1 < y2, inside the frame) with points inside their box."""
    from cluster.warm_start import random_prompt
    from reward_server.parse import render

    rng = np.random.default_rng(0)
    prompts = [random_prompt(FRAME, rng) for _ in range(2000)]
    for prompt in prompts:
        parsed = parse_completion(render(prompt), FRAME, FRAME)
        (x1, y1, x2, y2), = parsed.boxes
        assert FRAME // 10 <= x2 - x1 <= FRAME // 2 and FRAME // 10 <= y2 - y1 <= FRAME // 2
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in parsed.points)
    boxes = [p.boxes[0] for p in prompts]
    centre = FRAME / 2
    for right in (False, True):
        for below in (False, True):
            small_here = [b for b in boxes if (b[0] > centre) == right and (b[1] > centre) == below
                          and b[2] - b[0] <= FRAME // 4 and b[3] - b[1] <= FRAME // 4
                          and ((b[2] <= centre) or right) and ((b[3] <= centre) or below)]
            assert len(small_here) >= 20, f"too few small boxes wholly in quadrant right={right} below={below}"
