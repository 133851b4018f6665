"""Checkpoints kept where the controller can read them, and resumed exactly, on in-process fakes (no Ray).

The storage is fsspec's in-memory filesystem behind a `memory://` URI: nothing of it is on the local disk, so a
checkpoint that is listed, loaded or rotated here went through segr1.storage's filesystem API (pyarrow.fs),
as it must on a cluster whose learner and driver share no disk. The async test pins the resume contract of
the run-ahead pipeline: batches in flight at a checkpoint are drawn again, in the same order, after a resume.
"""

from __future__ import annotations

import uuid
from typing import Any

import fsspec
import pytest

from cluster import checkpoint_dirs
from cluster.controller import Controller
from segr1.config import load_config
from segr1.storage import Storage
from tests.unit.fake_pools import FakeData, FakeEvaluator, FakeLearner, FakeLog, FakePools

B, G = 2, 2  # prompts per step, completions per prompt


class StoredLearner(FakeLearner):
    """FakeLearner whose checkpoint goes through segr1.storage (to any URI), and whose versions follow
    LearnerActor's: the first publish after a load sends the checkpoint's version again."""

    def __init__(self, events: list[tuple]) -> None:
        super().__init__(events)
        self.loaded = False

    def train_step(self, items: list[Any]) -> dict[str, float]:
        self.loaded = False
        return super().train_step(items)

    def publish_weights(self) -> tuple[int, list[Any]]:
        self.version += 0 if self.loaded else 1
        self.loaded = False
        return self.version, []

    def save_checkpoint(self, directory: str, extra_state: dict[str, Any]) -> None:
        import json

        store = Storage.at(directory)
        store.write_bytes("model.safetensors", b"weights")
        store.write_bytes("state.json", json.dumps({"version": self.version, "extra": extra_state}).encode())
        self.events.append(("checkpoint", directory))

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        import json

        state = json.loads(Storage.at(directory).read_bytes("state.json"))
        self.version, self.loaded = state["version"], True
        self.events.append(("load_checkpoint", directory))
        return state["extra"]


def build(tmp_path, *overrides: str):
    cfg = load_config(None, [
        f"run.output_dir={tmp_path}", "run.name=unit", f"algorithm.group_size={G}",
        f"algorithm.prompts_per_step={B}", "algorithm.baseline_images=0", "checkpoint.export_hf=false",
        "logging.overlay_every=0", *overrides])
    pools = FakePools()
    pools.learner = StoredLearner(pools.events)
    log = FakeLog()
    controller = Controller(cfg, pools, FakeData(40), FakeEvaluator(pools.events), log, model_path="unused")
    return controller, pools, log


@pytest.fixture
def memory_uri():
    """A fresh directory of fsspec's (process-wide) in-memory filesystem; removed afterwards."""
    prefix = f"segr1-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{prefix}"
    fsspec.filesystem("memory").rm(f"/{prefix}", recursive=True)


def memory_tree(uri: str) -> list[str]:
    """Every file under `uri`, read straight from fsspec (not through the code under test)."""
    fs = fsspec.filesystem("memory")
    root = "/" + uri.removeprefix("memory://")
    return sorted(p.removeprefix(root + "/") for p in fs.find(root))


def test_checkpoints_are_written_listed_and_rotated_on_a_remote_filesystem(tmp_path, memory_uri):
    controller, pools, _ = build(tmp_path, f"checkpoint.storage={memory_uri}", "run.steps=4",
                                 "checkpoint.every=1", "checkpoint.keep=2")
    controller.run()

    location = f"{memory_uri}/unit"  # <storage>/<run.name>
    assert [e[1] for e in pools.events if e[0] == "checkpoint"] == [f"{location}/step_{n}" for n in (1, 2, 3, 4)]
    assert memory_tree(memory_uri) == [f"unit/step_{n}/{f}" for n in (3, 4)
                                       for f in ("model.safetensors", "state.json")]  # keep=2 rotated the rest
    assert not (tmp_path / "unit" / "checkpoints").exists()  # nothing went to the driver's disk
    listed = checkpoint_dirs.list_checkpoints(checkpoint_dirs.storage(controller.cfg))
    assert [(step, d.location) for step, d in listed] == [(3, f"{location}/step_3"), (4, f"{location}/step_4")]


