"""RewardActor as a plain class (no Ray): parse failures, rewards against a reference, one segmenter call per group."""

from __future__ import annotations

import numpy as np
import pytest
from py_sod_metrics import Smeasure

from reward_server.actor import RewardActor, build_segmenter
from reward_server.parse import SegPrompt, render
from reward_server.rle import decode_masks
from segr1.config import load_config
from segr1.data.synth import synth_sample
from segr1.protocol import RewardRequest

GRABCUT = ["reward.segmenter=grabcut"]


def _square_scene() -> tuple[np.ndarray, np.ndarray]:
    """A yellow 20x30 rectangle on a blue, lightly noisy background (GrabCut recovers it exactly)."""
    rng = np.random.default_rng(0)
    image = np.full((64, 80, 3), (40, 90, 160), np.int64)
    image[20:40, 30:60] = (220, 200, 30)
    image = np.clip(image + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)
    gt = np.zeros((64, 80), bool)
    gt[20:40, 30:60] = True
    return image, gt


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


class CountingSegmenter:
    """Wraps a real segmenter and records each call's prompts (to check one call per group)."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    @property
    def last_timing(self):
        return self.inner.last_timing

    def segment(self, image, prompts, *, image_id=None):
        self.calls.append(list(prompts))
        return self.inner.segment(image, prompts, image_id=image_id)


def test_hand_computed_rewards():
    image, gt = _square_scene()
    exact = render(SegPrompt("a loose box", [(26, 16, 63, 43)], [(45, 30)], [1]))
    elsewhere = render(
        SegPrompt("wrong place", [(0, 50, 20, 63)], [(70, 5)], [0])
    )  # point outside: box alone
    actor = RewardActor(load_config(overrides=GRABCUT), "reward-test")
    (result,) = actor.score([RewardRequest("square", image, gt, [exact, elsewhere])])
    perfect, miss = result.breakdowns
    assert (perfect.reward, perfect.format, perfect.iou, perfect.s_measure) == pytest.approx(
        (2.0, 1.0, 1.0, 1.0)
    )
    assert miss.format == 1.0 and miss.iou == 0.0 and miss.reason == ""
    assert miss.reward == pytest.approx(1.0 + 0.3 * miss.s_measure)
    assert result.group_id == "square" and result.actor_id == "reward-test" and result.masks_rle is None


def test_malformed_completions_score_zero_and_leave_the_rest_alone():
    image, gt = synth_sample(seed=0, index=2, size=96)
    box = _tight_box(gt)
    good_a = render(
        SegPrompt("object", [box], [(int(np.nonzero(gt)[1].mean()), int(np.nonzero(gt)[0].mean()))], [1])
    )
    good_b = render(SegPrompt("half", [(box[0], box[1], (box[0] + box[2]) // 2, box[3])], [(95, 95)], [0]))
    malformed = {
        "just some words": "no_think",
        "<think>x</think> <bbox>[1,2,3]</bbox> <points>[[1,2]]</points> <labels>[1]</labels>": "bad_box",
        "<think>x</think> <bbox>[1,2,30,40]</bbox> <points>[[5,6]]</points> <labels>[2]</labels>": "bad_label",
        "<think>x</think> <bbox>[1,2,30,40]</bbox> <points>[[5,6]]</points> <labels>[1,0]</labels>": "points_labels_mismatch",
        "<think>" + "a" * 9000 + "</think>": "too_long",
    }
    texts = [good_a, *malformed, good_b]
    segmenter = CountingSegmenter(build_segmenter(load_config(overrides=GRABCUT).reward))
    actor = RewardActor(load_config(overrides=GRABCUT), segmenter=segmenter)
    (mixed,) = actor.score([RewardRequest("g", image, gt, texts, return_masks=True)])
    (clean,) = actor.score([RewardRequest("g", image, gt, [good_a, good_b], return_masks=True)])

    assert [b.reason for b in mixed.breakdowns] == ["", *malformed.values(), ""]
    for bad in mixed.breakdowns[1:-1]:
        assert (bad.reward, bad.format, bad.iou, bad.s_measure) == (0.0, 0.0, 0.0, 0.0)
    assert mixed.breakdowns[0] == clean.breakdowns[0] and mixed.breakdowns[-1] == clean.breakdowns[1]
    # one segmenter call per group, with only the completions that parsed
    assert [len(prompts) for prompts in segmenter.calls] == [2, 2]
    masks = decode_masks(mixed.masks_rle)
    assert masks.shape == (len(texts), *gt.shape) and not masks[1:-1].any()
    assert actor.stats()["reasons"] == {code: 1 for code in malformed.values()}


def test_rewards_agree_with_reference_metrics():
    """IoU by numpy and S-measure by pysodmetrics on the returned masks reproduce the reward."""
    image, gt = synth_sample(seed=1, index=0, size=96)
    x1, y1, x2, y2 = _tight_box(gt)
    texts = [
        render(SegPrompt("t", [(x1, y1, x2, y2)], [((x1 + x2) // 2, (y1 + y2) // 2)], [1])),
        render(SegPrompt("t", [(x1, y1, (x1 + x2) // 2, y2), ((x1 + x2) // 2, y1, x2, y2)], [(x1, y1)], [0])),
        render(SegPrompt("t", [(0, 0, 95, 95)], [(0, 0)], [0])),
    ]
    actor = RewardActor(load_config(overrides=GRABCUT))
    (result,) = actor.score([RewardRequest("ref", image, gt, texts, return_masks=True)])
    for breakdown, mask in zip(result.breakdowns, decode_masks(result.masks_rle)):
        reference_iou = (mask & gt).sum() / (mask | gt).sum()
        metric = Smeasure()
        metric.step(pred=mask.astype(np.uint8) * 255, gt=gt.astype(np.uint8) * 255)
        reference_s = float(np.clip(metric.get_results()["sm"], 0, 1))
        assert breakdown.iou == pytest.approx(reference_iou, abs=1e-9)
        assert breakdown.s_measure == pytest.approx(reference_s, abs=1e-6)
        assert breakdown.reward == pytest.approx(1.0 + 0.7 * reference_iou + 0.3 * reference_s, abs=1e-6)
    assert result.breakdowns[0].iou > 0.5  # GrabCut from the object's box finds it


def test_released_s_term_under_bug_compat():
    image, gt = _square_scene()
    text = render(SegPrompt("t", [(10, 5, 70, 60)], [(45, 30)], [1]))
    actor = RewardActor(load_config(overrides=[*GRABCUT, "reward.segr1_bug_compat=true"]))
    (result,) = actor.score([RewardRequest("bug", image, gt, [text], return_masks=True)])
    mask = decode_masks(result.masks_rle)[0]
    assert result.breakdowns[0].s_measure == pytest.approx(1.0 - mask.mean())


def test_points_grammar_stage():
    image, gt = _square_scene()
    overrides = [*GRABCUT, "reward.grammar=points", "reward.require_think=false"]
    actor = RewardActor(load_config(overrides=overrides))
    texts = [
        "<points>[[45,30],[2,2]]</points> <labels>[1,0]</labels>",
        render(SegPrompt("t", [(1, 1, 9, 9)], [(5, 5)], [1])),
    ]
    (result,) = actor.score([RewardRequest("pre-rl", image, gt, texts)])
    assert result.breakdowns[0].format == 1.0 and result.breakdowns[0].iou > 0
    assert result.breakdowns[1].reason == "unexpected_text"  # a box is not part of the points grammar


def test_bad_request_names_the_group():
    image, gt = _square_scene()
    actor = RewardActor(load_config(overrides=GRABCUT))
    with pytest.raises(ValueError, match="group 'broken': gt_mask shape"):
        actor.score([RewardRequest("broken", image, gt[:10], ["x"])])
    with pytest.raises(ValueError, match="group 'gray': image must be uint8"):
        actor.score([RewardRequest("gray", image[..., 0], gt, ["x"])])


@pytest.mark.slow
def test_sam2_actor_encodes_once_per_group():
    """The config's SAM2 options reach the segmenter; one encode serves the group (random hiera_t weights)."""
    overrides = ["reward.sam2.model_cfg=configs/sam2.1/sam2.1_hiera_t.yaml", "reward.sam2.device=cpu"]
    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        actor = RewardActor(load_config(overrides=overrides))
    image, gt = _square_scene()
    texts = [
        render(SegPrompt("t", [(26, 16, 63, 43)], [(45, 30)], [1])),
        "nonsense",
        render(SegPrompt("t", [(0, 0, 40, 30), (50, 30, 79, 63)], [(60, 40), (5, 5)], [1, 0])),
    ]
    first, second = actor.score([RewardRequest("a", image, gt, texts), RewardRequest("b", image, gt, texts)])
    assert first.encode_s > 0 and first.decode_s > 0
    assert second.encode_s < first.encode_s / 10  # same image: the embedding cache served it
    assert first.breakdowns == second.breakdowns
    assert [b.format for b in first.breakdowns] == [1.0, 0.0, 1.0]


