"""Static checks of the chapters' sources: what a reader would trip over.

* Exercise solutions execute: no solution holds a plain ```python block (which never runs);
  its code lives in code cells between ``solution-start`` and ``solution-end``.
* No broken inline math: a source line that starts like a list item (``+ ``, ``- ``, ``* ``
  or ``1. ``) while an inline ``$...$`` formula is still open turns the rest of the formula
  into a bullet (the formula shows as raw TeX).
* Code cells a reader can follow: the median code cell of each reading chapter (not the
  appendices, which render stored results) has at most 10 lines.
* No long inline formula: an inline ``$...$`` of more than ``INLINE_MATH_MAX`` characters
  of TeX is cut off by the theme on narrow screens; it belongs in display math.
* Proofs are shown one way: every ``{prf:proof}`` inline, never in a dropdown (neither its
  own ``:class: dropdown`` nor an enclosing dropdown admonition).
* One figure style: the first code cell of every chapter calls ``use_book_style()``; no
  figure wider than ``TEXT_WIDTH`` inches, no font size below 8; every figure cell has a
  caption, a name and alt text that describes the figure (not a file name).
* The book's own pages agree with their sources: the reader's map's arrows are backed by
  cross-references, "How to cite" by ``CITATION.cff``, and the package's docstrings put no
  role (a citation key) into a section title, where the page's contents would show it raw.
(The chapters' code itself is linted by ``make lint-chapters``, tools/lint_chapters.py.)
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
import re
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from companion.book.style import TEXT_WIDTH

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(
    p for p in (ROOT / "book").rglob("*.md") if "kernelspec" in p.read_text()[:2000]
)
#: Every page of the book (notebook chapters and plain Markdown pages): the text checks.
PAGES = sorted((ROOT / "book").rglob("*.md"))
FENCE = re.compile(r"^(`{3,}|~{3,})")
LIST_START = re.compile(r"^\s*([+*-]|\d+\.)\s")


def _blocks(text: str):
    """Yield (kind, first_line_number, lines): kind is a fence's info string or 'text'."""
    lines = text.splitlines()
    i, buf, start = 0, [], 1
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            if buf:
                yield "text", start, buf
                buf = []
            fence, info = m.group(1), lines[i][len(m.group(1)) :].strip()
            j = i + 1
            while j < len(lines) and not lines[j].startswith(fence):
                j += 1
            yield info, i + 1, lines[i + 1 : j]
            i, start = j + 1, j + 2
            continue
        buf.append(lines[i])
        i += 1
    if buf:
        yield "text", start, buf


def _inline_dollars(line: str) -> int:
    """Number of single ``$`` delimiters on a line (``$$`` and ``\\$`` do not count)."""
    line = line.replace("\\$", "")
    return len(re.findall(r"(?<!\$)\$(?!\$)", line))


def _markdown_lines(text: str):
    """Yield (line_number, line) of the Markdown a reader sees: outside code fences, and
    inside directive fences whose body is Markdown ({prf:...}, {solution}, {exercise}, ...).
    Code cells, plain code blocks and ``{math}`` bodies are skipped."""
    stack: list[tuple[str, bool]] = []  # (fence, body is markdown)
    for line_no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.lstrip())
        if m:
            fence = m.group(1)
            if stack and line.strip() == stack[-1][0]:
                stack.pop()
                yield line_no, ""  # a closing fence ends the paragraph
                continue
            info = line.strip()[len(fence) :].strip()
            markdown = info.startswith("{") and not info.startswith(
                ("{code-cell}", "{code-block}", "{code}", "{math}", "{literalinclude}")
            )
            if not stack or stack[-1][1]:
                stack.append((fence, markdown))
                yield line_no, ""
                continue
        if not stack or stack[-1][1]:
            yield line_no, line


def broken_inline_math(text: str) -> list[int]:
    """Line numbers where a list-like line starts inside an open inline formula."""
    bad, open_, in_display = [], False, False
    for line_no, line in _markdown_lines(text):
        stripped = line.strip()
        if stripped == "" or stripped.startswith(":"):  # blank line or directive option
            open_ = False
            continue
        if stripped.startswith("$$"):
            if stripped == "$$" or not stripped.endswith("$$") or len(stripped) == 2:
                in_display = not in_display
            continue
        if in_display:
            continue
        if open_ and LIST_START.match(line):
            bad.append(line_no)
        if _inline_dollars(line) % 2:
            open_ = not open_
    return bad


