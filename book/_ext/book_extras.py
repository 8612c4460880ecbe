"""Local Sphinx extension of the book (loaded through ``sphinx.local_extensions`` in
``_config.yml``).

* Build stamp: the footer of every page names the commit the book was built from and the
  date of the build (``git`` at build time; "an unversioned copy" outside a repository).
  It goes into ``html_theme_options["extra_footer"]``, an HTML-rebuild setting, so a new
  commit rewrites every page, not only the changed ones.
* Citation style ``author_year_round``: (Wu et al., 2018) and Wu et al. (2018), in round
  brackets as in the papers the book builds on.
* Bibliography style ``authoryear``: entries labelled as the text cites them
  ("Mulayoff and Michaeli 2024", "Wu et al. 2018"), sorted by author and year, with
  their arXiv and DOI links.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import os
import subprocess
from collections import Counter
from pathlib import Path

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinxcontrib.bibtex.plugin import register_plugin as register_bibtex_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def build_stamp(repository_url: str = "") -> str:
    """HTML of the footer line: commit (linked to the repository), its date, build date."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = (
        dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        if epoch
        else dt.datetime.now(dt.UTC)
    )
    built = now.strftime("%Y-%m-%d %H:%M UTC")
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return f"Built on {built} from an unversioned copy."
    short = commit[:10]
    date = _git("show", "-s", "--format=%cs", commit)
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    ref = (
        f'<a href="{html.escape(repository_url.rstrip("/"))}/commit/{commit}">{short}</a>'
        if repository_url
        else short
    )
    changes = " with local changes" if dirty else ""
    return (
        f'<p class="build-stamp">Built on {built} from commit {ref} ({date}){changes}.</p>'
    )


def _stamp_footer(app, config) -> None:
    options = dict(config.html_theme_options or {})
    stamp = build_stamp(options.get("repository_url", ""))
    options["extra_footer"] = (options.get("extra_footer") or "") + stamp
    config.html_theme_options = options


# ---------------------------------------------------------------- bibliography style


def _last_names(entry) -> list[str]:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = []
    for person in persons:
        last = " ".join(person.last_names) or " ".join(person.first_names)
        names.append(_plain(last))
    return names


def _plain(tex: str) -> str:
    """Family name without TeX markup: braces removed, common accents resolved."""
    return Text.from_latex(tex).render_as("text").strip()


def author_year_label(entry) -> str:
    """'Hochreiter and Schmidhuber 1997', 'Wu et al. 2018', 'Lanczos 1950'."""
    names = _last_names(entry)
    others = any(p.last_names == ["others"] for p in entry.persons.get("author", []))
    year = entry.fields.get("year", "n.d.")
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2 and not others:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {year}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year_label(entry) for entry in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] == 1:
                yield label
            else:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]


class AuthorYearStyle(UnsrtStyle):
    """pybtex's unsrt entries (with url, eprint and doi links), author-year labels."""

    default_label_style = "authoryear"
    default_sorting_style = "author_year_title"


def _round() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclasses.dataclass
class AuthorYearRoundReferenceStyle(AuthorYearReferenceStyle):
    """Author-year citations in round brackets: (Wu et al., 2018), Wu et al. (2018)."""

    bracket_parenthetical: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_textual: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_author: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_label: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_year: BracketStyle = dataclasses.field(default_factory=_round)


def register_styles() -> None:
    """Make the styles known to pybtex and sphinxcontrib-bibtex (by name, in _config.yml)."""
    register_bibtex_plugin(
        "sphinxcontrib.bibtex.style.referencing", "author_year_round",
        AuthorYearRoundReferenceStyle, force=True,
    )
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle, force=True)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle, force=True)


def setup(app):
    register_styles()
    app.connect("config-inited", _stamp_footer, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}


__all__ = ["AuthorYearStyle", "author_year_label", "build_stamp", "register_styles"]