def test_baselines_through_the_actors_segmenter():
    """A bright square always in one place: the blind prompt chosen on two training copies finds it on a third
    as well as the oracle does (GrabCut, the configured backend), and every image is one segmenter call."""
    rng = np.random.default_rng(1)

    def scene():
        image = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
        mask = np.zeros((48, 48), bool)
        mask[12:36, 12:36] = True  # the centred half-frame box is a blind candidate
        image[mask] = rng.integers(190, 256, (int(mask.sum()), 3), dtype=np.uint8)
        return image, mask

    (a, ma), (b, mb), (c, mc) = scene(), scene(), scene()
    segmenter = CountingSegmenter(build_segmenter(load_config(overrides=GRABCUT).reward))
    actor = RewardActor(load_config(overrides=GRABCUT), "reward-test", segmenter=segmenter)
    scores = actor.baselines([a, b], [ma, mb], [c], [mc], 48)
    assert scores.blind.boxes == [(12, 12, 35, 35)] and scores.chosen_on == 2
    assert scores.blind_iou[0] > 0.95 and scores.oracle_iou[0] > 0.95
    assert [len(call) for call in segmenter.calls] == [56, 56, 2]  # family (mean box = a grid box), then 2
    assert actor.stats()["baselines_s"] > 0

    # segr1 eval's per-sample masks: [blind, oracle] RLEs of each frame from one segmenter call, the same masks
    # the IoUs above came from; an empty GT's oracle predicts nothing
    from reward_server.baselines import prompt_to_dict
    from reward_server.rle import decode_masks

    segmenter.calls.clear()
    empty = np.zeros_like(mc)
    (blind_c, oracle_c), (blind_e, oracle_e) = (
        decode_masks(rles) for rles in actor.baseline_masks([c, c], [mc, empty], prompt_to_dict(scores.blind)))
    assert [len(call) for call in segmenter.calls] == [2, 1]
    for mask, iou in ((blind_c, scores.blind_iou[0]), (oracle_c, scores.oracle_iou[0])):
        assert (mask & mc).sum() / (mask | mc).sum() == pytest.approx(iou)
    assert (blind_e == blind_c).all() and not oracle_e.any()


