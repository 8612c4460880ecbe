"""book/_ext/book_extras.py: the build stamp and the author-year bibliography labels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import book_extras  # noqa: E402
from pybtex.database import parse_file  # noqa: E402


@pytest.fixture(scope="module")
def labels():
    book_extras.register_styles()
    bib = parse_file(ROOT / "book" / "references.bib")
    style = book_extras.AuthorYearStyle()
    entries = list(style.sort(bib.entries.values()))
    return dict(
        zip((e.key for e in entries), book_extras.AuthorYearLabelStyle().format_labels(entries),
            strict=True)
    )


def test_labels_read_as_the_text_cites(labels):
    print(labels)
    assert labels["mulayoff2024exact"] == "Mulayoff and Michaeli 2024"
    assert labels["wu2018sgd"] == "Wu et al. 2018"
    assert labels["lanczos1950iteration"] == "Lanczos 1950"
    assert labels["jastrzebski2017three"] == "Jastrzębski et al. 2017"  # TeX accents resolved
    assert labels["dangel2024curvlinops"] == "Dangel et al. 2024"  # "and others"


def test_labels_are_unique_and_disambiguated(labels):
    assert len(set(labels.values())) == len(labels)
    assert {labels["ma2020quenching"], labels["ma2020slow"]} == {
        "Ma et al. 2020a", "Ma et al. 2020b"
    }


def test_bibliography_is_sorted_by_author_then_year(labels):
    keys = list(labels)
    assert keys.index("belkin2019reconciling") < keys.index("mulayoff2024exact")
    assert keys.index("wu2018sgd") < keys.index("wu2022alignment")


def test_build_stamp_names_the_commit_and_links_it():
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    if not commit:
        pytest.skip("not a git checkout")
    stamp = book_extras.build_stamp("https://example.org/repo")
    print(stamp)
    assert f'href="https://example.org/repo/commit/{commit}"' in stamp
    assert commit[:10] in stamp and "Built on " in stamp


def test_build_stamp_honours_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert "Built on 1970-01-01 00:00 UTC" in book_extras.build_stamp()
