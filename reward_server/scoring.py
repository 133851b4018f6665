"""The Seg-R1 reward: R = w_format * R_format + w_iou * IoU(P, G) + w_s * clip(S_alpha(P, G), 0, 1)
                      + w_box * mean_b GIoU(b, box(G))   (w_box = 0 in the paper; an option of ours).

R_format is 1 when the completion parsed (see ``reward_server.parse``); a completion that did not parse
scores 0 in every part and carries its parser reason code. Masks are binary, in the training frame.

``segr1_bug_compat=True`` reproduces the S term of the released training code. There the GT, already
binarised to {0, 1}, was thresholded again at > 128, which leaves no foreground; the S-measure of an
all-background GT is 1 - mean(P), and the prediction reached it as the raw binary mask (no 8-bit rescaling
or min-max normalisation), so the term is exactly 1 - (fraction of pixels predicted foreground). It rewards
small masks regardless of the ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reward_server.metrics import iou_and_s_measure
from segr1.protocol import RewardBreakdown


def score_masks(
    pred: torch.Tensor,  # bool[B, H, W] predicted masks
    gt: torch.Tensor,  # bool[B, H, W] ground truth
    *,
    s_alpha: float = 0.5,
    segr1_bug_compat: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and S-measure per mask pair -> (float64[B], float64[B]); S is clipped to [0, 1]."""
    iou, s = iou_and_s_measure(pred, gt, alpha=s_alpha)
    if segr1_bug_compat:
        s = released_s_term(pred)
    return iou, s.clamp(0.0, 1.0)


def box_giou(boxes: Sequence[tuple[int, int, int, int]], gt_box: tuple[int, int, int, int] | None) -> float:
    """Mean generalised IoU (Rezatofighi et al., 2019) of boxes (x1, y1, x2, y2) with the GT box, in [-1, 1].
    Unlike mask IoU it still grades a box that misses the object: the further away, the lower. 0 when there is
    no box or no GT box (an empty GT: nothing to grade against)."""
    if not boxes or gt_box is None:
        return 0.0
    return sum(_giou(box, gt_box) for box in boxes) / len(boxes)


def _giou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """GIoU = IoU - |C minus (A u B)| / |C|, C the smallest box enclosing both; areas as torchvision's
    generalized_box_iou takes them, (x2 - x1) * (y2 - y1) (tests/unit/test_scoring.py checks it against that).
    Written out because importing torchvision pulls in torch._dynamo, ~1.2 s of CPU in every process that scores,
    on a run's start-up path, for four corners' arithmetic."""
    def area(x1: float, y1: float, x2: float, y2: float) -> float:
        return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)

    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a) + area(*b) - inter
    hull = area(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
    iou = inter / union if union > 0 else 0.0
    return iou - (hull - union) / hull if hull > 0 else iou


def released_s_term(pred: torch.Tensor) -> torch.Tensor:
    """The released code's S term: 1 - mean(P) for binary masks bool[B, H, W] -> float64[B] (see module doc)."""
    return 1.0 - pred.flatten(1).double().mean(dim=1)


def combine(
    format_ok: Sequence[bool],
    iou: Sequence[float] | torch.Tensor,
    s: Sequence[float] | torch.Tensor,
    reasons: Sequence[str],
    *,
    w_format: float = 1.0,
    w_iou: float = 0.7,
    w_s: float = 0.3,
    box: Sequence[float] | None = None,
    w_box: float = 0.0,
) -> list[RewardBreakdown]:
    """One breakdown per completion; all four sequences are aligned with the completions.

    Where format_ok is False the iou and s entries are ignored (the completion gets no mask) and the reward
    is 0 with reason ``reasons[i]``; a reason is non-empty exactly when format_ok is False. Stored S is the
    clipped value, the one that entered the reward.
    """
    iou_values, s_values = _as_floats(iou), _as_floats(s)
    box_values = [0.0] * len(iou_values) if box is None else _as_floats(box)
    if not len(format_ok) == len(iou_values) == len(s_values) == len(reasons) == len(box_values):
        raise ValueError(
            f"lengths differ: format_ok {len(format_ok)}, iou {len(iou_values)}, s {len(s_values)}, "
            f"reasons {len(reasons)}, box {len(box_values)}"
        )
    breakdowns = []
    for index, (parsed, iou_value, s_value, reason, box_value) in enumerate(
        zip(format_ok, iou_values, s_values, reasons, box_values)
    ):
        if bool(reason) == bool(parsed):
            raise ValueError(
                f"completion {index}: format_ok={parsed} with reason {reason!r} (one must be set)"
            )
        if not parsed:
            breakdowns.append(RewardBreakdown(reward=0.0, format=0.0, iou=0.0, s_measure=0.0, reason=reason))
            continue
        s_clipped = min(max(s_value, 0.0), 1.0)
        reward = w_format + w_iou * iou_value + w_s * s_clipped + w_box * box_value
        breakdowns.append(RewardBreakdown(reward=reward, format=1.0, iou=iou_value, s_measure=s_clipped,
                                          box_giou=box_value))
    return breakdowns


def _as_floats(values: Sequence[float] | torch.Tensor) -> list[float]:
    return values.tolist() if isinstance(values, torch.Tensor) else [float(v) for v in values]
