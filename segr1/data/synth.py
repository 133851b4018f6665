"""Deterministic synthetic camouflaged objects: the data of the CPU demo and of the tests.

Each image holds one object on a textured background. Both textures come from the same family (smooth
multi-octave noise blending two colours), so the object blends in; it differs by a colour shift orthogonal
to the background's colour axis and by the noise frequency, so it stays separable by colour statistics
(GrabCut from the object's box finds it; filling the box scores lower) and a small ViT can learn where it is.
Shapes: ellipse, superellipse, smooth blob or star polygon, randomly rotated, covering 5-40% of the frame.

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
AREA_RANGE = (0.02, 0.20)  # object area as a fraction of the frame (camouflaged objects are often small)
# Difficulty knobs, in RGB units. The object/background colour shift sets how camouflaged objects are:
# at 20-34 GrabCut from the box starts to fail outright on some images, at 28-42 it finds nearly all.
PALETTE_SPREAD = 50.0  # distance between the two colours each texture blends
SHIFT_RANGE = (28.0, 42.0)  # object palette offset, orthogonal to the background's colour axis
GRAIN_STD = 7.0  # per-pixel sensor noise
_OUTLINE_POINTS = 96


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


def _object_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """bool[size, size]: one shape, scaled to a random area fraction and placed fully inside the frame."""
    outline = _unit_outline(rng, SHAPES[int(rng.integers(len(SHAPES)))])
    target_area = rng.uniform(*AREA_RANGE) * size * size
    extent = outline.max(axis=0) - outline.min(axis=0)
    scale = min(np.sqrt(target_area / _polygon_area(outline)), 0.9 * (size - 2) / float(extent.max()))
    outline = outline * scale
    low, high = outline.min(axis=0), outline.max(axis=0)
    centre = rng.uniform(1 - low, size - 2 - high)  # keeps the whole object inside the frame
    mask = np.zeros((size, size), np.uint8)
    fixed_point = np.round((outline + centre) * 16).astype(np.int32)  # 4 fractional bits for sub-pixel edges
    cv2.fillPoly(mask, [fixed_point], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


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


def synth_sample(seed: int, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image uint8[size, size, 3] (RGB) and its object mask bool[size, size]."""
    if size < 16:
        raise ValueError(f"synthetic images need size >= 16, got {size}")
    rng = np.random.default_rng([seed, index])
    mask = _object_mask(rng, size)

    colour_a = rng.uniform(50, 200, 3).astype(np.float32)
    axis = rng.standard_normal(3).astype(np.float32)
    colour_b = np.clip(colour_a + PALETTE_SPREAD * axis / np.linalg.norm(axis), 0, 255)
    # The object's colours: the background's palette moved orthogonally to its colour axis, so no
    # background blend can reproduce them (the cue GrabCut and a model can use).
    shift = rng.standard_normal(3).astype(np.float32)
    background_axis = (colour_b - colour_a) / (np.linalg.norm(colour_b - colour_a) + 1e-6)
    shift -= np.dot(shift, background_axis) * background_axis
    shift *= rng.uniform(*SHIFT_RANGE) / (np.linalg.norm(shift) + 1e-6)

    background_cells = int(rng.integers(3, 7))
    object_cells = background_cells * 3  # same family, finer grain
    background = _texture(rng, size, colour_a, colour_b, background_cells)
    foreground = _texture(rng, size, colour_a + shift, colour_b + shift, object_cells)
    # A soft 1-pixel edge: camouflaged objects have no drawn outline.
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)[..., None]
    image = background + alpha * (foreground - background)
    image += GRAIN_STD * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask


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
