"""`segr1 scale`, `segr1 stop` and `segr1 status`: talk to the named controller actor of a running job.

The controller applies a resize at its next step boundary: new rollout workers receive the current weights
before they serve, removed workers and reward actors finish their in-flight work first. `segr1 scale`
waits until the resize is applied (or says why it could not be: the run ended first). `segr1 stop` makes
the next step to start the last one, evaluated and checkpointed like any last step; the job then exits 0.
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


def _call(method: Any, what: str, **kwargs: Any) -> Any:
    try:
        return ray.get(method.remote(**kwargs))
    except ray.exceptions.RayTaskError as e:  # the controller's own error, without Ray's traceback wrapping
        raise SystemExit(f"{what}: {e.cause}") from None
    except ray.exceptions.RayActorError:
        raise SystemExit(f"{what}: the run's controller is gone (the job ended or failed)") from None


def request_scale(run_name: str, rollout: int | None = None, reward: int | None = None,
                  address: str = "auto", wait_s: float | None = 600.0) -> dict[str, Any]:
    """Resize the pools of a running job; with `wait_s`, return once applied (sizes and the step)."""
    for name, value in (("--rollout", rollout), ("--reward", reward)):
        if value is not None and value < 1:
            raise SystemExit(f"segr1 scale: {name} must be >= 1, got {value}")
    return _call(_controller(run_name, address).scale, "segr1 scale", rollout=rollout, reward=reward,
                 wait_s=wait_s)


def request_stop(run_name: str, address: str = "auto") -> dict[str, int]:
    """Ask a running job to end after the next step to start (evaluated and checkpointed)."""
    return _call(_controller(run_name, address).stop, "segr1 stop")


def run_status(run_name: str, address: str = "auto") -> dict[str, Any]:
    return _call(_controller(run_name, address).progress, "segr1 status")
