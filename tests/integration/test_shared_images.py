"""learner.encode_images_once: the vision tower runs once per distinct image of a micro-batch, and the log-probs
and the gradient are those of the plain forward that encodes every row's image (up to float summation order).
Rows are G completions of each of two items (one image each), built as the learner builds them."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from learner.batching import micro_batches, train_records
from learner.logprobs import completion_logprobs
from learner.shared_images import distinct_images, shared_image_inputs
from segr1.chat import FOREGROUND_INSTRUCTION, encode_prompt
from segr1.data.synth import synth_sample
from segr1.protocol import TrainItem

FRAME, G = 112, 3
COMPLETIONS = ["<think>a</think> <bbox>[10,20,60,90]</bbox>", "<think>b</think> <bbox>[5,5,40,40]</bbox>",
               "<think>c</think> <bbox>[50,60,100,110]</bbox>"]


def _batch(model_path):
    """One micro-batch of two GRPO items (one image each, G completions), built as the learner builds it."""
    processor = AutoProcessor.from_pretrained(model_path)
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    items, vision = [], []
    for scene in range(2):
        image, _ = synth_sample(1, scene, FRAME)
        prompt_ids, pixels = encode_prompt(processor, image, FOREGROUND_INSTRUCTION, FRAME)
        targets = [tokenizer(text, add_special_tokens=False)["input_ids"] + [eos] for text in COMPLETIONS[:G]]
        items.append(TrainItem(f"scene-{scene}", image, list(prompt_ids), targets, [1.0] * G,
                               [[0.0] * len(t) for t in targets]))
        vision.append(pixels)
    (batch,) = micro_batches(train_records(items, vision), 2 * G, [eos], tokenizer.pad_token_id)
    return batch


def _logprobs_and_grads(model, batch, once: bool):
    model.zero_grad()
    logp, _ = completion_logprobs(model, batch, image_token_id=model.config.image_token_id,
                                  video_token_id=model.config.video_token_id, encode_images_once=once)
    (logp * batch.loss_mask).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), grads


def test_rows_that_share_an_image_are_found_exactly(model_path):
    batch = _batch(model_path)
    firsts, index = distinct_images(batch.sources)
    assert firsts == [0, G] and index == [0] * G + [1] * G


def test_encoding_each_image_once_gives_the_plain_forwards_log_probs_and_gradient(model_path):
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float64).train()
    batch = _batch(model_path)
    inputs = shared_image_inputs(model, batch.model_inputs(model.config.image_token_id, model.config.video_token_id),
                                 batch.sources)
    assert "pixel_values" not in inputs and len(inputs["mm_encoder_outputs"]["image"].pooler_output) == 2 * G

    plain_logp, plain_grads = _logprobs_and_grads(model, batch, once=False)
    once_logp, once_grads = _logprobs_and_grads(model, batch, once=True)
    torch.testing.assert_close(once_logp, plain_logp, rtol=0, atol=1e-10)
    assert plain_grads.keys() == once_grads.keys()
    assert any(name.startswith(("visual", "model.visual")) for name in plain_grads)  # the tower is trained
    # float64, but the tower keeps some float32 parts (its rotary tables), which see 2 images here against 6
    # there: the vision gradients agree to ~2e-8 in norm; a row given the wrong image would be off by far more
    for name, grad in plain_grads.items():
        relative = float((once_grads[name] - grad).norm() / grad.norm().clamp(min=1e-30))
        assert relative < 1e-6, (name, relative)


@pytest.mark.parametrize("rows", [1, 2])
def test_distinct_images_pass_through_unchanged(model_path, rows):
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    batch = _batch(model_path)
    keep = [0, G][:rows]  # one row of each image: nothing to share
    sizes = batch.image_grid_thw.prod(-1).tolist()
    pixels = torch.cat([torch.split(batch.pixel_values, sizes)[r] for r in keep])
    inputs = {"pixel_values": pixels, "image_grid_thw": batch.image_grid_thw[keep]}
    assert shared_image_inputs(model, inputs, [batch.sources[r] for r in keep]) is inputs
