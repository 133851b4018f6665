"""Benchmark: this project's GRPO against TRL's GRPOTrainer on the same tiny VLM, data, reward and settings.

Run:  nice -n 19 .venv/bin/python bench/trl_side_by_side.py [--steps 20] [--rounds 2] [--keep DIR]
          [--trl-threads 0] [--project-overrides k=v ...] [key=value ...]
      (``make bench SLOW=1`` runs it with the defaults; trailing key=value overrides configure BOTH sides: they are
      read through segr1.config, so G, prompts per step, tokens, temperature, lr and micro-batch come from the
      same resolved config.)

What it does:
1. Installs TRL 1.16 (with accelerate, datasets and their pure-Python needs) into .cache/trl-bench/ with
   `pip install --target` (never into .venv) unless it is there; the TRL side imports it through PYTHONPATH.
2. Builds what the tree holds now: the offline tiny VLM (rollout.tiny_model) and the synthetic data sets
   (segr1.data.synth), then warm-starts the model once with the project's own warm start (`segr1 train`, one
   GRPO step, HF export). Both sides start from that exported directory.
3. Alternates A B A B (`--rounds` times): `segr1 train` on configs/local_cpu.yaml (sync, the project side),
   then this script's TRL worker (`--trl-worker`) in a fresh process. Both train `--steps` GRPO steps on the
   same prompts in the same order (the project's EpochSampler order, fed to TRL unshuffled), sample G
   completions per prompt with the same special tokens suppressed, score them with the project's parser,
   GrabCut segmenter and reward (a RewardActor in-process is TRL's reward function, one request per group),
   and take one AdamW step per batch with the same lr and schedule (the learner's own warm-up rule drives a
   LambdaLR handed to TRL), betas, eps, weight decay, clipping, micro-batch and loss (seq-mean-token-mean,
   clip 0.2, beta from config). (Until the config gained a 10-step warm-up, TRL ran a constant lr; with the
   warm-up on one side only, TRL's first update at lr 1e-3 broke the format: reward 0 from step 2.)
4. Prints per run: steady-state completions/s (median over steps 3..N of completions / step time), the
   whole-process wall time, mean reward of the last steps, the machine load before and after; then the
   project/TRL ratios of the medians over rounds.

Step time: the project's `time/step_s` (draw, generate, score, learn, weight sync); TRL's on_step_begin ->
on_step_end (generate, score, forward/backward, optimizer step). Both leave out logging between steps.
Whole-process time includes each side's start-up: Ray and three actors, the forced start/end evaluations and
the final checkpoint for the project; model load and trainer set-up for TRL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: make `bench.common` importable; stop bench/ shadowing packages

from bench.common import load_1min, load_average, print_table

CONFIG = "configs/local_cpu.yaml"
TRL_TARGET = ROOT / ".cache" / "trl-bench"
# TRL and what it imports that .venv lacks; pure Python except xxhash, all from the local wheel store.
TRL_PACKAGES = ["trl==1.16.0", "accelerate", "datasets", "pandas", "dill", "multiprocess", "xxhash", "fsspec",
                "huggingface-hub"]
# Project side: only what TRL does not do either is switched off or made small (the forced start/end evals
# and the final checkpoint stay: they are part of a training run here). clip_low=0.2: TRL always clips.
PROJECT_OVERRIDES = [
    "algorithm.clip_low=0.2",
    "algorithm.eval_every=0",
    "algorithm.baseline_images=0",
    "data.eval_size=4",
    "logging.overlay_every=0",
    "checkpoint.every=0",
    "checkpoint.export_hf=false",
    "cluster.dashboard=false",
    "cluster.metrics_export_port=0",
    "logging.tui=plain",
    "logging.wandb.mode=disabled",
]
# `--tuned`: a second project side that uses every core in every stage of a sync run (segr1.threads): two
# rollout shards generate at once, the learner and the reward actor take every core while they run alone.
TUNED = ["rollout.num_workers=2", "learner.torch_threads=0", "reward.threads=0"]
SKIP = 2  # steps left out of the steady state (first generate/compile, allocator warm-up)


# ------------------------------------------------------------------------------------------------ set-up
def ensure_trl() -> None:
    if (TRL_TARGET / "trl" / "__init__.py").is_file():
        return
    print(f"installing TRL into {TRL_TARGET} (not into .venv) ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(TRL_TARGET), "--no-deps",
                    *TRL_PACKAGES], check=True)


def run_logged(command: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None) -> float:
    """Run a command with its output in log_path; returns its wall time, exits with the log tail on failure."""
    env = {k: v for k, v in (env or os.environ).items() if k != "RAY_ADDRESS"}  # always a fresh local cluster
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
                              check=False)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-40:])
        raise SystemExit(f"{command[:3]} failed (exit {done.returncode}); last lines of {log_path}:\n{tail}")
    return wall_s


def prepare(out: Path, args: argparse.Namespace) -> dict[str, str]:
    """Data sets and the warm-started model, built from the tree as it is now; paths for both sides."""
    from segr1.config import load_config
    from segr1.data.synth import synthesize

    cfg = load_config(ROOT / CONFIG, args.overrides)
    data = {}
    for name, n, seed in (("train", cfg.data.synth_train_n, cfg.data.synth_seed),
                          ("eval", cfg.data.synth_eval_n, cfg.data.synth_seed + 1)):
        path = out / "data" / f"{name}.parquet"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            synthesize(str(path), n=n, seed=seed, size=cfg.data.synth_size)
        data[name] = str(path)
    model = out / "warm" / "hf_model"
    if not (model / "config.json").is_file():
        print(f"warm start ({cfg.algorithm.warm_start.steps} supervised steps, then 1 GRPO step) ... "
              f"{load_average()}", flush=True)
        overrides = [f"run.output_dir={out}", "run.name=warm", "run.steps=1", f"model.tiny_dir={out / 'tiny_vlm'}",
                     f"data.train={data['train']}", f"data.eval={data['eval']}", *PROJECT_OVERRIDES,
                     "checkpoint.export_hf=true", *args.overrides]
        run_logged([str(ROOT / ".venv/bin/segr1"), "train", "--config", CONFIG, *overrides], out / "warm.log",
                   args.timeout_s)
    return {"model": str(model), **data}


# ------------------------------------------------------------------------------------------------ sides
def project_command(out: Path, paths: dict[str, str], name: str, steps: int, *overrides: str) -> list[str]:
    """`segr1 train` for the project side: the prepared model and data, run `name` under `out`, PROJECT_OVERRIDES,
    then `overrides` (later ones win). bench/startup.py runs the same command."""
    return [str(ROOT / ".venv/bin/segr1"), "train", "--config", CONFIG, f"run.output_dir={out}", f"run.name={name}",
            f"run.steps={steps}", f"model.path={paths['model']}", f"data.train={paths['train']}",
            f"data.eval={paths['eval']}", "algorithm.warm_start.steps=0", *PROJECT_OVERRIDES, *overrides]


def run_project(out: Path, paths: dict[str, str], index: int, args: argparse.Namespace, variant: str) -> dict:
    name = f"project_{variant}_{index}"
    extra = TUNED if variant == "tuned" else []
    load_before = load_1min()
    wall_s = run_logged(project_command(out, paths, name, args.steps, *args.overrides, *args.project_overrides, *extra),
                        out / f"{name}.log", args.timeout_s)
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "time/step_s" in r]
    completions = [round(r["throughput/samples_per_s"] * r["time/step_s"]) for r in steps]
    return {"side": f"project {variant}", "step_s": [r["time/step_s"] for r in steps], "completions": completions,
            "rewards": [r["reward/mean"] for r in steps], "wall_s": wall_s, "load_before": load_before,
            "load_after": load_1min(),
            "stages": {k: statistics.median(r[k] for r in steps[SKIP:] or steps)
                       for k in ("time/rollout_s", "time/reward_s", "time/learn_s", "time/sync_s")}}


def run_trl(out: Path, paths: dict[str, str], index: int, args: argparse.Namespace, threads: int) -> dict:
    name = f"trl_t{threads}_{index}"
    result_path = out / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--trl-worker", str(result_path),
               "--model", paths["model"], "--train", paths["train"], "--steps", str(args.steps),
               "--trl-threads", str(threads), "--workdir", str(out / name), *args.overrides]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TRL_TARGET), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    load_before = load_1min()
    wall_s = run_logged(command, out / f"{name}.log", args.timeout_s, env)
    result = json.loads(result_path.read_text())
    return {"side": f"trl threads {threads or 'default'}", **result, "wall_s": wall_s, "load_before": load_before, "load_after": load_1min()}


# ------------------------------------------------------------------------------------------------ TRL worker
def trl_worker(result_path: Path, args: argparse.Namespace) -> None:
    """One TRL GRPOTrainer run (in its own process, TRL on sys.path); writes per-step times and rewards."""
    import numpy as np
    import torch
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from learner.deepspeed_config import lr_lambda
    from reward_server.actor import RewardActor
    from segr1.chat import encode_prompt, messages, non_output_token_ids
    from segr1.config import load_config
    from segr1.data.dataset import SegDataset
    from segr1.data.sampler import EpochSampler
    from segr1.protocol import RewardRequest

    if args.trl_threads[0] > 0:
        torch.set_num_threads(args.trl_threads[0])
    cfg = load_config(ROOT / CONFIG, args.overrides)
    algo, learner, rollout = cfg.algorithm, cfg.learner, cfg.rollout
    frame, group = cfg.data.frame_size, algo.group_size
    data = SegDataset(args.train, frame)
    # the project's draw order: EpochSampler(seed=run.seed), prompts_per_step per step
    sampler = EpochSampler(len(data), seed=cfg.run.seed)
    order = [i for _ in range(args.steps) for i in sampler.next_batch(algo.prompts_per_step)]
    samples = {i: data.load(i) for i in set(order)}
    system = rollout.system_prompt or None
    # content as lists of parts everywhere (Arrow needs one type per field); the chat template renders a text
    # part exactly as a plain string
    def prompt(instruction: str) -> list[dict]:
        return [{"role": m["role"], "content": m["content"] if isinstance(m["content"], list) else
                 [{"type": "text", "text": m["content"]}]} for m in messages(instruction, frame, system)]

    dataset = Dataset.from_list([{"prompt": prompt(samples[i].instruction), "image": Image.fromarray(samples[i].image),
                                  "sample_index": i} for i in order])

    scorer = RewardActor(cfg, "trl-reward")

    def seg_reward(completions, sample_index, **_) -> list[float]:
        """The project's reward: completions come G per prompt, consecutively; one request per group."""
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        requests = [RewardRequest(group_id=f"{k}", image=samples[sample_index[k]].image,
                                  gt_mask=samples[sample_index[k]].mask, texts=texts[k:k + group])
                    for k in range(0, len(texts), group)]
        return [b.reward for r in scorer.score(requests) for b in r.breakdowns]

    processor = AutoProcessor.from_pretrained(args.model)
    batch = algo.prompts_per_step * group
    micro = min(learner.micro_batch_size, batch)
    if batch % micro:
        raise SystemExit(f"TRL needs the batch ({batch}) to be a multiple of the micro-batch ({micro})")
    masked = sorted(set(non_output_token_ids(processor.tokenizer)) - {processor.tokenizer.eos_token_id})
    config = GRPOConfig(
        output_dir=str(args.workdir), max_steps=args.steps, seed=cfg.run.seed, use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, shuffle_dataset=False,
        per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro,  # one update per batch
        num_generations=group, max_completion_length=rollout.max_new_tokens, temperature=rollout.temperature,
        top_p=rollout.top_p, top_k=0, generation_kwargs={"suppress_tokens": masked},
        learning_rate=learner.lr, weight_decay=learner.weight_decay,  # optimizer and schedule: passed below
        max_grad_norm=learner.grad_clip,
        beta=algo.beta, epsilon=0.2, num_iterations=1, loss_type="grpo", scale_rewards="group",
        # TRL's default recomputes every layer's activations in the backward pass: a memory saving that a
        # 1M-parameter model does not need and that cost TRL 5-10x per step here; the project does not do it
        gradient_checkpointing=False,
    )

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.t0)

    # The project's optimizer and learning-rate schedule, stepped once per update on both sides: AdamW, and the
    # learner's own warm-up rule ((step + 1) / warmup_steps; HF's constant_with_warmup starts at lr 0)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learner.lr, betas=tuple(learner.adam_betas), eps=1e-8,
                                  weight_decay=learner.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(learner.lr_schedule, learner.warmup_steps, total_steps=args.steps))
    trainer = GRPOTrainer(model=model, reward_funcs=seg_reward, args=config, train_dataset=dataset,
                          processing_class=processor, callbacks=[StepTimer()], optimizers=(optimizer, schedule))
    # The same prompt tokens and pixels as the project's engines, checked on the first prompt.
    first = [{"role": m["role"], "content": [{"type": "image", "image": dataset[0]["image"]} if p["type"] == "image"
                                              else {"type": "text", "text": p["text"]} for p in m["content"]]}
             for m in dataset[0]["prompt"]]
    ids, _, fields = trainer._tokenize_prompts([first])
    ours_ids, ours_vision = encode_prompt(processor, samples[order[0]].image, samples[order[0]].instruction, frame,
                                          system)
    same_tokens = list(ids[0]) == list(ours_ids)
    same_pixels = bool(torch.equal(torch.as_tensor(fields["pixel_values"]), ours_vision["pixel_values"]))
    trainer.train()
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    result_path.write_text(json.dumps({
        "step_s": times, "completions": [batch] * len(times), "rewards": rewards,
        "torch_threads": torch.get_num_threads(), "same_prompt_tokens": same_tokens, "same_pixels": same_pixels,
        "reward_mean_check": float(np.mean(rewards)) if rewards else None}))


