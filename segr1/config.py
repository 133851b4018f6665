"""The one configuration schema: every default of the system lives here.

Groups follow the services (rollout, reward, learner, cluster) plus the run, model, data, algorithm, logging,
checkpoint and fault-injection settings. YAML files hold only overrides; `group.key=value` strings override
further. Unknown keys, wrong types and impossible combinations fail at start with the key path and reason.

    cfg = load_config("configs/local_cpu.yaml", ["algorithm.group_size=8", "run.steps=10"])
    cfg.algorithm.group_size  # -> 8

Derived values (the run directory, sampling parameters, parser options) are computed, never written back
into the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf  # noqa: F401  (MISSING re-exported for configs that need it)
from omegaconf.errors import OmegaConfBaseException

from segr1.choices import ADVANTAGE_SCALES, AGGREGATIONS, GRAMMARS, KL_KINDS
from segr1.protocol import SamplingParams


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or inconsistent; the message names the key path."""


# --------------------------------------------------------------------------------------------- run / model / data
@dataclass(frozen=True)
class RunConfig:
    name: str = "local_cpu"
    seed: int = 0
    output_dir: str = "runs"
    steps: int = 20  # GRPO steps (optimizer updates)


@dataclass(frozen=True)
class ModelConfig:
    # HF directory of the policy (Qwen2.5-VL-style). "tiny" builds the offline tiny random-weight VLM into
    # `tiny_dir` (deterministic from `tiny_seed`), which is what the CPU default and the tests use.
    path: str = "tiny"
    tiny_dir: str = ".cache/tiny_vlm"
    tiny_seed: int = 0
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU; or float32 / bfloat16 / float16
    freeze_vision: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"


@dataclass(frozen=True)
class DataConfig:
    train: str = ""  # Parquet (segr1.data schema). Empty -> synthesize `synth_train_n` samples under the run dir
    eval: str = ""  # held-out Parquet. Empty -> synthesize `synth_eval_n` with `synth_seed + 1`
    synth_train_n: int = 512
    synth_eval_n: int = 32
    synth_seed: int = 0
    synth_size: int = 128  # native size of synthetic images before resizing to the frame
    frame_size: int = 768  # every image and mask is resized to frame_size^2 (paper: 768)
    eval_size: int = 0  # 0 = whole eval set; else the first N samples


# --------------------------------------------------------------------------------------------- services
@dataclass(frozen=True)
class VLLMConfig:
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    enable_prefix_caching: bool = True
    enable_sleep_mode: bool = False  # colocated mode: release KV cache while the learner trains
    max_model_len: int = 4096
    enforce_eager: bool = False


@dataclass(frozen=True)
class RolloutConfig:
    engine: str = "hf"  # hf | vllm
    num_workers: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # custom Ray resources each worker asks for, e.g. {rollout_node: 1}: places the pool on the nodes started
    # with them (`ray start --resources='{"rollout_node": 8}'`); {} = any node with the CPUs/GPUs
    resources: dict[str, float] = field(default_factory=dict)
    # torch threads of each worker (segr1.threads): None = the CPUs it reserved (num_cpus), 0 = every core of
    # its node (a sync run's stages take turns, so the stage that runs may use them all), N = N
    torch_threads: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 400
    max_batch_prompts: int = 32  # prompts generated together in one engine call
    max_retries: int = 1  # a shard whose worker died or hung is re-run on a fresh worker (at the latest weights)
    timeout_s: float = 1800.0  # longest one worker's generate call may take; then it counts as hung (killed, retried)
    # HF engine, object-store sync: serve from the broadcast's shared memory instead of copying it (one copy of
    # the weights per node, no copy per worker); each served version stays pinned in the object store
    zero_copy_weights: bool = True
    system_prompt: str = ""  # empty -> segr1.chat.SYSTEM_PROMPT ({frame} is replaced)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)

    def sampling_params(self, n: int, seed: int | None = None, *, greedy: bool = False) -> SamplingParams:
        """How the engines sample n completions per prompt: at this group's temperature and top-p, or greedily
        (temperature 0, top-p 1: evaluation and predict)."""
        if greedy:
            return SamplingParams(n=n, temperature=0.0, top_p=1.0, max_new_tokens=self.max_new_tokens, seed=seed)
        return SamplingParams(n=n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=seed)


