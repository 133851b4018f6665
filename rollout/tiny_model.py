"""Offline builder of the tiny random-weight models used on CPU and in tests (nothing is downloaded).

`build_tiny_vlm` writes a Qwen2.5-VL-architecture model (~1M parameters) with its own byte-level BPE tokenizer,
chat template and processor, loadable with AutoModelForImageTextToText / AutoProcessor.
`build_tiny_text_lm` writes its text-only twin (Qwen2, same tokenizer) for engines that cannot run vision models.

Numbers: every whole number 0..1023 is one token, so "[12,304]" becomes "[", "12", ",", "304", "]"; longer digit runs
fall back to single digits. (Real Qwen2.5 splits digits one by one; a 1M-parameter model trained for minutes on a CPU
cannot learn to count digits reliably, but it does learn one coordinate token per number: in our warm-start runs
digit-level coordinates never reached a valid greedy completion in 300 steps, whole-number tokens did in 80.)
Both builders are deterministic: the same seed gives bitwise-identical weight and tokenizer files.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from segr1.chat import FOREGROUND_INSTRUCTION
from segr1.chat import system_prompt as chat_system_prompt

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]
BPE_VOCAB_SIZE = 1024
NUMBER_TOKENS = 1024  # every pixel coordinate of frames up to 1024 px is one token
TEXT_HIDDEN = 128
TEXT_HEADS = 2  # head_dim 64: a size the vLLM CPU attention supports, so the text twin runs there too
MROPE_SECTION = [8, 12, 12]  # temporal, height, width: sums to head_dim / 2 = 32
# Why the tiny VLM can find things (issue F: with Qwen's 1e6 it could not, even under direct supervision):
# - ROPE_THETA: the LM tells image tokens apart only through the rotary angles of their (row, column)
#   positions (Qwen2.5-VL has no absolute position embedding, neither in the vision tower nor in the LM). At
#   112 px the image is a 4x4 token grid; with theta 1e6 the height/width frequencies turn by <= 0.03 rad per
#   grid step, so every image token looks alike to the text. Theta 2 turns them 0.5-0.8 rad per step. Measured
#   with GT-box supervision, 400 steps, one white square on black: held-out IoU 0.38 at theta 10, 0.68 at 2.
# - VISION_HIDDEN / VISION_HEADS: a patch embedding wide enough to carry colour and texture of a 14 px patch.
# - FOURIER_NUMBERS: coordinates the model can express. The input and output rows of the number tokens 0..1023
#   start as sines and cosines of the number (periods 256 down to ~23), so 57 and 58 start close and a near
#   miss is near in logit space; random rows would make every coordinate an unrelated class to learn. At
#   amplitude 0.2 (FOURIER_SCALE) rather than 1 the warm start learns the grammar twice as fast (sampled
#   format 0.44 vs 0.00 after 100 steps) and GT-box supervision still reaches held-out IoU 0.86 in 400 steps.
ROPE_THETA = 2.0
VISION_HIDDEN = 128
VISION_HEADS = 4
FOURIER_NUMBERS = 8  # frequencies; the first 2 * FOURIER_NUMBERS columns of each number token's rows
FOURIER_SCALE = 0.2  # their amplitude (other entries start at std 0.02)
# A frame of 112 px is 8x8 patches of 14 -> 16 tokens after the 2x2 merge; 768 px is resized to 756 -> 729.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 1024 * 1024
# Own pre-tokenisation rule: single digits, letter runs with an optional leading space, punctuation runs, spaces.
PRETOKENIZE_PATTERN = r"\p{N}| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Our own chat template (Qwen layout): <|im_start|>role\n content <|im_end|>\n; an image part becomes the vision
# placeholder that the processor expands to one <|image_pad|> per merged patch.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_FILLER = [
    "The object sits near the centre of the image and blends into the background.",
    "I look for edges, texture changes and colour contrast to find the animal.",
    "A small fish hides among the rocks on the left side.",
    "The bird is partly covered by leaves, so the box should be generous.",
    "Foreground pixels are brighter than the sand around them.",
    "There are two candidate regions; the larger one is the target.",
    "Place positive points inside the object and negative points on the background.",
    "The shape is elongated and runs from the top left to the bottom right.",
    "Segment the person holding the umbrella.",
    "Which object in this picture would you use to cut bread?",
    "Identify and segment the dog on the right.",
    "The salient object is a red car parked in front of a white wall.",
    "A camouflaged insect rests on the bark of a tree.",
    "The mask should cover the whole body, including the tail and the legs.",
    "Nothing else in the scene looks like the target.",
]


def _grammar_example(rng: random.Random, frame: int) -> str:
    def xy() -> str:
        return f"[{rng.randrange(frame)},{rng.randrange(frame)}]"

    boxes = []
    for _ in range(rng.choice([1, 1, 2])):
        x1, x2 = sorted(rng.sample(range(frame), 2))
        y1, y2 = sorted(rng.sample(range(frame), 2))
        boxes.append(f"<bbox>[{x1},{y1},{x2},{y2}]</bbox>")
    k = rng.randint(1, 6)
    points = ",".join(xy() for _ in range(k))
    labels = ",".join(str(rng.randint(0, 1)) for _ in range(k))
    think = " ".join(rng.sample(_FILLER, 2))
    return f"<think>{think}</think> {', '.join(boxes)}, <points>[{points}]</points>, <labels>[{labels}]</labels>"


def training_corpus() -> list[str]:
    """Fixed text the tokenizer is trained on: grammar examples, prompts, English filler, numbers."""
    rng = random.Random(20250628)  # fixed: the tokenizer is the same for every model seed
    corpus = [chat_system_prompt(frame) for frame in (112, 224, 768, 1024)]
    corpus += [FOREGROUND_INSTRUCTION, *_FILLER]
    corpus += [_grammar_example(rng, rng.choice([112, 224, 768, 1024])) for _ in range(400)]
    corpus += [" ".join(str(n) for n in range(start, start + 32)) for start in range(0, 1024, 32)]
    return corpus


def build_tokenizer():
    """Byte-level BPE trained on `training_corpus()`, wrapped as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token: no unknowns
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    # Whole numbers 0..1023 are single tokens (matched before pre-tokenisation, longest first).
    tok.add_tokens([AddedToken(str(n), normalized=False) for n in range(NUMBER_TOKENS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        padding_side="left",  # decoder-only generation pads on the left
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )


def _text_dims(vocab_size: int, tok) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 2 * TEXT_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": TEXT_HEADS,
        "max_position_embeddings": 4096,
        "bos_token_id": None,
        "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tok.pad_token_id,
    }


def _eos_ids(tok) -> list[int]:
    return [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]


def _fourier_number_rows(model, tok) -> None:
    """Overwrite the first 2 * FOURIER_NUMBERS columns of the number tokens' input and output rows with
    FOURIER_SCALE * cos / sin(2 pi n / period) for periods 256 / 2^(k/2), k = 0..FOURIER_NUMBERS-1."""
    ids = torch.tensor(tok.convert_tokens_to_ids([str(n) for n in range(NUMBER_TOKENS)]))
    n = torch.arange(NUMBER_TOKENS, dtype=torch.float32)[:, None]
    freqs = (2 * torch.pi / 256) * 2.0 ** (torch.arange(FOURIER_NUMBERS, dtype=torch.float32) / 2)
    features = FOURIER_SCALE * torch.cat([torch.cos(n * freqs), torch.sin(n * freqs)], dim=1)
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[ids, : features.shape[1]] = features


def build_tiny_vlm(out_dir: str, seed: int = 0) -> str:
    """Write the tiny Qwen2.5-VL (model, tokenizer, processor) to `out_dir`; returns the path."""
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = build_tokenizer()
    ids = {name: tok.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    text = _text_dims(len(tok), tok)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": MROPE_SECTION}
    vision = {
        "depth": 2, "hidden_size": VISION_HIDDEN, "intermediate_size": 2 * VISION_HIDDEN, "num_heads": VISION_HEADS,
        "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1],
        "out_hidden_size": TEXT_HIDDEN,  # must equal the text hidden size (the merger feeds the LM directly)
    }
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    _fourier_number_rows(model, tok)
    model.generation_config = GenerationConfig(
        eos_token_id=_eos_ids(tok), pad_token_id=tok.pad_token_id, bos_token_id=None, do_sample=True,
        temperature=1.0, top_p=1.0, top_k=0,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_text_lm(out_dir: str, seed: int = 0) -> str:
    """Write the text-only twin (Qwen2, hidden 128, 2 heads of 64, same tokenizer) to `out_dir`."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    config = Qwen2Config(**_text_dims(len(tok), tok), rope_theta=1e6, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=_eos_ids(tok), pad_token_id=tok.pad_token_id, bos_token_id=None, do_sample=True,
        temperature=1.0, top_p=1.0, top_k=0,
    )
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


SEED_FILE = "tiny_seed.txt"  # records the seed, so a directory built with another seed is not silently reused
# Bumped whenever the builder's output changes; a directory built by an older builder is rebuilt, not reused
# (2: rope theta 2, vision width 128, Fourier number rows; 3: their amplitude 0.2).
BUILD_VERSION = 3


def _is_built(path: Path, seed: int) -> bool:
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        return False
    recorded = (path / SEED_FILE).read_text().split() if (path / SEED_FILE).is_file() else ["?"]
    if recorded[0] != str(seed):
        raise ValueError(f"{path}: holds a tiny VLM built with seed {recorded[0]}, not {seed}; use another directory")
    return recorded[1:] == [f"v{BUILD_VERSION}"]


def ensure_tiny_vlm(out_dir: str, seed: int = 0) -> str:
    """Build the tiny VLM into `out_dir` unless it is already there.

    Safe for concurrent callers (e.g. several Ray actors on one node): an exclusive file lock serialises
    builders, and the model is written to a temporary directory that is renamed into place, so a reader never
    sees a half-written directory.
    """
    target = Path(out_dir)
    if _is_built(target, seed):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _is_built(target, seed):  # another process finished while we waited
                return str(target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                build_tiny_vlm(str(tmp), seed=seed)
                (tmp / SEED_FILE).write_text(f"{seed} v{BUILD_VERSION}\n")
                if target.exists():  # a stale partial directory from a crashed builder
                    shutil.rmtree(target)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(target)
