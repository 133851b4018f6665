"""Batched mask metrics in torch: IoU and the S-measure (Fan et al., ICCV 2017), on any device.

Input conventions (leading dim B is the batch; every sample is scored independently):
- ``gt``: bool[B, H, W], the ground-truth foreground.
- IoU takes bool predictions: IoU = |P & G| / |P | G|, and 0 when the union is empty (the reward's rule;
  evaluation code that wants "empty on empty scores 1" handles that case itself).
- The S-measure takes a prediction in [0, 1] (float, or bool for a binary mask) and reproduces the reference
  package ``pysodmetrics`` (``Smeasure().step(uint8(round(pred * 255)), uint8(gt) * 255)``) to 1e-6:
  the prediction is quantised to 8 bits and min-max normalised per sample as that package does, then
      S = alpha * S_object + (1 - alpha) * S_region,   clamped at 0,
  with S = 1 - mean(P) for an all-background GT and S = mean(P) for an all-foreground GT.
  S_region splits both maps at the GT centroid into four quadrants and weights an SSIM-like score of each
  by its area; S_object compares mean and spread of P inside the foreground and of 1 - P in the background.

Where this differs from the reference, on purpose:
- A zero-size quadrant (GT centroid on the last row or column) makes the reference return NaN; here it has
  weight 0 and adds 0, so S is always finite.
- Every statistic is an exact integer sum of 8-bit levels, so the reference's "is this exactly 0" branches
  are decided exactly. In a quadrant where GT and prediction are both constant the reference scores 1, except
  when the constant level is not 0 or 1: numpy's rounded mean then leaves a ~1e-33 variance and it scores 0.
  Here such a quadrant always scores 1. Binary predictions never meet this case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 2.220446049250313e-16  # numpy.spacing(1), the reference's epsilon
_LEVELS = 255  # 8-bit maps, as the reference reads them
# Samples are summed in blocks of about this many pixels, so that their float planes (12 bytes a pixel for
# binary masks) stay in cache between being written and being summed: on CPU several times faster than one
# pass over the whole batch, and memory stays bounded.
_CHUNK_PIXELS = 1 << 20
_G_PLANE = 2  # the GT's plane in both layouts of summed planes: (P, P*G, G) and (P, P*G, G, P^2, P^2*G)


def iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Intersection over union per sample: bool[B, H, W] x2 -> float64[B]; 0 where the union is empty."""
    _check_masks(pred, gt, allow_float=False)
    intersection = torch.count_nonzero(pred & gt, dim=(1, 2))  # [B]
    union = torch.count_nonzero(pred | gt, dim=(1, 2))  # [B]
    return torch.where(union > 0, intersection.double() / union.clamp(min=1), 0.0)


