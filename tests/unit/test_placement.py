"""Pool placement from config: custom Ray resources per pool (`rollout.resources`, `reward.resources`,
`learner.resources`), their validation, the local cluster that offers them, and where checkpoints live.

The placement itself, across the nodes of a real multi-node cluster, is tests/e2e/test_multinode.py.
"""

from __future__ import annotations

import pytest

from cluster.job import local_resources
from segr1.config import ConfigError, load_config


def test_each_pool_takes_custom_resources_from_config():
    cfg = load_config(None, ["rollout.resources.rollout_node=1", "reward.resources={reward_node: 0.5}",
                             "learner.resources.learner_host=1"])
    assert cfg.rollout.resources == {"rollout_node": 1.0}
    assert cfg.reward.resources == {"reward_node": 0.5}
    assert cfg.learner.resources == {"learner_host": 1.0}
    assert load_config(None).rollout.resources == {}  # default: any node with the CPUs / GPUs


@pytest.mark.parametrize("override, key", [
    ("rollout.resources.CPU=1", "rollout.resources.CPU"),
    ("reward.resources.GPU=1", "reward.resources.GPU"),
    ("learner.resources.head=0", "learner.resources.head"),
])
def test_cpus_gpus_and_empty_amounts_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_a_local_cluster_offers_twice_what_the_pools_ask_for():
    cfg = load_config(None, ["rollout.num_workers=2", "rollout.resources.pool_host=1",
                             "reward.num_actors=3", "reward.resources.pool_host=0.5",
                             "learner.num_ranks=1", "learner.resources.learner_host=1"])
    assert local_resources(cfg) == {"pool_host": 2 * (2 * 1 + 3 * 0.5), "learner_host": 2.0}
    assert local_resources(load_config(None)) == {}


def test_checkpoint_location_is_the_run_dir_or_the_storage_uri_plus_the_run_name(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=a"])
    assert cfg.checkpoint_location == str(tmp_path / "a" / "checkpoints")
    cfg = load_config(None, ["run.name=a", "checkpoint.storage=s3://bucket/segr1/"])
    assert cfg.checkpoint_location == "s3://bucket/segr1/a"
