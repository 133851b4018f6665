"""`make bench`: run benchmark scripts one after another and append what each printed to bench/RESULTS.md.

    .venv/bin/python bench/run_all.py bench/metrics.py bench/weight_sync.py ...        # what `make bench` runs
    .venv/bin/python bench/run_all.py --results /tmp/r.md bench/metrics.py             # elsewhere

RESULTS.md keeps its hand-written table of record at the top; each `make bench` appends one dated section
below it, with the machine, its load, and every script's command, exit status, seconds and output (the scripts
print Markdown tables, `bench.common.print_table`). A script that fails is recorded as failed, the others
still run, and the exit status is then non-zero.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(script: str, timeout_s: float) -> tuple[int, float, str]:
    """(exit status, seconds, output) of `python script`; a timeout is status 124, as timeout(1) reports it."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *script.split()], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        code, output = done.returncode, done.stdout + (f"\n[stderr, last lines]\n{done.stderr[-2000:]}"
                                                      if done.returncode else "")
    except subprocess.TimeoutExpired as expired:
        code, output = 124, f"{expired.stdout or ''}\n[stopped after {timeout_s:.0f} s]"
    return code, time.perf_counter() - start, output.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scripts", nargs="+", help="each a script path, with its arguments in one quoted word")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per script")
    args = p.parse_args()
    one, five, _ = os.getloadavg()
    section = [(f"\n## `make bench`, {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.machine()} with "
               f"{os.cpu_count()} cores, load {one:.2f} / {five:.2f} at the start\n")]
    failed = []
    for script in args.scripts:
        print(f"== {script}", flush=True)
        code, seconds, output = run_one(script, args.timeout_s)
        print(output, flush=True)
        if code != 0:
            failed.append(script)
        section.append(f"\n### `{script}`: exit {code}, {seconds:.0f} s\n\n```text\n{output}\n```\n")
    with open(args.results, "a") as out:
        out.write("".join(section))
    print(f"appended {len(args.scripts)} results to {args.results}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