def s_measure(pred: torch.Tensor, gt: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """S-measure per sample: pred float|bool[B, H, W] in [0, 1], gt bool[B, H, W] -> float64[B]."""
    _check_masks(pred, gt, allow_float=True)
    return _s_measure_from_sums(_gather_sums(pred, gt), alpha)


def iou_and_s_measure(
    pred: torch.Tensor, gt: torch.Tensor, alpha: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both metrics of binary masks in one pass over the pixels: bool[B, H, W] x2 -> (float64[B], float64[B])."""
    _check_masks(pred, gt, allow_float=False)
    sums = _gather_sums(pred, gt)
    intersection = sums.pg.sum(1)  # [B]
    union = sums.p.sum(1) + sums.g.sum(1) - intersection  # [B]
    iou_value = torch.where(union > 0, intersection.double() / union.clamp(min=1), 0.0)
    return iou_value, _s_measure_from_sums(sums, alpha)


def _check_masks(pred: torch.Tensor, gt: torch.Tensor, allow_float: bool) -> None:
    if gt.dtype != torch.bool or gt.dim() != 3 or gt.shape[1] * gt.shape[2] == 0:
        raise ValueError(f"gt must be bool[B, H, W] with H, W > 0, got {gt.dtype}{list(gt.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {list(pred.shape)} differs from gt shape {list(gt.shape)}")
    if pred.dtype != torch.bool and not (allow_float and pred.is_floating_point()):
        raise ValueError(f"pred must be {'bool or float' if allow_float else 'bool'}, got {pred.dtype}")


def _s_measure_from_sums(sums: _MaskSums, alpha: float) -> torch.Tensor:
    area = sums.height * sums.width
    fg = sums.g.sum(1)  # [B] foreground pixels
    mean_p = sums.scale * sums.p.sum(1) / area  # [B]
    object_score = _object_score(sums, fg, area)
    region_score = _region_score(sums, area)
    mixed = (alpha * object_score + (1 - alpha) * region_score).clamp(min=0)
    return torch.where(fg == 0, 1 - mean_p, torch.where(fg == area, mean_p, mixed))


def _object_score(sums: _MaskSums, fg: torch.Tensor, area: int) -> torch.Tensor:
    """fraction_fg * s(P over FG) + fraction_bg * s(1 - P over BG), s(x) = 2 mean / (mean^2 + 1 + std + eps)."""
    bg = area - fg  # [B]
    p_fg, pp_fg = sums.pg.sum(1), sums.ppg  # [B] sums of P and P^2 over the foreground
    p_bg, pp_bg = sums.p.sum(1) - p_fg, sums.pp.sum(1) - pp_fg
    fg_mean = sums.scale * p_fg / fg.clamp(min=1)
    bg_mean = 1 - sums.scale * p_bg / bg.clamp(min=1)  # mean of 1 - P over the background
    fg_std = sums.scale * _sample_std(fg, p_fg, pp_fg)
    bg_std = sums.scale * _sample_std(bg, p_bg, pp_bg)  # std(1 - P) = std(P)
    fraction_fg = fg.double() / area
    return fraction_fg * _s_object(fg_mean, fg_std) + (1 - fraction_fg) * _s_object(bg_mean, bg_std)


def _sample_std(count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor) -> torch.Tensor:
    """Unbiased std from integer count, sum and sum of squares; 0 for fewer than two values, as the reference."""
    spread = (count * total_sq - total * total).double()  # exact integer: count * sum((x - mean)^2)
    n = count.double()
    return torch.where(count > 1, (spread / (n * (n - 1)).clamp(min=1)).sqrt(), 0.0)


def _s_object(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return 2 * mean / (mean * mean + 1 + std + EPS)


def _region_score(sums: _MaskSums, area: int) -> torch.Tensor:
    """Area-weighted SSIM-like score of the quadrants (LT, RT, LB, RB) around the split point."""
    height, width, cy, cx = sums.height, sums.width, sums.cy, sums.cx
    counts = torch.stack([cy * cx, cy * (width - cx), (height - cy) * cx, (height - cy) * (width - cx)], 1)
    w_lt, w_rt, w_lb = (counts[:, :3].double() / area).unbind(1)  # [B] each, formed as the reference does
    weights = torch.stack([w_lt, w_rt, w_lb, 1 - w_lt - w_rt - w_lb], 1)  # [B, 4]

    spread_p = counts * sums.pp - sums.p * sums.p  # [B, 4] exact integer numerators of the (co)variances
    spread_g = counts * sums.g - sums.g * sums.g
    spread_pg = counts * sums.pg - sums.p * sums.g
    n = counts.double()
    norm = (n * (n - 1 + EPS)).clamp(min=EPS)  # the reference divides sum((x - mean)^2) by (n - 1 + eps)
    scale = sums.scale[:, None]
    mean_p, mean_g = scale * sums.p / n.clamp(min=1), sums.g / n.clamp(min=1)
    var_p, var_g, cov = scale * scale * spread_p / norm, spread_g / norm, scale * spread_pg / norm
    numerator = 4 * mean_p * mean_g * cov
    denominator = (mean_p * mean_p + mean_g * mean_g) * (var_p + var_g)
    numerator_zero = (sums.p == 0) | (sums.g == 0) | (spread_pg == 0)
    denominator_zero = ((sums.p == 0) & (sums.g == 0)) | ((spread_p == 0) & (spread_g == 0))
    ssim = torch.where(numerator_zero, denominator_zero.double(), numerator / (denominator + EPS))
    return (weights * torch.where(counts > 0, ssim, 0.0)).sum(1)


@dataclass(frozen=True)
class _MaskSums:
    """Exact integer pixel sums per sample; quadrant sums are int64[B, 4] in the order (LT, RT, LB, RB)."""

    p: torch.Tensor  # prediction levels
    pp: torch.Tensor  # squared levels
    g: torch.Tensor  # GT pixels
    pg: torch.Tensor  # levels inside the GT
    ppg: torch.Tensor  # [B] squared levels inside the GT
    scale: torch.Tensor  # float64[B]: normalised P = levels * scale
    cy: torch.Tensor  # int64[B]: rows < cy form the top quadrants
    cx: torch.Tensor  # int64[B]: columns < cx form the left quadrants
    height: int
    width: int


def _gather_sums(pred: torch.Tensor, gt: torch.Tensor) -> _MaskSums:
    """Quadrant sums of the planes (P, P*G, G), and P^2, P^2*G for non-binary predictions, for every sample.

    Samples go through one reused buffer a few at a time (bounded memory, a cache-sized working set): their
    planes are written into it, the GT centroid row picks the top rows, and one batched matmul gives every
    plane's per-column sums over all rows and over the top rows. All work after that is [B, ...]-sized.
    """
    batch, height, width = gt.shape
    binary = pred.dtype == torch.bool
    max_level = 1 if binary else _LEVELS
    if (height * width * max_level) ** 2 >= 2**63:  # variances are formed as n * sum(x^2) - sum(x)^2 in int64
        raise ValueError(f"a {height}x{width} frame is too large for exact int64 S-measure sums")
    if binary:
        levels, scale = pred, torch.ones(batch, dtype=torch.float64, device=pred.device)
    else:
        levels, scale = _quantise(pred)  # float64[B, H, W] integers in 0..255, float64[B]
    step = max(1, min(batch, _CHUNK_PIXELS // (height * width)))
    # float32 adds 0/1 values exactly (up to 2^24 rows); sums of squared 8-bit levels need float64
    dtype = torch.float32 if binary else torch.float64
    planes = torch.empty(step, 3 if binary else 5, height, width, dtype=dtype, device=gt.device)
    split_rows, column_sums = [], []
    for start in range(0, max(batch, 1), step):  # an empty batch is one empty chunk
        chunk = planes[: min(step, batch - start)]  # [b, planes, H, W]
        _fill_planes(chunk, levels[start : start + step], gt[start : start + step])
        cy = _centroid_line(chunk[:, _G_PLANE].sum(dim=2), height)  # [b]
        above = torch.arange(height, device=gt.device) < cy[:, None]  # [b, H] rows of the top quadrants
        selector = torch.stack([torch.ones_like(above), above], dim=1).to(chunk.dtype)  # [b, 2, H]
        split_rows.append(cy)
        column_sums.append(torch.matmul(selector[:, None], chunk))  # [b, planes, 2, W]: all rows, top rows
    cy, columns = torch.cat(split_rows), torch.cat(column_sums).double()  # [B], [B, planes, 2, W]
    cx = _centroid_line(columns[:, _G_PLANE, 0], width)  # [B]
    left = torch.arange(width, device=gt.device) < cx[:, None]  # [B, W] columns of the left quadrants
    sums = _quadrants(columns, left).unbind(1)  # per plane: int64[B, 4]
    if binary:  # P^2 = P for a 0/1 map
        p, pg, g = sums
        return _MaskSums(p, p, g, pg, pg.sum(1), scale, cy, cx, height, width)
    p, pg, g, pp, ppg = sums
    return _MaskSums(p, pp, g, pg, ppg.sum(1), scale, cy, cx, height, width)


def _fill_planes(out: torch.Tensor, levels: torch.Tensor, gt: torch.Tensor) -> None:
    """Write the planes of b samples into out[b, planes, H, W]: levels bool|float64[b, H, W], gt bool[b, H, W]."""
    if levels.dtype == torch.bool:
        # through uint8: its conversion to float is many times faster than bool's on CPU
        out[:, 0].copy_(levels.view(torch.uint8))
        out[:, 1].copy_((levels & gt).view(torch.uint8))
        out[:, 2].copy_(gt.view(torch.uint8))
        return
    out[:, 0].copy_(levels)
    torch.mul(levels, gt, out=out[:, 1])
    out[:, 2].copy_(gt.view(torch.uint8))
    torch.mul(levels, levels, out=out[:, 3])
    torch.mul(out[:, 3], gt, out=out[:, 4])


def _quantise(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit levels after the reference's min-max normalisation: (levels float64[B, H, W], scale float64[B]).

    The reference reads k = uint8 values, maps a non-constant map to (k - min) / (max - min) and a constant one
    to k / 255; so levels = k - min (or k) and scale = 1 / (max - min) (or 1 / 255).
    """
    k = torch.round(pred.double() * _LEVELS)  # [B, H, W] the uint8 map the reference is given
    low, high = k.amin(dim=(1, 2)), k.amax(dim=(1, 2))  # [B]
    if not bool(((low >= 0) & (high <= _LEVELS)).all()):  # also catches NaN
        raise ValueError(
            f"pred values must lie in [0, 1]; found levels {low.min().item()}..{high.max().item()}"
        )
    varying = high > low
    levels = k - torch.where(varying, low, 0.0)[:, None, None]
    return levels, torch.where(varying, 1.0 / (high - low).clamp(min=1), 1.0 / _LEVELS)


def _centroid_line(counts: torch.Tensor, size: int) -> torch.Tensor:
    """Split index along one axis from foreground counts per line [b, size]: the reference's rounded (half to
    even) centroid + 1, or the rounded middle + 1 when there is no foreground."""
    counts = counts.double()
    total = counts.sum(dim=1)  # [b]
    index = torch.arange(size, device=counts.device, dtype=torch.float64)
    centre = torch.where(total > 0, (counts @ index / total.clamp(min=1)).round(), round(size / 2))
    return centre.long() + 1


def _quadrants(columns: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Quadrant sums (LT, RT, LB, RB) -> int64[B, planes, 4] from column sums float64[B, planes, 2, W] (all
    rows, top rows) and the left columns bool[B, W]."""
    every_all, top_all = columns.sum(dim=3).long().unbind(2)  # [B, planes] each
    every_left, top_left = (columns @ left[:, None, :, None].double()).squeeze(3).long().unbind(2)
    quadrants = [
        top_left,
        top_all - top_left,
        every_left - top_left,
        every_all - top_all - every_left + top_left,
    ]
    return torch.stack(quadrants, dim=2)
