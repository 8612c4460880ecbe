"""Static checks of the appendices: theorem index, API reference and stored benchmark results.

The API reference (book/appendix/api.md) documents every module of the package in the order of
its layout, except the book-only helpers of ``companion.book``.

The theorem index (book/appendix/theorem_index.md) links every result of THEOREMS.md to its
label in the book (every result is in the book: there is no table of pending results). These
tests fail when the index and the book drift apart in either direction.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re

import pytest
import yaml
from notebooks import ROOT, toc_chapters

APPENDIX = ROOT / "book" / "appendix"
INDEX = APPENDIX / "theorem_index.md"
THEOREMS = ROOT.parent / "shared" / "THEOREMS.md"
RESULTS = ROOT / "benchmarks" / "results"

# `:label: id` of a sphinx-proof directive, or `name: id` of a figure/table (cell metadata)
LABEL = re.compile(r"^\s*(:label:|name:)\s*([A-Za-z0-9][\w-]*)\s*$", re.M)
ROW_ID = re.compile(r"^\|\s*`([\w-]+)`\s*\|", re.M)
LINK = re.compile(r"\{(prf:ref|numref)\}`([\w-]+)`")


def book_labels() -> dict[str, tuple[str, str]]:
    """Label -> (kind, chapter) over the chapters listed in _toc.yml; kind 'prf' or 'figure'."""
    labels: dict[str, tuple[str, str]] = {}
    for chapter in toc_chapters():
        path = ROOT / f"{chapter}.md"
        if not path.exists():
            continue
        for role, label in LABEL.findall(path.read_text()):
            labels[label] = ("prf" if role == ":label:" else "figure", chapter)
    return labels


def index_tables() -> tuple[dict[str, str], dict[str, str]]:
    """(linked id -> role used, id -> its whole row) read from the index."""
    rows: dict[str, str] = {}
    linked: dict[str, str] = {}
    for line in INDEX.read_text().splitlines():
        match = ROW_ID.match(line)
        if match:
            links = LINK.findall(line)
            assert len(links) == 1 and links[0][1] == match.group(1), (
                f"row of {match.group(1)} must link to its own label exactly once: {line}"
            )
            assert match.group(1) not in linked, f"{match.group(1)} is listed twice"
            linked[match.group(1)] = links[0][0]
            rows[match.group(1)] = line
    return linked, rows


def test_index_links_results_and_has_no_pending_table():
    linked, _ = index_tables()
    assert linked, "the index links no result"
    assert "Not yet in the book" not in INDEX.read_text(), "every result is in the book"


def test_every_linked_id_has_a_label_of_the_right_kind_in_the_book():
    labels = book_labels()
    linked, _ = index_tables()
    for result, role in linked.items():
        assert result in labels, (
            f"{result} is linked in the theorem index but no chapter in _toc.yml labels it"
        )
        kind, chapter = labels[result]
        expected = "prf:ref" if kind == "prf" else "numref"
        assert role == expected, (
            f"{result} is a {kind} label in {chapter}: link it with {{{expected}}}"
        )


def test_every_theorem_id_is_in_the_index():
    if not THEOREMS.exists():
        pytest.skip(f"{THEOREMS} not found (outside the project workspace); CI has it")
    ids = set(re.findall(r"^\|\s*([a-z][a-z0-9]*(?:-[a-z0-9]+)+)\s*\|", THEOREMS.read_text(), re.M))
    assert len(ids) > 40, "THEOREMS.md parsed to too few ids: has its table format changed?"
    linked, _ = index_tables()
    listed = set(linked)
    assert ids - listed == set(), (
        f"ids of THEOREMS.md missing from the index: {sorted(ids - listed)}"
    )
    # results new in this edition (``new-`` labels, linked to a box in the book by the test
    # above) may precede their entry in THEOREMS.md; any other unknown id is a typo
    unknown = {i for i in listed - ids if not i.startswith("new-")}
    assert unknown == set(), f"ids in the index unknown to THEOREMS.md: {sorted(unknown)}"


def resolve(dotted: str):
    """The object named by ``companion.<module path>.<name>[.<attribute>]``, or raise."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # not a module: look one level up
            raise
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_index_names_existing_functions_and_tests():
    _, rows = index_tables()
    for result, row in rows.items():
        functions = re.findall(r"`(companion(?:\.\w+)+)`", row)
        assert functions, f"row of {result} names no companion function"
        for dotted in functions:
            assert "." in dotted.removeprefix("companion."), (
                f"{result}: name {dotted} with its module, not through the top level"
            )
            try:
                resolve(dotted)
            except (ImportError, AttributeError) as exc:
                raise AssertionError(f"{result}: {dotted} does not exist ({exc})") from exc
        tests = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", row)
        assert tests, f"row of {result} names no test"
        for file, name in tests:
            path = ROOT / file
            assert path.exists(), f"{result}: {file} does not exist"
            assert re.search(rf"^\s*def {name}\(", path.read_text(), re.M), (
                f"{result}: {file} has no test {name}"
            )


