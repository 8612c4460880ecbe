"""Helpers that tie the book's table of contents to the nbval run.

``python tests/notebooks.py prepare OUT`` converts every chapter listed in ``_toc.yml``
to an ``.ipynb`` under ``OUT`` (same relative path); ``python tests/notebooks.py check
REPORT OUT`` fails unless nbval executed every one of them (read from pytest's JUnit XML).
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_chapters(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """Every file in ``_toc.yml`` (root, chapters, sections), without extension, in order."""
    data = yaml.safe_load(toc.read_text())
    files: list[str] = [data["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in data.get("parts") or []:
        walk(part.get("chapters"))
    walk(data.get("chapters"))
    return [str(Path(f).with_suffix("")) if f.endswith((".md", ".ipynb")) else f for f in files]


def is_notebook(chapter: str) -> bool:
    """Whether a toc entry is an executable chapter (MyST notebook with a kernelspec)."""
    path = ROOT / f"{chapter}.md"
    head = path.read_text().split("\n---", 1)[0] if path.exists() else ""
    return path.exists() and head.startswith("---") and "kernelspec:" in head


def notebook_chapters() -> list[str]:
    """The toc entries that are notebooks; text-only pages (the bibliography) are not run."""
    return [c for c in toc_chapters() if is_notebook(c)]


def prepare(out: Path) -> list[Path]:
    """Convert each chapter to a notebook under ``out`` with jupytext."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for chapter in toc_chapters():
        src = ROOT / f"{chapter}.md"
        if not src.exists():
            raise SystemExit(f"_toc.yml lists {chapter}, but {src} does not exist")
        if not is_notebook(chapter):
            continue
        dst = out / f"{chapter}.ipynb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "jupytext", "--quiet", "--to", "notebook", "--output",
             str(dst), str(src)],
            check=True,
        )
        made.append(dst)
    return made


def executed_notebooks(report: Path, out: Path) -> set[str]:
    """Chapters (toc form) for which the JUnit report holds at least one passed cell."""
    tree = ET.parse(report)
    seen: set[str] = set()
    for case in tree.iter("testcase"):
        if any(child.tag in ("failure", "error", "skipped") for child in case):
            continue
        file = case.get("file") or case.get("classname", "").replace(".", "/")
        if file.endswith(".ipynb"):
            path = Path(file)
            try:
                rel = path.resolve().relative_to(out.resolve())
            except ValueError:
                rel = path
            seen.add(str(rel.with_suffix("")))
    return seen


def check(report: Path, out: Path) -> None:
    wanted = set(notebook_chapters())
    ran = executed_notebooks(report, out)
    missing = sorted(wanted - ran)
    extra = sorted(ran - wanted)
    if missing or extra:
        raise SystemExit(
            f"nbval did not run every chapter of _toc.yml: missing {missing}, unexpected {extra}"
        )
    print(f"nbval ran all {len(wanted)} chapters listed in _toc.yml")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "prepare":
        for path in prepare(Path(sys.argv[2])):
            print(path)
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit("usage: notebooks.py prepare OUT | check REPORT OUT")