def plain_code_in_solutions(text: str) -> list[int]:
    """Line numbers of ```python blocks inside ``{solution}`` directives."""
    bad = []
    solution_depth = None
    for line_no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m and "{solution}" in line:
            solution_depth = len(m.group(1))
            continue
        if solution_depth is not None:
            if m and len(m.group(1)) == solution_depth and line.strip() == m.group(1):
                solution_depth = None
            elif m and line.strip().startswith(m.group(1)) and "python" in line:
                bad.append(line_no)
    return bad


def code_cell_lengths(text: str) -> list[int]:
    out = []
    for kind, _, lines in _blocks(text):
        if kind.startswith("{code-cell}"):
            body = [ln for ln in lines if ln.strip() and not ln.startswith((":", "---"))]
            # drop a YAML header block (--- ... ---) of cell options
            if lines and lines[0].strip() == "---":
                end = lines.index("---", 1) if "---" in lines[1:] else 0
                body = [ln for ln in lines[end + 1 :] if ln.strip()]
            out.append(len(body))
    return out


CH06_ISSUE16 = (
    ":::{admonition} Proof\n"
    ":class: dropdown\n"
    "\n"
    "```{prf:proof}\n"
    r"Expand $(I - \eta\Hhat)\otimes(I - \eta\Hhat) = I\otimes I"
    r" - \eta(\Hhat\otimes I + I\otimes\Hhat)" "\n"
    r"+ \eta^2\Hhat\otimes\Hhat$ and average: $\E\Hhat = H$ and" "\n"
    "```\n"
    ":::\n"
)

CH09_ISSUE16 = (
    "```{solution} ch09-ex-isserlis\n"
    ":class: dropdown\n"
    "\n"
    r"Entrywise, $\E[x_ax_bx_cx_e]u_au_b = \sum_{a,b}u_au_b(\delta_{ab}\delta_{ce}"
    r" + \delta_{ac}\delta_{be}" "\n"
    r"+ \delta_{ae}\delta_{bc})$, which is $\norm{u}^2\delta_{ce} + 2u_cu_e$." "\n"
    "```\n"
)

#: Longest inline formula, in characters of TeX (whitespace runs count as one).
INLINE_MATH_MAX = 70


def long_inline_math(text: str, limit: int = INLINE_MATH_MAX) -> list[tuple[int, int]]:
    """(line where it starts, length) of each inline ``$...$`` longer than ``limit``."""
    found = []
    paragraph: list[tuple[int, str]] = []

    def flush():
        if not paragraph:
            return
        joined, starts = "", []
        for line_no, line in paragraph:
            starts.append((len(joined), line_no))
            joined += line.replace("\\$", "  ") + "\n"
        joined = re.sub(r"\$\$.*?\$\$", lambda m: " " * len(m.group(0)), joined, flags=re.S)
        for m in re.finditer(r"(?<!\$)\$(?!\$)(.+?)(?<!\$)\$(?!\$)", joined, flags=re.S):
            tex = re.sub(r"\s+", " ", m.group(1).strip())
            if len(tex) > limit:
                line_no = max(no for offset, no in starts if offset <= m.start())
                found.append((line_no, len(tex)))
        paragraph.clear()

    in_display = False
    for line_no, line in _markdown_lines(text):
        stripped = line.strip()
        if stripped.startswith("$$") and (stripped == "$$" or not stripped.endswith("$$")):
            flush()
            in_display = not in_display
            continue
        if in_display:
            continue
        if stripped == "" or stripped.startswith(":"):
            flush()
            continue
        paragraph.append((line_no, line))
    flush()
    return found


OPTION = re.compile(r"^\s*:(\w[\w-]*):\s*(.*)$")


def proofs_not_inline(text: str) -> list[int]:
    """Lines of ``{prf:proof}`` directives shown in a dropdown (own class or an enclosing one)."""
    bad = []
    lines = text.splitlines()
    stack: list[tuple[str, int, bool]] = []  # (closing fence, opening line, dropdown)
    fence_re = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})(.*)$")
    for i, line in enumerate(lines):
        m = fence_re.match(line)
        if not m:
            continue
        fence, info = m.group(1), m.group(2).strip()
        if stack and not info and fence == stack[-1][0]:
            stack.pop()
            continue
        if not info.startswith("{") and fence[0] != ":":
            # a plain code block: skip to its end
            stack.append((fence, i, False))
            continue
        options = {}
        for follow in lines[i + 1 :]:
            o = OPTION.match(follow)
            if not o:
                break
            options[o.group(1)] = o.group(2)
        dropdown = "dropdown" in options.get("class", "") or info.startswith("{toggle}")
        if info.startswith("{prf:proof}") and (dropdown or any(d for _, _, d in stack)):
            bad.append(i + 1)
        stack.append((fence, i, dropdown))
    return bad