# ------------------------------------------------------------------------------------------------ report
def steady(run: dict) -> float:
    """Median completions/s over the steps after the first SKIP."""
    pairs = list(zip(run["completions"], run["step_s"]))[SKIP:] or list(zip(run["completions"], run["step_s"]))
    return statistics.median(c / s for c, s in pairs)


def last_reward(run: dict, k: int) -> float:
    return statistics.fmean(run["rewards"][-k:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps per run (> 2)")
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs, run alternately")
    parser.add_argument("--last", type=int, default=5, help="steps the final mean reward is taken over")
    parser.add_argument("--trl-threads", type=int, nargs="+", default=[0, 1],
                        help="TRL torch threads, one TRL side each (0 = torch's default: every core)")
    parser.add_argument("--tuned", action=argparse.BooleanOptionalAction, default=True,
                        help=f"also run the project with {' '.join(TUNED)}")
    parser.add_argument("--project-overrides", nargs="*", default=[], help="key=value for the project side only")
    parser.add_argument("--keep", type=Path, default=None, help="write everything here and keep it")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per process")
    parser.add_argument("--trl-worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--train", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for both sides")
    args = parser.parse_args()
    if args.trl_worker is not None:
        trl_worker(args.trl_worker, args)
        return
    if args.steps <= SKIP:
        parser.error(f"--steps must be > {SKIP} (the first {SKIP} are left out of the steady state)")

    ensure_trl()
    with tempfile.TemporaryDirectory(prefix="segr1_bench_trl_") as tmp:
        out = (args.keep or Path(tmp)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        print(f"start: {load_average()}", flush=True)
        paths = prepare(out, args)
        runs = []
        sides = [(run_project, "default"), *([(run_project, "tuned")] if args.tuned else []),
                 *((run_trl, threads) for threads in args.trl_threads)]
        for index in range(args.rounds):
            for fn, setting in sides:
                print(f"round {index + 1}: {fn.__name__} {setting} ({args.steps} steps) ... {load_average()}",
                      flush=True)
                runs.append(fn(out, paths, index, args, setting))
        print(f"end: {load_average()}", flush=True)

    print_table(
        f"GRPO, project vs TRL 1.16, {args.steps} steps per run, A B alternating "
        f"(completions/s: median of steps {SKIP + 1}..{args.steps})",
        ["side", "completions/s", "process wall s", f"reward last {args.last}", "reward first 2", "load before",
         "load after", "notes"],
        [[r["side"], steady(r), round(r["wall_s"], 1), last_reward(r, args.last), statistics.fmean(r["rewards"][:2]),
          r["load_before"], r["load_after"],
          " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in r["stages"].items()) if "stages" in r else
          f"threads {r['torch_threads']}, same tokens {r['same_prompt_tokens']}, same pixels {r['same_pixels']}"]
         for r in runs],
    )
    by_side: dict[str, list[dict]] = {}
    for r in runs:
        by_side.setdefault(r["side"], []).append(r)
    rate = {side: statistics.median(steady(r) for r in rs) for side, rs in by_side.items()}
    wall = {side: statistics.median(r["wall_s"] for r in rs) for side, rs in by_side.items()}
    reward = {side: statistics.fmean(last_reward(r, args.last) for r in rs) for side, rs in by_side.items()}
    trl_best = max((side for side in by_side if side.startswith("trl")), key=rate.get)  # TRL at its best
    print(f"medians over {args.rounds} rounds; TRL's best side: {trl_best}")
    for side in by_side:
        print(f"  {side:24s} {rate[side]:6.2f} completions/s ({rate[side] / rate[trl_best]:.2f}x TRL's best), "
              f"process {wall[side]:6.1f} s ({wall[side] / wall[trl_best]:.2f}x), "
              f"reward last {args.last} steps {reward[side]:.3f}")


if __name__ == "__main__":
    main()
