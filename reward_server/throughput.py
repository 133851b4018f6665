"""Throughput accounting for the reward pool: cumulative totals, and rates over the time it had work.

Rates divide by *busy* time (some call in flight), not wall time, so a pool that idles while the learner
trains still reports how fast it scores. Each `read` starts a new window. Not thread-safe: the pool calls it
under its lock.
"""

from __future__ import annotations

WINDOW_KEYS = ("groups", "masks", "encode_s", "decode_s")


class Throughput:
    """Counts groups, masks and actor seconds; `read` returns rates since the previous read plus totals."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys((*WINDOW_KEYS, "retries"), 0.0)
        self._window = dict.fromkeys(WINDOW_KEYS, 0.0)
        self._busy_s = 0.0
        self._busy_since: float | None = None

    def add(self, **amounts: float) -> None:
        for key, amount in amounts.items():
            self.totals[key] += amount
            if key in self._window:
                self._window[key] += amount

    def set_busy(self, busy: bool, now: float) -> None:
        """Mark the start (True) or end (False) of a stretch with work in flight."""
        if busy and self._busy_since is None:
            self._busy_since = now
        elif not busy and self._busy_since is not None:
            self._busy_s += now - self._busy_since
            self._busy_since = None

    def read(self, now: float) -> dict[str, float]:
        """groups_per_s, masks_per_s, encode_s, decode_s over this window; *_total since the start."""
        busy_s = self._busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)
        window = self._window
        self._window, self._busy_s = dict.fromkeys(WINDOW_KEYS, 0.0), 0.0
        if self._busy_since is not None:
            self._busy_since = now
        return {
            "groups_per_s": window["groups"] / busy_s if busy_s > 0 else 0.0,
            "masks_per_s": window["masks"] / busy_s if busy_s > 0 else 0.0,
            "encode_s": window["encode_s"],
            "decode_s": window["decode_s"],
            **{f"{key}_total": value for key, value in self.totals.items()},
        }
