"""`convert(name, root, out, split)`: public dataset layouts -> Seg-R1 Parquet, dispatched by dataset name.

    from segr1.data.convert import convert
    stats = convert("cod10k", "/data/COD10K-v3", "cod10k_train.parquet", split="train")
    print(stats.summary())

Names: cod10k, camo, nc4k, duts, dis5k (task "foreground"), refcoco (task "referring"; `dataset=` picks
refcoco, refcoco+ or refcocog) and reasonseg (task "reasoning"). Converter modules are imported on use, so
listing the registry costs nothing. Layout details: each module's docstring in `segr1.data.converters`.

A bad sample stops the conversion with a `DataError` naming its file; `skip_bad=True` leaves bad samples out
instead and lists them (path, reason) in `<out>.skipped.csv`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from segr1.data.converters.common import ConvertStats
from segr1.data.errors import DataError
from segr1.errors import UsageError

# name -> module in segr1.data.converters; each has SPLITS (the first is the default) and convert(...)
CONVERTERS: dict[str, str] = {
    "cod10k": "segr1.data.converters.cod10k",
    "camo": "segr1.data.converters.camo",
    "nc4k": "segr1.data.converters.nc4k",
    "duts": "segr1.data.converters.duts",
    "dis5k": "segr1.data.converters.dis5k",
    "refcoco": "segr1.data.converters.refcoco",
    "reasonseg": "segr1.data.converters.reasonseg",
}


def converter_module(name: str) -> ModuleType:
    if name not in CONVERTERS:
        raise UsageError(f"unknown dataset {name!r}, expected one of {tuple(CONVERTERS)}")
    return importlib.import_module(CONVERTERS[name])


def splits(name: str) -> tuple[str, ...]:
    """The splits `name` can convert; the first is used when no split is given."""
    return tuple(converter_module(name).SPLITS)


def convert(name: str, root: str, out: str, split: str | None = None, **opts) -> ConvertStats:
    """Convert split `split` (default: the dataset's first split) of the dataset at `root` into `out`.

    `opts` go to the converter, e.g. `skip_bad=True` (leave bad samples out, listed beside `out`),
    `allow_unmatched=True` (count images without GT instead of failing), `dataset="refcocog"`,
    `one_per_image=True` (refcoco), `all_texts=True` (reasonseg).
    """
    module = converter_module(name)
    if not Path(root).is_dir():
        raise DataError(str(root), f"missing folder (expected the {name} dataset root)")
    return module.convert(root, out, split or module.SPLITS[0], **opts)
