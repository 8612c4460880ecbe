"""``COMPANION_SCALE=paper`` offline: a locally generated stand-in of the papers' data set.

The paper scale (FashionMNIST, two classes, n = 1000, two hidden layers of 500) needs
OpenML. With ``COMPANION_DATA=standin`` the loader generates a stand-in of the same shape
(:func:`companion.nets.data.standin_images`) and ``COMPANION_MAX_STEPS`` caps every step
budget, so the code paths of Part IV run at the papers' sizes without the network: shapes,
keys and memory, not the science.

Three tiers:

* always: the stand-in has the paper's shapes; every experiment's paper grid is well formed
  and binds to its ``run_point`` (KeyError/TypeError class of bugs), and GD is ``B = n``;
* always (about a minute): one paper-scale point of the experiments whose points fit in
  ``make test`` (cross-entropy at n K = 500; the CNN at n = 1000, whose parameters are few);
* opt-in, ``COMPANION_PAPER_SMOKE=1``: every Part IV experiment at the paper scale into a
  temporary copy of the repository, then every Part IV chapter executed against it. One
  point with the full MLP costs about 2 minutes and 8 GB (the Gram matrix of 1000
  per-sample gradients of 643,000 parameters, measured on 2 cores), so this takes hours.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from companion.book.experiments import experiment_module, experiment_names
from companion.nets.data import OPENML_DATASETS, load, standin_images
from companion.sweeps import scale

ROOT = Path(__file__).resolve().parent.parent
PART4 = sorted((ROOT / "book" / "part4").glob("ch*.md"))
NAMES = experiment_names(ROOT)


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", "standin")


def test_standin_has_the_paper_shapes(standin):
    s = scale("paper")
    data = load(s.dataset, classes=s.classes, n_per_class=s.n_per_class)
    shape = OPENML_DATASETS[s.dataset][1]
    print(data)
    assert data.name == f"standin:{s.dataset}"
    assert data.n == s.n and data.input_shape == shape and data.in_dim == int(np.prod(shape))
    assert tuple(data.y_train.shape) == (s.n, 1)
    images = load(s.dataset, classes=s.classes, n_per_class=s.n_per_class, flatten=False)
    assert tuple(images.X_train.shape) == (s.n, *shape)
    explicit = load(f"standin:{s.dataset}", classes=s.classes, n_per_class=s.n_per_class)
    assert bool((explicit.X_train == data.X_train).all())


def test_standin_images_are_deterministic_images_of_ten_classes():
    X, labels = standin_images("cifar10", per_class=4, seed=3)
    again, _ = standin_images("cifar10", per_class=4, seed=3)
    other, _ = standin_images("cifar10", per_class=4, seed=4)
    assert X.shape == (40, 3 * 32 * 32) and np.array_equal(np.bincount(labels), [4] * 10)
    assert np.array_equal(X, again) and not np.array_equal(X, other)
    assert 0 <= X.min() and X.max() <= 1 and X.std() > 0.05
    # the classes differ: each image is nearer its own class mean than the others' (mostly)
    means = np.stack([X[labels == c].mean(axis=0) for c in range(10)])
    nearest = ((X[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (nearest == labels).mean() > 0.5


def test_standin_refuses_what_it_is_not():
    with pytest.raises(ValueError, match="stand-in"):
        load("standin:digits")
    with pytest.raises(ValueError, match="per_class"):
        standin_images("mnist", per_class=0)


def test_digits_ignore_the_standin_switch(standin):
    assert load("digits", classes=(0, 1), n_per_class=5).name == "digits"


@pytest.mark.parametrize("name", NAMES)
def test_paper_grid_binds_to_run_point(name):
    """Every paper point is JSON and a valid call of run_point; batch sizes fit n."""
    module = experiment_module(name, ROOT)
    points = module.grid("paper")
    assert points, f"{name}: empty paper grid"
    assert json.loads(json.dumps(points)) == points
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points)
    signature = inspect.signature(module.run_point)
    n = scale("paper").n
    for point in points:
        signature.bind(**point)  # raises TypeError on a missing or unknown key
        if "batch_size" in point:
            assert 1 <= point["batch_size"] <= n, (name, point)


@pytest.mark.parametrize("name", ["ch13_cnn"])
def test_gd_is_the_full_batch_at_the_paper_scale(name):
    """'B = n is GD' must follow the scale (the book's n was once hard-coded as 50)."""
    batch_sizes = {p["batch_size"] for p in experiment_module(name, ROOT).grid("paper")}
    assert scale("paper").n in batch_sizes and scale("book").n not in batch_sizes


def _run_point_in_subprocess(name: str, steps: int, timeout: int) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, '.');"
        f"from experiments import {name} as m;"
        "print(json.dumps(m.run_point(**m.grid('paper')[0])))"
    )
    env = {
        **os.environ,
        "COMPANION_DATA": "standin",
        "COMPANION_MAX_STEPS": str(steps),
        "COMPANION_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["crossentropy_edge", "ch13_cnn"])
def test_one_paper_point_runs(name):
    """A paper-scale point at the papers' input shape (784 pixels), two steps of training."""
    result = _run_point_in_subprocess(name, steps=2, timeout=600)
    numbers = [v for v in result.values() if isinstance(v, float)]
    if name == "crossentropy_edge":
        numbers = [t["generalized_sharpness"] for t in result["track"]]
        assert result["n"] == 10 * experiment_module(name, ROOT).CONFIG["paper"]["n_per_class"]
    assert numbers and all(np.isfinite(numbers))


@pytest.mark.skipif(
    os.environ.get("COMPANION_PAPER_SMOKE") != "1",
    reason="hours at the paper sizes (about 2 min and 8 GB per MLP point on 2 "
    "cores); set COMPANION_PAPER_SMOKE=1 to run",
)
def test_part4_chapters_end_to_end_at_paper_scale(tmp_path, monkeypatch):
    """Every Part IV experiment at the paper scale (stand-in data, 2 steps) into a copy of
    the repository, then every Part IV chapter executed against those results."""
    import nbformat
    from nbclient import NotebookClient

    from companion.book.experiments import run_experiment

    root = tmp_path / "repo"
    shutil.copytree(
        ROOT / "experiments",
        root / "experiments",
        ignore=shutil.ignore_patterns("results", "__pycache__"),
    )
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build"))
    for var, value in {
        "COMPANION_DATA": "standin",
        "COMPANION_MAX_STEPS": "2",
        "COMPANION_SCALE": "paper",
        "COMPANION_ROOT": str(root),
        "COMPANION_PROGRESS": "0",
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.syspath_prepend(str(root))
    for name in NAMES:
        run_experiment(name, "paper", root=root, progress=False)
    for chapter in PART4:
        ipynb = root / "book" / "part4" / f"{chapter.stem}.ipynb"
        subprocess.run(
            [
                str(Path(sys.executable).parent / "jupytext"),
                "--quiet",
                "--to",
                "notebook",
                "--output",
                str(ipynb),
                str(chapter),
            ],
            check=True,
        )
        nb = nbformat.read(ipynb, as_version=4)
        NotebookClient(
            nb,
            timeout=3600,
            kernel_name="python3",
            resources={"metadata": {"path": str(ipynb.parent)}},
        ).execute()
