"""Requests from outside a running job (`segr1 scale`, `segr1 stop`), applied by the loop at step boundaries.

The controller runs as a threaded actor: `segr1 scale` calls arrive on another thread while `run()` is in a
step. They are queued here and taken by the loop thread between steps, so a pool is never resized under a
batch in flight. A caller may wait for its request to be applied; one that the run can no longer apply
(the run ended first) is answered with an error instead of being dropped silently.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


class RequestNotApplied(RuntimeError):
    """The run finished (or failed) before a scale request reached a step boundary."""


@dataclass
class _Pending:
    sizes: dict[str, int]
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str | None = None


class RunRequests:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scales: list[_Pending] = []
        self._stop = False
        self._closed: str | None = None  # why no more requests can be applied

    # ------------------------------------------------------------------ callers (any thread)
    def scale(self, sizes: dict[str, int], wait_s: float | None) -> dict[str, Any]:
        """Queue a resize; with `wait_s`, block until the loop applied it and return what it applied."""
        pending = _Pending({k: int(v) for k, v in sizes.items()})
        with self._lock:
            if self._closed:
                raise RequestNotApplied(self._closed)
            self._scales.append(pending)
        if wait_s is None:
            return {"applied": False, **pending.sizes}
        if not pending.done.wait(wait_s):
            raise TimeoutError(f"the resize {pending.sizes} was not applied within {wait_s:.0f} s "
                               "(it stays queued for the next step boundary)")
        if pending.error:
            raise RequestNotApplied(pending.error)
        return {"applied": True, **(pending.result or {})}

    def stop(self) -> None:
        with self._lock:
            if self._closed:
                raise RequestNotApplied(self._closed)
            self._stop = True

    # ------------------------------------------------------------------ the loop thread
    def take_scale(self) -> tuple[dict[str, int], list[_Pending]]:
        """All queued resizes merged (the newest size of each pool wins) and their waiters."""
        with self._lock:
            taken, self._scales = self._scales, []
        merged: dict[str, int] = {}
        for pending in taken:
            merged.update(pending.sizes)
        return merged, taken

    @staticmethod
    def answer(taken: list[_Pending], result: dict[str, Any] | None = None, error: str | None = None) -> None:
        for pending in taken:
            pending.result, pending.error = result, error
            pending.done.set()

    def stop_requested(self) -> bool:
        with self._lock:
            return self._stop

    def close(self, why: str) -> None:
        """The run is ending: refuse new requests and answer queued ones with `why`."""
        with self._lock:
            self._closed = why
            taken, self._scales = self._scales, []
        self.answer(taken, error=why)
