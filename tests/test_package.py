"""Package-level checks: the layout's import rules, the public surface, the foundation functions.

The layout (DESIGN-0.2): ``companion.stability`` and ``companion.theory`` are numpy/scipy
only and never import torch or ``companion.nets``; no module reaches into another module's
private names; every public function and class of stability / theory / nets (and of sweeps,
validation, progress) has a docstring; the ``nets`` extra covers what ``companion.nets`` imports.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import companion
from companion.stability.curvature import gd_threshold, non_uniformity, sharpness
from companion.stability.sampling import (
    batch_noise_factor,
    enumerate_batches,
    number_of_batches,
    sample_batches,
)

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "companion"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


#: Every module of the package, by dotted name, from the files under src/companion.
MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _modules_under(package: str) -> list[str]:
    return sorted(m for m in MODULES if m == package or m.startswith(package + "."))


#: Modules that must import without torch and without anything from companion.nets.
LIGHT_MODULES = [
    *_modules_under("companion.stability"),
    *_modules_under("companion.theory"),
    "companion.validation",
    "companion.sweeps",
    "companion.progress",
]

#: Modules whose public functions and classes are API (documented in the book's appendix).
API_MODULES = [
    *_modules_under("companion.stability"),
    *_modules_under("companion.theory"),
    *_modules_under("companion.nets"),
    "companion.sweeps",
    "companion.validation",
    "companion.progress",
]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


# ------------------------------------------------------------------------------------
# the layout's import rules
# ------------------------------------------------------------------------------------
def test_version():
    assert isinstance(companion.__version__, str) and companion.__version__.count(".") == 2


def test_changelog_has_an_entry_for_this_version():
    changelog = (SRC.parent / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.M)
    assert releases and releases[0] == companion.__version__, releases


def test_layout_has_the_subpackages():
    for package in ("companion.stability", "companion.theory", "companion.nets"):
        assert package in MODULES, package
        assert len(_modules_under(package)) > 1, package


def test_core_import_does_not_import_torch():
    out = _run("import sys, companion; print(sorted(m for m in sys.modules if m == 'torch'))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_module_loads_no_torch_and_no_nets(module):
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')\n"
        "             or m == 'companion.nets' or m.startswith('companion.nets.'))\n"
        "print(bad)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing {module} loaded {out.stdout.strip()}"


def test_no_torchvision_installed():
    assert importlib.util.find_spec("torchvision") is None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module named by ``from X import ...`` in ``module`` (None if outside)."""
    if node.level == 0:
        target = node.module or ""
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    return target if target == "companion" or target.startswith("companion.") else None