def test_box_term_grades_near_misses_only_when_weighted():
    """Two boxes that both miss the object (IoU 0): the paper's reward scores them nearly alike; with reward.w_box the
    nearer one scores higher, by w_box times the difference of their GIoU with the GT box."""
    image, gt = _square_scene()  # object at x 30..59, y 20..39
    near = render(SegPrompt("near", [(62, 20, 78, 39)], [(70, 30)], [1]))
    far = render(SegPrompt("far", [(0, 50, 12, 63)], [(5, 55)], [1]))
    request = RewardRequest("square", image, gt, [near, far])
    (paper,) = RewardActor(load_config(overrides=GRABCUT), "reward-test").score([request])
    (shaped,) = RewardActor(load_config(overrides=[*GRABCUT, "reward.w_box=0.5"]), "reward-test").score([request])
    assert [b.iou for b in paper.breakdowns] == [0.0, 0.0]
    paper_gap = paper.breakdowns[0].reward - paper.breakdowns[1].reward
    assert abs(paper_gap) < 0.02  # only the S term tells the two masks apart
    near_giou, far_giou = (b.box_giou for b in shaped.breakdowns)
    assert -1.0 < far_giou < near_giou < 0.0
    for p, s in zip(paper.breakdowns, shaped.breakdowns):
        assert s.reward == pytest.approx(p.reward + 0.5 * s.box_giou)
    assert shaped.breakdowns[0].reward - shaped.breakdowns[1].reward > paper_gap + 0.3  # 0.5 x (-0.06 - -0.72)
