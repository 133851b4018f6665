"""RefCOCO / RefCOCO+ / RefCOCOg -> Seg-R1 Parquet (task "referring"), via the `refer` toolkit's files.

Layout:
    <root>/<dataset>/refs(<split_by>).p    pickled list of refs (image_id, ann_id, split, sentences, ...)
    <root>/<dataset>/instances.json        COCO annotations of the referred objects
    <root>/images/train2014/<file_name>    COCO train2014 images (override with image_dir=...)
`split_by` defaults to "unc" for refcoco and refcoco+, "umd" for refcocog. Masks are decoded by pycocotools
(polygons, RLE and uncompressed RLE alike). One row per referring expression, so every expression is
evaluated; `one_per_image=True` instead draws one expression per image at random (seeded), as the released
evaluation did. The instruction is "Identify and segment <expression>".

The refs file is a pickle: only convert files from a source you trust.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np

from segr1.data.codec import decode_image, mask_to_png
from segr1.data.converters.common import (
    ConvertStats,
    check_split,
    require_dir,
    require_file,
    sample_rows,
    write_rows,
)
from segr1.data.errors import DataError
from segr1.data.schema import Row, referring_instruction
from segr1.errors import UsageError

DATASET_SPLITS = {
    "refcoco": ("unc", ("val", "testA", "testB", "train")),
    "refcoco+": ("unc", ("val", "testA", "testB", "train")),
    "refcocog": ("umd", ("val", "test", "train")),
}
SPLITS = ("val", "test", "testA", "testB", "train")


def load_refs(path: Path) -> list[dict]:
    """The refs pickle (written by Python 2, hence latin1 for its byte strings)."""
    with open(require_file(path, "the refer toolkit's refs pickle"), "rb") as handle:
        try:
            refs = pickle.load(handle, encoding="latin1")
        except Exception as error:  # a corrupt pickle can raise almost anything
            raise DataError(str(path), f"unreadable refs pickle ({type(error).__name__}: {error})") from error
    if not isinstance(refs, list):
        raise DataError(str(path), f"expected a list of refs, got {type(refs).__name__}")
    return refs


def load_coco(path: Path):
    """pycocotools' COCO index of instances.json (its progress prints are silenced)."""
    from pycocotools.coco import COCO

    require_file(path, "COCO instances.json of the referred objects")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(path))
        except (ValueError, KeyError, TypeError, AssertionError) as error:  # bad JSON; not a COCO dict (asserted)
            raise DataError(str(path), f"unreadable COCO instances json ({type(error).__name__}: {error})") from error


def _expressions(refs: list[dict], refs_path: Path,
                 stats: ConvertStats) -> dict[int, list[tuple[dict, dict]]]:
    """image_id -> [(ref, sentence)], in file order; refs without expressions are counted as skipped."""
    by_image: dict[int, list[tuple[dict, dict]]] = defaultdict(list)
    for position, ref in enumerate(refs):
        sentences = [s for s in ref.get("sentences", []) if str(s.get("sent", s.get("raw", ""))).strip()]
        if not sentences:
            stats.skip("ref without a referring expression", f"{refs_path}#ref{ref.get('ref_id', position)}")
        for sentence in sentences:
            by_image[int(ref["image_id"])].append((ref, sentence))
    return by_image


def _draw(by_image: dict[int, list[tuple[dict, dict]]], one_per_image: bool,
          seed: int) -> list[tuple[int, list[tuple[dict, dict]]]]:
    """(image_id, [(ref, sentence)]) in image order; `one_per_image` keeps one drawn expression each (seeded)."""
    rng = np.random.default_rng(seed)
    drawn = []
    for image_id in sorted(by_image):
        pairs = by_image[image_id]
        if one_per_image:
            pairs = [pairs[int(rng.integers(len(pairs)))]]
        drawn.append((image_id, pairs))
    return drawn


def _image_rows(coco, instances_path: Path, image_id: int, pairs: list[tuple[dict, dict]], image_dir: Path,
                source: str) -> list[Row]:
    """The rows of one image: one per referring expression."""
    if image_id not in coco.imgs:
        raise DataError(str(instances_path), f"has no image {image_id} (referred to by the refs)")
    info = coco.imgs[image_id]
    image_path = image_dir / info["file_name"]
    if not image_path.is_file():
        raise DataError(str(image_path), f"missing image file of image_id {image_id}")
    image_bytes = image_path.read_bytes()
    height, width = decode_image(image_bytes, path=str(image_path), column="file").shape[:2]
    if (height, width) != (info["height"], info["width"]):
        raise DataError(str(image_path), f"image is {width}x{height}, instances.json says "
                        f"{info['width']}x{info['height']}")
    masks: dict[int, bytes] = {}
    rows = []
    for ref, sentence in pairs:
        ann_id = int(ref["ann_id"])
        if ann_id not in coco.anns:
            problem = f"has no annotation {ann_id} (referred to by ref {ref.get('ref_id')})"
            raise DataError(str(instances_path), problem)
        if ann_id not in masks:
            masks[ann_id] = mask_to_png(coco.annToMask(coco.anns[ann_id]) > 0)
        text = str(sentence.get("sent", sentence.get("raw", ""))).strip()
        sentence_id = sentence.get("sent_id", f"{ref.get('ref_id')}-{text}")
        rows.append(Row(sample_id=f"{source}/{sentence_id}", image=image_bytes, mask=masks[ann_id],
                        instruction=referring_instruction(text), task="referring", source=source,
                        width=width, height=height))
    return rows


def convert(root: str, out: str, split: str = "val", *, dataset: str = "refcoco", split_by: str | None = None,
            image_dir: str | None = None, one_per_image: bool = False, seed: int = 0,
            skip_bad: bool = False) -> ConvertStats:
    if dataset not in DATASET_SPLITS:
        raise UsageError(f"dataset: unknown referring dataset {dataset!r}, expected one of {tuple(DATASET_SPLITS)}")
    default_split_by, splits = DATASET_SPLITS[dataset]
    check_split(dataset, split, splits)
    dataset_dir = require_dir(Path(root) / dataset, f"{dataset} refs and instances.json")
    refs_path = dataset_dir / f"refs({split_by or default_split_by}).p"
    images = require_dir(Path(image_dir) if image_dir else Path(root) / "images" / "train2014",
                         "COCO train2014 images")
    stats = ConvertStats(dataset, split, str(out), skip_bad=skip_bad)
    refs = load_refs(refs_path)
    in_split = [ref for ref in refs if ref.get("split") == split]
    if len(in_split) < len(refs):
        stats.skip("refs of other splits", refs_path, count=len(refs) - len(in_split))
    instances_path = dataset_dir / "instances.json"
    coco = load_coco(instances_path)
    by_image = _expressions(in_split, refs_path, stats)
    if one_per_image:
        dropped = sum(len(pairs) - 1 for pairs in by_image.values())
        if dropped:
            stats.skip("expressions not drawn (one_per_image)", refs_path, count=dropped)
    source = f"{dataset}-{split}"
    rows = sample_rows(_draw(by_image, one_per_image, seed),
                       lambda drawn: _image_rows(coco, instances_path, *drawn, images, source), stats)
    return write_rows(rows, stats)
