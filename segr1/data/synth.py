"""Deterministic synthetic scenes: the data of the CPU demo and of the tests. The target can only be found by looking.

Each image holds one target and 3-4 distractors on a muted textured background; every object covers 4-8% of the
frame. The target is the RED object (hue within 15 degrees of red) and is STRIPED (two tones of its colour in
parallel bands 5-8 px apart, at a random angle); each distractor has a hue of its own drawn away from red
(60-300 degrees) and a smooth mottled texture.

Why this cue. A box that ignores the image must score little through GrabCut, and the tiny VLM must be able to
learn to find the target in minutes on a CPU:
- GrabCut builds its background model from a band around the box. With all distractors in one colour family,
  any large box saw some of them in its band and GrabCut removed the others itself (a constant box scored
  0.34-0.56). With a hue of their own per distractor, cutting one removes only that one, so a box that ignores
  the image keeps the distractors it encloses: on 64 held-out images at 112 px the best of the blind family
  (reward_server.baselines) scores 0.31, the ground-truth box 0.99.
- Stripes alone (any hue) kept GrabCut blind too, but the tiny VLM did not learn to find a striped object in
  400 supervised steps (greedy output collapsed to one box for every image); a colour family is a per-pixel
  cue its patch embedding picks up at once, and with it the same model reaches held-out IoU 0.86 in 400 steps
  (tests/integration/test_model_can_see.py).
Objects are placed apart (the target's box holds no distractor pixel) and in random order (the target is not
favoured for the free centre). (The first design, one camouflaged object per image, was solved by a constant
near-full-frame box at IoU 0.905.) Shapes: ellipse, superellipse, smooth blob or star polygon, randomly rotated.

Every sample is a pure function of (seed, index): `synth_sample(seed, index)`. A held-out split is the same
generator with another seed (seeds give independent streams), e.g.
    synthesize("train.parquet", n=512, seed=0); synthesize("eval.parquet", n=32, seed=1)
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from segr1.data.codec import encode_png, mask_to_png
from segr1.data.schema import FOREGROUND_INSTRUCTION, Row
from segr1.data.writer import DatasetWriter

SHAPES = ("ellipse", "superellipse", "blob", "polygon")
AREA_RANGE = (0.04, 0.08)  # area of each object as a fraction of the frame
DISTRACTORS = (3, 4)  # inclusive range of distractors per image
TARGET_HUE = (-15.0, 15.0)  # degrees: the target is red (the cue the model must see)
DISTRACTOR_HUE = (60.0, 300.0)  # degrees: every distractor has a hue of its own, at least 45 degrees from red
OBJECT_SATURATION = (0.55, 0.95)
OBJECT_VALUE = (0.6, 0.95)  # the light tone of an object; its dark tone is DARK_TONE times as bright
DARK_TONE = 0.45
STRIPE_PERIOD = (5.0, 8.0)  # pixels per light+dark pair: finer than a 14 px patch, coarser than the grain
BACKGROUND_SATURATION = (0.0, 0.2)  # muted: the background belongs to neither family
GAP = 3  # pixels kept free between the target's box and any distractor
GRAIN_STD = 6.0  # per-pixel sensor noise, RGB units
_OUTLINE_POINTS = 96
_PLACEMENT_TRIES = 200


def _unit_outline(rng: np.random.Generator, shape: str) -> np.ndarray:
    """A closed outline around the origin, radius about 1, as float[K, 2] (x, y)."""
    t = np.linspace(0.0, 2 * np.pi, _OUTLINE_POINTS, endpoint=False)
    aspect = rng.uniform(0.5, 1.0)  # minor / major axis: elongated shapes have box-fill IoU well below 1
    if shape == "ellipse":
        x, y = np.cos(t), aspect * np.sin(t)
    elif shape == "superellipse":
        exponent = 2.0 / rng.uniform(3.0, 6.0)  # |x|^p + |y|^p = 1 with p in [3, 6]: rounded rectangles
        x = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** exponent
        y = aspect * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** exponent
    elif shape == "blob":
        radius = np.ones_like(t)
        for k in (2, 3, 4, 5):
            radius += rng.uniform(0.0, 0.22 / k * 2) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        x, y = radius * np.cos(t), aspect * radius * np.sin(t)
    elif shape == "polygon":
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.55, 1.0, n)
        x, y = radii * np.cos(angles), aspect * radii * np.sin(angles)
    else:
        raise ValueError(f"unknown shape {shape!r}, expected one of {SHAPES}")
    angle = rng.uniform(0, np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.stack([x, y], axis=1) @ rotation.T


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _object_outline(rng: np.random.Generator, size: int) -> np.ndarray:
    """float[K, 2] outline of one shape scaled to a random area fraction, centred on the origin."""
    outline = _unit_outline(rng, SHAPES[int(rng.integers(len(SHAPES)))])
    target_area = rng.uniform(*AREA_RANGE) * size * size
    extent = outline.max(axis=0) - outline.min(axis=0)
    scale = min(np.sqrt(target_area / _polygon_area(outline)), 0.9 * (size - 2) / float(extent.max()))
    return outline * scale


def _rasterise(outline: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    fixed_point = np.round((outline + centre) * 16).astype(np.int32)  # 4 fractional bits for sub-pixel edges
    cv2.fillPoly(mask, [fixed_point], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _try_place(rng: np.random.Generator, outlines: list[np.ndarray], order: list[int], size: int
               ) -> list[np.ndarray | None] | None:
    """Masks placed in `order` (None: a distractor found no room), or None when the target found none."""
    masks: list[np.ndarray | None] = [None] * len(outlines)
    taken = np.zeros((size, size), bool)  # pixels no later distractor may cover (and the target's box may not)
    kernel = np.ones((2 * GAP + 1, 2 * GAP + 1), np.uint8)
    for number in order:
        outline = outlines[number]
        low, high = outline.min(axis=0), outline.max(axis=0)
        for _ in range(_PLACEMENT_TRIES):
            centre = rng.uniform(1 - low, size - 2 - high)  # keeps the whole object inside the frame
            mask = _rasterise(outline, centre, size)
            if number == 0:  # the target reserves its whole box: GrabCut from it must see no distractor
                x1, y1, x2, y2 = _box(mask)
                claim = np.zeros_like(taken)
                claim[max(y1 - GAP, 0):y2 + GAP + 1, max(x1 - GAP, 0):x2 + GAP + 1] = True
                if not (claim & taken).any():
                    break
            elif not (mask & taken).any():
                claim = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
                break
        else:
            if number == 0:
                return None
            continue
        masks[number] = mask
        taken |= claim
    return masks


def _place_objects(rng: np.random.Generator, size: int, count: int) -> list[np.ndarray]:
    """`count` non-touching object masks bool[size, size], fully inside the frame; the first is the target.

    Objects are placed in random order, so the target is not favoured for the free middle of the frame (placed
    first, it was, and a constant central box found it). No distractor comes within GAP pixels of the target's
    box, nor of another object (rejection sampling with a bounded number of tries; a distractor that finds no
    room is left out, so an image may hold one distractor fewer). If the target finds no room, the scene is
    placed again with the target first (then it always fits)."""
    outlines = [_object_outline(rng, size) for _ in range(count)]
    order = rng.permutation(count).tolist()
    masks = _try_place(rng, outlines, order, size) or _try_place(rng, outlines, list(range(count)), size)
    assert masks is not None and masks[0] is not None  # an empty frame always holds the target
    return [m for m in masks if m is not None]


def _hsv_to_rgb(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    """float32[3] RGB in 0..255 for a hue in degrees (any real number) and saturation, value in 0..1."""
    hsv = np.array([[[(hue_deg % 360.0) / 2.0, saturation * 255.0, value * 255.0]]], np.float32).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """float32[size, size] in [0, 1]: two octaves of bicubically upsampled Gaussian noise."""
    total = np.zeros((size, size), np.float32)
    for octave, weight in ((cells, 1.0), (cells * 2, 0.5)):
        grid = rng.standard_normal((octave, octave)).astype(np.float32)
        total += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    low, high = np.percentile(total, (2, 98))
    return np.clip((total - low) / (high - low + 1e-6), 0.0, 1.0)


def _texture(rng: np.random.Generator, size: int, colour_a: np.ndarray, colour_b: np.ndarray,
             cells: int) -> np.ndarray:
    """float32[size, size, 3]: a noise-weighted blend of two colours."""
    weight = _smooth_noise(rng, size, cells)[..., None]
    return colour_a + weight * (colour_b - colour_a)


def _object_palette(rng: np.random.Generator, hues: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A light and a dark tone of one hue drawn from `hues` (degrees): the two colours an object's texture blends."""
    hue, saturation, value = rng.uniform(*hues), rng.uniform(*OBJECT_SATURATION), rng.uniform(*OBJECT_VALUE)
    return _hsv_to_rgb(hue, saturation, value), _hsv_to_rgb(hue, saturation, value * DARK_TONE)