def _private_uses(module: str, path: Path) -> list[str]:
    """``from <companion module> import _x`` and ``<companion module>._x`` in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    modules_bound: dict[str, str] = {}  # local name -> companion module it refers to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, is_package, node)
            if target is None:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"line {node.lineno}: from {target} import {alias.name}")
                if f"{target}.{alias.name}" in MODULES:
                    modules_bound[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "companion" or alias.name.startswith("companion."):
                    for part in alias.name.split(".")[1:]:
                        if _is_private(part):
                            found.append(f"line {node.lineno}: import {alias.name}")
                    local = alias.asname or alias.name.split(".")[0]
                    modules_bound[local] = alias.name if alias.asname else "companion"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):  # companion.stability.thresholds._x
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules_bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_private_use_detector_finds_both_forms(tmp_path):
    """The static check below must see both forms (relative and absolute imports)."""
    fake = tmp_path / "stability" / "fake.py"
    fake.parent.mkdir()
    fake.write_text(
        "from .operators import _hidden, kron_operators\n"
        "from .. import validation\n"
        "import companion.stability.sampling as smp\n"
        "from companion.stability import thresholds\n"
        "x = validation._private(1) + smp._also + thresholds.public + kron_operators._attr\n"
        "y = validation.__name__\n"
    )
    found = _private_uses("companion.stability.fake", fake)
    assert len(found) == 3, found
    assert any("_hidden" in f for f in found)
    assert any("validation._private" in f for f in found)
    assert any("smp._also" in f for f in found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(module):
    found = _private_uses(module, MODULES[module])
    assert not found, f"{module} uses private names of other companion modules: {found}"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normalise(re.match(r"[A-Za-z0-9_.\-]+", r).group(0)) for r in requirements}


def _pyproject() -> dict:
    with open(SRC.parent / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def test_nets_extra_lists_everything_companion_nets_imports():
    project = _pyproject()
    base = _requirement_names(project["dependencies"])
    nets = _requirement_names(project["optional-dependencies"]["nets"])
    imported = set()
    for module in _modules_under("companion.nets"):
        for node in ast.walk(ast.parse(MODULES[module].read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "companion"}
    assert {"torch", "sklearn"} <= third_party, third_party
    distributions = importlib.metadata.packages_distributions()
    for name in sorted(third_party):
        assert name in distributions, f"companion.nets imports {name}, which is not installed"
        dists = {_normalise(d) for d in distributions[name]}
        assert dists & (base | nets), f"{name} ({dists}) is in neither the dependencies nor nets"


def test_requirements_have_what_curvlinops_needs_without_backpack():
    """curvlinops (the tests' independent reference) is installed with --no-deps beside a CPU
    torch; everything else it needs must come from requirements.txt."""
    root = Path(__file__).resolve().parents[1]
    lines = (root / "requirements.txt").read_text().splitlines()
    ours = _requirement_names([ln for ln in lines if ln and not ln.startswith(("#", "-"))])
    needs = [
        r for r in importlib.metadata.requires("curvlinops-for-pytorch") or [] if "extra" not in r
    ]
    missing = _requirement_names(needs) - ours - {"backpack-for-pytorch"}
    assert not missing, f"curvlinops needs {missing}, missing from requirements.txt"
    assert "curvlinops-for-pytorch" in (root / "requirements-nodeps.txt").read_text()


# ------------------------------------------------------------------------------------
# the public surface
# ------------------------------------------------------------------------------------
def _undocumented(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    missing = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            if not doc or not doc.strip():
                missing.append(f"{node.name} (line {node.lineno})")
    return missing


@pytest.mark.parametrize("module", API_MODULES)
def test_public_functions_and_classes_have_docstrings(module):
    missing = _undocumented(MODULES[module])
    assert not missing, f"{module}: no docstring on {missing}"


@pytest.mark.parametrize("module", API_MODULES)
def test_api_modules_have_a_docstring(module):
    doc = ast.get_docstring(ast.parse(MODULES[module].read_text()))
    assert doc and doc.strip(), f"{module} has no module docstring (shown in the API reference)"


@pytest.mark.parametrize("module", API_MODULES)
def test_module_all_resolves(module):
    if module.startswith("companion.nets"):
        pytest.importorskip("torch")
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{module}.__all__ lists {name!r}, which it does not define"


def test_top_level_all_resolves():
    names = companion.__all__
    assert len(names) == len(set(names)), "companion.__all__ has duplicates"
    for name in names:
        obj = getattr(companion, name)  # may import torch for the network tools
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        home = obj.__module__
        if home.startswith("companion."):
            assert not home.startswith("companion.book"), f"{name} comes from {home} (book only)"
            # the same object as in the module that defines it, not a stale copy
            defining = sys.modules[home]
            assert getattr(defining, obj.__name__, None) is obj, f"{name} from {home}"


def test_top_level_all_resolves_in_a_fresh_process():
    code = (
        "import companion\n"
        "missing = [n for n in companion.__all__ if not hasattr(companion, n)]\n"
        "print(missing)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no_such_thing"):
        companion.no_such_thing  # noqa: B018


# ------------------------------------------------------------------------------------
# the foundation functions, against independent computations
# ------------------------------------------------------------------------------------
def _rank_one(rng, n, d):
    a = rng.standard_normal((n, d))
    return np.einsum("ni,nj->nij", a, a)


def test_gd_threshold_matches_eigenvalue():
    hs = _rank_one(np.random.default_rng(1), 7, 4)
    assert np.isclose(gd_threshold(hs), 2 / np.linalg.eigvalsh(hs.mean(0))[-1], rtol=1e-12)


def test_gd_threshold_zero_hessian_is_infinite():
    assert gd_threshold(np.zeros((3, 2, 2))) == np.inf


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("n,b", [(5, 1), (5, 2), (5, 5), (6, 3)])
def test_batch_noise_factor_matches_enumeration(n, b, replacement):
    """E[Ĥ⊗Ĥ] − H⊗H = p·C_noise, checked by averaging over every batch (1-D: variance)."""
    rng = np.random.default_rng(2)
    h = rng.random(n)
    batches = list(enumerate_batches(n, b, replacement))
    assert len(batches) == number_of_batches(n, b, replacement)
    means = np.array([h[list(idx)].mean() for idx in batches])
    var_batch = means.var()
    var_sample = h.var()
    assert np.isclose(var_batch, batch_noise_factor(n, b, replacement) * var_sample, rtol=1e-12)


def test_gd_is_zero_noise():
    assert batch_noise_factor(9, 9) == 0.0
    assert batch_noise_factor(9, 1) == 1.0


def test_sharpness_non_uniformity_one_dimensional():
    """In 1-D, a is the mean curvature and s the standard deviation of the curvatures."""
    curv = np.array([0.5, 1.0, 2.5, 4.0])
    hs = curv[:, None, None]
    assert np.isclose(sharpness(hs), curv.mean())
    assert np.isclose(non_uniformity(hs), curv.std())


def test_sample_batches_without_replacement_are_subsets():
    rng = np.random.default_rng(3)
    batches = sample_batches(rng, 10, 4, size=500)
    assert batches.shape == (500, 4)
    assert all(len(set(row)) == 4 for row in batches)
    # every index equally likely: frequencies within 5 standard errors of B/n
    freq = np.bincount(batches.ravel(), minlength=10) / 500
    se = np.sqrt(0.4 * 0.6 / 500)
    assert np.all(np.abs(freq - 0.4) < 5 * se)


@pytest.mark.parametrize("n,b", [(7, 3), (6, 2), (5, 4), (4, 3)])
def test_sample_batches_subsets_are_uniform(n, b):
    """Every B-subset has probability 1/C(n, B) (Floyd's path for B^2 <= 4n, argpartition
    otherwise): a chi-square test at level 1e-4 on the subset counts, against brute-force
    enumeration of the subsets."""
    from itertools import combinations

    from scipy.stats import chi2

    draws = 40_000
    batches = np.sort(sample_batches(np.random.default_rng(11), n, b, size=draws), axis=1)
    subsets = list(combinations(range(n), b))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount([index[tuple(row)] for row in batches.tolist()], minlength=len(subsets))
    expected = draws / len(subsets)
    stat = ((counts - expected) ** 2 / expected).sum()
    assert stat < chi2.ppf(1 - 1e-4, len(subsets) - 1), (stat, counts)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"n": 5, "batch_size": 0}, ValueError, "batch_size"),
        ({"n": 5, "batch_size": 6}, ValueError, "batch_size"),
        ({"n": 5, "batch_size": 2.0}, TypeError, "batch_size"),
        ({"n": 5, "batch_size": True}, TypeError, "batch_size"),
        ({"n": 0, "batch_size": 1}, ValueError, "n"),
        ({"n": 5, "batch_size": 2, "replacement": "yes"}, TypeError, "replacement"),
    ],
)
def test_batch_noise_factor_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        batch_noise_factor(**kwargs)


def test_batch_size_above_n_allowed_with_replacement():
    assert batch_noise_factor(5, 8, replacement=True) == 1 / 8


@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        (np.ones((2, 3)), ValueError, "3 dimensions"),
        (np.array([[[1.0, 2.0], [0.0, 1.0]]]), ValueError, "symmetric"),
        (np.array([[[1.0, 0.0], [0.0, -1.0]]]), ValueError, "positive semi-definite"),
        (np.full((1, 2, 2), np.nan), ValueError, "NaN"),
        (np.ones((1, 2, 3)), ValueError, "square"),
        ("abc", TypeError, "hessians"),
    ],
)
def test_hessian_validation(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        sharpness(bad)


def test_citation_file_names_the_package_version():
    import yaml

    import companion

    root = Path(__file__).resolve().parents[1]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert citation["version"] == companion.__version__
    licence = (root / "LICENSE").read_text()
    assert "MIT License" in licence and "CC BY 4.0" in licence