def test_the_checks_catch_what_they_should():
    assert broken_inline_math("text $a\n+ b$ more\n") == [2]
    assert broken_inline_math("text $a$\n- item\n") == []
    assert broken_inline_math("```{prf:proof}\nsee $a\n+ b$\n```\n") == [3]
    assert broken_inline_math("```{code-cell} ipython3\nx = '$a'\n+ 1\n```\n") == []
    # the two cases of issue 16, verbatim from the sources of the time (ch06, ch09)
    assert broken_inline_math(CH06_ISSUE16) == [6]
    assert broken_inline_math(CH09_ISSUE16) == [5]
    assert long_inline_math("a $" + "x" * 71 + "$ b\n") == [(1, 71)]
    assert long_inline_math("a $" + "x" * 70 + "$ b $$" + "y" * 99 + "$$\n") == []
    assert long_inline_math("a $x +\n" + "y" * 70 + "$ b\n") == [(1, 74)]
    assert long_inline_math("```{code-cell} ipython3\nx = '$" + "x" * 80 + "$'\n```\n") == []
    assert proofs_not_inline("```{prf:proof}\n:class: dropdown\nx\n```\n") == [1]
    assert proofs_not_inline(CH06_ISSUE16) == [4]
    assert proofs_not_inline("```{prf:proof}\nx\n```\n") == []
    assert bare_paper_numbers("As Theorem 6 shows.\n") == [(1, "Theorem 6 shows.")]
    assert bare_paper_numbers("By MM Thm 6 and Ma and Ying's Theorem 3.\n") == []
    assert bare_paper_numbers("Ma and Ying (Theorem 1,\nCorollary 3). Theorem 2 too.\n") == [
        (2, "Theorem 2 too.")
    ]
    assert bare_paper_numbers("See Theorem 7.3 and {prf:ref}`x`.\n") == []
    assert plain_code_in_solutions("````{solution} x\n```python\nx = 1\n```\n````\n") == [2]
    assert code_cell_lengths("```{code-cell} ipython3\n:tags: [x]\na = 1\nb = 2\n```\n") == [2]


@pytest.mark.parametrize("chapter", PAGES, ids=lambda p: p.stem)
def test_no_broken_inline_math(chapter):
    assert broken_inline_math(chapter.read_text()) == []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_solutions_are_executed_code(chapter):
    assert plain_code_in_solutions(chapter.read_text()) == []


#: Reading chapters (the appendices render stored results behind hidden inputs).
READING = [p for p in CHAPTERS if "appendix" not in p.parts]


@pytest.mark.parametrize("chapter", READING, ids=lambda p: p.stem)
def test_median_code_cell_is_short(chapter):
    lengths = code_cell_lengths(chapter.read_text())
    assert lengths and statistics.median(lengths) <= 10, statistics.median(lengths)


@pytest.mark.parametrize("chapter", PAGES, ids=lambda p: p.stem)
def test_no_long_inline_math(chapter):
    """A formula longer than INLINE_MATH_MAX characters of TeX is display math."""
    assert long_inline_math(chapter.read_text()) == []


PAPER_NUMBER = re.compile(
    r"\b(?:Theorems?|Propositions?|Corollar(?:y|ies)|Lemmas?|Definitions?|Remarks?|Figures?"
    r"|Fig\.|Tables?|Examples?|Assumptions?)\s+\(?\d+\b(?!\.\d)"
)
SOURCE = re.compile(
    r"\b(?:MM|MY|WME|WWS|Ma|Ying|Mulayoff|Michaeli|Wu|Wang|Su|Cohen|Keskar|Hochreiter"
    r"|[Tt]heir|[Tt]he papers?|slides?)\b|\{cite:[tp]\}"
)


def bare_paper_numbers(text: str) -> list[tuple[int, str]]:
    """Typed numbers of results ("Theorem 6") whose sentence names no source.

    A paper's numbering is always named with its source ("MM Thm 6", "Ma and Ying's
    Theorem 3"); the book's own results are referred to by links, never typed.
    """
    found = []
    paragraph: list[tuple[int, str]] = []

    def flush():
        joined, starts = "", []
        for line_no, line in paragraph:
            starts.append((len(joined), line_no))
            joined += line + " "
        for m in PAPER_NUMBER.finditer(joined):
            sentence_start = joined.rfind(". ", 0, m.start()) + 1
            if not SOURCE.search(joined[sentence_start : m.start()]):
                line_no = max(no for offset, no in starts if offset <= m.start())
                found.append((line_no, joined[m.start() : m.end() + 20].strip()))
        paragraph.clear()

    for line_no, line in _markdown_lines(text):
        if line.strip() == "" or line.strip().startswith(":"):
            flush()
        else:
            paragraph.append((line_no, line))
    flush()
    return found


