"""The end-of-run picture: held-out IoU over GRPO steps against the blind and oracle baselines.

    write_eval_curve(eval_history, run_dir / EVAL_CURVE_FILE, title="local_cpu")

One line per policy score found in the history (greedy eval/iou, and eval/iou_sampled when present), and
horizontal lines at eval/iou_blind (the best fixed prompt) and eval/iou_oracle (ground-truth box + point):
the policy's place between them is its localisation gain. Drawn with matplotlib's object API on the Agg
canvas (no pyplot global state, no display), so it is safe in any process or thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

EVAL_CURVE_FILE = "eval_curve.png"  # under the run directory
# (metrics key, legend label, matplotlib style) of each policy line
POLICY_LINES = (
    ("eval/iou", "policy, greedy (eval/iou)", {"color": "tab:blue", "marker": "o"}),
    ("eval/iou_sampled", "policy, sampled (eval/iou_sampled)", {"color": "tab:cyan", "marker": ".",
                                                                "linestyle": ":"}),
)


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def write_eval_curve(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Write the PNG; None (and no file) when no row of `history` has eval/iou. Rows need a "step"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = [row for row in history if _number(row, "eval/iou") is not None and _number(row, "step") is not None]
    if not rows:
        return None
    figure = Figure(figsize=(7.0, 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key, label, style in POLICY_LINES:
        points = [(row["step"], _number(row, key)) for row in rows if _number(row, key) is not None]
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], label=label, **style)
    last = rows[-1]
    for key, name, colour in (("eval/iou_oracle", "oracle: GT box + point", "tab:green"),
                              ("eval/iou_blind", "blind: best fixed prompt", "tab:red")):
        value = _number(last, key)
        if value is not None:
            axes.axhline(value, color=colour, linestyle="--", label=f"{name} ({value:.2f})")
    axes.set_xlabel("GRPO step")
    axes.set_ylabel("held-out IoU")
    axes.set_ylim(0.0, 1.02)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    steps = [row["step"] for row in rows]
    axes.set_xlim(min(steps) - 0.5, max(steps) + 0.5)
    axes.grid(True, alpha=0.3)
    gain = _number(last, "eval/localisation_gain")
    heading = f"{title}: held-out IoU" if title else "held-out IoU"
    axes.set_title(heading + (f" (localisation gain {gain:.2f} at step {last['step']})" if gain is not None else ""))
    # below the axes: inside, it would hide the oracle line near IoU 1
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small", frameon=False)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
