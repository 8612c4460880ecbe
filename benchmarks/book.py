"""Whole-book execution time and the slowest chapters.

Executes every notebook chapter listed in ``_toc.yml`` (the same list nbval and the build use,
read by ``tests/notebooks.py``) the way Jupyter Book does: converted with jupytext and run by
nbclient in a fresh kernel, in the chapter's own folder, at the default problem sizes
(``COMPANION_SCALE=book``). Each chapter is timed from kernel start to the last cell, so the
total is what ``make book`` pays for execution. Targets: the whole book within 12 minutes,
every chapter within 3 minutes. Writes benchmarks/results/book.json.

``python benchmarks/book.py book/part1/ch01_min_norm ...`` times only the chapters named and
prints them, without writing the results (for trying a chapter while writing it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jupytext
import nbclient
from _common import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from notebooks import notebook_chapters  # noqa: E402  (tests/notebooks.py reads _toc.yml)

BOOK_TARGET_S = 12 * 60.0
CHAPTER_TARGET_S = 3 * 60.0
CELL_TIMEOUT_S = 300  # as the build's execute.timeout in _config.yml


def execute(chapter: str) -> dict:
    """Run one chapter in a fresh kernel; seconds and number of code cells."""
    path = ROOT / f"{chapter}.md"
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    cells = sum(cell.cell_type == "code" for cell in notebook.cells)
    return {"chapter": chapter, "seconds": seconds, "code_cells": cells}


def main(argv: list[str]) -> int:
    os.environ.setdefault("COMPANION_SCALE", "book")
    os.environ.setdefault("COMPANION_HEADLESS", "1")  # as `make book`: no interactive widgets
    chapters = argv or notebook_chapters()
    rows, failed = [], []
    for chapter in chapters:
        try:
            row = execute(chapter)
        except Exception as exc:  # a failing chapter is reported, the others still run
            print(f"{chapter:45s}  FAILED: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            failed.append(chapter)
            continue
        flag = "" if row["seconds"] <= CHAPTER_TARGET_S else "  over 3 min"
        print(
            f"{chapter:45s} {row['seconds']:7.1f} s  ({row['code_cells']} cells){flag}", flush=True
        )
        rows.append(row)
    total = sum(row["seconds"] for row in rows)
    slowest = sorted(rows, key=lambda row: row["seconds"], reverse=True)[:5]
    ratio = total / BOOK_TARGET_S
    print(
        f"whole book {total:.0f} s for {len(rows)} chapters = {ratio:.2f} of the "
        f"{BOOK_TARGET_S / 60:.0f}-minute target: {'met' if ratio <= 1 else 'MISSED'}"
    )
    print("slowest: " + ", ".join(f"{r['chapter']} {r['seconds']:.0f} s" for r in slowest))
    if argv:
        print("(a subset of the chapters: results not written)")
        return 1 if failed else 0
    path = write_result(
        "book",
        {
            "scale": os.environ["COMPANION_SCALE"],
            "target_seconds": BOOK_TARGET_S,
            "chapter_target_seconds": CHAPTER_TARGET_S,
            "total_seconds": total,
            "ratio_to_target": ratio,
            "meets_target": bool(ratio <= 1 and not failed),
            "chapters": rows,
            "slowest": [row["chapter"] for row in slowest],
            "failed": failed,
            "note": "timings on a shared machine vary by up to ~2x between runs",
        },
    )
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