@pytest.mark.parametrize("chapter", PAGES, ids=lambda p: p.stem)
def test_paper_numbers_name_their_source(chapter):
    assert bare_paper_numbers(chapter.read_text()) == []


@pytest.mark.parametrize("chapter", PAGES, ids=lambda p: p.stem)
def test_proofs_are_inline(chapter):
    assert proofs_not_inline(chapter.read_text()) == []


# ------------------------------------------------------------------ one figure style


def code_cells(text: str):
    """(line of the fence, options dict, source lines) of every ``{code-cell}``."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not (m and lines[i][len(m.group(1)) :].startswith("{code-cell}")):
            i += 1
            continue
        fence, start, j = m.group(1), i, i + 1
        options: dict = {}
        if j < len(lines) and lines[j].strip() == "---":
            end = j + 1
            while end < len(lines) and lines[end].strip() != "---":
                end += 1
            options = yaml.safe_load("\n".join(lines[j + 1 : end])) or {}
            j = end + 1
        else:
            while j < len(lines) and lines[j].startswith(":"):
                key, _, value = lines[j][1:].partition(":")
                options[key.strip()] = yaml.safe_load(value) if value.strip() else None
                j += 1
        k = j
        while k < len(lines) and lines[k].strip() != fence:
            k += 1
        yield start + 1, options, lines[j:k]
        i = k + 1


def test_code_cells_parse_both_option_forms():
    text = (
        "```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    name: f\n---\nx = 1\n```\n"
        "```{code-cell} ipython3\n:tags: [hide-input]\n\ny = 2\n```\n"
    )
    cells = list(code_cells(text))
    assert cells[0] == (1, {"mystnb": {"figure": {"name": "f"}}}, ["x = 1"])
    assert cells[1][1] == {"tags": ["hide-input"]} and "y = 2" in cells[1][2]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_first_code_cell_uses_the_book_style(chapter):
    cells = list(code_cells(chapter.read_text()))
    assert cells, "a chapter without code"
    first = "\n".join(cells[0][2])
    assert "use_book_style()" in first, (
        f"the first code cell (line {cells[0][0]}) must call use_book_style() "
        "(from companion.book.style import use_book_style)"
    )


FIGSIZE = re.compile(r"figsize\s*=\s*\(\s*([0-9.]+)\s*,")
FONTSIZE = re.compile(r"fontsize\s*=\s*([0-9.]+)")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_figures_fit_the_page_and_fonts_are_legible(chapter):
    bad = []
    for line_no, _, source in code_cells(chapter.read_text()):
        code = "\n".join(source)
        bad += [(line_no, f"figsize width {w}") for w in FIGSIZE.findall(code)
                if float(w) > TEXT_WIDTH]
        bad += [(line_no, f"fontsize {f}") for f in FONTSIZE.findall(code) if float(f) < 8]
    assert bad == [], f"figures wider than {TEXT_WIDTH} in or fonts below 8 pt: {bad}"


def is_real_alt_text(alt) -> bool:
    """A sentence about the figure: words, not a file name or a placeholder."""
    if not isinstance(alt, str):
        return False
    alt = alt.strip()
    return (
        len(alt.split()) >= 5
        and not re.search(r"\.(png|svg|jpe?g|pdf)\b", alt)
        and "TODO" not in alt
    )


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_has_caption_name_and_alt_text(chapter):
    bad = []
    for line_no, options, _ in code_cells(chapter.read_text()):
        mystnb = options.get("mystnb") or {}
        figure = mystnb.get("figure")
        if not figure:
            continue
        image = mystnb.get("image") or {}
        if not (figure.get("caption") and figure.get("name")):
            bad.append((line_no, "caption and name"))
        if not is_real_alt_text(image.get("alt")):
            bad.append((line_no, "alt text (mystnb: image: alt:)"))
    assert bad == [], f"figure cells missing: {bad}"


# ------------------------------------------------------------------ the book's own pages


def test_readers_map_edges_are_backed_by_cross_references():
    """Each arrow A -> B of the reader's map: chapter B refers to a label defined in A."""
    sys.path.insert(0, str(ROOT / "tools"))
    import readers_map

    label_re = re.compile(r"^\s*(?::label:|name:)\s*(\S+)\s*$|^\(([\w-]+)\)=\s*$", re.M)
    ref_re = re.compile(r"\{(?:prf:ref|numref|ref|eq)\}`(?:[^`<]*<)?([^`>]+)>?`")
    texts = {
        ch: (ROOT / "book" / f"{stem}.md").read_text()
        for ch, (stem, _, _) in readers_map.CHAPTERS.items()
    }
    labels = {
        ch: {a or b for a, b in label_re.findall(text)} for ch, text in texts.items()
    }
    assert all(labels.values()), "a chapter of the map defines no label"
    unbacked = []
    for a, b in readers_map.EDGES:
        refs = set(ref_re.findall(texts[b]))
        stem = Path(readers_map.CHAPTERS[a][0]).name
        doc_refs = re.findall(r"\{doc\}`[^`]*?" + re.escape(stem), texts[b])
        if not (refs & labels[a]) and not doc_refs:
            unbacked.append((a, b))
    assert unbacked == [], f"arrows of the reader's map without a cross-reference: {unbacked}"
    assert set(readers_map.POSITIONS) == set(readers_map.CHAPTERS)
    assert all(a < b for a, b in readers_map.EDGES), "an arrow points backwards"


