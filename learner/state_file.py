"""Nested training state (optimizer, lr schedule, RNG) in one safetensors file, read back without unpickling.

`torch.save` pickles, and unpickling a file runs whatever code the file names, so a checkpoint directory from
elsewhere could run code when resumed. Here the tensors are stored as safetensors tensors and everything else
as JSON in the file's metadata (key TREE_KEY):

    dict with str keys -> JSON object          list -> JSON array          str/int/float/bool/None -> as is
    dict with other keys -> {"__items__": [[key, value], ...]}  (torch optimizers key their state by int)
    tuple -> {"__tuple__": [...]}               tensor -> {"__tensor__": name}
    numpy array -> {"__ndarray__": name, "dtype": "uint32"}  (numpy's RNG key; stored as an int64 tensor)
    any other object -> {"__object__": "module.Class", "attrs": {...}}  (its plain attributes, e.g. DeepSpeed's
        LossScaler or a fragment_address)

Reading never constructs an object from a name: an "__object__" entry is written into the object that sits at
the same place in `template` (the live optimizer's own state_dict()), after checking that it has that type.
An entry with no such object, or anything else unexpected, is a CheckpointError naming the file.

    save_state(path, {"optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()})
    state = load_state(path, template={"optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

TREE_KEY = "segr1.state_tree"
MARKERS = ("__items__", "__tuple__", "__tensor__", "__ndarray__", "__object__")


class StateFileError(ValueError):
    """The state cannot be stored as tensors + JSON, or a file does not hold such state."""


def type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.storages: set[int] = set()

    def tensor(self, t: torch.Tensor) -> str:
        t = t.detach().to("cpu")
        if t.device.type == "cpu" and t.untyped_storage().data_ptr() in self.storages:
            t = t.clone()  # safetensors refuses tensors that share memory (views of one flat buffer)
        t = t.contiguous()
        if t.numel():
            self.storages.add(t.untyped_storage().data_ptr())
        name = f"t{len(self.tensors)}"
        self.tensors[name] = t
        return name

    def encode(self, obj: Any, where: str) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):  # an IntEnum (DeepSpeed's ZeroStageEnum) is stored as its number
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, torch.Tensor):
            return {"__tensor__": self.tensor(obj)}
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in "biuf":
                raise StateFileError(f"{where}: numpy array of dtype {obj.dtype} cannot be stored")
            wide = obj.astype(np.int64) if obj.dtype.kind in "biu" else obj
            return {"__ndarray__": self.tensor(torch.from_numpy(np.ascontiguousarray(wide))), "dtype": str(obj.dtype)}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and k not in MARKERS for k in obj):
                return {k: self.encode(v, f"{where}.{k}") for k, v in obj.items()}
            return {"__items__": [[self.encode(k, where), self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
        if callable(obj):
            raise StateFileError(f"{where}: a {type_name(obj)} (code) cannot be stored without pickle")
        attrs = getattr(obj, "__dict__", None)
        if attrs is None:
            raise StateFileError(f"{where}: a {type_name(obj)} has no attributes to store")
        return {"__object__": type_name(obj), "attrs": self.encode(dict(attrs), f"{where}.{type(obj).__name__}")}


def _decode(node: Any, tensors: dict[str, torch.Tensor], template: Any, where: str) -> Any:
    if isinstance(node, list):
        live = template if isinstance(template, (list, tuple)) else []
        return [_decode(v, tensors, live[i] if i < len(live) else None, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        return tensors[node["__tensor__"]]
    if "__ndarray__" in node:
        return tensors[node["__ndarray__"]].numpy().astype(np.dtype(node["dtype"]))
    if "__tuple__" in node:
        return tuple(_decode(node["__tuple__"], tensors, template, where))
    if "__items__" in node:
        live = template if isinstance(template, dict) else {}
        pairs = [(_decode(k, tensors, None, where), v) for k, v in node["__items__"]]
        return {k: _decode(v, tensors, live.get(k), f"{where}[{k!r}]") for k, v in pairs}
    if "__object__" in node:
        if template is None or type_name(template) != node["__object__"]:
            found = "nothing" if template is None else f"a {type_name(template)}"
            raise StateFileError(f"{where}: saved a {node['__object__']}, this learner has {found} there")
        attrs = _decode(node["attrs"], tensors, vars(template), where)
        for name, value in attrs.items():
            setattr(template, name, value)
        return template
    live = template if isinstance(template, dict) else {}
    return {k: _decode(v, tensors, live.get(k), f"{where}.{k}") for k, v in node.items()}


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (see the module docstring for what it may hold); StateFileError names what cannot go in."""
    from safetensors.torch import save_file

    encoder = _Encoder()
    tree = encoder.encode(state, path.stem)
    save_file(encoder.tensors, str(path), metadata={"format": "pt", TREE_KEY: json.dumps(tree)})


def load_state(path: Path, template: Any = None) -> dict[str, Any]:
    """Read a `save_state` file; objects are restored into `template`'s objects at the same places."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if TREE_KEY not in metadata:
            raise StateFileError(f"no {TREE_KEY!r} entry in its metadata: not a training-state file")
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (a safetensors handle)
    tree = json.loads(metadata[TREE_KEY])
    return _decode(tree, tensors, template, path.stem)