def package_modules() -> set[str]:
    """Dotted names of every module under src/companion (packages included)."""
    src = ROOT / "src"
    names = set()
    for path in (src / "companion").rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return names


def api_documented() -> list[str]:
    text = (APPENDIX / "api.md").read_text()
    return re.findall(r"^\.\. automodule:: (companion[\w.]*)\s*$", text, re.M)


def is_book_only(module: str) -> bool:
    return module == "companion.book" or module.startswith("companion.book.")


def test_api_reference_documents_every_module_but_the_book_helpers():
    modules = {m for m in package_modules() if not is_book_only(m)}
    documented = api_documented()
    assert len(documented) == len(set(documented)), "a module is documented twice"
    assert modules - set(documented) == set(), (
        f"modules missing from the API reference: {sorted(modules - set(documented))}"
    )
    assert set(documented) - modules == set(), (
        f"API reference names unknown modules: {sorted(set(documented) - modules)}"
    )


def test_api_reference_leaves_out_the_book_helpers():
    text = (APPENDIX / "api.md").read_text()
    directives = re.findall(r"^\.\. auto\w+:: (\S+)", text, re.M)
    assert directives, "api.md has no autodoc directive"
    assert not [d for d in directives if is_book_only(d)], "companion.book is not public API"


def test_api_reference_follows_the_layout():
    """Sections in this order: top level, stability, theory, nets, sweeps, validation."""
    text = (APPENDIX / "api.md").read_text()
    headings = re.findall(r"^## .*?`(companion[\w.]*)`", text, re.M)
    expected = [
        "companion",
        "companion.stability",
        "companion.theory",
        "companion.nets",
        "companion.sweeps",
        "companion.validation",
    ]
    assert [h for h in headings if h in expected] == expected, headings
    documented = api_documented()
    for package in ("companion.stability", "companion.theory", "companion.nets"):
        inside = [m for m in documented if m.startswith(package + ".")]
        first = documented.index(package)
        # every module of a sub-package right after the sub-package itself
        assert documented[first + 1 : first + 1 + len(inside)] == inside, package


def test_top_level_names_are_documented_in_their_modules():
    """Each name of companion.__all__ is defined in a module the API reference documents."""
    import companion

    documented = set(api_documented())
    for name in companion.__all__:
        obj = getattr(companion, name)
        home = getattr(obj, "__module__", None)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert home in documented, f"companion.{name} is defined in {home}, not documented"


def test_appendices_are_a_part_just_before_the_back_matter():
    parts = yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]
    captions = [part["caption"] for part in parts]
    assert "Appendices" in captions and "Back matter" in captions
    assert captions.index("Appendices") + 1 == captions.index("Back matter")
    files = [entry["file"] for entry in parts[captions.index("Appendices")]["chapters"]]
    for name in ("computing_at_scale", "api", "theorem_index", "reproducibility"):
        assert f"book/appendix/{name}" in files, f"book/appendix/{name} is not in _toc.yml"


def stored_results() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def test_stored_results_have_uniform_provenance():
    results = stored_results()
    expected = {"thresholds", "simulation", "jacobians", "sharpness", "book"}
    assert expected <= set(results), f"missing results: {expected - set(results)}"
    keys = {name: set(data["provenance"]) for name, data in results.items()}
    first = next(iter(keys.values()))
    assert {"date", "machine", "cpu_count", "python", "numpy", "scipy", "companion"} <= first
    assert all(k == first for k in keys.values()), f"provenance keys differ: {keys}"
