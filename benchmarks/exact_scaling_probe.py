"""The largest nK that the exact route finishes within ten minutes, measured (issue 14).

Runs the measurement of ``exact_scaling.py`` once at sizes beyond its suite (default nK = 7000
and 8000; about 15 minutes and 12 GB in all on two cores) and writes
``benchmarks/results/exact_scaling_probe.json``. Not part of ``make bench`` (too long)::

    python benchmarks/exact_scaling_probe.py [NK ...]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import write_result
from exact_scaling import run

TEN_MINUTES = 600.0


def main(sizes: list[int]) -> int:
    rows = []
    for side in sizes:
        start = time.perf_counter()
        row = run(side, np.random.default_rng(0))
        row["wall_including_setup"] = time.perf_counter() - start
        rows.append(row)
        print(f"nK = {side}: {row['seconds']:.0f} s, time / flop limit {row['ratio']:.2f}")
    write_result(
        "exact_scaling_probe",
        {
            "what": "single runs of benchmarks/exact_scaling.run at sizes beyond the suite, to "
            "measure the largest nK done within 10 minutes (not extrapolated)",
            "rows": rows,
            "within_10_minutes": [r["nK"] for r in rows if r["seconds"] <= TEN_MINUTES],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [7000, 8000]))