@dataclass(frozen=True)
class SAM2Config:
    model_cfg: str = "configs/sam2.1/sam2.1_hiera_l.yaml"  # name inside the sam2 package
    checkpoint: str = ""  # path to sam2.1_hiera_large.pt; empty builds RANDOM weights (tests only; warns)
    device: str = "auto"  # auto | cpu | cuda
    bgr_compat: bool = False  # released code fed BGR to SAM2; reproduce with true
    embedding_cache: int = 8  # image embeddings kept per actor (LRU), keyed by image id
    bf16: bool = True  # autocast on GPU
    decode_batch: int = 0  # boxes per decoder call; 0 = auto (cuda: 256, cpu: 4, measured best on 2 cores)


@dataclass(frozen=True)
class GrabCutConfig:
    iterations: int = 5
    margin: int = 0  # pixels added around each box before GrabCut
    context: float = 1.0  # background band around each box, as a fraction of its size (local colour model)
    point_radius: int = 3  # points become disks of this radius (GrabCut needs a few pixels per click)


@dataclass(frozen=True)
class RewardConfig:
    segmenter: str = "sam2"  # sam2 | grabcut
    num_actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor, as rollout's
    # threads of each actor (segr1.threads): GrabCut scores this many groups at once (cv2 releases the GIL),
    # SAM2 gives them to torch. None = the CPUs it reserved (num_cpus), 0 = every core of its node, N = N
    threads: int | None = None
    w_format: float = 1.0
    w_iou: float = 0.7
    w_s: float = 0.3
    # + w_box * mean GIoU(each predicted box, the GT mask's box), in [-1, 1]: a graded signal for boxes that miss
    # the object, where mask IoU is ~0 for every near miss (docs/LEARNING.md). 0 = the paper's reward exactly
    w_box: float = 0.0
    s_alpha: float = 0.5
    segr1_bug_compat: bool = False  # reproduce the released S-term bug (S -> 1 - mean(P))
    grammar: str = "full"  # full | points (pre-RL stage)
    require_think: bool = True
    max_boxes: int = 8
    max_points: int = 32
    max_chars: int = 8192
    max_batch_groups: int = 8  # dynamic batching: groups per actor call
    max_wait_s: float = 0.02  # dynamic batching: wait this long for more groups
    # longest one actor call may take; then the actor counts as hung: it is killed (Ray restarts it) and the
    # call's groups are requeued. A group that fails max_retries + 1 times is dropped (data/groups_dropped)
    timeout_s: float = 600.0
    max_retries: int = 3
    sam2: SAM2Config = field(default_factory=SAM2Config)
    grabcut: GrabCutConfig = field(default_factory=GrabCutConfig)

    def parse_options(self) -> dict[str, Any]:
        """The keyword options of reward_server.parse.parse_completion that this group sets (the grammar)."""
        return {"require_think": self.require_think, "max_boxes": self.max_boxes, "max_points": self.max_points,
                "max_chars": self.max_chars, "grammar": self.grammar}


@dataclass(frozen=True)
class WeightSyncConfig:
    transport: str = "auto"  # auto | object_store | nccl  (auto = nccl when learner and rollout have GPUs)
    bucket_mb: int = 256
    # longest one weight sync may take (a worker that hangs receiving is killed and replaced at these weights)
    timeout_s: float = 600.0


@dataclass(frozen=True)
class LearnerConfig:
    num_ranks: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per rank, as rollout's
    # torch threads of each rank (segr1.threads): None = the CPUs it reserved (num_cpus), 0 = every core of its
    # node, N = N
    torch_threads: int | None = None
    zero_stage: int = 1
    lr: float = 1e-6
    lr_schedule: str = "constant"  # constant | cosine | linear
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    micro_batch_size: int = 4  # completions per forward/backward
    # run the vision tower once per distinct image of a micro-batch instead of once per completion (the G rows of
    # a group share one image): the same loss and gradient up to float rounding (learner/shared_images.py;
    # its effect on the learner stage: bench/RESULTS.md)
    encode_images_once: bool = True
    ref_offload: bool = False
    # True: the learner's own log-probs of the pre-update policy are the old log-probs (else the rollout engine's
    # sampling log-probs are). Implied by algorithm.epochs > 1, algorithm.mini_batches > 1 and algorithm.tis_cap
    recompute_old_logp: bool = False
    sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    # longest one learner call (update, log-probs, checkpoint) may take; then the learner counts as hung
    timeout_s: float = 3600.0
    # a learner that dies or hangs is restarted from the newest checkpoint by the job itself, this many times per
    # run, waiting restart_backoff_s before the first restart and twice as long before each next one
    max_restarts: int = 3
    restart_backoff_s: float = 5.0


