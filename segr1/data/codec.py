"""Image and mask bytes <-> numpy arrays (OpenCV), with errors that say where the bytes came from.

Images decode to RGB uint8[H, W, 3]. EXIF orientation is ignored on purpose: annotations (COCO polygons,
LabelMe shapes, GT PNGs) are drawn in the stored pixel frame, so rotating the image would misalign them.
"""

from __future__ import annotations

import cv2
import numpy as np

from segr1.data.errors import DataError

_IMAGE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array, [H, W] (gray) or [H, W, 3] (RGB)."""
    if array.dtype != np.uint8:
        raise TypeError(f"encode_png needs uint8, got {array.dtype}")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"cv2 could not PNG-encode an array of shape {array.shape}")
    return buffer.tobytes()


def mask_to_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a boolean mask [H, W] stored as {0, 255}."""
    return encode_png(np.where(mask, 255, 0).astype(np.uint8))


def _decode(data: bytes | None, flags: int, path: str, row: int | None, column: str) -> np.ndarray:
    if not data:
        raise DataError(path, "empty bytes", row=row, column=column)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if decoded is None:
        raise DataError(path, f"undecodable image bytes ({len(data)} bytes, starting {bytes(data[:8])!r})",
                        row=row, column=column)
    return decoded


def decode_image(data: bytes, *, path: str = "<bytes>", row: int | None = None,
                 column: str = "image") -> np.ndarray:
    """RGB uint8[H, W, 3] from PNG/JPEG/BMP bytes; gray and 16-bit inputs are converted."""
    return cv2.cvtColor(_decode(data, _IMAGE_FLAGS, path, row, column), cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes, *, path: str = "<bytes>", row: int | None = None,
                column: str = "mask") -> np.ndarray:
    """uint8[H, W] from single-channel 8-bit PNG bytes, as the schema stores masks."""
    mask = _decode(data, cv2.IMREAD_UNCHANGED, path, row, column)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(path, f"mask must be single-channel uint8, got shape {mask.shape} {mask.dtype}",
                        row=row, column=column)
    return mask


def read_gray(data: bytes, *, path: str) -> np.ndarray:
    """uint8[H, W] gray levels of any source GT file (RGB, palette, 16-bit), for converters."""
    return _decode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION, path, None, "file")


def binarize_gt(gray: np.ndarray) -> np.ndarray:
    """{0, 255} uint8 mask from a gray GT, thresholded at >128 exactly as `pysodmetrics` does."""
    return np.where(gray > 128, 255, 0).astype(np.uint8)
