"""Learner weight names -> checkpoint names on the tiny VLM, and the vLLM update check that relies on them.

The learner's model is transformers 5's Qwen2.5-VL (`model.language_model.*`, `model.visual.*`); the tiny
checkpoint was written by `save_pretrained` in the published layout (`model.layers.*`, `visual.*`). These run in
the main venv: they need transformers and safetensors, not vLLM. The fused layers below are vLLM's
`packed_modules_mapping` for Qwen2 / Qwen2.5-VL, what the engine asks its worker for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from learner.models import is_vision_weight, load_vlm, trainable_weights
from rollout.vllm_update_rules import UpdateRules
from segr1.config import ModelConfig
from segr1.weight_names import WeightNames, checkpoint_shapes

FUSED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def learner_weights(model_path: str, freeze_vision: bool) -> list[tuple[str, torch.Tensor]]:
    """What the learner ships: (name, parameter) of every trainable weight of its model."""
    model = load_vlm(model_path, ModelConfig(freeze_vision=freeze_vision), torch.float32, torch.device("cpu"),
                     trainable=True)
    return [(name, p.detach()) for name, p in trainable_weights(model)]


@pytest.fixture(scope="module")
def full(model_path):
    return learner_weights(model_path, freeze_vision=False)


@pytest.fixture(scope="module")
def lm_only(model_path):
    return learner_weights(model_path, freeze_vision=True)


@pytest.fixture(scope="module")
def names(model_path) -> WeightNames:
    return WeightNames.for_checkpoint(model_path)


def test_the_learner_and_the_checkpoint_name_tensors_differently(model_path, full):
    """The mismatch this module exists for (if transformers ever saves its own layout, this test says so)."""
    on_disk = checkpoint_shapes(model_path)
    assert not {name for name, _ in full} & on_disk.keys() - {"lm_head.weight"}
    assert any(k.startswith("model.language_model.") for k, _ in full) and "model.embed_tokens.weight" in on_disk


@pytest.mark.parametrize("weights", ["full", "lm_only"])
def test_every_trainable_tensor_maps_onto_a_checkpoint_tensor_of_its_shape(request, model_path, names, weights):
    items = request.getfixturevalue(weights)
    on_disk = checkpoint_shapes(model_path)
    mapped = {names.checkpoint_name(name): tuple(t.shape) for name, t in items}
    assert len(mapped) == len(items)  # one to one
    assert all(on_disk.get(key) == shape for key, shape in mapped.items()), [k for k in mapped if k not in on_disk]
    assert all(names.model_name(names.checkpoint_name(name)) == name for name, _ in items)  # both directions
    vision = [name for name, _ in items if is_vision_weight(name)]
    if weights == "full":
        assert mapped.keys() == on_disk.keys() and vision
        assert names.checkpoint_name("model.visual.merger.ln_q.weight") == "visual.merger.ln_q.weight"
        assert names.checkpoint_name("model.language_model.norm.weight") == "model.norm.weight"
    else:
        assert not vision and not any(k.startswith("visual.") for k in mapped)
        assert "lm_head.weight" in mapped and "model.norm.weight" in mapped


def test_the_mapping_agrees_with_what_save_pretrained_writes(model_path, tmp_path, names):
    """transformers' own save path (reverse renaming) produces the names we map to."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    model.save_pretrained(tmp_path)
    saved = checkpoint_shapes(str(tmp_path))
    assert {names.checkpoint_name(name) for name in model.state_dict()} == saved.keys()


@pytest.mark.parametrize("weights", ["full", "lm_only"])
def test_update_rules_accept_the_learner_weights_under_checkpoint_names(request, model_path, weights):
    items = request.getfixturevalue(weights)
    rules = UpdateRules.for_checkpoint(model_path, FUSED)
    prepared = rules.prepare(items)
    on_disk = checkpoint_shapes(model_path)
    assert all(name in on_disk for name, _ in prepared) and len(prepared) == len(items)
    by_name = dict(items)
    assert prepared[0][1] is by_name[items[0][0]]  # renamed, not copied
    assert dict(prepared)["model.embed_tokens.weight"] is by_name["model.language_model.embed_tokens.weight"]


def test_update_rules_still_reject_unknown_names_and_partial_layers(model_path, full):
    rules = UpdateRules.for_checkpoint(model_path, FUSED)
    with pytest.raises(ValueError, match=r"1 unknown name\(s\) \['model.language_model.layers.99.mlp.up_proj"):
        rules.prepare([*full, ("model.language_model.layers.99.mlp.up_proj.weight", torch.zeros(1))])
    q_only = [(n, t) for n, t in full if n == "model.language_model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(ValueError, match=r"missing from partly updated layers.*model.layers.0.self_attn.k_proj"):
        rules.prepare(q_only)
    norm = "model.language_model.norm.weight"
    with pytest.raises(ValueError, match=r"shape mismatch.*model.norm.weight: got \(3,\)"):
        rules.prepare([(norm, torch.zeros(3))])


def test_a_checkpoint_in_the_transformers_5_layout_maps_onto_itself(model_path, tmp_path, full):
    """A checkpoint written straight from `state_dict()` (no reverse renaming) works as it is."""
    for name in ("config.json", "generation_config.json"):
        shutil.copy(f"{model_path}/{name}", tmp_path / name)
    save_file({name: t.contiguous() for name, t in full}, str(tmp_path / "model.safetensors"))
    names = WeightNames.for_checkpoint(str(tmp_path))
    assert all(names.checkpoint_name(name) == name for name, _ in full)
    rules = UpdateRules.for_checkpoint(str(tmp_path), FUSED)
    assert [name for name, _ in rules.prepare(full)] == [name for name, _ in full]
    with pytest.raises(ValueError, match="unknown name.*'visual.merger.ln_q.weight'"):
        rules.prepare([("visual.merger.ln_q.weight", torch.zeros(1))])  # that layout's names are not these


def test_tied_embeddings_add_the_head_under_the_checkpoint_name(model_path, tmp_path, full):
    """With tied embeddings the learner lists the shared matrix once (as the embedding) and a checkpoint may
    lack lm_head.weight; vLLM must still receive the head, so the update rules add it."""
    source = json.loads((Path(model_path) / "config.json").read_text())
    source["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(source))
    weights = {n: t.contiguous() for n, t in full if n != "lm_head.weight"}
    names_on_disk = WeightNames.for_checkpoint(model_path)
    save_file({names_on_disk.checkpoint_name(n): t for n, t in weights.items()}, str(tmp_path / "model.safetensors"))
    names = WeightNames.for_checkpoint(str(tmp_path))
    assert names.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    rules = UpdateRules.for_checkpoint(str(tmp_path), FUSED)
    prepared = dict(rules.prepare(weights.items()))
    assert prepared["lm_head.weight"] is weights["model.language_model.embed_tokens.weight"]
