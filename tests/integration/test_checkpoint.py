"""Learner checkpoints on the tiny VLM: exact resume, layout, HF export, and clear errors for broken files.

Exactness: 4 steps in one go and 2 steps, save, a NEW learner, load, 2 steps give bitwise-equal weights on CPU
(Adam moments, lr schedule position, reference model and RNG all come back).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil

import pytest
import torch
from learner_helpers import learner_config, make_items, make_sft_items, max_abs_diff

from learner.actor import LearnerActor
from learner.checkpoint import CheckpointError
from segr1.rendezvous import free_port

OVERRIDES = ("learner.lr_schedule=linear", "learner.recompute_old_logp=true", "learner.zero_stage=1")


def new_actor(model_path: str) -> LearnerActor:
    return LearnerActor(learner_config(*OVERRIDES), model_path, 0, 1, "127.0.0.1", free_port())


def run_steps(actor: LearnerActor, processor, steps: range) -> None:
    for step in steps:
        actor.train_step(make_items(processor, num_groups=2, seed=100 + step))  # new data every step


@pytest.fixture(scope="module")
def saved(model_path, processor, tmp_path_factory):
    """A learner after warm start + 2 GRPO steps, its checkpoint, and the state it continues from."""
    actor = new_actor(model_path)
    actor.sft_step(make_sft_items(make_items(processor, num_groups=2, seed=7)))
    actor.reset_reference()  # the checkpoint must carry a reference that differs from the model on disk
    run_steps(actor, processor, range(2))
    directory = tmp_path_factory.mktemp("run") / "checkpoints" / "step_2"
    actor.save_checkpoint(str(directory), {"sampler": {"epoch": 1, "cursor": 17}, "step": 2})
    return actor, directory


def test_resume_is_bitwise_exact(saved, model_path, processor):
    uninterrupted, directory = saved
    resumed = new_actor(model_path)
    extra = resumed.load_checkpoint(str(directory))
    assert extra == {"sampler": {"epoch": 1, "cursor": 17}, "step": 2}
    assert (resumed.step, resumed.version) == (uninterrupted.step, uninterrupted.version)
    assert resumed.current_lr() == uninterrupted.current_lr() < 1e-3  # the linear decay position came back
    before = resumed.full_state_dict()
    run_steps(uninterrupted, processor, range(2, 4))
    run_steps(resumed, processor, range(2, 4))
    assert max_abs_diff(resumed.full_state_dict(), before) > 0  # the steps did something
    assert max_abs_diff(resumed.full_state_dict(), uninterrupted.full_state_dict()) == 0.0


def test_checkpoint_directory_loads_with_from_pretrained(saved):
    """`segr1 eval` / `predict` take a checkpoint directory as it is: the HF classes load its policy weights."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _, directory = saved
    model = AutoModelForImageTextToText.from_pretrained(directory)
    AutoProcessor.from_pretrained(directory)
    saved_weights = load_file(str(directory / "model.safetensors"))
    loaded = model.state_dict()
    assert max(float((loaded[k] - v).abs().max()) for k, v in saved_weights.items()) == 0.0


