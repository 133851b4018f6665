"""Batched mask metrics in torch: IoU and the S-measure (Fan et al., ICCV 2017), on any device.

Input conventions (leading dim B is the batch; every sample is scored independently):
- ``gt``: bool[B, H, W], the ground-truth foreground.
- ``iou`` takes bool predictions. IoU = |P & G| / |P | G|, and 0 when the union is empty (the reward's rule;
  evaluation code that wants "empty on empty scores 1" handles that case itself).
- ``s_measure`` takes a prediction in [0, 1] (float, or bool for binary masks) and reproduces the reference
  package ``pysodmetrics`` (``Smeasure().step(uint8(round(pred * 255)), uint8(gt * 255))``) to 1e-6:
  the prediction is quantised to 8 bits and min-max normalised per sample as that package does, then
      S = alpha * S_object + (1 - alpha) * S_region,   clamped at 0,
  with S = 1 - mean(P) for an all-background GT and S = mean(P) for an all-foreground GT.
  S_region splits both maps at the GT centroid into four quadrants and weights an SSIM-like score of each by
  its area; S_object compares the mean and spread of P inside the foreground and of 1 - P in the background.
  Where the reference returns NaN (a zero-width quadrant when the centroid falls on the last row or column)
  that quadrant has weight 0 and contributes 0 here, so S is always finite.

Every statistic is an integer sum over pixels (8-bit levels, not normalised floats), gathered per quadrant
from per-row sums, so the "is this exactly zero" branches of the reference are decided exactly.
"""

from __future__ import annotations

import torch

EPS = 2.220446049250313e-16  # numpy.spacing(1), the reference's epsilon
_LEVELS = 255  # 8-bit maps, as the reference reads them
_INT64_MAX = 2**63 - 1


def iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Intersection over union per sample: bool[B, H, W] x2 -> float64[B]; 0 where the union is empty."""
    _check_masks(pred, gt)
    intersection = (pred & gt).sum(dim=(1, 2))  # [B]
    union = (pred | gt).sum(dim=(1, 2))  # [B]
    return torch.where(union > 0, intersection.double() / union.clamp(min=1), 0.0)


def s_measure(pred: torch.Tensor, gt: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """S-measure per sample: pred float|bool[B, H, W] in [0, 1], gt bool[B, H, W] -> float64[B]."""
    _check_masks(pred, gt, pred_may_be_float=True)
    batch, height, width = gt.shape
    levels, scale, max_level = _quantise(pred)  # integer levels [B, H, W]; P = levels * scale[B]
    _check_exact(height * width, max_level)
    cy, cx = _split_point(gt)  # [B], [B]
    above = torch.arange(height, device=gt.device) < cy[:, None]  # [B, H] rows of the top quadrants
    left = torch.arange(width, device=gt.device) < cx[:, None]  # [B, W] columns of the left quadrants

    binary = pred.dtype == torch.bool
    squares = levels if binary else levels * levels
    both = levels & gt if binary else levels * gt
    sum_p = _quadrant_sums(levels, above, left, max_level)  # [B, 4] (LT, RT, LB, RB)
    sum_pp = _quadrant_sums(squares, above, left, max_level**2)
    sum_g = _quadrant_sums(gt, above, left, 1)
    sum_pg = _quadrant_sums(both, above, left, max_level)
    sum_ppg = sum_pg.sum(-1) if binary else (squares * gt).sum(dim=(1, 2), dtype=torch.int64)  # [B]

    area = height * width
    fg = sum_g.sum(-1)  # [B] foreground pixels
    mean_p = scale * sum_p.sum(-1) / area  # [B]
    object_score = _object_score(scale, fg, area, sum_p.sum(-1), sum_pp.sum(-1), sum_pg.sum(-1), sum_ppg)
    region_score = _region_score(scale, cy, cx, height, width, sum_p, sum_pp, sum_g, sum_pg)
    mixed = (alpha * object_score + (1 - alpha) * region_score).clamp(min=0)
    return torch.where(fg == 0, 1 - mean_p, torch.where(fg == area, mean_p, mixed))


def _check_masks(pred: torch.Tensor, gt: torch.Tensor, pred_may_be_float: bool = False) -> None:
    if gt.dtype != torch.bool or gt.dim() != 3:
        raise ValueError(f"gt must be bool[B, H, W], got {gt.dtype}{list(gt.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {list(pred.shape)} differs from gt shape {list(gt.shape)}")
    if pred.dtype != torch.bool and not (pred_may_be_float and pred.is_floating_point()):
        kind = "bool or float" if pred_may_be_float else "bool"
        raise ValueError(f"pred must be {kind}, got {pred.dtype}")


def _quantise(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """8-bit levels of the prediction after the reference's min-max normalisation.

    Returns (levels [B, H, W], scale float64[B], largest level) with normalised P = levels * scale. The
    reference maps a non-constant map to (k - min) / (max - min) for 8-bit values k, a constant one to k / 255.
    """
    batch = pred.shape[0]
    if pred.dtype == torch.bool:  # k in {0, 255}: normalised P is the mask itself
        return pred, torch.ones(batch, dtype=torch.float64, device=pred.device), 1
    k = torch.round(pred.double() * _LEVELS)  # [B, H, W] the uint8 map the reference is given
    low, high = k.amin(dim=(1, 2)), k.amax(dim=(1, 2))  # [B]
    if bool((low < 0).any()) or bool((high > _LEVELS).any()):
        found = f"[{low.min().item() / _LEVELS}, {high.max().item() / _LEVELS}]"
        raise ValueError(f"pred values must lie in [0, 1], found values rounding to {found}")
    varying = high > low
    levels = (k - torch.where(varying, low, 0.0)[:, None, None]).to(torch.int32)
    scale = torch.where(varying, 1.0 / (high - low).clamp(min=1), 1.0 / _LEVELS)
    return levels, scale, _LEVELS


def _check_exact(pixels: int, max_level: int) -> None:
    # Variances are formed as N * sum(x^2) - sum(x)^2 in int64; both terms are at most pixels^2 * level^2.
    if pixels * pixels * max_level * max_level > _INT64_MAX:
        raise ValueError(f"frame of {pixels} pixels too large for exact 8-bit S-measure sums (int64)")


def _split_point(gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's split: rounded (half to even) GT centroid + 1, or the frame centre for an empty GT."""
    batch, height, width = gt.shape
    rows = gt.sum(dim=2)  # [B, H] foreground pixels per row
    cols = gt.sum(dim=1)  # [B, W]
    count = rows.sum(dim=1)  # [B]
    row_index = torch.arange(height, device=gt.device, dtype=torch.float64)
    col_index = torch.arange(width, device=gt.device, dtype=torch.float64)
    safe = count.clamp(min=1).double()
    cy = torch.where(count > 0, (rows.double() @ row_index / safe).round(), round(height / 2))
    cx = torch.where(count > 0, (cols.double() @ col_index / safe).round(), round(width / 2))
    return cy.long() + 1, cx.long() + 1


