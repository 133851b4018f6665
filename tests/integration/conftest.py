"""Fixtures shared by the integration tests: one tiny VLM (built once per session) and its processor."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> str:
    from rollout.tiny_model import ensure_tiny_vlm

    return ensure_tiny_vlm(str(tmp_path_factory.mktemp("tiny") / "vlm"))


@pytest.fixture(scope="session")
def processor(model_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_path)
