"""GPU check for a lent device: SAM2.1 masks/s (one encoding per group against one per completion), and for a
randomly initialised Qwen2.5-VL at the 3B shape in bf16 the HF `generate` tokens/s and a learner
forward/backward step with its MFU.

    make gpu-deps    # here: copies sam2 and its pure-Python needs into .cache/gpu-deps (carry that folder)
    make gpu-check   # on the GPU machine, at most ~8 minutes on one GPU; appends rows to bench/RESULTS.md
    .venv/bin/python bench/gpu_check.py --smoke --results /tmp/gpu.md   # the same code at toy sizes on a CPU

The GPU machine has torch and transformers but no Ray, DeepSpeed or vLLM, so this imports none of them: only
torch, transformers, numpy, sam2 and the project's pure modules (reward_server.parse, its SAM2 segmenter).
Each section that cannot run (a package missing, out of memory) prints why, and the other sections go on.
Random weights: the masks and tokens are meaningless; the timings are what the real models cost, because the
shapes are theirs.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Qwen2.5-VL-3B-Instruct's published config.json (the text and vision towers' shapes).
QWEN_3B = {
    "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
             "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 128000},
    "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
               "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
    "tie_word_embeddings": True,
}
QWEN_TOY = {  # head size 128 as in the 3B model: the rotary split below needs it
    "text": {"hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 4096},
    "vision": {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 256,
               "window_size": 112, "fullatt_block_indexes": [0]},
    "tie_word_embeddings": True,
}
MROPE_SECTION = [16, 24, 24]  # Qwen2.5-VL's split of the rotary dimensions over (time, height, width)
# Dense bf16 peak of the card (datasheet, no sparsity), for MFU; unknown cards report achieved TFLOP/s only.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ SAM2
def sam2_rows(args: argparse.Namespace, device: torch.device) -> list[list[str]]:
    """masks/s of the pool's path (one encoding per image, its G prompts decoded in batched calls) against the
    released one (`set_image` for every completion, then `predict`), on the same images and prompts."""
    from reward_server.parse import SegPrompt
    from reward_server.segmenters.sam2_segmenter import SAM2Segmenter

    rng = np.random.default_rng(0)
    size, group = args.frame, args.group
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.images + 1)]  # +1 warm-up

    def prompt() -> SegPrompt:
        x1, y1 = (int(v) for v in rng.integers(0, size // 2, 2))
        x2, y2 = x1 + int(rng.integers(size // 8, size // 2)), y1 + int(rng.integers(size // 8, size // 2))
        return SegPrompt(think="", boxes=[(x1, y1, x2, y2)], points=[((x1 + x2) // 2, (y1 + y2) // 2)], labels=[1])

    prompts = [[prompt() for _ in range(group)] for _ in images]
    segmenter = SAM2Segmenter(model_cfg=args.sam2_cfg, checkpoint="", device=str(device), embedding_cache=0)
    predictor = segmenter.predictor
    autocast = segmenter._autocast

    def per_group(index: int) -> None:
        segmenter.segment(images[index], prompts[index])

    def per_completion(index: int) -> None:
        for p in prompts[index]:
            with autocast():
                predictor.set_image(images[index])
                predictor.predict(point_coords=np.array([p.points], np.float32), point_labels=np.array([p.labels]),
                                  box=np.array(p.boxes, np.float32), multimask_output=False)

    per_group(0), per_completion(0)  # warm-up: kernels chosen, memory pooled
    grouped = timed(device, lambda: [per_group(i) for i in range(1, len(images))])
    released = timed(device, lambda: [per_completion(i) for i in range(1, len(images))])
    masks = args.images * group
    setting = f"{Path(args.sam2_cfg).stem}, random weights, {size} px, {args.images} images x G={group}"
    return [["SAM2 masks/s, one encoding per group (pool)", setting, f"{masks / grouped:.1f}"],
            ["SAM2 masks/s, one encoding per completion (released)", setting, f"{masks / released:.1f}"],
            ["SAM2 speed-up of the pool's path", setting, f"{released / grouped:.2f}x"]]


# ------------------------------------------------------------------------------------------------ Qwen2.5-VL
def build_qwen(shape: dict, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(shape["text"])
    rotary = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": MROPE_SECTION}
    text["rope_parameters"] = rotary  # newer transformers
    text["rope_scaling"] = {"type": "mrope", "mrope_section": MROPE_SECTION}  # older transformers
    text["rope_theta"] = 1e6
    vision = {**shape["vision"], "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=shape["tie_word_embeddings"])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval()


def language_params(model) -> int:
    """Parameters a text token passes through (the vision tower is left out: these prompts hold no image)."""
    seen = {id(p): p for name, p in model.named_parameters() if "visual" not in name}
    return sum(p.numel() for p in seen.values())


def generate_rows(args: argparse.Namespace, model, device: torch.device) -> list[list[str]]:
    """HF `generate` tokens/s: `batch` sequences of random prompt tokens, sampling exactly `new_tokens` each."""
    from transformers import GenerationConfig

    vocab = model.config.get_text_config().vocab_size
    prompts = torch.randint(0, vocab, (args.batch, args.prompt_tokens), device=device)
    mask = torch.ones_like(prompts)

    def run(new: int) -> None:
        config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new,
                                  min_new_tokens=new, pad_token_id=0, eos_token_id=None)
        with torch.no_grad():
            model.generate(input_ids=prompts, attention_mask=mask, generation_config=config)

    run(4)  # warm-up
    seconds = timed(device, lambda: run(args.new_tokens))
    setting = (f"{language_params(model) / 1e9:.2f} B language params, bf16, {args.batch} sequences x "
               f"{args.prompt_tokens} prompt + {args.new_tokens} new tokens, sampling")
    return [[f"HF generate tokens/s ({args.shape_name})", setting, f"{args.batch * args.new_tokens / seconds:.0f}"]]


def learner_rows(args: argparse.Namespace, model, device: torch.device, card: str) -> list[list[str]]:
    """One forward/backward over `learn_batch` x `learn_tokens` tokens (next-token loss), its time and MFU."""
    model.train()
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (args.learn_batch, args.learn_tokens), device=device)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    seconds = min(timed(device, step) for _ in range(args.learn_repeats))
    tokens = ids.numel()
    flops = 6 * language_params(model) * tokens  # forward 2N + backward 4N per token; attention not counted
    peak = next((v for k, v in PEAK_BF16.items() if k in card), None)
    mfu = f", MFU {flops / seconds / peak:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else ""
    setting = f"{args.learn_batch} x {args.learn_tokens} tokens, bf16 weights, no activation checkpointing"
    model.eval()
    return [[f"learner forward+backward ({args.shape_name})", setting,
             f"{seconds:.3f} s, {tokens / seconds:.0f} tokens/s, {flops / seconds / 1e12:.1f} TFLOP/s{mfu}"]]


# ------------------------------------------------------------------------------------------------ main
def section(name: str, fn: Callable[[], list[list[str]]]) -> list[list[str]]:
    """A section's rows, or one row saying why it could not run; never stops the other sections."""
    start = time.perf_counter()
    try:
        rows = fn()
    except Exception as error:  # noqa: BLE001 - a missing package or too little memory must not hide the rest
        traceback.print_exc()
        rows = [[name, "not run", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"]]
    print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="toy sizes on whatever device there is (the test)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md", help="file the rows are appended to")
    p.add_argument("--sam2-cfg", default="configs/sam2.1/sam2.1_hiera_l.yaml")
    p.add_argument("--frame", type=int, default=1024)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--learn-batch", type=int, default=4)
    p.add_argument("--learn-tokens", type=int, default=2048)
    p.add_argument("--learn-repeats", type=int, default=3)
    args = p.parse_args()
    args.shape_name = "toy shape" if args.smoke else "Qwen2.5-VL-3B shape"
    if args.smoke:
        args.sam2_cfg, args.frame, args.images, args.group = "configs/sam2.1/sam2.1_hiera_t.yaml", 64, 1, 2
        args.batch, args.prompt_tokens, args.new_tokens = 2, 8, 4
        args.learn_batch, args.learn_tokens, args.learn_repeats = 1, 16, 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    print(f"device: {card}; torch {torch.__version__}", flush=True)

    rows = section("SAM2", lambda: sam2_rows(args, device))
    model = None

    def qwen() -> list[list[str]]:
        nonlocal model
        model = build_qwen(QWEN_TOY if args.smoke else QWEN_3B, device, torch.bfloat16)
        return generate_rows(args, model, device)

    rows += section("HF generate", qwen)
    if model is not None:
        rows += section("learner step", lambda: learner_rows(args, model, device, card))

    import transformers

    command = "make gpu-check" if not args.smoke else "bench/gpu_check.py --smoke"
    header = (f"\n## GPU check (`{command}`), {datetime.date.today()}, {card}, torch {torch.__version__}, "
              f"transformers {transformers.__version__}\n\n| check | setting | result |\n|---|---|---|\n")
    table = header + "".join(f"| {' | '.join(row)} |\n" for row in rows)
    print(table, flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as out:
        out.write(table)
    print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
