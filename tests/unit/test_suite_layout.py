"""The suite collects on a fresh clone: pytest's default import mode puts each test file of a folder without
`__init__.py` on sys.path under its bare name, so two such files with one name fail collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique_outside_packages():
    bare = [p.stem for p in TESTS.rglob("test_*.py") if not (p.parent / "__init__.py").exists()]
    clashes = sorted(name for name, count in Counter(bare).items() if count > 1)
    assert not clashes, f"rename one of each: {clashes}"
