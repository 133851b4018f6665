"""The config schema: defaults, YAML + overrides, errors that name the key, paper configs as released."""

from pathlib import Path

import pytest

from reward_server.parse import FormatError, parse_completion
from segr1.config import Config, ConfigError, load_config, to_yaml
from segr1.protocol import SamplingParams

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_load_and_derived_values():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.algorithm.group_size == 4 and cfg.algorithm.prompts_per_step == 24
    assert cfg.run_dir == Path("runs") / "local_cpu"


def test_overrides_apply_with_types():
    cfg = load_config(None, ["algorithm.group_size=8", "learner.lr=3e-4", "resume=true", "algorithm.clip_low=0.2"])
    assert cfg.algorithm.group_size == 8
    assert cfg.learner.lr == pytest.approx(3e-4)
    assert cfg.resume is True
    assert cfg.algorithm.clip_low == pytest.approx(0.2)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(AttributeError):
        cfg.algorithm.group_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, key",
    [
        (["algorithm.gruop_size=4"], "algorithm.gruop_size"),  # typo: unknown key
        (["rollout.num_workers=two"], "rollout.num_workers"),  # wrong type
        (["algorithm.group_size=1"], "algorithm.group_size"),  # std scaling needs >= 2
        (["reward.segmenter=sam3"], "reward.segmenter"),
        (["learner.zero_stage=4"], "learner.zero_stage"),
        (["rollout.top_p=0"], "rollout.top_p"),
        (["reward.grammar=points"], "reward.require_think"),
        (["algorithm.clip_high=0.28"], "algorithm.clip_high"),
        (["bogus"], "bogus"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, override)


def test_group_size_one_is_fine_without_std_scaling():
    cfg = load_config(None, ["algorithm.group_size=1", "algorithm.adv_scale=none"])
    assert cfg.algorithm.group_size == 1


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward:\n  w_iuo: 0.7\n")
    with pytest.raises(ConfigError, match=r"reward\.w_iuo.*bad\.yaml"):
        load_config(bad)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(CONFIGS / "local_cpu.yaml", ["run.steps=3"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads(name):
    load_config(CONFIGS / name)


@pytest.mark.parametrize("name", ["segr1_cod_7b.yaml", "segr1_prerl_dis5k.yaml", "segr1_sod_ft.yaml"])
def test_paper_configs_carry_the_released_hyperparameters(name):
    cfg = load_config(CONFIGS / name)
    a, lr = cfg.algorithm, cfg.learner
    assert (a.group_size, a.prompts_per_step, a.adv_scale, a.adv_eps) == (4, 24, "std", 1e-4)
    assert (a.beta, a.kl, a.clip_low, a.agg, a.mode) == (0.04, "k3", None, "seq-mean-token-mean", "sync")
    assert (cfg.rollout.temperature, cfg.rollout.top_p) == (1.0, 1.0)
    assert cfg.rollout.max_new_tokens == (256 if "prerl" in name else 400)
    assert (lr.lr, lr.lr_schedule, lr.warmup_steps, lr.weight_decay, lr.grad_clip) == (1e-6, "constant", 0, 0.0, 1.0)
    assert (lr.zero_stage, lr.num_ranks, cfg.rollout.num_workers, cfg.reward.num_actors) == (1, 6, 1, 1)
    assert cfg.data.frame_size == 768 and cfg.model.dtype == "bfloat16"
    assert (cfg.reward.w_format, cfg.reward.w_iou, cfg.reward.w_s, cfg.reward.s_alpha) == (1.0, 0.7, 0.3, 0.5)
    assert cfg.reward.segmenter == "sam2" and cfg.reward.sam2.model_cfg.endswith("sam2.1_hiera_l.yaml")
    assert cfg.reward.grammar == ("points" if "prerl" in name else "full")


def test_sampling_params_follow_the_rollout_group_or_decode_greedily():
    rollout = load_config(None, ["rollout.temperature=0.7", "rollout.top_p=0.9", "rollout.max_new_tokens=64"]).rollout
    assert rollout.sampling_params(4, seed=11) == SamplingParams(n=4, temperature=0.7, top_p=0.9, max_new_tokens=64,
                                                                  seed=11)
    assert rollout.sampling_params(1, greedy=True) == SamplingParams(n=1, temperature=0.0, top_p=1.0,
                                                                      max_new_tokens=64, seed=None)


def test_parse_options_are_the_parser_keywords_the_reward_group_sets():
    reward = load_config(None, ["reward.require_think=false", "reward.max_boxes=2", "reward.max_points=3"]).reward
    options = reward.parse_options()
    assert options == {"require_think": False, "max_boxes": 2, "max_points": 3, "max_chars": 8192, "grammar": "full"}
    boxes = "<bbox>[1,1,5,5]</bbox>, <bbox>[2,2,6,6]</bbox>, "
    assert parse_completion(boxes + "<points>[[3,3]]</points>, <labels>[1]</labels>", 16, 16, **options).boxes
    with pytest.raises(FormatError) as error:  # a third box: over the group's max_boxes, not the parser's default
        parse_completion("<bbox>[0,0,4,4]</bbox>, " + boxes + "<points>[[3,3]]</points>, <labels>[1]</labels>",
                         16, 16, **options)
    assert error.value.code == "too_many_boxes"
