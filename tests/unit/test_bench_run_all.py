"""bench/run_all.py (`make bench`): every script runs, its output lands in a dated RESULTS section, a failing
script is recorded as failed without stopping the others, and the exit status reports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_all_appends_each_scripts_output_and_reports_failures(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("import sys\nprint('| a | b |')\nprint('|---|---|')\nprint('| 1 |', sys.argv[1], '|')\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('half done')\nsys.stderr.write('no such file: data.parquet')\nsys.exit(3)\n")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nthe table of record\n")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--results", str(results),
                           str(bad), f"{good} 2.5"], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 1  # one script failed
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nthe table of record\n")  # kept, the section appended below
    assert "## `make bench`, " in text
    assert f"### `{bad}`: exit 3" in text and "half done" in text and "no such file: data.parquet" in text
    assert f"### `{good} 2.5`: exit 0" in text and "| 1 | 2.5 |" in text  # ran after the failure, with its args
    assert text.index(str(bad)) < text.index(f"{good} 2.5")  # in the order given
