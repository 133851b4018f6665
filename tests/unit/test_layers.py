"""The import graph runs one way (DESIGN.md, Packages): segr1 (the shared kernel) <- the services (rollout,
reward_server, learner; never each other) <- cluster (the running job) <- frontdoor (the `segr1` command).

Read from the source with `ast`, lazy imports inside functions included, so an import that only runs in one
command still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("segr1", "rollout", "reward_server", "learner", "cluster", "frontdoor")
ALLOWED = {
    "segr1": {"segr1"},
    "rollout": {"segr1", "rollout"},
    "reward_server": {"segr1", "reward_server"},
    "learner": {"segr1", "learner"},
    "cluster": {"segr1", "rollout", "reward_server", "learner", "cluster"},
    "frontdoor": set(PROJECT),
}


def imported_packages(path: Path) -> set[str]:
    """The project's top-level packages that one file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(PROJECT)
    return found


@pytest.mark.parametrize("package", PROJECT)
def test_each_package_imports_only_the_floors_below_it(package):
    wrong = {str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
             for path in sorted((ROOT / package).rglob("*.py"))}
    assert not {path: names for path, names in wrong.items() if names}


def test_the_reader_sees_lazy_imports(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("import os\n\ndef f():\n    from cluster.job import train\n    import learner.grpo as g\n")
    assert imported_packages(source) == {"cluster", "learner"}