def test_interrupted_writes_are_never_listed_and_are_rotated_away(memory_uri):
    store = Storage.at(memory_uri)
    for step in (1, 2, 3, 5):
        store.child(f"step_{step}").write_bytes("model.safetensors", b"w")
        if step != 2 and step != 5:  # step 2 and step 5 lost their writer before state.json
            store.child(f"step_{step}").write_bytes("state.json", b"{}")
    store.child("notes").write_bytes("readme.txt", b"not a checkpoint")

    assert [step for step, _ in checkpoint_dirs.list_checkpoints(store)] == [1, 3]
    checkpoint_dirs.rotate(store, keep=1)
    # the newest complete one stays; the interrupted step 5 (newer: maybe still being written) and foreign
    # directories are left alone
    assert sorted(store.list_dirs()) == ["notes", "step_3", "step_5"]


def test_resume_from_a_uri_loads_the_newest_complete_checkpoint_and_keeps_its_version(tmp_path, memory_uri):
    settings = (f"checkpoint.storage={memory_uri}", "run.steps=4", "checkpoint.every=2", "checkpoint.keep=3")
    first, _, first_log = build(tmp_path, *settings)
    first.run()
    fsspec.filesystem("memory").rm(f"/{memory_uri.removeprefix('memory://')}/unit/step_4/state.json")  # died

    resumed, pools, log = build(tmp_path, *settings, "resume=true")
    resumed.run()

    assert pools.events[:2] == [("load_checkpoint", f"{memory_uri}/unit/step_2"), ("publish", 3)]
    assert [row["step"] for row in log.rows] == [3, 4]
    for straight, again in zip(first_log.rows[2:], log.rows):  # the same versions, batches and order
        assert (again["weights/version"], again["data/sample_ids"]) == \
            (straight["weights/version"], straight["data/sample_ids"])
    assert pools.events[-1] == ("checkpoint", f"{memory_uri}/unit/step_4")  # rewritten, complete again
    assert checkpoint_dirs.list_checkpoints(Storage.at(f"{memory_uri}/unit"))[-1][0] == 4


@pytest.mark.parametrize("depth", [1, 2])
def test_async_resume_redraws_in_flight_batches_so_no_sample_is_skipped_or_trained_twice(tmp_path, depth):
    """Checkpoint at step 3 of 6 while `depth` batches are generated ahead; the run dies; resume trains on
    exactly the uninterrupted run's batches for steps 4-6, in the same order."""
    settings = ("algorithm.mode=async", f"algorithm.max_staleness={depth}", "run.steps=6",
                "checkpoint.every=3", "checkpoint.keep=3")
    straight, straight_pools, _ = build(tmp_path / "a", *settings)
    drawn_at_checkpoint: list[int] = []
    save = straight_pools.learner.save_checkpoint

    def save_and_count(directory: str, extra_state: dict[str, Any]) -> None:
        drawn_at_checkpoint.append(len(straight.data.loaded))
        save(directory, extra_state)

    straight_pools.learner.save_checkpoint = save_and_count
    straight.run()
    trained = [[item.sample_id for item in items] for items in straight_pools.learner.trained]
    assert drawn_at_checkpoint[0] == (3 + depth) * B  # the checkpoint was taken with `depth` batches in flight

    interrupted, pools, _ = build(tmp_path / "b", *settings)
    save_first = pools.learner.save_checkpoint

    def save_then_die(directory: str, extra_state: dict[str, Any]) -> None:
        save_first(directory, extra_state)
        raise RuntimeError("the driver's node was lost")  # with batches in flight, whose rollouts are gone

    pools.learner.save_checkpoint = save_then_die
    with pytest.raises(RuntimeError, match="node was lost"):
        interrupted.run()
    resumed, pools_after, _ = build(tmp_path / "b", *settings, "resume=true")
    resumed.run()

    before = [[item.sample_id for item in items] for items in pools.learner.trained]
    after = [[item.sample_id for item in items] for items in pools_after.learner.trained]
    assert before + after == trained  # same batches, same order: none skipped, none trained twice
    ids = [i for batch in trained for i in batch]
    assert len(ids) == len(set(ids)) == 6 * B
