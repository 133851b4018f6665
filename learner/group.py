"""LearnerGroup: the learner's ranks as Ray actors in one placement group, driven like a single learner.

Each rank is a `LearnerActor` (one bundle each: `learner.num_cpus` CPUs, `learner.num_gpus` GPUs). Rank 0's node
address and a free port found there form the torch.distributed rendezvous (gloo on CPU, NCCL on GPU).
Every call fans out to all ranks (DeepSpeed's collectives need them all) and returns rank 0's answer; the
statistics are already all-reduced inside the ranks. A rank that dies, or a call that outlives
`learner.timeout_s` (`learner.sync.timeout_s` for a weight sync), raises segr1.faults.StageError naming the
stage and the rank, at once: the other ranks would wait on the lost one in their collectives. The job then
restarts the whole group from the newest checkpoint (cluster/controller.py).

    learner = LearnerGroup(cfg, model_path)
    stats = learner.train_step(items)          # items are split across ranks, groups kept whole
    version, bucket_refs = learner.publish_weights()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from learner.actor import LearnerActor
from segr1.config import Config
from segr1.faults import StageError
from segr1.protocol import SFTItem, TrainItem
from segr1.shards import balanced_shards

T = TypeVar("T")


def shard(items: Sequence[T], num_shards: int) -> list[list[T]]:
    """Contiguous, near-equal shards (sizes differ by at most one), order kept; every shard non-empty."""
    if len(items) < num_shards:
        raise ValueError(f"{len(items)} groups cannot feed learner.num_ranks={num_shards} ranks; every rank needs "
                         "at least one group per step")
    return [list(items[start:stop]) for start, stop in balanced_shards(len(items), num_shards)]


def _rendezvous_address() -> tuple[str, int]:
    """Runs inside rank 0's bundle: this node's IP and a port that is free there."""
    import ray

    from segr1.rendezvous import free_port

    return ray.util.get_node_ip_address(), free_port()


def _in_bundle(placement: Any, index: int) -> Any:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=index)


class LearnerGroup:
    """Driver-side handle of `learner.num_ranks` LearnerActor ranks; same methods as one LearnerActor."""

    def __init__(self, cfg: Config, model_path: str, ready_timeout_s: float = 600.0, wait: bool = True) -> None:
        """Places and starts the ranks; with wait=False the caller does other start-up (rollout and reward
        pools load their models meanwhile) and calls `wait_ready` before the first use."""
        import ray
        from ray.util.placement_group import placement_group

        learner = cfg.learner
        self.num_ranks = learner.num_ranks
        bundle: dict[str, float] = {"CPU": learner.num_cpus, **learner.resources}  # custom ones: placement
        if learner.num_gpus > 0:
            bundle["GPU"] = learner.num_gpus
        self._placement = placement_group([dict(bundle) for _ in range(self.num_ranks)], strategy="PACK")
        ray.get(self._placement.ready(), timeout=ready_timeout_s)

        host, port = self.sync_address()
        remote_actor = ray.remote(LearnerActor)
        self.actors = [
            remote_actor.options(num_cpus=learner.num_cpus, num_gpus=learner.num_gpus,
                                 resources=dict(learner.resources),
                                 scheduling_strategy=_in_bundle(self._placement, rank))
            .remote(cfg, model_path, rank, self.num_ranks, host, port)
            for rank in range(self.num_ranks)
        ]
        self._ready = [a.weights_version.remote() for a in self.actors]
        self._ready_timeout_s = ready_timeout_s
        self._timeouts = {"learner_step": ("learner.timeout_s", learner.timeout_s),
                          "weight_sync": ("learner.sync.timeout_s", learner.sync.timeout_s)}
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Blocks until every rank has loaded its model; a rank's init error surfaces here."""
        import ray

        if self._ready:
            ray.get(self._ready, timeout=self._ready_timeout_s)
            self._ready = []

    # ------------------------------------------------------------------------------------------ fan-out
    def _all(self, method: str, *args: Any, stage: str = "learner_step") -> list[Any]:
        return self._wait(method, [getattr(a, method).remote(*args) for a in self.actors], stage)

    def _sharded(self, method: str, items: Sequence[Any]) -> list[Any]:
        shards = shard(items, self.num_ranks)
        return self._wait(method, [getattr(a, method).remote(s) for a, s in zip(self.actors, shards)],
                          "learner_step")

    def _wait(self, method: str, refs: list[Any], stage: str) -> list[Any]:
        """Every rank's answer; StageError as soon as one rank died, or once the stage's timeout has passed."""
        import time

        import ray
        from ray.exceptions import RayActorError

        key, timeout_s = self._timeouts[stage]
        deadline = time.monotonic() + timeout_s
        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(deadline - time.monotonic(), 0.0))
            if not done:
                ranks = ", ".join(str(rank_of[ref]) for ref in pending)
                raise StageError(stage, f"learner rank {rank_of[pending[0]]}",
                                 f"{method} did not return within {key}={timeout_s:g}s (ranks {ranks})")
            try:
                ray.get(done[0])
            except RayActorError as error:
                raise StageError(stage, f"learner rank {rank_of[done[0]]}",
                                 f"the rank died during {method} ({type(error).__name__})") from None
        return ray.get(refs)

    # ------------------------------------------------------------------------------------------ learner API
    def train_step(self, items: list[TrainItem]) -> dict[str, float]:
        return self._sharded("train_step", items)[0]

    def sft_step(self, items: list[SFTItem]) -> dict[str, float]:
        return self._sharded("sft_step", items)[0]

    def logprobs(self, items: list[TrainItem]) -> list[list[list[float]]]:
        return [row for part in self._sharded("logprobs", items) for row in part]

    def publish_weights(self) -> tuple[int, list[Any]]:
        return self._all("publish_weights", stage="weight_sync")[0]

    def reset_reference(self) -> None:
        self._all("reset_reference")

    def reset_optimizer(self) -> None:
        self._all("reset_optimizer")

    def arm_fault(self, stage: str, action: str) -> None:
        """Fault drill on rank 0 (segr1.faults)."""
        import ray

        ray.get(self.actors[0].arm_fault.remote(stage, action))

    def weights_version(self) -> int:
        import ray

        return ray.get(self.actors[0].weights_version.remote())

    def save_checkpoint(self, directory: str, extra_state: dict[str, Any]) -> None:
        self._all("save_checkpoint", directory, extra_state)

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        return self._all("load_checkpoint", directory)[0]

    def export_hf(self, directory: str) -> None:
        self._all("export_hf", directory)

    def full_state_dict(self, rank: int = 0) -> dict[str, Any]:
        import ray

        return ray.get(self.actors[rank].full_state_dict.remote())

    # ------------------------------------------------------------------------------------------ GPU sync
    def sync_address(self) -> tuple[str, int]:
        """A meeting point on rank 0's node: its IP and a port free there (torch.distributed or weight sync)."""
        import ray
        from ray.util.placement_group import placement_group_table

        if placement_group_table(self._placement)["bundles_to_node_id"][0] == ray.get_runtime_context().get_node_id():
            # rank 0 is placed on this node: ask here. A task would start a worker process of its own (~2 s of
            # CPU on a small machine, while the actors import and load) only to answer this once
            return _rendezvous_address()
        task = ray.remote(_rendezvous_address).options(num_cpus=0,
                                                       scheduling_strategy=_in_bundle(self._placement, 0))
        return ray.get(task.remote())

    def join_weight_sync_async(self, host: str, port: int, world_size: int, backend: str) -> list[Any]:
        """Refs of rank 0 joining the sync group; start the rollout workers' joins before waiting on them."""
        return [a.join_weight_sync.remote(host, port, world_size, backend) for a in self.actors]

    def broadcast_weights_async(self) -> list[Any]:
        """Refs of every rank's `broadcast_weights` (all ranks take part under ZeRO-3); wait on them together
        with the rollout workers' receives."""
        return [a.broadcast_weights.remote() for a in self.actors]

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            ray.kill(actor)
        remove_placement_group(self._placement)

