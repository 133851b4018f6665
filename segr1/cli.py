"""The `segr1` command line: the front door of the system.

    segr1 train --config configs/local_cpu.yaml [group.key=value ...]
    segr1 eval --config PATH --checkpoint DIR [group.key=value ...]
    segr1 predict --checkpoint DIR --image PATH --out MASK.png [--overlay PATH]
    segr1 data synth --out PATH --n N --seed S
    segr1 data convert {cod10k,camo,nc4k,duts,dis5k,refcoco,reasonseg} --root DIR --out PATH
    segr1 scale --run NAME [--rollout N] [--reward M]
    segr1 status --run NAME

Heavy imports (torch, Ray, DeepSpeed) happen inside the commands, so `segr1 --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

CONVERTERS = ("cod10k", "camo", "nc4k", "duts", "dis5k", "refcoco", "reasonseg")


def _cmd_train(args: argparse.Namespace) -> int:
    from cluster.job import train
    from segr1.config import load_config

    cfg = load_config(args.config, args.overrides)
    train(cfg)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from cluster.evaluate import evaluate_checkpoint
    from segr1.config import load_config

    cfg = load_config(args.config, args.overrides)
    evaluate_checkpoint(cfg, args.checkpoint, out=args.out)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cluster.predict import predict

    predict(args.checkpoint, args.image, args.out, overlay=args.overlay, config=args.config,
            instruction=args.instruction, overrides=args.overrides)
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from segr1.data.synth import synthesize

    path = synthesize(args.out, n=args.n, seed=args.seed, size=args.size)
    print(f"wrote {args.n} synthetic samples to {path}")
    return 0


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from segr1.data.convert import convert

    stats = convert(args.name, args.root, args.out, split=args.split)
    print(f"wrote {args.out}")
    print(stats.summary())
    return 0


def _cmd_scale(args: argparse.Namespace) -> int:
    from cluster.scaling import request_scale

    if args.rollout is None and args.reward is None:
        raise SystemExit("segr1 scale: give --rollout N and/or --reward M")
    wait_s = None if args.no_wait else args.timeout
    sizes = request_scale(args.run, rollout=args.rollout, reward=args.reward, address=args.address, wait_s=wait_s)
    if not sizes["applied"]:
        queued = ", ".join(f"{k} -> {v}" for k, v in sizes.items() if k != "applied")
        print(f"run {args.run}: queued ({queued}); applied at the next step boundary")
        return 0
    print(f"run {args.run}: rollout workers -> {sizes['rollout']}, reward actors -> {sizes['reward']} "
          f"(applied before step {sizes['before_step']})")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from cluster.scaling import request_stop

    at = request_stop(args.run, address=args.address)
    print(f"run {args.run}: stop requested at step {at['step']}; the next step to start is the last "
          "(evaluated and checkpointed), then the job exits")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cluster.scaling import run_status

    for key, value in run_status(args.run, address=args.address).items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segr1", description="Seg-R1 GRPO training for promptable segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a policy with GRPO (starts or joins a Ray cluster)")
    p.add_argument("--config", required=True, help="YAML config (overrides of segr1.config defaults)")
    p.add_argument("overrides", nargs="*", help="group.key=value overrides, e.g. run.steps=10 resume=true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's eval set; writes eval.json")
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (runs/<name>/checkpoints/step_<N>)")
    p.add_argument("--out", default=None, help="eval.json path (default: inside the checkpoint directory)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="segment one image with a trained policy")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True, help="mask PNG to write (0/255, the image's size)")
    p.add_argument("--overlay", default=None, help="also write an overlay PNG with boxes and points")
    p.add_argument("--config", default=None, help="default: the run's config.yaml next to the checkpoints")
    p.add_argument("--instruction", default=None, help="default: the foreground instruction")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_predict)

    data = sub.add_parser("data", help="make or convert datasets (Parquet)").add_subparsers(dest="data_cmd",
                                                                                          required=True)
    p = data.add_parser("synth", help="deterministic synthetic camouflaged-object data")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.set_defaults(func=_cmd_data_synth)
    p = data.add_parser("convert", help="convert a public dataset layout to Parquet")
    p.add_argument("name", choices=CONVERTERS)
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default=None, help="default: the data set's first split (e.g. train; nc4k: test)")
    p.set_defaults(func=_cmd_data_convert)

    for name, helptext, func in (("scale", "resize the pools of a running job", _cmd_scale),
                                 ("stop", "end a running job after its next step (with a checkpoint)", _cmd_stop),
                                 ("status", "show a running job", _cmd_status)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--run", required=True, help="run.name of the job")
        p.add_argument("--address", default="auto", help="Ray address (default: the running cluster)")
        p.set_defaults(func=func)
        if name == "scale":
            p.add_argument("--rollout", type=int, default=None, help="rollout workers")
            p.add_argument("--reward", type=int, default=None, help="reward actors")
            p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the resize")
            p.add_argument("--no-wait", action="store_true", help="queue the resize and return at once")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from segr1.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"segr1: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