@dataclass(frozen=True)
class WarmStartConfig:
    """Supervised warm start before GRPO. targets="random": the grammar only, with boxes and points drawn at
    random (image-independent), so any localisation comes from RL. targets="ground_truth": the GT box and an
    interior point (the supervised check of what the model and its input path can learn; an SFT baseline)."""

    steps: int = 0
    targets: str = "random"  # random | ground_truth
    lr: float = 1e-3
    batch_size: int = 16


@dataclass(frozen=True)
class AlgorithmConfig:
    group_size: int = 4  # G
    prompts_per_step: int = 24  # B (prompts per optimizer step)
    adv_scale: str = "std"  # std | none (Dr.GRPO)
    adv_eps: float = 1e-4
    beta: float = 0.04
    kl: str = "k3"  # k1 | k2 | k3
    clip_low: float | None = None  # None = no clipping (released Seg-R1)
    clip_high: float | None = None  # None = same as clip_low
    agg: str = "seq-mean-token-mean"  # | token-mean | seq-mean-token-sum-norm
    # PPO reuse of each rollout batch (TRL num_iterations, veRL ppo_epochs): passes over the batch, each split
    # into `mini_batches` optimizer steps of whole groups. 1 and 1 = one update per batch (released Seg-R1)
    epochs: int = 1
    mini_batches: int = 1
    # truncated importance sampling (Yao et al. 2025, veRL TIS, TRL vllm_importance_sampling_correction): each
    # token's policy-gradient term weighs min(pi_learner_old / pi_engine, tis_cap); None = off (released Seg-R1)
    tis_cap: float | None = None
    mode: str = "sync"  # sync | async
    max_staleness: int = 1  # async: batches generated ahead of the learner (each lags it by <= this many versions)
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal
    # DAPO refill (sync mode, with dynamic_sampling): draw up to this many batches of prompts per step until
    # prompts_per_step informative groups are kept (the surplus of the last draw is dropped unused). 1 = no refill
    max_draws: int = 1
    # DAPO soft overlong punishment: a completion within the last `overlong_buffer` tokens before
    # rollout.max_new_tokens loses up to `overlong_factor` reward, linearly in how far into that zone it runs
    # (learner.grpo.overlong_penalty). 0 = off (released Seg-R1)
    overlong_buffer: int = 0
    overlong_factor: float = 1.0
    eval_every: int = 0  # held-out eval every N steps (0 = only at start and end)
    # training images the blind baseline (best image-independent prompt) is chosen on; 0 = no eval/iou_blind,
    # eval/iou_oracle, eval/localisation_gain. Cost: 58 segmentations per image, once per run (cached)
    baseline_images: int = 32
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)


# --------------------------------------------------------------------------------------------- operations
@dataclass(frozen=True)
class ClusterConfig:
    address: str = ""  # "" = RAY_ADDRESS if set, else start a local cluster; "auto" joins a running one
    num_cpus: int = 0  # local cluster only: logical CPUs (0 = cores, or twice what the pools ask for)
    dashboard: bool = True  # local cluster only: Ray dashboard (and job submission) on dashboard_host:port
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    metrics_export_port: int = 8080  # Prometheus scrape port of the local node (0 = pick a free one)
    metrics_report_s: float = 10.0  # local cluster only: how often Ray's metrics agent publishes
    # local cluster only: bind every port (GCS, raylet, object manager, workers, agents, metrics, dashboard) to
    # 127.0.0.1, so nothing on this machine is reachable from the network. false: bind to the host's address
    # (needed only if other machines should join this local cluster; prefer `ray start` for that).
    loopback_only: bool = True


@dataclass(frozen=True)
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "seg-r1"
    entity: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    jsonl: bool = True
    prometheus: bool = True
    tui: str = "auto"  # auto (live view on a terminal, else plain lines) | live | plain
    overlay_every: int = 10  # steps between overlay images (0 = never)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 10  # steps between checkpoints (0 = only at the end)
    keep: int = 3
    export_hf: bool = True  # also write an HF-format model directory at the end
    # where checkpoints go: "" = runs/<name>/checkpoints; else a directory that the learner's nodes and the
    # driver's both reach, as a path (a shared mount) or a URI (s3://bucket/prefix, gs://..., file:///...):
    # checkpoints then live under <storage>/<run.name>/step_<N>/, written, listed, loaded and rotated
    # through pyarrow.fs (segr1.storage)
    storage: str = ""


