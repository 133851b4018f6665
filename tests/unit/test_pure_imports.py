"""The pure modules import without Ray, DeepSpeed, vLLM or SAM2: an indirect import of any of them fails here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PURE_MODULES = ["reward_server.parse", "reward_server.metrics", "reward_server.scoring", "reward_server.baselines",
                "learner.grpo", "segr1.faults"]
BLOCKED = ["ray", "deepspeed", "vllm", "sam2"]
ROOT = Path(__file__).resolve().parents[2]

IMPORT_WITH_BLOCKS = textwrap.dedent(
    """
    import importlib, sys

    class Blocker:
        '''Meta-path finder that refuses the heavy packages and their submodules.'''

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked}:
                raise ImportError(f"blocked heavy import: {{name}}")
            return None

    sys.meta_path.insert(0, Blocker())
    for module in {modules}:
        importlib.import_module(module)
    """
)


def import_blocked(modules: list[str]) -> subprocess.CompletedProcess:
    """Import ``modules`` in one fresh interpreter whose heavy imports raise ImportError."""
    code = IMPORT_WITH_BLOCKS.format(blocked=set(BLOCKED), modules=modules)
    command = [sys.executable, "-c", code]
    return subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_pure_modules_import_with_heavy_packages_blocked():
    """One interpreter for all of them (importing torch dominates); a failure's traceback names the module."""
    result = import_blocked(PURE_MODULES)
    assert result.returncode == 0, result.stderr


def test_the_blocker_does_block():
    """Guard against a blocker that lets everything through: importing ray itself must fail under it."""
    result = import_blocked(["ray"])
    assert result.returncode != 0 and "blocked heavy import: ray" in result.stderr