def _quadrant_sums(values: torch.Tensor, above: torch.Tensor, left: torch.Tensor, max_value: int) -> torch.Tensor:
    """Integer sums of values[B, H, W] over the quadrants (LT, RT, LB, RB) given by above[B, H], left[B, W].

    Per-row sums (all columns, and left columns only) are formed in the narrowest float type that adds these
    integers exactly, then combined in int64.
    """
    width = values.shape[2]
    exact_dtype = torch.float32 if max_value * width < 2**24 else torch.float64
    as_float = values.to(exact_dtype)  # [B, H, W]
    rows_all = as_float.sum(dim=2).long()  # [B, H]
    rows_left = torch.bmm(as_float, left.to(exact_dtype).unsqueeze(2)).squeeze(2).long()  # [B, H]
    top = above.long()  # [B, H]
    left_top = (rows_left * top).sum(1)  # [B]
    all_top = (rows_all * top).sum(1)
    all_left = rows_left.sum(1)
    total = rows_all.sum(1)
    return torch.stack([left_top, all_top - left_top, all_left - left_top, total - all_top - all_left + left_top], 1)


def _object_score(
    scale: torch.Tensor, fg: torch.Tensor, area: int, sum_p, sum_pp, sum_pg, sum_ppg
) -> torch.Tensor:
    """fraction_fg * s(P over FG) + fraction_bg * s(1 - P over BG), s(x) = 2 mean / (mean^2 + 1 + std + eps)."""
    bg = area - fg  # [B]
    fg_mean = scale * sum_pg / fg.clamp(min=1)
    bg_mean = 1 - scale * (sum_p - sum_pg) / bg.clamp(min=1)  # mean of 1 - P over the background
    fg_std = scale * _sample_std(fg, sum_pg, sum_ppg)
    bg_std = scale * _sample_std(bg, sum_p - sum_pg, sum_pp - sum_ppg)  # std(1 - P) = std(P)
    fraction_fg = fg.double() / area
    return fraction_fg * _s_object(fg_mean, fg_std) + (1 - fraction_fg) * _s_object(bg_mean, bg_std)


def _sample_std(count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor) -> torch.Tensor:
    """Unbiased std from integer count, sum and sum of squares; 0 for fewer than two values (as the reference)."""
    spread = (count * total_sq - total * total).double()  # exact: count^2 * variance * (n-1)/n
    n = count.double()
    return torch.where(count > 1, (spread / (n * (n - 1)).clamp(min=1)).sqrt(), 0.0)


def _s_object(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return 2 * mean / (mean * mean + 1 + std + EPS)


def _region_score(scale, cy, cx, height, width, sum_p, sum_pp, sum_g, sum_pg) -> torch.Tensor:
    """Area-weighted SSIM-like score of the four quadrants around the split point (cy, cx)."""
    area = height * width
    counts = torch.stack([cy * cx, cy * (width - cx), (height - cy) * cx, (height - cy) * (width - cx)], 1)
    w_lt, w_rt, w_lb = (counts[:, :3].double() / area).unbind(1)  # [B] each; same products as the reference
    weights = torch.stack([w_lt, w_rt, w_lb, 1 - w_lt - w_rt - w_lb], 1)  # [B, 4], as the reference forms them

    spread_p = counts * sum_pp - sum_p * sum_p  # [B, 4] integer numerators of the (co)variances
    spread_g = counts * sum_g - sum_g * sum_g
    spread_pg = counts * sum_pg - sum_p * sum_g
    n = counts.double()
    norm = n * (n - 1 + EPS)  # sum of squares = spread / n, divided by (n - 1 + eps) as the reference does
    s = scale[:, None]
    mean_p, mean_g = s * sum_p / n.clamp(min=1), sum_g / n.clamp(min=1)
    var_p = s * s * spread_p / norm.clamp(min=EPS)
    var_g = spread_g / norm.clamp(min=EPS)
    cov = s * spread_pg / norm.clamp(min=EPS)
    numerator = 4 * mean_p * mean_g * cov
    denominator = (mean_p * mean_p + mean_g * mean_g) * (var_p + var_g)
    numerator_zero = (sum_p == 0) | (sum_g == 0) | (spread_pg == 0)
    denominator_zero = ((sum_p == 0) & (sum_g == 0)) | ((spread_p == 0) & (spread_g == 0))
    ssim = torch.where(numerator_zero, denominator_zero.double(), numerator / (denominator + EPS))
    return (weights * torch.where(counts > 0, ssim, 0.0)).sum(1)
