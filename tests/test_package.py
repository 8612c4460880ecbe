"""Package-level checks: version, no torch in the core import, the foundation functions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import companion
from companion import batch_noise_factor, gd_threshold, non_uniformity, sharpness
from companion.sampling import enumerate_batches, number_of_batches, sample_batches


def test_version():
    assert isinstance(companion.__version__, str) and companion.__version__.count(".") == 2


def test_core_import_does_not_import_torch():
    code = "import sys, companion; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_torchvision_installed():
    import importlib.util

    assert importlib.util.find_spec("torchvision") is None


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


def test_lazy_network_names_resolve():
    code = (
        "import sys, companion\n"
        "assert 'torch' not in sys.modules\n"
        "from companion.diagnosis import diagnose, StabilityReport\n"
        "assert companion.diagnose is diagnose and companion.StabilityReport is StabilityReport\n"
        "assert callable(companion.train) and callable(companion.load_data)\n"
        "assert companion.data.load is companion.load_data\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no_such_thing"):
        companion.no_such_thing  # noqa: B018
