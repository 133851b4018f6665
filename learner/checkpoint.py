"""Learner checkpoint files: layout, atomic commit, RNG capture, and loading with errors that name the file.

    runs/<name>/checkpoints/step_<N>/
        model.safetensors      policy weights (HF state_dict names; loadable into the HF model)
        config.json, ...       model config, generation config and processor: `from_pretrained(step_<N>)` works,
                               so `segr1 eval` and `segr1 predict` take a checkpoint directory as it is
        reference.safetensors  only when the reference was reset from the policy (e.g. after the warm start)
        optimizer.safetensors  rank 0 optimizer + lr-scheduler state; optimizer.rank<R>.safetensors for ranks R > 0
        rng.safetensors        python / numpy / torch (/ cuda) RNG states; rng.rank<R>.safetensors for ranks R > 0
        state.json             step, weights version, world size, ZeRO stage, extra_state (sampler cursor, ...)

Nothing in a checkpoint is a pickle: optimizer and RNG state are tensors + JSON (learner/state_file.py), so
loading a checkpoint from elsewhere cannot run code. A directory in the older pickle layout (optimizer.pt,
rng.pt) is refused with an error naming the file, without reading it.

The directory may be a local path or a URI (`checkpoint.storage`; segr1.storage, pyarrow.fs). Locally every rank
writes into a staging directory `.step_<N>.tmp` beside the target and rank 0 renames it into place after a
barrier; on other filesystems each rank uploads its files from a local temp dir. Either way state.json is
written last, after every rank's files are in place: a directory without it is an interrupted write, which
cluster/checkpoint_dirs.py never lists or loads. Loading from a URI fetches each rank's own files only.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segr1.storage import Storage

STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
REFERENCE_FILE = "reference.safetensors"
FORMAT_VERSION = 1
STATE_SUFFIX = ".safetensors"
PICKLE_SUFFIX = ".pt"  # the older layout's optimizer / RNG files: refused, never unpickled


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or incompatible; the message names the file."""


def rank_file(stem: str, suffix: str, rank: int) -> str:
    return f"{stem}{suffix}" if rank == 0 else f"{stem}.rank{rank}{suffix}"


def staging_dir(final: Path) -> Path:
    """Deterministic, so every rank finds it without talking to rank 0."""
    return final.parent / f".{final.name}.tmp"


def commit(staging: Path, final: Path) -> None:
    """Move a completed staging directory into place (replacing an older copy of the same step)."""
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


# ------------------------------------------------------------------------------------------------ writing
def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def json_text(name: str, state: dict[str, Any]) -> str:
    try:
        return json.dumps(state, indent=2, sort_keys=True)
    except TypeError as e:
        raise CheckpointError(f"{name}: extra_state must be JSON-serialisable ({e})") from None


def save_json(path: Path, state: dict[str, Any]) -> None:
    path.write_text(json_text(path.name, state))


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ reading
def require(directory: Path, *names: str) -> None:
    """Raise CheckpointError naming the first missing file (or a missing directory)."""
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    for name in names:
        if not (directory / name).is_file():
            raise CheckpointError(f"checkpoint {directory} is incomplete: missing file {directory / name}")


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or garbled headers
        raise CheckpointError(f"corrupt checkpoint file {path}: {e}") from e


def refuse_pickles(directory: Path, *names: str) -> None:
    """Raise CheckpointError naming the first pickle file that stands where state is expected."""
    for name in names:
        pickled = directory / name.replace(STATE_SUFFIX, PICKLE_SUFFIX)
        if not (directory / name).is_file() and pickled.is_file():
            raise CheckpointError(
                f"refusing to load {pickled}: it is a pickle (the older checkpoint layout), and unpickling a "
                f"file can run arbitrary code; this learner reads {name} (tensors + JSON) instead")


def save_state(path: Path, state: dict[str, Any]) -> None:
    from learner.state_file import StateFileError
    from learner.state_file import save_state as write

    try:
        write(path, state)
    except StateFileError as e:
        raise CheckpointError(f"{path.name}: cannot store {e}") from None


