"""The one place that turns (processor, image, instruction) into model inputs.

Rollout engines and the learner both build prompts here, so the learner scores exactly the tokens the engine
sampled from. The system text describes the Seg-R1 output grammar in our own words; coordinates are integer
pixels of the square training frame the image was resized to.

    prompt_ids, vision = encode_prompt(processor, image, FOREGROUND_INSTRUCTION, frame_size=768)
    # vision = {"pixel_values": [P, C*T*14*14], "image_grid_thw": [1, 3]}
"""

from __future__ import annotations

from typing import Any

import numpy as np

FRAME_PLACEHOLDER = "{frame}"

SYSTEM_PROMPT = (
    "You turn a request about an image into prompts for a segmentation model. "
    "The image is {frame}x{frame} pixels; x grows to the right, y grows downwards, and every coordinate is a "
    "whole number of pixels, at least 0 and less than {frame}. "
    "First reason briefly inside <think> and </think>. "
    "Then give one or more boxes around the target as <bbox>[x1,y1,x2,y2]</bbox> (top-left and bottom-right "
    "corners), then points as <points>[[x,y],[x,y]]</points> and one label per point as "
    "<labels>[1,0]</labels>, where 1 marks a point on the target and 0 a point on the background. "
    "Separate the parts with a comma and a space, for example: "
    "<think>reasoning</think> <bbox>[10,20,60,90]</bbox>, <points>[[35,50],[5,5]]</points>, <labels>[1,0]</labels>"
)

FOREGROUND_INSTRUCTION = "Find the main foreground object in this image and segment it."


def system_prompt(frame_size: int, template: str | None = None) -> str:
    """The system text for a frame of `frame_size` pixels; `template` may contain {frame} (replaced, not
    str.format-ed, so the grammar's brackets in a custom template need no escaping)."""
    text = template if template else SYSTEM_PROMPT
    return text.replace(FRAME_PLACEHOLDER, str(int(frame_size)))


def referring_instruction(expression: str) -> str:
    """Instruction for referring segmentation (RefCOCO-style expressions)."""
    return f"Identify and segment {expression.strip()}"


def reasoning_instruction(question: str) -> str:
    """Reasoning segmentation uses the dataset's question verbatim."""
    return question


def messages(instruction: str, frame_size: int, system_prompt_text: str | None = None) -> list[dict[str, Any]]:
    """Chat messages: system grammar text, then the user turn with the image followed by the instruction."""
    return [
        {"role": "system", "content": system_prompt(frame_size, system_prompt_text)},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
    ]


def prompt_text(processor, instruction: str, frame_size: int, system_prompt: str | None = None) -> str:
    """Chat-templated prompt with the generation prompt added; holds ONE image placeholder (not yet expanded)."""
    return processor.apply_chat_template(
        messages(instruction, frame_size, system_prompt), tokenize=False, add_generation_prompt=True
    )


def _check_image(image: np.ndarray, index: int) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ValueError(f"image {index}: expected uint8[H, W, 3] RGB numpy array, got {got}")


def image_inputs(processor, images: list[np.ndarray]) -> dict[str, Any]:
    """Vision tensors for `images`: pixel_values [sum P_i, C*T*p*p] and image_grid_thw [len(images), 3]."""
    for i, image in enumerate(images):
        _check_image(image, i)
    out = processor.image_processor(images=list(images), return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def num_image_tokens(processor, image_grid_thw) -> int:
    """How many <|image_pad|> tokens one image with this grid expands to."""
    merge = processor.image_processor.merge_size
    return int(image_grid_thw.prod()) // (merge * merge)


def encode_prompt(
    processor, image: np.ndarray, instruction: str, frame_size: int, system_prompt: str | None = None
) -> tuple[list[int], dict[str, Any]]:
    """Token ids of the full prompt (image placeholder expanded to its pad tokens) and its vision tensors."""
    vision = image_inputs(processor, [image])
    text = prompt_text(processor, instruction, frame_size, system_prompt)
    pad = processor.image_token
    if text.count(pad) != 1:
        raise ValueError(f"chat template produced {text.count(pad)} image placeholders, expected 1")
    text = text.replace(pad, pad * num_image_tokens(processor, vision["image_grid_thw"][0]))
    prompt_ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(prompt_ids), vision


def mm_token_type_ids(input_ids, image_token_id: int, video_token_id: int | None = None):
    """Per-token modality (0 text, 1 image, 2 video) that Qwen2.5-VL's 3D rotary positions are computed from.

    input_ids: [B, T] torch tensor -> [B, T] int tensor. Pass it to the model's forward / generate together
    with image_grid_thw, otherwise the model falls back to 1-D positions for the image tokens.
    """
    types = (input_ids == image_token_id).int()
    if video_token_id is not None:
        types = types + 2 * (input_ids == video_token_id).int()
    return types


NON_OUTPUT_TOKENS = ("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def non_output_token_ids(tokenizer) -> list[int]:
    """Special tokens a completion may never contain: engines mask them out of the sampling distribution.

    A sampled <|image_pad|> would break the learner's forward pass (image tokens must match image features),
    and a random-weight model samples them often. The learner applies the same mask before its log-softmax so
    its log-probs and the engine's describe the same distribution.
    """
    ids = tokenizer.convert_tokens_to_ids(list(NON_OUTPUT_TOKENS))
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]
