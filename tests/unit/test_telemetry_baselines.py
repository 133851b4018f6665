"""The blind/oracle baseline metrics in every telemetry sink: keys, dashboard, terminal, summary, curve PNG,
and the readable overlay panel (>= 384 px with a legend)."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest

from cluster.telemetry import dashboard, keys
from cluster.telemetry.curve import EVAL_CURVE_FILE, write_eval_curve
from cluster.telemetry.overlays import (
    BOX_COLOUR,
    GT_COLOUR,
    LEGEND_BACKGROUND,
    POSITIVE_COLOUR,
    render_overlay,
    render_panel,
)
from cluster.telemetry.summary import summarize
from cluster.telemetry.tui import LiveView
from segr1.config import load_config

BASELINE_KEYS = ("eval/iou_blind", "eval/iou_oracle", "eval/localisation_gain")
HISTORY = [
    {"step": 0, "tag": "start", "eval/iou": 0.28, "eval/iou_sampled": 0.2, "eval/iou_blind": 0.29,
     "eval/iou_oracle": 0.86, "eval/localisation_gain": -0.01 / 0.57},
    {"step": 2, "tag": "end", "eval/iou": 0.55, "eval/iou_sampled": 0.4, "eval/iou_blind": 0.29,
     "eval/iou_oracle": 0.86, "eval/localisation_gain": 0.26 / 0.57},
]


def test_baseline_keys_are_contract_keys_with_prometheus_names():
    for key in BASELINE_KEYS:
        assert key in keys.CONTRACT_KEYS and "eval steps only" in keys.describe(key)
    assert keys.prometheus_name("eval/iou_blind") == "segr1_eval_iou_blind"
    assert keys.prometheus_name("eval/localisation_gain") == "segr1_eval_localisation_gain"


def test_dashboard_charts_the_baselines():
    text = json.dumps(dashboard.build_dashboard())
    for key in BASELINE_KEYS:
        assert dashboard.gauge_series(key).replace('"', '\\"') in text
    assert "Held-out IoU vs blind and oracle" in text and "Localisation gain" in text


def test_tui_line_shows_blind_oracle_and_gain():
    stream = io.StringIO()
    with LiveView(total_steps=2, mode="plain", stream=stream) as view:
        view.update({"step": 2, **HISTORY[1]})
    assert "eval iou 0.550 | blind 0.290 | oracle 0.860 | gain 0.46" in stream.getvalue()


def test_summary_line_and_curve_png(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=unit", "logging.wandb.mode=disabled"])
    summary = summarize(cfg, cfg.run_dir, HISTORY, metrics_urls=[])
    assert ("eval IoU: 0.280 (step 0) -> 0.550 (step 2), +0.270 (blind 0.29, oracle 0.86, gain 0.46)"
            in summary["text"])
    curve = cfg.run_dir / EVAL_CURVE_FILE
    assert summary["eval_curve"] == str(curve) and f"eval curve      {curve}" in summary["text"]
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(curve))
    assert image is not None and image.shape[0] >= 300 and image.shape[1] >= 500
    # the two baseline lines are drawn in their colours (matplotlib's tab:red and tab:green)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).reshape(-1, 3).astype(int)
    for colour in ((214, 39, 40), (44, 160, 44)):
        assert (np.abs(rgb - colour).sum(axis=1) < 10).sum() > 100


def test_curve_without_eval_rows_writes_nothing(tmp_path):
    assert write_eval_curve([{"step": 1, "reward/mean": 0.3}], tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


def test_summary_without_baselines_keeps_the_plain_line(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=unit", "logging.wandb.mode=disabled"])
    history = [{k: v for k, v in row.items() if k not in BASELINE_KEYS} for row in HISTORY]
    text = summarize(cfg, cfg.run_dir, history, metrics_urls=[])["text"]
    assert "eval IoU: 0.280 (step 0) -> 0.550 (step 2), +0.270" in text.splitlines()


# ------------------------------------------------------------------------------------------------- panels
@pytest.fixture()
def scene():
    image = np.full((112, 112, 3), 100, np.uint8)
    gt = np.zeros((112, 112), bool)
    gt[20:40, 20:40] = True
    pred = gt.copy()
    return image, gt, pred


def test_panel_is_upscaled_nearest_with_marks_at_scale_and_a_legend(scene):
    image, gt, pred = scene
    panel = render_panel(image, gt, pred, [(10, 10, 60, 60)], [(45, 45)], [1], caption="IoU 1.00")
    k = 4  # ceil(384 / 112)
    assert panel.shape[1] == 448 and panel.shape[0] > 448 and panel.dtype == np.uint8
    drawn = panel[:448]
    assert np.array_equal(drawn, render_overlay(np.repeat(np.repeat(image, k, 0), k, 1),
                                                np.repeat(np.repeat(gt, k, 0), k, 1),
                                                np.repeat(np.repeat(pred, k, 0), k, 1),
                                                [(40, 40, 243, 243)], [(182, 182)], [1]))
    assert tuple(drawn[40, 100]) == BOX_COLOUR and tuple(drawn[100, 243]) == BOX_COLOUR
    assert tuple(drawn[182, 182]) == POSITIVE_COLOUR
    legend = panel[448:]
    assert (legend == LEGEND_BACKGROUND).all(axis=2).mean() > 0.7  # mostly white, with text and swatches
    for colour in (GT_COLOUR, BOX_COLOUR, POSITIVE_COLOUR):
        assert (legend == colour).all(axis=2).any()


def test_long_captions_wrap_inside_the_panel(scene):
    image, gt, pred = scene
    short = render_panel(image, gt, pred, caption="IoU 0.10")
    long = render_panel(image, gt, pred, caption="eval_end step 20 " + "a-very-long-sample-id " * 4 + "IoU 0.10")
    assert long.shape[0] > short.shape[0] and long.shape[1] == short.shape[1] == 448
    assert (long[448:, -4:] == LEGEND_BACKGROUND).all()  # no text runs off the right edge


def test_large_frames_are_not_upscaled(scene):
    image = np.zeros((400, 500, 3), np.uint8)
    panel = render_panel(image, np.zeros((400, 500), bool), np.zeros((400, 500), bool))
    assert panel.shape[1] == 500 and panel.shape[0] > 400
