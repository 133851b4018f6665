"""The `segr1` command line: the front door of the system.

    segr1 train --config configs/local_cpu.yaml [group.key=value ...]
    segr1 eval --config PATH --checkpoint DIR [--out EVAL.json] [--fresh] [group.key=value ...]
    segr1 predict --checkpoint DIR --image PATH --out MASK.png [--overlay PATH]
    segr1 data synth --out PATH --n N --seed S
    segr1 data convert {cod10k,camo,nc4k,duts,dis5k,refcoco,reasonseg} --root DIR --out PATH
    segr1 data convert NAME --root DIR --out PATH --skip-bad     (bad samples listed in PATH.skipped.csv)
    segr1 scale --run NAME [--rollout N] [--reward M]
    segr1 stop --run NAME
    segr1 status --run NAME
    segr1 --debug COMMAND ...     (a traceback also for bad input)

Bad input (a missing file or folder, a corrupt image or Parquet file, a bad config key or value, no cluster at
the address) ends a command with one line on stderr naming the bad thing and exit status 2; `user_errors()`
is the one list of what counts as bad input. Anything else is a bug and keeps its traceback. Cheap checks of a
command's inputs run here, before the heavy imports and work, so they fail fast and without a Ray cluster.

Heavy imports (torch, Ray, DeepSpeed) happen inside the commands, so `segr1 --help` is instant.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from segr1.errors import UsageError

CONVERTERS = ("cod10k", "camo", "nc4k", "duts", "dis5k", "refcoco", "reasonseg")
USER_ERROR_EXIT = 2  # as argparse's own usage errors
PROBE_TIMEOUT_S = 5.0  # an address that does not answer within this is reported, not waited on for minutes


def user_errors() -> dict[type[BaseException], str]:
    """Exception type -> the kind printed before its message: the one list of what counts as bad input."""
    import yaml

    from segr1.config import ConfigError
    from segr1.data.errors import DataError

    return {ConfigError: "config error", yaml.YAMLError: "config error", DataError: "data error",
            UsageError: "error", FileNotFoundError: "error", NotADirectoryError: "error",
            IsADirectoryError: "error", PermissionError: "error"}


def describe_user_error(error: BaseException) -> str | None:
    """`kind: message` on one line if `error` is bad input (also when raised inside a Ray task), else None."""
    ray_exceptions = sys.modules.get("ray.exceptions")
    if ray_exceptions is not None and isinstance(error, ray_exceptions.RayTaskError):
        error = error.cause  # the task's own error, without Ray's text of the remote traceback
    kind = next((kind for error_type, kind in user_errors().items() if isinstance(error, error_type)), None)
    if kind is None:
        return None
    if isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror}"  # not "[Errno 2] ...", which hides the path at the end
    else:
        message = str(error)
    return f"{kind}: " + " ".join(line.strip() for line in message.splitlines() if line.strip())


def describe_run_failure(error: BaseException) -> str | None:
    """`run failed: ...` on one line when a job ended because a stage failed for good (segr1.faults.StageError:
    it names the stage, the actor and the step), also when raised inside the job's Ray actor; else None."""
    from segr1.faults import StageError

    ray_exceptions = sys.modules.get("ray.exceptions")
    if ray_exceptions is not None and isinstance(error, ray_exceptions.RayTaskError):
        error = error.cause
    return f"run failed: {error}" if isinstance(error, StageError) else None


# ------------------------------------------------------------------------------------------ input checks
def _require_dir(path: str, option: str) -> None:
    if not Path(path).is_dir():
        raise UsageError(f"{option}: no directory at {path}")


def _require_writable_image(path: str, option: str) -> None:
    """An image file OpenCV can write at `path` (it returns False rather than raising when it cannot)."""
    import cv2

    if not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{option}: folder {Path(path).resolve().parent} does not exist")
    if not cv2.haveImageWriter(path):
        raise UsageError(f"{option}: cannot write an image with the extension of {path} (use .png)")


def _require_dataset(path: str, key: str, frame_size: int) -> None:
    """Open a Parquet dataset as training and evaluation will (schema, ids, tasks), naming the config key."""
    from segr1.data.dataset import SegDataset

    if not Path(path).is_file():
        raise UsageError(f"{key}: no Parquet file at {path}")
    SegDataset(path, frame_size)  # raises DataError naming the file, row and column