@dataclass(frozen=True)
class FaultsConfig:
    """Fault drills (docs/RELIABILITY.md; segr1.faults): each fires once, when the loop has done that many steps
    (0 = before the first step); -1 = never."""

    # between steps: ray.kill of one actor
    kill_reward_actor_at_step: int = -1
    kill_rollout_worker_at_step: int = -1
    # inside a call: the actor's process exits from inside its next call of that stage
    die_in_generate_at_step: int = -1  # a rollout worker, while it generates
    die_in_score_at_step: int = -1  # a reward actor, while it scores
    die_in_learner_step_at_step: int = -1  # learner rank 0, during its update
    # inside a call: the call never returns, until the stage's timeout kills it
    hang_generate_at_step: int = -1  # rollout.timeout_s
    hang_score_at_step: int = -1  # reward.timeout_s
    hang_learner_step_at_step: int = -1  # learner.timeout_s
    hang_weight_sync_at_step: int = -1  # learner.sync.timeout_s (a rollout worker receiving the weights)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    resume: bool = False  # continue from the newest checkpoint of runs/<run.name>

    # derived values: computed, never stored
    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    @property
    def checkpoint_location(self) -> str:
        """This run's checkpoint directory: a local path or a URI (segr1.storage reads both)."""
        storage = self.checkpoint.storage
        return f"{storage.rstrip('/')}/{self.run.name}" if storage else str(self.run_dir / "checkpoints")


_CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "rollout.engine": ("hf", "vllm"),
    "reward.segmenter": ("sam2", "grabcut"),
    "reward.grammar": GRAMMARS,
    "reward.sam2.device": ("auto", "cpu", "cuda"),
    "learner.lr_schedule": ("constant", "cosine", "linear"),
    "learner.sync.transport": ("auto", "object_store", "nccl"),
    "algorithm.adv_scale": ADVANTAGE_SCALES,
    "algorithm.kl": KL_KINDS,
    "algorithm.agg": AGGREGATIONS,
    "algorithm.mode": ("sync", "async"),
    "algorithm.warm_start.targets": ("random", "ground_truth"),
    "logging.tui": ("auto", "live", "plain"),
    "logging.wandb.mode": ("offline", "online", "disabled"),
}


