"""Live terminal view of a training run (rich), or one plain log line per step where there is no terminal.

    with LiveView(total_steps=20, run_name="local_cpu", mode="auto") as view:  # or LiveView.from_config(cfg)
        view.update({"step": 1, "reward/mean": 0.4, "time/rollout_s": 1.2, ...})

update() may be called once per step or polled (e.g. every second from the controller's progress()): a
plain line is printed only when the step changes, and a "steps" key updates the total.

mode "live" draws the live view, "plain" prints plain lines, "auto" draws it only when the stream is a TTY
(under `ray job submit` or in CI the output is a log, where a redrawn screen would be noise).
The live view shows a progress bar over steps and a table: per-stage seconds, samples/s, reward, format
rate, IoU, held-out IoU with its blind and oracle baselines and the localisation gain, KL, pool sizes,
weights version and staleness. Missing keys are shown as "-".
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from segr1.config import Config

TUI_MODES = ("auto", "live", "plain")
STAGES = ("rollout", "reward", "learn", "sync")

# (label, key, format) of each value on the plain line and in the table, in reading order.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("reward", "reward/mean", "{:.3f}"),
    ("format", "reward/format", "{:.2f}"),
    ("iou", "reward/iou", "{:.3f}"),
    ("eval iou", "eval/iou", "{:.3f}"),
    ("shuffled", "eval/iou_shuffled", "{:.3f}"),
    ("blind", "eval/iou_blind", "{:.3f}"),
    ("oracle", "eval/iou_oracle", "{:.3f}"),
    ("gain", "eval/localisation_gain", "{:.2f}"),
    ("kl", "policy/kl", "{:.4g}"),
    ("loss", "policy/loss", "{:.4g}"),
    ("samples/s", "throughput/samples_per_s", "{:.2f}"),
    ("step s", "time/step_s", "{:.2f}"),
    ("version", "weights/version", "{:.0f}"),
    ("staleness", "pipeline/staleness", "{:.0f}"),
    ("rollout workers", "pool/rollout_workers", "{:.0f}"),
    ("reward actors", "pool/reward_actors", "{:.0f}"),
)


def _fmt(metrics: Mapping[str, Any], key: str, spec: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "-"
    try:
        return spec.format(float(value))
    except (TypeError, ValueError):
        return str(value)


def format_step_line(metrics: Mapping[str, Any], total_steps: int) -> str:
    """One log line: `step 3/20 | reward 0.412 | ... | rollout 1.20s reward 0.80s ...` (present keys only)."""
    parts = [f"step {metrics.get('step', '?')}/{total_steps}"]
    parts += [
        f"{label} {_fmt(metrics, key, spec)}" for label, key, spec in FIELDS if metrics.get(key) is not None
    ]
    stages = [f"{s} {_fmt(metrics, f'time/{s}_s', '{:.2f}')}s" for s in STAGES if f"time/{s}_s" in metrics]
    if stages:
        parts.append(" ".join(stages))
    return " | ".join(parts)


def _use_live(mode: str, stream: TextIO) -> bool:
    if mode not in TUI_MODES:
        raise ValueError(f"logging.tui: must be one of {TUI_MODES}, got {mode!r}")
    if mode == "auto":
        return bool(getattr(stream, "isatty", lambda: False)())
    return mode == "live"


class LiveView:
    """Context manager; update(metrics) per step or per poll."""

    def __init__(
        self, total_steps: int, run_name: str = "", mode: str = "auto", stream: TextIO | None = None
    ):
        self.total_steps = total_steps
        self.run_name = run_name
        self.stream = stream if stream is not None else sys.stdout
        self.live_mode = _use_live(mode, self.stream)
        self._live: Live | None = None
        self._progress: Progress | None = None
        self._task: Any = None
        self._last: dict[str, Any] = {}  # merged: keys missing from a row keep their last value (eval IoU)
        self._printed_step: Any = None

    @classmethod
    def from_config(cls, cfg: Config, stream: TextIO | None = None) -> LiveView:
        """A view over cfg.run.steps steps of run cfg.run.name, in mode cfg.logging.tui."""
        return cls(cfg.run.steps, cfg.run.name, mode=cfg.logging.tui, stream=stream)

    def __enter__(self) -> Self:
        if self.live_mode:
            console = Console(file=self.stream, force_terminal=True)
            self._progress = Progress(
                TextColumn(f"[bold]{self.run_name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._progress.add_task("steps", total=self.total_steps)
            self._live = Live(self._renderable(), console=console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, metrics: Mapping[str, Any]) -> None:
        """Show the latest metrics ("step" = optimizer steps completed so far; rows without it, such as
        warm-start progress, only refresh the table)."""
        if isinstance(metrics.get("steps"), int):
            self.total_steps = metrics["steps"]
        self._last.update(metrics)
        step = metrics.get("step")
        if self._live is None:
            if step is not None and step != self._printed_step:
                print(format_step_line(metrics, self.total_steps), file=self.stream, flush=True)
                self._printed_step = step
            return
        assert self._progress is not None
        if isinstance(step, (int, float)):
            self._progress.update(self._task, completed=step, total=self.total_steps)
        self._live.update(self._renderable())

    def _renderable(self) -> Group:
        assert self._progress is not None
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        for label in ("metric", "value", "stage", "seconds"):
            table.add_column(label, justify="right" if label in ("value", "seconds") else "left")
        rows = max(len(FIELDS), len(STAGES))
        stage_rows = [(s, _fmt(self._last, f"time/{s}_s", "{:.2f}")) for s in STAGES]
        for i in range(rows):
            label, key, spec = FIELDS[i] if i < len(FIELDS) else ("", "", "")
            value = _fmt(self._last, key, spec) if key else ""
            stage, seconds = stage_rows[i] if i < len(stage_rows) else ("", "")
            table.add_row(label, value, stage, seconds)
        return Group(self._progress, table)
