"""ReasonSeg -> Seg-R1 Parquet (task "reasoning").

Layout: `<root>/<split>/<stem>.jpg` with `<stem>.json` beside it, LabelMe-style:
    {"text": ["question", ...], "is_sentence": bool,
     "shapes": [{"label": "target" | "ignore" | "flag", "points": [[x, y], ...], ...}, ...]}
Shapes are painted largest first, so a smaller shape drawn inside a larger one wins (this is how the
benchmark's masks are built). Labels containing "ignore" mark pixels left out of scoring (stored in the
`ignore` column); "flag" shapes are deprecated annotations and are skipped (counted); any other label is
target. Vertex coordinates are truncated to integers, as the benchmark's reference masks were drawn.
The instruction is the first question; `all_texts=True` writes one row per question instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from segr1.data.codec import decode_image, mask_to_png
from segr1.data.converters.common import (
    IMAGE_EXTENSIONS,
    ConvertStats,
    check_split,
    require_dir,
    sample_rows,
    write_rows,
)
from segr1.data.errors import DataError
from segr1.data.schema import Row

SPLITS = ("val", "test", "train")
_TARGET, _IGNORE = 1, 2


def read_annotation(path: Path) -> dict:
    """The LabelMe json (some files are cp1252, not UTF-8)."""
    raw = path.read_bytes()
    for encoding in ("utf-8", "cp1252"):
        try:
            return json.loads(raw.decode(encoding))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            last_error = error
    raise DataError(str(path), f"unreadable LabelMe json ({last_error})")


def _fill(polygon: np.ndarray, shape: tuple[int, int], value: int,
          canvas: np.ndarray | None = None) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8) if canvas is None else canvas
    cv2.polylines(canvas, [polygon], isClosed=True, color=value, thickness=1)  # outline pixels belong too
    cv2.fillPoly(canvas, [polygon], value)
    return canvas


def rasterize(annotation: dict, height: int, width: int, json_path: Path,
              stats: ConvertStats) -> tuple[np.ndarray, np.ndarray]:
    """(target bool[H, W], ignore bool[H, W]) from the annotation's polygons."""
    shapes = annotation.get("shapes")
    if not isinstance(shapes, list):
        raise DataError(str(json_path), "missing or malformed key 'shapes'")
    painted: list[tuple[int, np.ndarray, int]] = []  # (area, polygon, value)
    for number, shape in enumerate(shapes):
        label = str(shape.get("label", "")).lower()
        if label == "flag":
            stats.skip("deprecated 'flag' shape", f"{json_path}#shape{number}")
            continue
        try:
            polygon = np.array(shape["points"], dtype=np.float64).astype(np.int32).reshape(-1, 2)
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(str(json_path), f"shape {number}: bad 'points' ({error})") from error
        if len(polygon) < 3:
            problem = f"shape {number}: a polygon needs >= 3 points, got {len(polygon)}"
            raise DataError(str(json_path), problem)
        value = _IGNORE if "ignore" in label else _TARGET
        painted.append((int(_fill(polygon, (height, width), 1).sum()), polygon, value))
    labels = np.zeros((height, width), np.uint8)
    for _, polygon, value in sorted(painted, key=lambda item: -item[0]):  # largest first (stable for ties)
        _fill(polygon, (height, width), value, labels)
    return labels == _TARGET, labels == _IGNORE


def _questions(annotation: dict, json_path: Path) -> list[str]:
    texts = annotation.get("text")
    texts = [texts] if isinstance(texts, str) else texts
    questions = [str(text).strip() for text in texts or [] if str(text).strip()]
    if not questions:
        raise DataError(str(json_path), "no question under key 'text'")
    return questions


def _sample_rows(stem: str, image_path: Path, json_path: Path, source: str, all_texts: bool,
                 stats: ConvertStats) -> list[Row]:
    image_bytes = image_path.read_bytes()
    height, width = decode_image(image_bytes, path=str(image_path), column="file").shape[:2]
    annotation = read_annotation(json_path)
    target, ignore = rasterize(annotation, height, width, json_path, stats)
    questions = _questions(annotation, json_path)
    if not all_texts and len(questions) > 1:
        stats.skip("further questions (all_texts=False)", json_path, count=len(questions) - 1)
        questions = questions[:1]
    mask_png = mask_to_png(target)
    ignore_png = mask_to_png(ignore) if ignore.any() else None
    return [Row(sample_id=f"{source}/{stem}/{number}", image=image_bytes, mask=mask_png, instruction=question,
                task="reasoning", source=source, width=width, height=height, ignore=ignore_png)
            for number, question in enumerate(questions)]


def convert(root: str, out: str, split: str = "val", *, all_texts: bool = False,
            allow_unmatched: bool = False, skip_bad: bool = False) -> ConvertStats:
    check_split("reasonseg", split, SPLITS)
    split_dir = require_dir(Path(root) / split, f"ReasonSeg {split} images and LabelMe jsons")
    stats = ConvertStats("reasonseg", split, str(out), skip_bad=skip_bad)
    images: dict[str, Path] = {}
    jsons: dict[str, Path] = {}
    for path in sorted(split_dir.iterdir()):
        kind = path.suffix.lower()
        found = images if kind in IMAGE_EXTENSIONS else jsons if kind == ".json" else None
        if found is None or not path.is_file():
            stats.skip("neither image nor json", path)
        elif path.stem in found:
            other = found[path.stem].name
            raise DataError(str(path), f"two files with stem {path.stem!r} (the other is {other})")
        else:
            found[path.stem] = path
    pairs = []
    for stem in sorted(images):
        problem = f"no LabelMe json {stem}.json beside the image"
        if stem in jsons:
            pairs.append((stem, images[stem], jsons[stem]))
        elif skip_bad:
            stats.reject(images[stem], problem)
        elif allow_unmatched:
            stats.skip("image without json", images[stem])
        else:
            raise DataError(str(images[stem]), problem)
    for stem in sorted(jsons.keys() - images.keys()):
        stats.skip("json without image", jsons[stem])
    source = f"reasonseg-{split}"
    rows = sample_rows(pairs, lambda pair: _sample_rows(*pair, source, all_texts, stats), stats)
    return write_rows(rows, stats)
