"""learner.state_file: nested training state as safetensors + JSON, read back exactly and without unpickling."""

from __future__ import annotations

import math
import os
import pickle
import random
import shlex
from enum import IntEnum

import numpy as np
import pytest
import torch

from learner.checkpoint import rng_state, set_rng_state
from learner.state_file import StateFileError, load_state, save_state


class Stage(IntEnum):
    OPTIMIZER_STATES = 1


class Scaler:
    """Stands in for DeepSpeed's LossScaler: an object with plain attributes that the loader keeps."""

    def __init__(self, scale: float) -> None:
        self.cur_scale, self.dynamic = scale, False


class Other:
    def __init__(self) -> None:
        self.cur_scale = 1.0


def test_nested_state_round_trips_exactly(tmp_path):
    flat = torch.arange(10, dtype=torch.float32)
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": flat[:4]}, 1: {"exp_avg": flat[4:]}},  # views of one buffer
        "param_groups": [{"lr": 0.1 + 0.2, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None, "amsgrad": False}],
        "zero_stage": Stage.OPTIMIZER_STATES, "clip": float("inf"), "nan": float("nan"), "ds_version": "0.19.8",
        "np": (np.int64(7), np.float32(0.5)), "__tensor__": "a key that looks like a marker",
    }
    path = tmp_path / "opt.safetensors"
    save_state(path, state)
    back = load_state(path)
    assert torch.equal(back["state"][0]["exp_avg"], flat[:4]) and torch.equal(back["state"][1]["exp_avg"], flat[4:])
    assert back["state"][0]["step"].item() == 3.0 and list(back["state"]) == [0, 1]  # int keys stay ints
    assert back["param_groups"] == [{"lr": 0.1 + 0.2, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None,
                                     "amsgrad": False}]
    assert back["zero_stage"] == 1 and type(back["zero_stage"]) is int
    assert back["clip"] == math.inf and math.isnan(back["nan"]) and back["ds_version"] == "0.19.8"
    assert back["np"] == (7, 0.5) and back["__tensor__"] == "a key that looks like a marker"


def test_rng_states_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = tmp_path / "rng.safetensors"
    save_state(path, rng_state())
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.random(), np.random.rand(3), torch.rand(5)  # move every generator on; loading must bring them back
    set_rng_state(load_state(path))
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_objects_are_restored_into_the_template_never_built_from_their_name(tmp_path):
    path = tmp_path / "opt.safetensors"
    save_state(path, {"loss_scaler": Scaler(128.0), "n": 1})
    live = Scaler(1.0)
    back = load_state(path, template={"loss_scaler": live, "n": 0})
    assert back["loss_scaler"] is live and (live.cur_scale, live.dynamic) == (128.0, False)
    with pytest.raises(StateFileError, match=r"saved a .*Scaler, this learner has nothing there"):
        load_state(path)
    with pytest.raises(StateFileError, match=r"saved a .*Scaler, this learner has a .*Other there"):
        load_state(path, template={"loss_scaler": Other()})


def test_code_cannot_be_stored(tmp_path):
    with pytest.raises(StateFileError, match=r"opt.lr_lambdas\[0\]: a builtins.function \(code\)"):
        save_state(tmp_path / "opt.safetensors", {"lr_lambdas": [lambda step: 1.0]})


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_a_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "opt.safetensors"
    path.write_bytes(pickle.dumps({"optimizer": Payload(str(marker))}))
    with pytest.raises(Exception, match="(?i)header|metadata|deserializ"):
        load_state(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # control: the payload is live, so the check above means something
    assert marker.exists()
