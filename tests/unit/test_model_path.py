"""rollout.engine.resolve_model_path: the one place a configured model path becomes the directory to load."""

from __future__ import annotations

import pytest

from rollout.engine import resolve_model_path
from segr1.config import load_config


def test_a_directory_or_hub_id_is_passed_on_and_a_bare_missing_name_is_refused(tmp_path):
    cfg = load_config(None, [f"model.path={tmp_path}"])
    assert resolve_model_path(cfg) == str(tmp_path)
    assert resolve_model_path(cfg, "Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(FileNotFoundError, match="model.path: no model directory at 'no_such_model'"):
        resolve_model_path(cfg, "no_such_model")
