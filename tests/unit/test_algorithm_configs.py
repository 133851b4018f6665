"""Batch reuse and mismatch-correction keys: the paper config keeps the released one-update recipe, the DAPO
variant carries DAPO's choices, and bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from segr1.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_and_the_paper_config_are_one_update_per_batch_without_tis():
    for cfg in (load_config(None), load_config(CONFIGS / "segr1_cod_7b.yaml")):
        a = cfg.algorithm
        assert (a.epochs, a.mini_batches, a.tis_cap, a.overlong_buffer) == (1, 1, None, 0)
        assert cfg.learner.recompute_old_logp is False  # the engine's log-probs are the old ones


def test_dapo_variant_carries_dapos_choices_and_the_paper_setup():
    dapo, paper = load_config(CONFIGS / "segr1_cod_7b_dapo.yaml"), load_config(CONFIGS / "segr1_cod_7b.yaml")
    a = dapo.algorithm
    assert (a.clip_low, a.clip_high, a.agg, a.dynamic_sampling, a.beta) == (0.2, 0.28, "token-mean", True, 0.0)
    assert (a.epochs, a.mini_batches, a.tis_cap) == (1, 4, None)
    assert (a.overlong_buffer, a.overlong_factor) == (80, 1.0) and dapo.rollout.max_new_tokens == 400
    # every rank (prompts_per_step / num_ranks groups) holds a whole group in each mini-batch
    assert (a.prompts_per_step // dapo.learner.num_ranks) % a.mini_batches == 0
    for group in ("model", "data", "rollout", "reward", "learner", "cluster"):
        assert getattr(dapo, group) == getattr(paper, group), group
    assert (a.group_size, a.prompts_per_step) == (paper.algorithm.group_size, paper.algorithm.prompts_per_step)


@pytest.mark.parametrize("override, message", [
    ("algorithm.epochs=0", "algorithm.epochs"),
    ("algorithm.mini_batches=0", "algorithm.mini_batches"),
    ("algorithm.tis_cap=0.5", "algorithm.tis_cap"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_more_mini_batches_than_groups_is_refused():
    with pytest.raises(ConfigError, match="algorithm.mini_batches"):
        load_config(None, ["algorithm.prompts_per_step=2", "algorithm.mini_batches=3"])
    assert load_config(None, ["algorithm.prompts_per_step=2", "algorithm.mini_batches=2"]).algorithm.mini_batches == 2
