"""Helper script for test_vllm_engine.py: a weight update with vLLM's engine core and worker in subprocesses.

    python tests/vllm/multiprocess_update.py TWIN_SEED0_DIR TWIN_SEED1_DIR

That is vLLM's default layout on GPUs (VLLM_ENABLE_V1_MULTIPROCESSING=1), where update_weights ships the
tensors as wire buckets. vLLM spawns processes, hence a script with a __main__ guard rather than a test body.
Prints one line: `MAX_GAP <float>`, the largest |vLLM - HF| log-prob of the sampled tokens after loading the
seed-1 weights into an engine started from the seed-0 twin.
"""

from __future__ import annotations

import os
import sys

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"

if __name__ == "__main__":
    import torch
    from transformers import AutoModelForCausalLM

    from rollout.vllm_engine import VLLMEngine
    from segr1.chat import non_output_token_ids
    from segr1.protocol import GenerationRequest, SamplingParams

    start_dir, new_dir = sys.argv[1:3]
    engine = VLLMEngine(start_dir, gpu_memory_utilization=0.1, max_model_len=1024, dtype="float32", seed=0)
    assert not engine.in_process
    new_model = AutoModelForCausalLM.from_pretrained(new_dir, dtype=torch.float32).eval()
    engine.update_weights(new_model.state_dict().items(), version=1)
    request = GenerationRequest("mp", None, "Find it.")
    groups = engine.generate([request], SamplingParams(n=4, max_new_tokens=16, seed=0))
    masked = sorted(set(non_output_token_ids(engine.tokenizer)) - set(engine.stop_ids))
    gaps = []
    with torch.no_grad():
        for c in groups[0].completions:
            prompt = groups[0].prompt_ids
            logits = new_model(torch.tensor([prompt + c.token_ids])).logits[0, len(prompt) - 1:-1]  # [L, V]
            logits[:, masked] = float("-inf")
            ref = logits.log_softmax(-1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
            gaps.append((ref - torch.tensor(c.logprobs)).abs())
    print(f"MAX_GAP {torch.cat(gaps).max().item()}", flush=True)  # torch's max keeps a NaN
