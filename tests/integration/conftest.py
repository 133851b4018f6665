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


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance for one test module: 4 logical CPUs (more actors than this machine's cores), no
    dashboard (its port would clash with a running `make train`), worker logs kept out of pytest's output."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
