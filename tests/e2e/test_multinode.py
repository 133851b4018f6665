"""Multi-node on one machine: a head and two worker nodes (`ray.cluster_utils.Cluster`, as Ray tests itself),
the pools placed on them by custom resources from config, and one worker node lost mid-run.

The learner (and the controller, on the driver's node) sit on the head, which alone offers `learner_host`; the
rollout workers and reward actors need `pool_host`, which only the worker nodes offer, so every weight sync
crosses nodes through the object store. When a worker node is removed, its actors die with it: the rollout
pool replaces its workers and Ray restarts the reward actors, on the surviving node, and the run finishes.
"""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from tests.e2e import runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]

POOL_ACTORS = ("RolloutWorker", "RewardActor")


@pytest.fixture
def cluster(monkeypatch):
    """Head (learner_host) + two worker nodes (pool_host), every node on 127.0.0.1; torn down afterwards."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Every node on the loopback address, as segr1's local runs are (cluster.loopback_only); set for this test
    # only (monkeypatch undoes both), and inherited by the `segr1 train` driver below, which must look for its
    # raylet at the address the nodes registered with.
    monkeypatch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={
        "num_cpus": 2, "resources": {"learner_host": 1}, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2, resources={"pool_host": 4}) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def pool_actors() -> dict[str, tuple[str, str]]:
    """actor id -> (class name, node id) of the live rollout workers and reward actors (from the GCS)."""
    from ray._private import state

    return {actor_id: (a["ActorClassName"], a["Address"]["NodeID"]) for actor_id, a in state.actors().items()
            if a["State"] == "ALIVE" and a["ActorClassName"] in POOL_ACTORS}


def test_pools_span_nodes_and_a_lost_worker_node_is_survived(cluster, tmp_path):
    cluster, workers = cluster
    args = runs.train_args(
        tmp_path, "multinode", "run.steps=4", f"cluster.address={cluster.address}", "checkpoint.every=0",
        "logging.overlay_every=0", "rollout.num_workers=2", "reward.num_actors=2",
        "rollout.num_cpus=0.5", "reward.num_cpus=0.5", "learner.num_cpus=1",  # two of each fit one node
        "rollout.resources.pool_host=1", "reward.resources.pool_host=1", "learner.resources.learner_host=1")
    output = tmp_path / "driver.log"
    with output.open("w") as sink:
        proc = subprocess.Popen(args, cwd=runs.ROOT, env=runs.env(), stdout=sink, stderr=subprocess.STDOUT)
    metrics = tmp_path / "multinode" / "metrics.jsonl"
    try:
        runs.wait_for(lambda: proc.poll() is None and metrics.is_file() and runs.steps(metrics), timeout=300,
                      what="the first step on the multi-node cluster")
        before = pool_actors()
        worker_nodes = {node.node_id: node for node in workers}
        assert len(before) == 4 and {node for _, node in before.values()} <= set(worker_nodes)
        # lose the worker node that hosts the most pool actors (Ray may have packed them all onto one)
        victim = Counter(node for _, node in before.values()).most_common(1)[0][0]
        lost = {actor_id for actor_id, (_, node) in before.items() if node == victim}
        survivor = next(node_id for node_id in worker_nodes if node_id != victim)
        cluster.remove_node(worker_nodes[victim], allow_graceful=False)

        def replaced() -> dict[str, tuple[str, str]] | None:
            assert proc.poll() is None, "segr1 train exited before the lost node's actors were replaced"
            now = pool_actors()
            placed = Counter(cls for cls, node in now.values() if node == survivor)
            return now if placed == Counter({"RolloutWorker": 2, "RewardActor": 2}) else None

        after = runs.wait_for(replaced, timeout=240, what="the lost node's actors replaced on the survivor")
        proc.wait(timeout=420)
    except BaseException as e:
        proc.kill()
        raise AssertionError(f"{e}\n--- segr1 train:\n{output.read_text()[-6000:]}") from e
    assert proc.returncode == 0, output.read_text()[-6000:]

    # rollout workers come back as new actors; reward actors are restarted by Ray under the same id
    lost_classes = Counter(before[actor_id][0] for actor_id in lost)
    assert lost and all(cls in POOL_ACTORS for cls in lost_classes)
    restarted = {actor_id for actor_id in lost if actor_id in after}
    assert {before[actor_id][0] for actor_id in restarted} <= {"RewardActor"}

    rows = runs.steps(metrics)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    for row in rows:  # every step served by the full pools, each worker on the weights the learner sent it
        assert (row["pool/rollout_workers"], row["pool/reward_actors"]) == (2, 2)
        assert set(row["rollout/worker_versions"].values()) == {row["weights/version"] - 1}, row
    ids = [i for row in rows for i in row["data/sample_ids"]]
    assert len(ids) == len(set(ids)) == 4 * 2  # no batch lost or repeated to the node's death
