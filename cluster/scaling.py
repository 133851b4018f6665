"""`segr1 scale` and `segr1 status`: talk to the named controller actor of a running job.

The controller applies a resize at its next step boundary: new rollout workers receive the current weights
before they serve, removed workers and reward actors finish their in-flight work first.
"""

from __future__ import annotations

from typing import Any

import ray

NAMESPACE = "segr1"


def controller_name(run_name: str) -> str:
    """The named actor `segr1 train` registers for a run, in namespace "segr1"."""
    return f"segr1-controller-{run_name}"


def _controller(run_name: str, address: str) -> Any:
    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    try:
        return ray.get_actor(controller_name(run_name), namespace=NAMESPACE)
    except ValueError:
        raise SystemExit(f"no running job named {run_name!r} on the Ray cluster at {address!r} "
                         f"(looked for actor {controller_name(run_name)!r} in namespace {NAMESPACE!r})") from None


def request_scale(run_name: str, rollout: int | None = None, reward: int | None = None,
                  address: str = "auto") -> dict[str, int]:
    for name, value in (("--rollout", rollout), ("--reward", reward)):
        if value is not None and value < 1:
            raise SystemExit(f"segr1 scale: {name} must be >= 1, got {value}")
    return ray.get(_controller(run_name, address).scale.remote(rollout=rollout, reward=reward))


def run_status(run_name: str, address: str = "auto") -> dict[str, Any]:
    return ray.get(_controller(run_name, address).progress.remote())
