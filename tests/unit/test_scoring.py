"""Tests of the reward: weighted sum of format, IoU and clipped S-measure; zero with a reason on bad format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from py_sod_metrics import Smeasure

from reward_server.scoring import box_giou, combine, released_s_term, score_masks
from segr1.protocol import RewardBreakdown


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4x4 pairs: a perfect prediction, and a prediction covering half the object plus one stray pixel."""
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[:, 1:3, 1:3] = True  # a 2x2 object
    pred = gt.clone()
    pred[1, 2, 1:3] = False  # keep the top half of the object
    pred[1, 0, 0] = True  # one false positive
    return pred, gt


def test_score_masks_perfect_and_partial():
    pred, gt = masks()
    iou, s = score_masks(pred, gt)
    assert iou.tolist() == [1.0, 2 / 5]  # |P & G| = 2, |P | G| = 5
    assert s[0].item() == pytest.approx(1.0, abs=1e-12)
    reference = Smeasure()
    reference.step(pred[1].numpy().astype(np.uint8) * 255, gt[1].numpy().astype(np.uint8) * 255)
    assert s[1].item() == pytest.approx(reference.sms[0], abs=1e-6)


def test_combine_weights_each_part():
    breakdowns = combine([True, True], [1.0, 0.4], [1.0, 0.5], ["", ""])
    assert breakdowns[0] == RewardBreakdown(reward=2.0, format=1.0, iou=1.0, s_measure=1.0, reason="")
    assert breakdowns[1].reward == pytest.approx(1.0 + 0.7 * 0.4 + 0.3 * 0.5)
    custom = combine([True], [0.4], [0.5], [""], w_format=0.5, w_iou=2.0, w_s=0.0)
    assert custom[0].reward == pytest.approx(0.5 + 2.0 * 0.4)


def test_failed_parse_scores_zero_with_its_reason_whatever_its_mask():
    breakdowns = combine([False, True], torch.tensor([0.9, 0.2]), torch.tensor([0.8, 0.6]), ["no_box", ""])
    assert breakdowns[0] == RewardBreakdown(reward=0.0, format=0.0, iou=0.0, s_measure=0.0, reason="no_box")
    assert breakdowns[1].reward == pytest.approx(1.0 + 0.14 + 0.18)


def test_s_is_clipped_to_the_unit_interval():
    breakdowns = combine([True, True], [0.0, 0.0], [-0.2, 1.3], ["", ""])
    assert [b.s_measure for b in breakdowns] == [0.0, 1.0]
    assert [b.reward for b in breakdowns] == pytest.approx([1.0, 1.3])


def test_released_bug_gives_one_minus_predicted_fraction():
    pred, gt = masks()
    _, s = score_masks(pred, gt, segr1_bug_compat=True)
    assert s.tolist() == pytest.approx([1 - 4 / 16, 1 - 3 / 16])
    assert torch.equal(released_s_term(pred), s)


def test_the_bug_claim_holds_in_the_reference_package():
    """A {0, 1} GT thresholded again at > 128 has no foreground, and the package then returns 1 - mean(P)."""
    pred, gt = masks()
    for i in range(2):
        reference = Smeasure()
        reference.step(pred[i].numpy().astype(np.uint8) * 255, gt[i].numpy().astype(np.uint8))  # GT in {0, 1}
        assert reference.sms[0] == pytest.approx(released_s_term(pred[i : i + 1]).item(), abs=1e-12)
        assert reference.cal_sm(pred[i].numpy().astype(np.float64), gt[i].numpy() > 128) == pytest.approx(
            released_s_term(pred[i : i + 1]).item(), abs=1e-12
        )  # the released code's direct call: raw {0, 1} prediction, GT re-thresholded


def test_combine_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="lengths differ"):
        combine([True], [1.0, 0.5], [1.0], [""])
    with pytest.raises(ValueError, match="completion 0"):
        combine([False], [0.0], [0.0], [""])  # failed without a reason
    with pytest.raises(ValueError, match="completion 0"):
        combine([True], [0.0], [0.0], ["no_box"])  # parsed but given a reason


def test_box_giou_by_hand():
    gt = (20, 0, 29, 9)  # 9 x 9
    assert box_giou([(20, 0, 29, 9)], gt) == pytest.approx(1.0)
    # disjoint: IoU 0, enclosing box (0, 0, 29, 10) = 290, union 100 + 81 = 181 -> 0 - (290 - 181) / 290
    assert box_giou([(0, 0, 10, 10)], gt) == pytest.approx(-(290 - 181) / 290)
    # the mean over boxes, and nothing to grade without a box or a GT
    assert box_giou([(20, 0, 29, 9), (0, 0, 10, 10)], gt) == pytest.approx((1 - (290 - 181) / 290) / 2)
    assert box_giou([], gt) == 0.0 and box_giou([(0, 0, 10, 10)], None) == 0.0


def test_box_giou_agrees_with_torchvision():
    from torchvision.ops import generalized_box_iou

    rng = np.random.default_rng(0)
    corners = rng.integers(0, 112, (400, 4))
    boxes = [(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)) for x1, y1, x2, y2 in corners.tolist()]
    for box, gt in zip(boxes[:200], boxes[200:]):  # overlapping, nested, disjoint and degenerate (zero-width) boxes
        reference = generalized_box_iou(torch.tensor([box], dtype=torch.float64), torch.tensor([gt], dtype=torch.float64))
        if torch.isfinite(reference).all():  # torchvision divides by zero for two degenerate boxes
            assert box_giou([box], gt) == pytest.approx(float(reference), abs=1e-12)


def test_box_giou_grades_misses_that_mask_iou_cannot_tell_apart():
    gt = (30, 30, 39, 39)
    near, far = box_giou([(18, 18, 28, 28)], gt), box_giou([(0, 0, 10, 10)], gt)
    assert -1.0 < far < near < 0.0  # both miss (IoU 0); the nearer scores higher


def test_combine_adds_the_weighted_box_term_and_defaults_to_the_paper():
    args = ([True, True], [0.5, 0.5], [0.4, 0.4], ["", ""])
    paper = combine(*args)
    shaped = combine(*args, box=[0.2, -0.6], w_box=0.5)
    assert [b.reward for b in paper] == pytest.approx([1 + 0.35 + 0.12] * 2)
    assert [b.reward for b in shaped] == pytest.approx([1 + 0.35 + 0.12 + 0.1, 1 + 0.35 + 0.12 - 0.3])
    assert [b.box_giou for b in shaped] == [0.2, -0.6]
    failed = combine([False], [0.0], [0.0], ["no_box"], box=[0.9], w_box=1.0)
    assert failed[0].reward == 0.0 and failed[0].box_giou == 0.0
