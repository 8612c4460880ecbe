"""Static checks of the chapters' sources: what a reader would trip over.

* Exercise solutions execute: no solution holds a plain ```python block (which never runs);
  its code lives in code cells between ``solution-start`` and ``solution-end``.
* No broken inline math: a source line that starts like a list item (``+ ``, ``- ``, ``* ``
  or ``1. ``) while an inline ``$...$`` formula is still open turns the rest of the formula
  into a bullet (the formula shows as raw TeX).
* Code cells a reader can follow: the median code cell of each reading chapter (not the
  appendices, which render stored results) has at most 10 lines.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(
    p for p in (ROOT / "book").rglob("*.md") if "kernelspec" in p.read_text()[:2000]
)
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


def test_the_checks_catch_what_they_should():
    assert broken_inline_math("text $a\n+ b$ more\n") == [2]
    assert broken_inline_math("text $a$\n- item\n") == []
    assert broken_inline_math("```{prf:proof}\nsee $a\n+ b$\n```\n") == [3]
    assert broken_inline_math("```{code-cell} ipython3\nx = '$a'\n+ 1\n```\n") == []
    assert plain_code_in_solutions("````{solution} x\n```python\nx = 1\n```\n````\n") == [2]
    assert code_cell_lengths("```{code-cell} ipython3\n:tags: [x]\na = 1\nb = 2\n```\n") == [2]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
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
