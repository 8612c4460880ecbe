"""Run every benchmark in this folder (``make bench``) and print a summary of the ratios.

Each ``benchmarks/<name>.py`` measures our method and the naive one in the same run, prints the
ratio against its target, and writes ``benchmarks/results/<name>.json`` (machine, versions,
date). This script runs them one after another in fresh interpreters, so one benchmark's
memory or thread settings cannot affect the next, echoes their output, and ends with every
line that compared a measurement with its target.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Words with which a benchmark's line states whether a target was met.
VERDICT_WORDS = ("met", "MISSED", "meets", "BELOW")


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "_common.py"})
    if not scripts:
        print("no benchmarks found")
        return 1
    failed = []
    verdicts: list[tuple[str, str]] = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=HERE,
        )  # fmt: skip
        for line in proc.stdout:  # echo live, keep the lines that compare with a target
            print(line, end="", flush=True)
            if "target" in line and any(w in line for w in VERDICT_WORDS):
                verdicts.append((script.name, line.strip()))
        code = proc.wait()
        print(f"--- {script.name}: exit {code}, {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            failed.append(script.name)
    print("\n=== every ratio against its target ===")
    for name, line in verdicts:
        print(f"{name:20s} {line}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
