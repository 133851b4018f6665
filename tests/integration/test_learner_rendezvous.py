"""The learner's meeting point (LearnerGroup.sync_address) on a two-node Ray cluster: asked in the caller when
rank 0's bundle sits on the caller's node, by a task on rank 0's node otherwise. Both answer a bindable port."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_nodes():
    """Head ("near") + one worker node ("far"), both on 127.0.0.1 as segr1's local runs are."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        cluster = Cluster(initialize_head=True, connect=True, head_node_args={
            "num_cpus": 1, "resources": {"near": 1}, "include_dashboard": False})
        cluster.add_node(num_cpus=1, resources={"far": 1})
        cluster.wait_for_nodes()
        try:
            yield
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.mark.parametrize("bundle", [{"CPU": 0.5, "near": 1}, {"CPU": 0.5, "far": 1}],
                         ids=["rank0_here", "rank0_elsewhere"])
def test_sync_address_answers_a_free_port_on_rank0s_node(two_nodes, bundle):
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    from learner.group import LearnerGroup

    group = LearnerGroup.__new__(LearnerGroup)  # only the placement: no learner processes are started
    group._placement = placement_group([bundle])
    ray.get(group._placement.ready(), timeout=60)
    try:
        here = placement_group_table(group._placement)["bundles_to_node_id"][0] == ray.get_runtime_context().get_node_id()
        assert here == ("far" not in bundle)  # the two branches are the ones under test
        host, port = group.sync_address()
        with socket.socket() as s:
            s.bind((host, port))  # free on that node (every node of this cluster is this machine)
    finally:
        remove_placement_group(group._placement)