def test_readers_map_page_shows_the_drawn_map():
    page = (ROOT / "book" / "intro.md").read_text()
    assert "```{figure} _static/readers_map.*" in page  # SVG for HTML, PNG for the PDF
    assert (ROOT / "book" / "_static" / "readers_map.png").is_file()
    assert (ROOT / "book" / "_static" / "readers_map.svg").stat().st_size > 10_000


def test_how_to_cite_matches_citation_cff():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    page = (ROOT / "book" / "how_to_cite.md").read_text()
    bibtex = " ".join(re.search(r"```bibtex\n(.*?)```", page, re.S).group(1).split())
    title = cff["title"].replace("SGD", "{SGD}")
    assert f"title = {{{title}}}" in bibtex, (cff["title"], bibtex)
    assert f"edition = {{{cff['version']}}}" in bibtex
    assert cff["repository-code"] in bibtex
    for author in cff["authors"]:
        assert author["name"] in bibtex
    prose = " ".join(page.split())
    assert cff["title"] in prose and f"version {cff['version']}" in prose


def test_docstring_section_titles_have_no_roles():
    """A role in a section title (say a citation) shows raw in the API page's contents."""
    import companion

    underline = re.compile(r"^\s*([-=~^\"'`#*+]{3,})\s*$")
    bad = []
    modules = [companion] + [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(companion.__path__, "companion.")
    ]
    for module in modules:
        lines = (module.__doc__ or "").splitlines()
        for above, line in itertools.pairwise(lines):
            if underline.match(line) and above.strip() and ":" in above and "`" in above:
                bad.append((module.__name__, above.strip()))
    assert bad == [], bad



# ------------------------------------------------------------------ the figure style itself

RETINA_PROBE = """
import base64, json, struct
import matplotlib
matplotlib.use("module://matplotlib_inline.backend_inline")
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
from companion.book.style import use_book_style
use_book_style()
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([0, 1], [0, 1])
data, meta = shell.display_formatter.format(fig)
png = data["image/png"]
raw = base64.b64decode(png) if isinstance(png, str) else png
assert raw[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
width, height = struct.unpack(">II", raw[16:24])
print(json.dumps({"pixels": [width, height], "shown": [meta["image/png"]["width"],
                  meta["image/png"]["height"]], "figsize": list(fig.get_size_inches())}))
"""


def test_book_style_sends_retina_pngs_at_text_width():
    """In a notebook, a default figure is TEXT_WIDTH wide and its PNG has twice the pixels
    the page shows (read from the PNG header, not from the style's settings)."""
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", RETINA_PROBE], capture_output=True, text=True, check=True,
        cwd=ROOT, timeout=120,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    print(probe)
    assert probe["figsize"][0] == TEXT_WIDTH
    assert probe["pixels"] == [2 * probe["shown"][0], 2 * probe["shown"][1]]
    # shown at most the text column (100 px per inch): tight cropping only removes margins
    assert 0.7 * TEXT_WIDTH * 100 < probe["shown"][0] <= TEXT_WIDTH * 100


def test_book_rc_is_legible():
    from companion.book.style import BOOK_RC

    sizes = {k: v for k, v in BOOK_RC.items() if k.endswith(("size", "fontsize"))
             and not k.startswith("figure") and not k.startswith("lines")}
    print(sizes)
    assert sizes and min(sizes.values()) >= 8
    assert BOOK_RC["figure.figsize"][0] == TEXT_WIDTH
