"""Run every benchmark in this folder (``make bench``) and print a summary of the ratios.

Each ``benchmarks/<name>.py`` measures our method and the naive one in the same run, prints the
ratio against its target, and writes ``benchmarks/results/<name>.json`` (machine, versions,
date). This script runs them one after another in fresh interpreters, so one benchmark's
memory or thread settings cannot affect the next.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "_common.py"})
    if not scripts:
        print("no benchmarks found")
        return 1
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)])
        print(f"--- {script.name}: exit {code}, {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
