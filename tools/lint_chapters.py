"""Lint the chapters' code cells with ruff, reporting positions in the .md sources.

    .venv/bin/python tools/lint_chapters.py [CHAPTER.md ...]     (default: every chapter)

Each chapter of ``_toc.yml`` that is a notebook is converted to ``.ipynb`` with jupytext
(into a temporary folder) and checked by ruff with ``tools/ruff_chapters.toml`` (line length
88, the width the book's theme shows without scrolling; the rules notebooks legitimately trip
are off). Every finding is printed as ``book/...md:LINE:COL: CODE message``, LINE being the
line of the Markdown source. Exit status 1 if there is any finding.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tools" / "ruff_chapters.toml"
CODE_CELL = re.compile(r"^(`{3,}|~{3,})\{code-cell\}")


def code_cell_fences(text: str) -> list[tuple[int, int]]:
    """(opening, closing) 0-based line indices of each ``{code-cell}`` of a MyST notebook."""
    lines = text.splitlines()
    cells = []
    i = 0
    while i < len(lines):
        m = CODE_CELL.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != m.group(1):
            j += 1
        cells.append((i, j))
        i = j + 1
    return cells


def source_line(text: str, k: int, cell_source: str, row: int) -> int | None:
    """1-based line in ``text`` of line ``row`` of the k-th code cell, or None.

    The cell's body is found inside its fence as the first line equal to the cell's first
    line (options and the blank line jupytext drops come before it), and checked line by
    line.
    """
    fences = code_cell_fences(text)
    if k >= len(fences):
        return None
    lines = text.splitlines()
    body = cell_source.splitlines()
    start, end = fences[k]
    for first in range(start + 1, end):
        if lines[first : first + len(body)] == body:
            return first + row
    return None


def chapters() -> list[Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from notebooks import notebook_chapters

    return [ROOT / f"{chapter}.md" for chapter in notebook_chapters()]


def lint(paths: list[Path]) -> list[str]:
    import jupytext
    import nbformat

    findings: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        sources = {}
        for path in paths:
            notebook = jupytext.read(path)
            target = out / f"{len(sources)}" / path.with_suffix(".ipynb").name
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, target)
            sources[target.resolve()] = (path, notebook)
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--config", str(CONFIG), "--no-cache",
             "--output-format", "json", str(out)],
            capture_output=True, text=True, check=False,
        )
        if result.returncode not in (0, 1):
            raise SystemExit(f"ruff failed:\n{result.stderr}")
        for item in json.loads(result.stdout or "[]"):
            path, notebook = sources[Path(item["filename"]).resolve()]
            text = path.read_text()
            row, col = item["location"]["row"], item["location"]["column"]
            shown = os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)
            where = f"{shown}:cell {item.get('cell')}:{row}:{col}"
            cell_index = (item.get("cell") or 0) - 1
            if 0 <= cell_index < len(notebook.cells):
                cell = notebook.cells[cell_index]
                code_cells = [c for c in notebook.cells if c.cell_type == "code"]
                line = source_line(text, code_cells.index(cell), cell.source, row)
                if line is not None:
                    where = f"{shown}:{line}:{col}"
            findings.append(f"{where}: {item['code']} {item['message']}")
    return findings


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or chapters()
    findings = lint(paths)
    for line in findings:
        print(line)
    if findings:
        print(f"{len(findings)} finding(s) in the chapters' code (ruff, {CONFIG.name})")
        return 1
    print(f"{len(paths)} chapters: code clean (ruff, line length 88)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