def load_state(path: Path, template: Any = None) -> dict[str, Any]:
    """Optimizer or RNG state written by save_state; objects are restored into `template`'s (learner/state_file)."""
    from learner.state_file import StateFileError
    from learner.state_file import load_state as read

    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return read(path, template)
    except StateFileError as e:
        raise CheckpointError(f"{path}: {e}") from e
    except Exception as e:  # safetensors raises its own error types for truncated, garbled or foreign files
        raise CheckpointError(f"corrupt checkpoint file {path}: {e}") from e


def load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint file {path}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a learner checkpoint state (format {FORMAT_VERSION} expected)")
    return state


def check_compatible(path: Path, state: dict[str, Any], world_size: int, zero_stage: int) -> None:
    """Optimizer partitions are per rank: resuming needs the same world size and ZeRO stage."""
    if state.get("world_size") != world_size or state.get("zero_stage") != zero_stage:
        raise CheckpointError(
            f"{path}: saved with world_size={state.get('world_size')} zero_stage={state.get('zero_stage')}, "
            f"now world_size={world_size} zero_stage={zero_stage}; resume with the same learner settings")


def copy_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy saved tensors into `model` in place (keeps DeepSpeed's references to the parameters valid)."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unknown = [k for k in tensors if k not in own]
    if missing or unknown:
        raise CheckpointError(f"{path}: weights do not match the model (missing {missing[:3]}, unknown "
                              f"{unknown[:3]}); was it saved from a different model?")
    with torch.no_grad():
        for name, target in own.items():
            source = tensors[name]
            if source.shape != target.shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(source.shape)}, model has "
                                      f"{tuple(target.shape)}")
            target.copy_(source)


# ------------------------------------------------------------------------------------------------ learner state
def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def optimizer_state(engine: Any) -> dict[str, Any]:
    return {"optimizer": engine.optimizer.state_dict(), "lr_scheduler": engine.lr_scheduler.state_dict()}


def _load_optimizer(optimizer: Any, state: dict[str, Any], rank: int, world_size: int) -> None:
    """DeepSpeed's ZeRO/bf16 wrappers take one state per data-parallel rank and restore their fp32 master
    copies from it (exact); a bare torch optimizer takes its own state dict."""
    import inspect

    if "load_from_fp32_weights" in inspect.signature(optimizer.load_state_dict).parameters:
        per_rank: list[Any] = [None] * world_size
        per_rank[rank] = state
        optimizer.load_state_dict(per_rank, load_optimizer_states=True, load_from_fp32_weights=True)
    else:
        optimizer.load_state_dict(state)


def _write_rank_files(actor: Any, directory: Path) -> None:
    """This rank's files of a checkpoint, into `directory` (all ranks must call: ZeRO-3 gathers)."""
    from learner.models import full_state_dict, gathered

    rank = actor.rank
    module = actor.engine.module
    with gathered(list(module.parameters())):
        if rank == 0:
            save_tensors(directory / MODEL_FILE, full_state_dict(module))
    if rank == 0:  # config and processor beside the weights: the directory loads with from_pretrained
        module.config.save_pretrained(directory)
        module.generation_config.save_pretrained(directory)
        actor.processor.save_pretrained(directory)
    if rank == 0 and actor.reference is not None and actor.reference_from_policy:
        save_tensors(directory / REFERENCE_FILE, full_state_dict(actor.reference))
    save_state(directory / rank_file("optimizer", STATE_SUFFIX, rank), optimizer_state(actor.engine))
    save_state(directory / rank_file("rng", STATE_SUFFIX, rank), rng_state())


def save_learner(actor: Any, location: str, extra_state: dict[str, Any]) -> None:
    """Write checkpoint directory `location` (a path or a URI) from every rank of `actor`'s world.

    A local directory is staged beside its target and renamed into place. Elsewhere (object stores have no
    directory rename) each rank stages its files in a local temp dir and uploads them; either way rank 0 writes
    state.json last, after every rank's files are in place, so its presence marks a complete checkpoint.
    """
    rank, world = actor.rank, actor.world_size
    state = {"format": FORMAT_VERSION, "step": actor.step, "version": actor.version, "world_size": world,
             "zero_stage": actor.cfg.learner.zero_stage, "extra_state": extra_state}
    if rank == 0:
        json_text(STATE_FILE, state)  # fail before writing gigabytes if extra_state cannot be stored
    store = Storage.at(location)
    final = store.local
    if final is not None:
        staging = staging_dir(final)
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        _barrier(world)
        _write_rank_files(actor, staging)
        _barrier(world)
        if rank == 0:
            save_json(staging / STATE_FILE, state)  # last: its presence marks a complete checkpoint
            commit(staging, final)
        _barrier(world)
        return
    if rank == 0:
        store.delete()  # an interrupted or older write of this step
    _barrier(world)
    with tempfile.TemporaryDirectory(prefix="segr1-ckpt-") as tmp:
        _write_rank_files(actor, Path(tmp))
        store.upload(Path(tmp))
    _barrier(world)
    if rank == 0:
        store.write_bytes(STATE_FILE, json_text(STATE_FILE, state).encode())  # last, as above
    _barrier(world)


