"""Helpers for end-to-end tests: launch `segr1 train` as users do, and read what it wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEGR1 = str(Path(sys.executable).with_name("segr1"))
CONFIG = str(ROOT / "configs" / "local_cpu.yaml")

# The embedded default, shrunk to seconds per step: still every real actor, just fewer and smaller batches.
TINY = [
    "data.synth_train_n=48", "data.synth_eval_n=4", "algorithm.prompts_per_step=2", "algorithm.group_size=4",
    "algorithm.warm_start.steps=2", "algorithm.eval_every=0", "rollout.max_new_tokens=48",
    "cluster.dashboard=false", "logging.tui=plain", "logging.wandb.mode=disabled", "logging.overlay_every=1",
    "algorithm.baseline_images=4",  # the blind prompt chosen on 4 training images: seconds, not a minute
    # a KL term, so every step updates: after 2 warm-start steps most completions fail to parse, and a step
    # whose every advantage is 0 with beta 0 is skipped (no version, no sync) - the tests follow the versions
    "algorithm.beta=0.04",
    f"model.tiny_dir={ROOT / '.cache' / 'tiny_vlm'}",
]


def listening_sockets(pid: int) -> list[tuple[int, str, str, int]]:
    """(pid, process name, ip, port) of every listening TCP socket of `pid` and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            found += [(proc.pid, proc.name(), c.laddr.ip, c.laddr.port)
                      for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that exited meanwhile
    return found


def is_loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # "::ffff:127.0.0.1" is IPv4 loopback on a dual-stack socket
    return (mapped or address).is_loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(out_dir: Path, name: str, *overrides: str) -> list[str]:
    return [SEGR1, "train", "--config", CONFIG, *TINY, f"run.output_dir={out_dir}", f"run.name={name}",
            *overrides]


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out.update({"PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}, **extra)
    return out


def run(args: list[str], timeout: float = 420, **extra_env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=ROOT, env=env(**extra_env), capture_output=True, text=True, timeout=timeout,
                          check=False)  # a failure is asserted below, with its output
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def steps(metrics_path: Path) -> list[dict]:
    """The per-step rows of metrics.jsonl (warm-start rows have no "step")."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "step" in r]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""
