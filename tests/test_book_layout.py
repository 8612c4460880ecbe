"""Static checks of the book: the toc, chapter front matter, and that each chapter asserts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from notebooks import ROOT, is_notebook, notebook_chapters, toc_chapters

CHAPTERS = notebook_chapters()


def test_toc_entries_exist():
    for chapter in toc_chapters():
        assert (ROOT / f"{chapter}.md").exists(), f"_toc.yml lists missing file {chapter}.md"


def test_every_notebook_in_book_is_in_toc():
    listed = set(toc_chapters())
    notebooks = {
        str(p.relative_to(ROOT).with_suffix(""))
        for p in (ROOT / "book").rglob("*.md")
        if is_notebook(str(p.relative_to(ROOT).with_suffix("")))
    }
    assert notebooks - listed == set(), f"notebooks missing from _toc.yml: {notebooks - listed}"


def test_toc_has_notebook_chapters():
    assert "book/intro" in CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_front_matter_and_assert(chapter):
    text = (ROOT / f"{chapter}.md").read_text()
    front = yaml.safe_load(text.split("---", 2)[1])
    assert front["kernelspec"]["name"] == "python3"
    assert front["jupytext"]["text_representation"]["format_name"] == "myst"
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.S)
    assert cells, f"{chapter} has no code cells"
    assert any(re.search(r"^\s*assert\b", c, flags=re.M) for c in cells), (
        f"{chapter} has no asserting cell"
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_citations_resolve(chapter):
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book/references.bib").read_text(), re.M))
    text = (ROOT / f"{chapter}.md").read_text()
    cited = set()
    for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", text):
        cited.update(k.strip() for k in group.split(","))
    assert cited <= keys, f"unknown citation keys in {chapter}: {sorted(cited - keys)}"


def test_bib_keys_unique():
    keys = re.findall(r"^@\w+\{([^,]+),", (ROOT / "book/references.bib").read_text(), re.M)
    assert len(keys) == len(set(keys)), "duplicate keys in references.bib"


def test_labels_unique_across_book():
    labels: list[str] = []
    for path in Path(ROOT / "book").rglob("*.md"):
        labels += re.findall(r"^:label:\s*(\S+)", path.read_text(), flags=re.M)
    dupes = {x for x in labels if labels.count(x) > 1}
    assert not dupes, f"duplicate labels: {dupes}"