def _get(cfg: Config, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def validate(cfg: Config) -> Config:
    """Check choices and cross-field rules; raise ConfigError naming the key path."""
    for path, choices in _CHOICES.items():
        if _get(cfg, path) not in choices:
            raise ConfigError(f"{path}: must be one of {choices}, got {_get(cfg, path)!r}")
    positive = [
        "run.steps", "data.frame_size", "rollout.num_workers", "rollout.max_new_tokens", "reward.num_actors",
        "learner.num_ranks", "learner.micro_batch_size", "algorithm.group_size", "algorithm.prompts_per_step",
        "learner.sync.bucket_mb", "reward.max_batch_groups", "algorithm.epochs", "algorithm.mini_batches",
    ]
    for path in positive:
        if _get(cfg, path) < 1:
            raise ConfigError(f"{path}: must be >= 1, got {_get(cfg, path)!r}")
    for path in ("rollout.torch_threads", "reward.threads", "learner.torch_threads"):
        if _get(cfg, path) is not None and _get(cfg, path) < 0:
            raise ConfigError(f"{path}: must be >= 0 (0 = every core of the node) or null, got {_get(cfg, path)!r}")
    a = cfg.algorithm
    if a.adv_scale == "std" and a.group_size < 2:
        raise ConfigError(
            f"algorithm.group_size: std advantage scaling needs >= 2 completions per group, got {a.group_size} "
            "(set algorithm.adv_scale=none or raise the group size)"
        )
    if a.clip_low is not None and a.clip_low <= 0:
        raise ConfigError(f"algorithm.clip_low: must be > 0 or null, got {a.clip_low}")
    if a.clip_high is not None and a.clip_low is None:
        raise ConfigError("algorithm.clip_high: set algorithm.clip_low too (null clip_low means no clipping)")
    if a.tis_cap is not None and a.tis_cap < 1:
        raise ConfigError(f"algorithm.tis_cap: must be >= 1 or null, got {a.tis_cap} (a cap below 1 would "
                          "down-weight even tokens where the engine and the learner agree)")
    if a.mini_batches > a.prompts_per_step:
        raise ConfigError(f"algorithm.mini_batches: {a.mini_batches} mini-batches of whole groups need at least "
                          f"as many groups per step, got algorithm.prompts_per_step={a.prompts_per_step}")
    if not 0.0 < cfg.rollout.top_p <= 1.0:
        raise ConfigError(f"rollout.top_p: must be in (0, 1], got {cfg.rollout.top_p}")
    if cfg.rollout.temperature < 0:
        raise ConfigError(f"rollout.temperature: must be >= 0, got {cfg.rollout.temperature}")
    if cfg.learner.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"learner.zero_stage: must be 0, 1, 2 or 3, got {cfg.learner.zero_stage}")
    if a.mode == "async" and a.max_staleness < 1:
        raise ConfigError(f"algorithm.max_staleness: async mode needs >= 1, got {a.max_staleness}")
    if cfg.reward.grammar == "points" and cfg.reward.require_think:
        raise ConfigError("reward.require_think: the points grammar has no think block; set it to false")
    for group in ("rollout", "reward", "learner"):
        for name, amount in _get(cfg, f"{group}.resources").items():
            if name in ("CPU", "GPU", "memory") or amount <= 0:
                raise ConfigError(f"{group}.resources.{name}: custom resources only, each > 0 (CPUs and GPUs "
                                  f"are {group}.num_cpus / num_gpus), got {amount!r}")
    if a.max_draws < 1:
        raise ConfigError(f"algorithm.max_draws: must be >= 1, got {a.max_draws}")
    if a.max_draws > 1 and not (a.dynamic_sampling and a.mode == "sync"):
        raise ConfigError("algorithm.max_draws: refilling the batch needs algorithm.dynamic_sampling=true "
                          "and algorithm.mode=sync")
    for path in ("rollout.timeout_s", "reward.timeout_s", "learner.timeout_s", "learner.sync.timeout_s"):
        if _get(cfg, path) <= 0:
            raise ConfigError(f"{path}: must be > 0 seconds, got {_get(cfg, path)!r}")
    for path in ("rollout.max_retries", "reward.max_retries", "learner.max_restarts", "learner.restart_backoff_s"):
        if _get(cfg, path) < 0:
            raise ConfigError(f"{path}: must be >= 0, got {_get(cfg, path)!r}")
    if not 0 <= a.overlong_buffer < cfg.rollout.max_new_tokens:
        raise ConfigError(f"algorithm.overlong_buffer: must be >= 0 (0 = off) and below rollout.max_new_tokens="
                          f"{cfg.rollout.max_new_tokens}, got {a.overlong_buffer}")
    if a.overlong_factor < 0:
        raise ConfigError(f"algorithm.overlong_factor: must be >= 0, got {a.overlong_factor}")
    if cfg.checkpoint.keep < 1:
        raise ConfigError(f"checkpoint.keep: must be >= 1, got {cfg.checkpoint.keep}")
    if cfg.cluster.loopback_only and cfg.cluster.dashboard_host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"cluster.dashboard_host: {cfg.cluster.dashboard_host!r} would expose the dashboard "
                          "of a loopback-only local cluster; set cluster.loopback_only=false as well")
    return cfg


def _open(node: Any) -> Any:
    """Frozen dataclasses give read-only nodes; merging needs them writable (the result is frozen again)."""
    OmegaConf.set_readonly(node, None)
    for key in node.keys() if OmegaConf.is_dict(node) else ():
        child = node._get_node(key)
        if OmegaConf.is_config(child):
            _open(child)
    return node


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- YAML file <- `group.key=value` overrides; validated. Raises ConfigError naming the key."""
    schema = _open(OmegaConf.structured(Config))
    try:
        layers = [schema]
        if path is not None:
            if not Path(path).is_file():
                raise ConfigError(f"config file not found: {path}")
            layers.append(OmegaConf.load(path))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected group.key=value")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:  # unknown key / wrong type: OmegaConf names the full key
        where = f" in {path}" if path is not None else ""
        key = getattr(e, "full_key", "") or ""
        reason = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{key}: {reason}{where}" if key else f"{reason}{where}") from None
    assert isinstance(cfg, Config)
    return validate(cfg)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (written to runs/<name>/config.yaml; loadable by load_config)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
