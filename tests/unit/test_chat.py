"""Prompt building shared by the rollout engines and the learner (segr1.chat), on the tiny VLM's processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rollout.tiny_model import ensure_tiny_vlm
from segr1 import chat


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(ensure_tiny_vlm(str(tmp_path_factory.mktemp("tiny") / "vlm")))


def _image(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_system_prompt_states_the_frame_and_the_grammar():
    text = chat.system_prompt(768)
    assert "768x768" in text and "{frame}" not in text
    for tag in ("<think>", "</think>", "<bbox>[x1,y1,x2,y2]</bbox>", "<points>", "<labels>"):
        assert tag in text
    assert chat.system_prompt(112, "Frame {frame}: [[x,y]]") == "Frame 112: [[x,y]]"  # braces kept, no format()


def test_task_instructions():
    assert chat.referring_instruction(" the dog on the left ") == "Identify and segment the dog on the left"
    question = "Which object could hold water?"
    assert chat.reasoning_instruction(question) == question
    assert chat.FOREGROUND_INSTRUCTION


def test_prompt_text_layout(processor):
    text = chat.prompt_text(processor, "Segment the cat.", 112)
    expected = (
        f"<|im_start|>system\n{chat.system_prompt(112)}<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Segment the cat.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert text == expected
    custom = chat.prompt_text(processor, "x", 224, system_prompt="Frame is {frame}.")
    assert custom.startswith("<|im_start|>system\nFrame is 224.<|im_end|>\n")


@pytest.mark.parametrize("frame, image_tokens", [(112, 16), (224, 64)])
def test_encode_prompt_matches_the_processor_pipeline(processor, frame, image_tokens):
    image = _image(frame)
    prompt_ids, vision = chat.encode_prompt(processor, image, chat.FOREGROUND_INSTRUCTION, frame)
    reference = processor(
        text=[chat.prompt_text(processor, chat.FOREGROUND_INSTRUCTION, frame)], images=[image], return_tensors="pt"
    )
    assert prompt_ids == reference["input_ids"][0].tolist()
    assert torch.equal(vision["pixel_values"], reference["pixel_values"])
    assert torch.equal(vision["image_grid_thw"], reference["image_grid_thw"])
    assert prompt_ids.count(processor.image_token_id) == image_tokens
    types = chat.mm_token_type_ids(torch.tensor([prompt_ids]), processor.image_token_id)
    assert torch.equal(types, reference["mm_token_type_ids"].int())


def test_image_inputs_batches_several_images(processor):
    vision = chat.image_inputs(processor, [_image(112), _image(224, seed=1)])
    assert vision["image_grid_thw"].tolist() == [[1, 8, 8], [1, 16, 16]]
    assert vision["pixel_values"].shape[0] == 64 + 256  # patches of both images, in order


def test_mm_token_type_ids_by_hand():
    ids = torch.tensor([[7, 5, 5, 9, 6]])
    assert chat.mm_token_type_ids(ids, image_token_id=5).tolist() == [[0, 1, 1, 0, 0]]
    assert chat.mm_token_type_ids(ids, image_token_id=5, video_token_id=6).tolist() == [[0, 1, 1, 0, 2]]


def test_non_output_tokens_exclude_eos(processor):
    tok = processor.tokenizer
    ids = chat.non_output_token_ids(tok)
    assert tok.convert_tokens_to_ids("<|image_pad|>") in ids
    assert tok.eos_token_id not in ids and tok.convert_tokens_to_ids("<|endoftext|>") not in ids
    assert len(ids) == len(chat.NON_OUTPUT_TOKENS)


def test_bad_image_is_rejected_with_its_index(processor):
    with pytest.raises(ValueError, match="image 1: expected uint8"):
        chat.image_inputs(processor, [_image(112), _image(112).astype(np.float32)])