def test_layout_and_rng_state(saved):
    _, directory = saved
    names = {p.name for p in directory.iterdir()}
    learner_files = {"model.safetensors", "reference.safetensors", "optimizer.safetensors", "rng.safetensors",
                     "state.json"}
    hf_files = {"config.json", "generation_config.json", "processor_config.json", "tokenizer.json"}
    assert learner_files | hf_files <= names
    assert not names - learner_files - hf_files - {"tokenizer_config.json", "chat_template.jinja"}, names
    assert not any(p.name.endswith(".tmp") for p in directory.parent.iterdir())  # staging was renamed away
    state = json.loads((directory / "state.json").read_text())
    assert (state["step"], state["world_size"], state["zero_stage"]) == (2, 1, 1)
    from learner.checkpoint import load_state, set_rng_state

    rng = load_state(directory / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    expected = torch.rand(3)
    torch.rand(5)  # move the generator on; loading must bring it back
    set_rng_state(load_state(directory / "rng.safetensors"))
    assert torch.equal(torch.rand(3), expected)


def test_policy_file_holds_hf_named_weights(saved):
    from safetensors.torch import load_file

    actor, directory = saved
    weights = load_file(str(directory / "model.safetensors"))
    assert weights.keys() == actor.full_state_dict().keys()  # the HF model's own state_dict names
    assert "lm_head.weight" in weights and any(k.startswith("model.visual.") for k in weights)


def test_export_hf_loads_with_transformers(saved, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    actor, _ = saved
    actor.export_hf(str(tmp_path / "hf"))
    model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32)
    AutoProcessor.from_pretrained(str(tmp_path / "hf"))
    assert max_abs_diff(model.state_dict(), actor.full_state_dict()) == 0.0


@pytest.mark.parametrize("damage, message", [
    ("delete:optimizer.safetensors", "missing file .*optimizer.safetensors"),
    ("delete:state.json", "missing file .*state.json"),
    ("truncate:model.safetensors", "corrupt checkpoint file .*model.safetensors"),
    ("garble:state.json", "corrupt checkpoint file .*state.json"),
    ("truncate:rng.safetensors", "corrupt checkpoint file .*rng.safetensors"),
    ("truncate:optimizer.safetensors", "corrupt checkpoint file .*optimizer.safetensors"),
])
def test_broken_checkpoint_names_the_file(saved, tmp_path, damage, message):
    actor, directory = saved
    broken = tmp_path / "step_2"
    shutil.copytree(directory, broken)
    action, name = damage.split(":")
    path = broken / name
    if action == "delete":
        path.unlink()
    elif action == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    else:
        path.write_text("{not json")
    with pytest.raises(CheckpointError, match=message):
        actor.load_checkpoint(str(broken))


def test_missing_directory_is_named(saved, tmp_path):
    actor, _ = saved
    with pytest.raises(CheckpointError, match="checkpoint directory not found: .*nowhere"):
        actor.load_checkpoint(str(tmp_path / "nowhere"))


class Payload:
    """Unpickling this runs a shell command that creates `marker` (what a hostile checkpoint could do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


@pytest.mark.parametrize("planted, message", [
    # the older layout: the loader names the pickle and does not open it
    ("optimizer.pt", r"refusing to load .*/optimizer\.pt: it is a pickle"),
    ("rng.pt", r"refusing to load .*/rng\.pt: it is a pickle"),
    # a pickle under the name of a state file: safetensors cannot parse it, and nothing unpickles it
    ("optimizer.safetensors", r"corrupt checkpoint file .*/optimizer\.safetensors"),
])
def test_a_malicious_pickle_is_refused_and_never_run(saved, tmp_path, planted, message):
    actor, directory = saved
    hostile = tmp_path / "step_2"
    shutil.copytree(directory, hostile)
    marker = tmp_path / "code_ran"
    (hostile / planted.replace(".pt", ".safetensors")).unlink()
    torch.save({"optimizer": Payload(str(marker)), "lr_scheduler": {}}, hostile / planted)  # what torch.save wrote
    with pytest.raises(CheckpointError, match=message):
        actor.load_checkpoint(str(hostile))
    assert not marker.exists()
    with open(hostile / planted, "rb") as f:  # a file object: torch.load reads "*.safetensors" paths as safetensors
        torch.load(f, weights_only=False)  # control: what the old loader did runs the payload
    assert marker.exists()


def test_a_checkpoint_on_a_remote_filesystem_resumes_bitwise(saved, model_path, processor):
    """checkpoint.storage as a URI: the learner uploads through pyarrow.fs (here fsspec's in-memory filesystem,
    which nothing reads as a local path), and a new learner resumes from it as exactly as from a local copy."""
    import uuid

    import fsspec

    _, directory = saved
    uri = f"memory://segr1-{uuid.uuid4().hex[:8]}/run/step_2"
    first = new_actor(model_path)
    first.load_checkpoint(str(directory))
    first.save_checkpoint(uri, {"sampler": {"epoch": 1, "cursor": 17}, "step": 2})
    stored = {p.rsplit("/", 1)[1] for p in fsspec.filesystem("memory").find("/" + uri.removeprefix("memory://"))}
    assert stored == {p.name for p in directory.iterdir()}  # the same layout, state.json included

    second = new_actor(model_path)
    assert second.load_checkpoint(uri) == {"sampler": {"epoch": 1, "cursor": 17}, "step": 2}
    assert (second.step, second.version, second.current_lr()) == (first.step, first.version, first.current_lr())
    run_steps(first, processor, range(2, 3))
    run_steps(second, processor, range(2, 3))
    assert max_abs_diff(second.full_state_dict(), first.full_state_dict()) == 0.0

    fsspec.filesystem("memory").rm("/" + uri.removeprefix("memory://") + "/rng.safetensors")
    with pytest.raises(CheckpointError, match=f"missing file {uri}/rng.safetensors"):
        second.load_checkpoint(uri)  # the message names the URI, not a temp copy