def _reachable_ray_address(address: str) -> str:
    """`address` as Ray resolves it (auto: RAY_ADDRESS, else the newest local cluster), checked to answer.

    Ray itself would retry an address without a cluster for minutes, logging each try, and the address file
    that "auto" reads can outlive its cluster.
    """
    from ray._private.services import canonicalize_bootstrap_address  # what ray.init uses

    if address.startswith("ray://"):
        return address  # Ray Client: its own connection checks apply
    if address not in ("auto", "local"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--address: expected HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    try:
        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError as error:  # auto, and no cluster found
        raise UsageError(f"--address {address}: {error}") from None
    if resolved is None:
        raise UsageError("--address local: would start a new, empty cluster; give auto or HOST:PORT")
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as error:
        raise UsageError(f"--address {address}: no Ray cluster answers at {resolved} ({error})") from None
    return resolved


def _connect_ray(address: str) -> None:
    """Join the Ray cluster at `address` quietly (no INFO lines), or fail in one line."""
    import logging

    import ray

    from cluster.job_control import NAMESPACE

    resolved = _reachable_ray_address(address)
    try:
        ray.init(address=resolved, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as error:  # it answers but refuses us, e.g. it wants an auth token we lack
        # Ray puts the reason as the last line of a traceback in the cause's text; its first sentence is enough
        lines = str(error.__cause__ or "").strip().splitlines()
        detail = f" ({lines[-1].strip().split('. ')[0]})" if lines else ""
        raise UsageError(f"--address {address}: {error}{detail}") from None


# ------------------------------------------------------------------------------------------ commands
def _cmd_train(args: argparse.Namespace) -> int:
    from segr1.config import load_config

    cfg = load_config(args.config, args.overrides)
    for key, path in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
        if path:  # empty means synthetic data, made by the job
            _require_dataset(path, key, cfg.data.frame_size)
    from cluster.job import train

    train(cfg)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from segr1.config import load_config

    cfg = load_config(args.config, args.overrides)
    _require_dir(args.checkpoint, "--checkpoint")
    if not cfg.data.eval:
        raise UsageError("data.eval: give the Parquet file to evaluate on (e.g. data.eval=cod10k_test.parquet)")
    _require_dataset(cfg.data.eval, "data.eval", cfg.data.frame_size)
    from frontdoor.eval_checkpoint import evaluate_checkpoint

    evaluate_checkpoint(cfg, args.checkpoint, out=args.out, fresh=args.fresh)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import cv2

    _require_dir(args.checkpoint, "--checkpoint")
    if not Path(args.image).is_file():
        raise UsageError(f"--image: no file at {args.image}")
    if cv2.imread(args.image, cv2.IMREAD_COLOR) is None:
        raise UsageError(f"--image: not a readable image: {args.image}")
    if args.config is not None and not Path(args.config).is_file():
        raise UsageError(f"--config: no file at {args.config}")
    _require_writable_image(args.out, "--out")
    if args.overlay:
        _require_writable_image(args.overlay, "--overlay")
    from frontdoor.predict import predict

    predict(args.checkpoint, args.image, args.out, overlay=args.overlay, config=args.config,
            instruction=args.instruction, overrides=args.overrides)
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from segr1.data.synth import synth_row, synthesize

    if args.n < 1:
        raise UsageError(f"--n: must be >= 1, got {args.n}")
    try:
        synth_row(args.seed, 0, args.size)  # the generator's own check of the size, before a file is started
    except ValueError as error:
        raise UsageError(f"--size: {error}") from None
    path = synthesize(args.out, n=args.n, seed=args.seed, size=args.size)
    print(f"wrote {args.n} synthetic samples to {path}")
    return 0


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from segr1.data.convert import convert

    stats = convert(args.name, args.root, args.out, split=args.split, skip_bad=args.skip_bad)
    print(stats.summary())
    return 0


def _cmd_scale(args: argparse.Namespace) -> int:
    if args.rollout is None and args.reward is None:
        raise UsageError("give --rollout N and/or --reward M")
    _connect_ray(args.address)
    from cluster.job_control import request_scale

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
    from cluster.job_control import request_stop

    _connect_ray(args.address)
    at = request_stop(args.run, address=args.address)
    print(f"run {args.run}: stop requested at step {at['step']}; the next step to start is the last "
          "(evaluated and checkpointed), then the job exits")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cluster.job_control import run_status

    _connect_ray(args.address)
    for key, value in run_status(args.run, address=args.address).items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segr1", description="Seg-R1 GRPO training for promptable segmentation.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of bad-input errors too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a policy with GRPO (starts or joins a Ray cluster)")
    p.add_argument("--config", required=True, help="YAML config (overrides of segr1.config defaults)")
    p.add_argument("overrides", nargs="*", help="group.key=value overrides, e.g. run.steps=10 resume=true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's eval set; writes eval.json")
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (runs/<name>/checkpoints/step_<N>)")
    p.add_argument("--out", default=None, help="eval.json path (default: inside the checkpoint directory); "
                   "the per-sample rows go beside it, to <stem>_samples.csv")
    p.add_argument("--fresh", action="store_true",
                   help="start over instead of resuming from the rows already in <stem>_samples.csv")
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
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable or mismatched samples (listed in OUT.skipped.csv) instead of failing")
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
    try:
        return args.func(args)
    except SystemExit as stop:  # the services' own one-line refusals, e.g. "no running job named ..."
        if args.debug or not isinstance(stop.code, str):
            raise
        line = stop.code if stop.code.startswith("segr1") else f"segr1: error: {stop.code}"
        print(line, file=sys.stderr)
        return 1
    except Exception as error:
        failed = None if args.debug else describe_run_failure(error)
        if failed is not None:  # retries and restarts were spent: the error says where, not a traceback
            print(f"segr1: {failed}", file=sys.stderr)
            return 1
        line = None if args.debug else describe_user_error(error)
        if line is None:
            raise  # a bug, or --debug: keep the traceback
        print(f"segr1: {line}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
