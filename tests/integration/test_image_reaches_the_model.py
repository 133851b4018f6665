"""The pixels reach the policy on both paths that matter: the HF engine's generation (what the policy samples)
and the learner's teacher-forced log-probs (what GRPO differentiates). Another image changes the numbers; the
same image twice gives the same numbers, so the difference is the image's and not noise."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from learner.batching import micro_batches, sft_records
from learner.logprobs import completion_logprobs
from rollout.hf_engine import HFEngine
from segr1.chat import FOREGROUND_INSTRUCTION, encode_prompt
from segr1.data.synth import synth_sample
from segr1.protocol import GenerationRequest, SamplingParams, SFTItem

FRAME = 112
COMPLETION = "<think>target</think> <bbox>[10,20,60,90]</bbox>, <points>[[35,50]]</points>, <labels>[1]</labels>"


def _images() -> dict[str, np.ndarray]:
    scene_a, _ = synth_sample(1, 0, FRAME)
    scene_b, _ = synth_sample(1, 1, FRAME)
    return {"a": scene_a, "a_again": scene_a.copy(), "b": scene_b, "blank": np.full_like(scene_a, 128)}


def test_the_engine_samples_from_a_distribution_that_depends_on_the_image(model_path):
    engine = HFEngine(model_path, dtype="float32")
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=4)
    first = {}
    for name, image in _images().items():
        (group,) = engine.generate([GenerationRequest(name, image, FOREGROUND_INSTRUCTION)], greedy)
        completion = group.completions[0]
        first[name] = (completion.token_ids[0], completion.logprobs[0])
    assert first["a"] == first["a_again"]  # deterministic: a difference below is the image's
    for other in ("b", "blank"):
        token, logprob = first[other]
        assert token != first["a"][0] or abs(logprob - first["a"][1]) > 1e-4, (other, first)


def test_the_learner_log_probs_depend_on_the_image(model_path):
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32).eval()
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    target = tokenizer(COMPLETION, add_special_tokens=False)["input_ids"] + [eos]
    items, vision = [], []
    for name, image in _images().items():
        prompt_ids, pixels = encode_prompt(processor, image, FOREGROUND_INSTRUCTION, FRAME)
        items.append(SFTItem(name, image, prompt_ids, target))
        vision.append(pixels)
    (batch,) = micro_batches(sft_records(items, vision), len(items), [eos], tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, batch, image_token_id=model.config.image_token_id,
                                      video_token_id=model.config.video_token_id)
    by_name = dict(zip([item.sample_id for item in items], logp))  # [C] each, same completion tokens
    assert torch.equal(by_name["a"], by_name["a_again"])
    for other in ("b", "blank"):
        assert float((by_name[other] - by_name["a"]).abs().max()) > 1e-4, other
    # control: with the pixel tensor blanked (as a bug dropping the image would) every row scores the same
    blind = dataclasses.replace(batch, pixel_values=torch.zeros_like(batch.pixel_values))
    with torch.no_grad():
        blind_logp, _ = completion_logprobs(model, blind, image_token_id=model.config.image_token_id,
                                            video_token_id=model.config.video_token_id)
    assert float((blind_logp - blind_logp[0]).abs().max()) < 1e-5
