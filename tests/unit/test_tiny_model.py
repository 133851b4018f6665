"""The offline tiny models: deterministic files, loadable with the Auto classes, the shapes Qwen2.5-VL needs."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rollout.tiny_model import BUILD_VERSION, SEED_FILE, build_tiny_text_lm, build_tiny_vlm, ensure_tiny_vlm

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> Path:
    return Path(build_tiny_vlm(str(tmp_path_factory.mktemp("tiny") / "vlm"), seed=0))


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_same_seed_gives_bitwise_identical_files(vlm_dir, tmp_path):
    again = _files(Path(build_tiny_vlm(str(tmp_path / "again"), seed=0)))
    assert again == _files(vlm_dir)
    other = _files(Path(build_tiny_vlm(str(tmp_path / "seed1"), seed=1)))
    assert other["model.safetensors"] != again["model.safetensors"]
    assert other["tokenizer.json"] == again["tokenizer.json"]  # the tokenizer does not depend on the seed


def test_text_twin_is_identical_when_built_in_a_fresh_process(vlm_dir, tmp_path):
    # A fresh interpreter has different hash seeds (Python and the tokenizers library): the BPE training must
    # not depend on them.
    code = "import sys; from rollout.tiny_model import build_tiny_text_lm; build_tiny_text_lm(sys.argv[1], seed=0)"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh")], check=True, cwd=REPO, capture_output=True)
    here = _files(Path(build_tiny_text_lm(str(tmp_path / "here"), seed=0)))
    assert _files(tmp_path / "fresh") == here
    assert here["tokenizer.json"] == (vlm_dir / "tokenizer.json").read_bytes()


def test_vlm_loads_with_auto_classes_and_has_consistent_shapes(vlm_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(vlm_dir)
    processor = AutoProcessor.from_pretrained(vlm_dir)
    text, vision = model.config.text_config, model.config.vision_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert vision.out_hidden_size == text.hidden_size
    assert 2 * sum(text.rope_parameters["mrope_section"]) == head_dim
    assert (vision.depth, vision.patch_size, vision.spatial_merge_size) == (2, 14, 2)
    assert text.vocab_size == len(processor.tokenizer)
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in model.generation_config.eos_token_id and processor.tokenizer.eos_token_id == im_end
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    assert (vlm_dir / "model.safetensors").stat().st_size < 8 * 2**20  # a few MB


@pytest.mark.parametrize("frame, tokens", [(112, 16), (224, 64), (768, 729)])
def test_frame_sizes_give_expected_image_token_counts(vlm_dir, frame, tokens):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(vlm_dir)
    image = np.zeros((frame, frame, 3), dtype=np.uint8)
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    assert int(grid.prod()) // 4 == tokens  # 2x2 merge


def test_tokenizer_makes_each_coordinate_one_token_and_round_trips_the_grammar(vlm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(vlm_dir)
    text = "<think>a fish</think> <bbox>[12,304,56,1023]</bbox>, <points>[[35,50],[5,5]]</points>, <labels>[1,0]</labels>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    for text_piece, pieces in (("1023", ["1023"]), ("7", ["7"]), ("[12,304]", ["[", "12", ",", "304", "]"])):
        assert tok.tokenize(text_piece) == pieces, text_piece
    beyond = tok("20480", add_special_tokens=False)["input_ids"]  # past the number tokens: several pieces
    assert len(beyond) > 1 and tok.decode(beyond) == "20480"
    for special in ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                    "<|video_pad|>", "<|endoftext|>"]:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special


def test_text_twin_loads_and_matches_vlm_text_shapes(tmp_path, vlm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_text_lm(str(tmp_path / "text"), seed=0)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == 128 and model.config.num_attention_heads == 2  # head_dim 64
    assert model.config.vocab_size == len(tok)
    ids = torch.tensor([tok("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")["input_ids"]])
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= ids.shape[1] + 4


def _ensure(path: str) -> str:
    return ensure_tiny_vlm(path, seed=0)


def test_ensure_is_safe_for_concurrent_callers(tmp_path):
    target = str(tmp_path / "shared")
    # spawn, not fork: a child forked after the parent started torch's OpenMP threads can crash in a torch op
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_ensure, [target, target])
    assert results == [target, target]
    assert (Path(target) / SEED_FILE).read_text().split()[0] == "0"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["shared"]  # no temp left
    assert ensure_tiny_vlm(target, seed=0) == target  # already built: returns at once
    with pytest.raises(ValueError, match="seed 0, not 3"):
        ensure_tiny_vlm(target, seed=3)


def test_a_directory_built_by_an_older_builder_is_rebuilt(tmp_path):
    target = str(tmp_path / "old")
    ensure_tiny_vlm(target, seed=0)
    (Path(target) / SEED_FILE).write_text("0\n")  # what builders before BUILD_VERSION wrote
    (Path(target) / "model.safetensors").write_bytes(b"stale")
    assert ensure_tiny_vlm(target, seed=0) == target
    assert (Path(target) / SEED_FILE).read_text().split() == ["0", f"v{BUILD_VERSION}"]
    assert (Path(target) / "model.safetensors").read_bytes() != b"stale"
