"""A run's checkpoint directories, `<checkpoint location>/step_<N>/`: named, found, and pruned to the newest.

The location (`Config.checkpoint_location`: runs/<name>/checkpoints, or `checkpoint.storage` + the run name)
may be a local path or a URI; the learner writes there from its own node and this module, on the driver's,
lists, loads and rotates through the same filesystem API (segr1.storage), so nothing assumes that the two
nodes share a disk. What goes inside one directory, and how the learner marks it complete (its state.json is
written last), is learner/checkpoint.py; a directory without that file is an interrupted write and is never
listed or loaded.
"""

from __future__ import annotations

import re
from typing import Any

from segr1.config import Config
from segr1.storage import Storage

_STEP_DIR = re.compile(r"^step_(\d+)$")
COMPLETE_MARKER = "state.json"  # learner.checkpoint.STATE_FILE (cluster may not import the learner's helpers)


def storage(cfg: Config) -> Storage:
    return Storage.at(cfg.checkpoint_location)


def _step_dirs(store: Storage) -> list[tuple[int, Storage]]:
    return sorted(((int(m.group(1)), store.child(name)) for name in store.list_dirs()
                   if (m := _STEP_DIR.match(name))), key=lambda found: found[0])


def list_checkpoints(store: Storage) -> list[tuple[int, Storage]]:
    """(step, directory) of complete checkpoints, oldest first (interrupted writes and temp dirs are ignored)."""
    return [(step, d) for step, d in _step_dirs(store) if d.is_file(COMPLETE_MARKER)]


def save(cfg: Config, learner: Any, step: int, extra_state: dict[str, Any]) -> str:
    """Write checkpoint `step` (the learner's ranks write it) and keep only the newest `checkpoint.keep`."""
    store = storage(cfg)
    target = store.child(f"step_{step}")
    learner.save_checkpoint(target.location, extra_state)
    rotate(store, cfg.checkpoint.keep)
    return target.location


def rotate(store: Storage, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and interrupted writes older than the newest."""
    complete = list_checkpoints(store)
    newest = complete[-1][0] if complete else -1
    stale = [d for step, d in _step_dirs(store) if step < newest and not d.is_file(COMPLETE_MARKER)]
    for directory in [d for _, d in complete[:-keep]] + stale:
        directory.delete()


def load_latest(cfg: Config, learner: Any) -> dict[str, Any] | None:
    """Restore the newest checkpoint into the learner; returns its extra state, or None for a fresh run."""
    found = list_checkpoints(storage(cfg))
    if not found:
        return None
    return learner.load_checkpoint(found[-1][1].location)
