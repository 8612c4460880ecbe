"""companion.book.plotting.interactive_stability_diagram: the HTML slider figure of ch05.

The numbers the page's script draws from are checked against independent computations:
sharpness and non-uniformity from their dense definitions, the batch-noise factor from the
closed forms, and each exact threshold by enumerating every mini-batch and taking the
spectral radius of the second-moment map E[(I - eta H_B) x (I - eta H_B)] just below and
just above it. The markup is checked to be self-contained and small.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from companion.book.plotting import InteractiveDiagram, interactive_stability_diagram


def random_minima(rng, m=4, n=5, d=2):
    out = []
    for _ in range(m):
        jac = rng.normal(size=(n, 1, d)) * rng.uniform(0.5, 1.5, size=(n, 1, 1))
        out.append(np.einsum("nij,nik->njk", jac, jac))  # rank-one PSD per sample
    return out


def enumerated_radius(hessians, lr, batch_size):
    """Spectral radius of E[(I - lr H_B) kron (I - lr H_B)] over all subsets of size B."""
    n, d, _ = hessians.shape
    acc = np.zeros((d * d, d * d))
    subsets = list(itertools.combinations(range(n), batch_size))
    for batch in subsets:
        step = np.eye(d) - lr * hessians[list(batch)].mean(axis=0)
        acc += np.kron(step, step)
    return max(abs(np.linalg.eigvals(acc / len(subsets))))


@pytest.fixture(scope="module")
def figure():
    minima = random_minima(np.random.default_rng(3))
    return minima, interactive_stability_diagram(minima, (0.1, 4.0), [1, 2, 5], lr=1.0)


def test_sharpness_and_non_uniformity_from_dense_definitions(figure):
    minima, fig = figure
    for h, a, s in zip(minima, fig.data["a"], fig.data["s"], strict=True):
        mean = h.mean(axis=0)
        sigma = np.mean([hi @ hi for hi in h], axis=0) - mean @ mean
        print(a, np.linalg.eigvalsh(mean)[-1], s, np.sqrt(np.linalg.eigvalsh(sigma)[-1]))
        assert a == pytest.approx(np.linalg.eigvalsh(mean)[-1], rel=1e-6)
        assert s == pytest.approx(np.sqrt(np.linalg.eigvalsh(sigma)[-1]), rel=1e-6)


def test_batch_noise_factor_closed_forms(figure):
    _, fig = figure
    n = 5
    expected = [(n - b) / (b * (n - 1)) for b in fig.data["batch_sizes"]]
    print(fig.data["p"], expected)
    assert fig.data["p"] == pytest.approx(expected, rel=1e-6)
    minima = random_minima(np.random.default_rng(4), m=1)
    with_rep = interactive_stability_diagram(minima, (0.5, 2.0), [1, 2, 5], replacement=True)
    assert with_rep.data["p"] == pytest.approx([1.0, 0.5, 0.2], rel=1e-6)


def test_thresholds_separate_stable_from_unstable_by_enumeration(figure):
    minima, fig = figure
    for j, b in enumerate(fig.data["batch_sizes"]):
        for h, eta in zip(minima, fig.data["thresholds"][j], strict=True):
            below, above = enumerated_radius(h, 0.99 * eta, b), enumerated_radius(h, 1.01 * eta, b)
            print(b, eta, below, above)
            assert below <= 1 + 1e-9 < above


def test_markup_is_self_contained_and_small(figure):
    _, fig = figure
    html = fig._repr_html_()
    assert html == fig.html and len(html) < 1_500_000
    assert not re.search(r"\b(src|href)\s*=", html)  # no external file or script
    embedded = json.loads(re.search(r"var D = (\{.*?\});\n", html).group(1))
    assert embedded == json.loads(json.dumps(fig.data))
    assert "companion-diagram-" in html and "<svg" in html and "</script>" in html
    assert "sliders in the HTML version" in repr(fig)
    assert isinstance(fig, InteractiveDiagram)


def test_infinite_threshold_is_embedded_as_null():
    # a minimum with zero curvature is stable at every learning rate
    flat = np.zeros((4, 1, 1))
    curved = np.ones((4, 1, 1))
    fig = interactive_stability_diagram(
        [flat, curved], (0.5, 3.0), [2], thresholds={2: [np.inf, 2.0]}
    )
    assert fig.data["thresholds"] == [[None, 2.0]]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"lr_range": (2.0, 1.0)}, ValueError, "lr_range must be increasing"),
        ({"lr_range": "ab"}, TypeError, "lr_range"),
        ({"lr": 5.0}, ValueError, "lr must lie in lr_range"),
        ({"batch_sizes": [2, 1]}, ValueError, "batch_sizes must be a non-empty increasing"),
        ({"batch_sizes": [1, 9]}, ValueError, "batch"),
        ({"batch_size": 3, "batch_sizes": [1, 2]}, ValueError, "batch_size must be one of"),
        ({"batch_sizes": [1], "thresholds": {2: [1.0]}}, ValueError, "no entry for batch size 1"),
        ({"batch_sizes": [1], "thresholds": {1: [1.0, 2.0]}}, ValueError, "one positive value"),
        ({"xlim": (1.0, 0.0)}, ValueError, "xlim must be an increasing pair"),
    ],
)
def test_bad_input(kwargs, error, words):
    minima = [np.ones((5, 1, 1))]
    with pytest.raises(error, match=words):
        interactive_stability_diagram(minima, **kwargs)


def test_no_minima():
    with pytest.raises(ValueError, match="at least one"):
        interactive_stability_diagram([])