def _stripes(rng: np.random.Generator, size: int, colour_a: np.ndarray, colour_b: np.ndarray) -> np.ndarray:
    """float32[size, size, 3]: hard-edged parallel bands of the two colours at a random angle and phase."""
    angle, period = rng.uniform(0, np.pi), rng.uniform(*STRIPE_PERIOD)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = (x * np.cos(angle) + y * np.sin(angle)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
    weight = (np.sin(phase) > 0).astype(np.float32)[..., None]
    return colour_a + weight * (colour_b - colour_a)


def synth_sample(seed: int, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image uint8[size, size, 3] (RGB) and its target mask bool[size, size]."""
    if size < 16:
        raise ValueError(f"synthetic images need size >= 16, got {size}")
    rng = np.random.default_rng([seed, index])
    count = 1 + int(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1))
    masks = _place_objects(rng, size, count)

    hue = rng.uniform(0, 360)
    base = rng.uniform(0.35, 0.75)
    dark = _hsv_to_rgb(hue, rng.uniform(*BACKGROUND_SATURATION), base)
    light = _hsv_to_rgb(hue + rng.uniform(-30, 30), rng.uniform(*BACKGROUND_SATURATION), min(base + 0.2, 1.0))
    image = _texture(rng, size, dark, light, int(rng.integers(3, 7)))
    for number, mask in enumerate(masks):  # masks[0] is the target
        colours = _object_palette(rng, TARGET_HUE if number == 0 else DISTRACTOR_HUE)
        texture = _stripes(rng, size, *colours) if number == 0 else _texture(rng, size, *colours,
                                                                             int(rng.integers(6, 12)))
        # A soft 1-pixel edge, as in a photograph; the GT mask stays the hard polygon.
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)[..., None]
        image = image + alpha * (texture - image)
    image += GRAIN_STD * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), masks[0]


def synth_row(seed: int, index: int, size: int = 128) -> Row:
    """`synth_sample` as a dataset row (PNG image, 0/255 PNG mask, the foreground instruction)."""
    image, mask = synth_sample(seed, index, size)
    return Row(sample_id=f"synth-s{seed}-{index:06d}", image=encode_png(image), mask=mask_to_png(mask),
               instruction=FOREGROUND_INSTRUCTION, task="foreground", source="synthetic",
               width=size, height=size)


def synthesize(out: str | os.PathLike, n: int, seed: int, size: int = 128) -> str:
    """Write `n` synthetic samples (indices 0..n-1 of `seed`) to the Parquet file `out`; returns its path."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    with DatasetWriter(out, validate=False) as writer:  # rows are valid by construction (tests check it)
        for index in range(n):
            writer.write(synth_row(seed, index, size))
    return str(out)