def load_learner(actor: Any, location: str) -> dict[str, Any]:
    """Restore weights, optimizer, lr schedule, RNG, step and version into `actor` from checkpoint directory
    `location` (a path or a URI); returns extra_state. Each rank fetches only its own files."""
    store = Storage.at(location)
    if store.local is not None:
        return _load_from(actor, store.local)
    rank = actor.rank
    wanted = [STATE_FILE, MODEL_FILE, REFERENCE_FILE, rank_file("optimizer", STATE_SUFFIX, rank),
              rank_file("rng", STATE_SUFFIX, rank)]
    wanted += [name.replace(STATE_SUFFIX, PICKLE_SUFFIX) for name in wanted[-2:]]  # to be refused by name
    present = set(store.list_files())
    with tempfile.TemporaryDirectory(prefix="segr1-ckpt-") as tmp:
        local = Path(tmp) / Path(store.root).name
        if store.is_dir():
            store.download([name for name in wanted if name in present], local)
        try:
            return _load_from(actor, local)
        except CheckpointError as e:  # name the checkpoint the user gave, not the temp copy
            raise CheckpointError(str(e).replace(str(local), location)) from e.__cause__


def _load_from(actor: Any, directory: Path) -> dict[str, Any]:
    from learner.models import gathered

    rank, world = actor.rank, actor.world_size
    optimizer_file, rng_file = rank_file("optimizer", STATE_SUFFIX, rank), rank_file("rng", STATE_SUFFIX, rank)
    if directory.is_dir():
        refuse_pickles(directory, optimizer_file, rng_file)
    require(directory, STATE_FILE, MODEL_FILE, optimizer_file, rng_file)
    state = load_json(directory / STATE_FILE)
    check_compatible(directory / STATE_FILE, state, world, actor.cfg.learner.zero_stage)
    module = actor.engine.module
    weights = load_tensors(directory / MODEL_FILE)
    with gathered(list(module.parameters()), modifier_rank=0):
        copy_into(module, weights, directory / MODEL_FILE)
    if (directory / REFERENCE_FILE).is_file() and actor.reference is not None:
        copy_into(actor.reference, load_tensors(directory / REFERENCE_FILE), directory / REFERENCE_FILE)
        actor.reference_from_policy = True
    saved = load_state(directory / optimizer_file, template=optimizer_state(actor.engine))
    try:
        _load_optimizer(actor.engine.optimizer, saved["optimizer"], rank, world)
        actor.engine.lr_scheduler.load_state_dict(saved["lr_scheduler"])
    except (KeyError, ValueError, RuntimeError, AssertionError, TypeError) as e:
        raise CheckpointError(f"{directory / optimizer_file}: optimizer state does not fit this learner ({e})") from e
    set_rng_state(load_state(directory / rng_file))
    actor.step, actor.version = int(state["step"]), int(state["version"])
    _barrier(world)
    return dict(state["extra_state"])


def export_hf(actor: Any, final: Path) -> None:
    """An HF model directory (weights, config, generation config, processor) that transformers and vLLM load."""
    from learner.models import full_state_dict, gathered

    module = actor.engine.module
    staging = staging_dir(final)
    with gathered(list(module.parameters())):
        weights = full_state_dict(module) if actor.rank == 0 else {}
    if actor.rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        module.save_pretrained(staging, state_dict=weights)
        actor.processor.save_pretrained(staging)
        commit(staging, final)
    _barrier(actor.world_size)
