"""companion.diagnosis: Gram-space curvature and the stability report against dense brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import bounds, curvature, thresholds
from companion.data import load, synthetic
from companion.diagnosis import (
    StabilityReport,
    alignment_factor_gram,
    diagnose,
    gram_curvature,
)
from companion.hessian_ops import loss_hessian_operator, to_dense
from companion.jacobians import parameter_jacobian
from companion.models import make_model
from companion.training import fit_last_layer


def _random_jacobians(seed, n, k, d):
    return np.random.default_rng(seed).standard_normal((n, k, d))


def _gram(jac):
    flat = jac.reshape(-1, jac.shape[2])
    return flat @ flat.T


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 1000),
    n=st.integers(2, 6),
    k=st.integers(1, 2),
    d=st.integers(2, 9),
)
def test_gram_curvature_equals_dense_statistics(seed, n, k, d):
    jac = _random_jacobians(seed, n, k, d)
    hs = np.einsum("nkd,nke->nde", jac, jac)
    curv = gram_curvature(_gram(jac), k)
    scale = curvature.sharpness(hs)
    # eigen-decompositions of O(10) x O(10) matrices: agreement to ~1e-12 of the scale
    assert curv.sharpness == pytest.approx(scale, rel=1e-10)
    assert curv.non_uniformity == pytest.approx(curvature.non_uniformity(hs), abs=1e-6 * scale)
    assert curv.trace == pytest.approx(np.trace(hs.mean(axis=0)), rel=1e-10)
    # the WME matrix is the identity on null(H): the dense value is max(range part, 1)
    dense = thresholds.wu_condition(hs, 0.3 / scale, 1)
    rank = int(np.sum(curv.eigenvalues > 0))
    ours = curv.wu_condition(0.3 / scale, 1)
    assert (max(ours, 1.0) if rank < d else ours) == pytest.approx(dense, rel=1e-9)


@pytest.mark.parametrize("k", [1, 2])
def test_alignment_factors_equal_the_dense_formulas(k):
    jac = _random_jacobians(3, 5, k, 14)  # n K < d: H has full rank on range(J^T)
    res = np.random.default_rng(4).standard_normal((5, k))
    gram = _gram(jac)
    assert alignment_factor_gram(gram, res, k) == pytest.approx(
        bounds.alignment_factor(jac, res), rel=1e-10
    )
    assert gram_curvature(gram, k).worst_alignment == pytest.approx(
        bounds.worst_alignment_factor(jac), rel=1e-8
    )


def test_gram_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        gram_curvature(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="divisible"):
        gram_curvature(np.eye(3), num_outputs=2)
    with pytest.raises(ValueError, match="semi-definite"):
        gram_curvature(-np.eye(2))
    with pytest.raises(ValueError, match="zero loss"):
        alignment_factor_gram(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="entries"):
        alignment_factor_gram(np.eye(2), np.ones(3))
    zero = gram_curvature(np.zeros((2, 2)))
    assert zero.sharpness == 0.0 and zero.non_uniformity == 0.0 and np.isnan(zero.worst_alignment)


@pytest.fixture(scope="module")
def tiny_minimum():
    """A 41-parameter net fitted exactly to 6 samples: an interpolating minimum."""
    data = synthetic("teacher", n=6, d=3, seed=0, n_test=0)
    model = make_model("mlp", in_dim=3, widths=(8,), seed=0)
    assert fit_last_layer(model, data) < 1e-25
    jac = parameter_jacobian(model, data.X_train)
    return model, data, np.einsum("nkd,nke->nde", jac, jac)


def test_report_matches_dense_per_sample_hessians(tiny_minimum):
    model, data, hs = tiny_minimum
    eta_dense = thresholds.ms_threshold(hs, 2)
    rep = diagnose(model, data, lr=0.5 * eta_dense, batch_size=2, batch_sizes=[1, 3, 6])
    assert isinstance(rep, StabilityReport) and rep.interpolates
    # different routes to the same eigenvalue problem: 1e-8 relative
    assert rep.ms_threshold == pytest.approx(eta_dense, rel=1e-8)
    assert rep.ms_threshold == pytest.approx(thresholds.ms_threshold_bisection(hs, 2), rel=1e-8)
    for b, eta in rep.threshold_curve.items():
        assert eta == pytest.approx(thresholds.ms_threshold(hs, b), rel=1e-8)
    assert list(rep.threshold_curve) == [1, 2, 3, 6]
    # sharpness of the dense loss Hessian = Gauss-Newton value at the minimum
    dense_h = to_dense(loss_hessian_operator(model, data))
    assert rep.sharpness == pytest.approx(np.linalg.eigvalsh(dense_h)[-1], rel=1e-9)
    assert rep.hessian_sharpness == pytest.approx(rep.sharpness, rel=1e-5)
    assert rep.non_uniformity == pytest.approx(curvature.non_uniformity(hs), rel=1e-8)
    nb = thresholds.ms_necessary_bounds(hs, 2)
    assert rep.necessary_bounds.trace == pytest.approx(nb.trace, rel=1e-9)
    assert rep.ms_threshold <= min(rep.necessary_bounds) * (1 + 1e-9)
    assert rep.rank_one_bound <= rep.generalized_sharpness * (1 + 1e-9)
    assert rep.ms_stable and rep.mean_stable and "stable in mean square" in rep.verdict
    assert rep.alignment_factor is None and rep.worst_alignment_factor >= 0


def test_verdict_flips_at_the_exact_threshold(tiny_minimum):
    model, data, hs = tiny_minimum
    eta = thresholds.ms_threshold(hs, 3)
    below = diagnose(model, data, lr=0.95 * eta, batch_size=3, batch_sizes=None, rank_one=False)
    above = diagnose(model, data, lr=1.05 * eta, batch_size=3, batch_sizes=None, rank_one=False)
    assert below.ms_stable and not above.ms_stable
    assert "unstable" in above.verdict and "unstable" not in below.verdict
    edge = diagnose(model, data, lr=eta, batch_size=3, batch_sizes=None, rank_one=False)
    assert "edge" in edge.verdict


def test_moment_and_first_layer_bounds(tiny_minimum):
    model, data, _ = tiny_minimum
    rep = diagnose(model, data, lr=0.01, batch_size=2, batch_sizes=None, moment_orders=(1, 2))
    jac = parameter_jacobian(model, data.X_train)[:, 0, :]
    thm2, cor1 = rep.moment_bounds[2]
    assert np.allclose(thm2.lhs, np.mean(jac**4, axis=0))
    assert float(cor1.rhs) == pytest.approx((41 / 2) ** 0.25 * np.sqrt(2 * 2 / 0.01))
    fl = rep.first_layer[1]
    assert fl.g_W == pytest.approx(np.sqrt(np.mean(np.sum(jac**2, axis=1))))
    lhs, rhs = rep.sobolev_bounds[1]
    assert lhs == fl.g_x and rhs == pytest.approx(
        fl.w1t_norm[1] / fl.input_norms.min() * float(rep.moment_bounds[1][1].rhs)
    )


def test_blockwise_gram_gives_the_same_threshold(tiny_minimum):
    model, data, hs = tiny_minimum
    rep = diagnose(model, data, lr=0.01, batch_size=2, batch_sizes=None, jacobian_memory=64)
    assert rep.ms_threshold == pytest.approx(thresholds.ms_threshold(hs, 2), rel=1e-8)
    assert rep.moment_bounds is None and rep.rank_one_bound is None
    assert any("jacobian_memory" in note for note in rep.notes)


def test_non_interpolating_point_is_flagged():
    data = load("digits", classes=(0, 1), n_per_class=4)
    model = make_model("mlp", in_dim=64, widths=(3,), seed=0)
    rep = diagnose(model, data, lr=0.01, batch_size=2, batch_sizes=None)
    assert not rep.interpolates and rep.train_loss > 1e-3
    assert "WARNING" in rep.verdict and "not an interpolating minimum" in rep.summary()
    assert rep.alignment_factor is not None and rep.alignment_factor > 0
    # away from a minimum the loss Hessian is not the Gauss-Newton matrix
    assert rep.hessian_sharpness != pytest.approx(rep.sharpness, rel=1e-6)


def test_vector_outputs_and_models_without_first_layer():
    data = load("digits", classes=[0, 1, 2], n_per_class=2, test_size=1)
    model = make_model("mlp", in_dim=64, widths=(3,), out_dim=3, seed=0)
    rep = diagnose(model, data, lr=0.01, batch_size=2, batch_sizes=None)
    assert rep.num_outputs == 3 and rep.moment_bounds is None
    assert any("K = 1" in note for note in rep.notes)
    seq = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(64, 3)).double()
    rep = diagnose(seq, data, lr=0.01, batch_size=2, batch_sizes=None, hessian_check=False)
    assert rep.first_layer is None and rep.hessian_sharpness is None
    assert any("first-layer" in note for note in rep.notes)


def test_summary_and_plot(tiny_minimum):
    import matplotlib

    matplotlib.use("Agg")
    model, data, _ = tiny_minimum
    rep = diagnose(model, data, lr=0.01, batch_size=2, replacement=True)
    text = repr(rep)
    assert "eta*(B=2)" in text and "with replacement" in text and "verdict" in text
    fig = rep.plot()
    assert len(fig.axes) == 2
    gd = diagnose(model, data, lr=0.01, batch_size=6, batch_sizes=None, rank_one=False)
    assert gd.noise_factor == 0 and gd.ms_threshold == pytest.approx(gd.gd_threshold, rel=1e-8)
    assert len(gd.plot().axes) == 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"lr": 0.0}, ValueError),
        ({"batch_size": 7}, ValueError),
        ({"replacement": 1}, TypeError),
        ({"interpolation_tol": -1.0}, ValueError),
        ({"moment_orders": (0,)}, ValueError),
        ({"batch_sizes": [0]}, ValueError),
    ],
)
def test_bad_arguments(tiny_minimum, kwargs, error):
    model, data, _ = tiny_minimum
    args = {"lr": 0.01, "batch_size": 2, "batch_sizes": None, **kwargs}
    with pytest.raises(error):
        diagnose(model, data, **args)


@pytest.mark.slow
def test_acceptance_20k_parameter_mlp_on_500_digits():
    """A ~20k-parameter MLP, SGD-trained then fitted to interpolate 500 digits (even vs odd).

    The full report runs (timed in the lead's acceptance run, not here); its eta* on a
    12-sample subset equals the dense computation in an orthonormal basis of range(H).
    """
    data = load("digits", classes=((0, 2, 4, 6, 8), (1, 3, 5, 7, 9)), n_per_class=50)
    model = make_model("mlp", in_dim=64, widths=(32, 512), seed=0)
    from companion.training import train

    train(model, data, lr=0.05, batch_size=50, steps=500, progress=False)
    assert fit_last_layer(model, data) < 1e-20
    rep = diagnose(model, data, lr=0.05, batch_size=50)
    assert rep.n == 500 and 19_000 < rep.num_parameters < 21_000 and rep.interpolates
    assert rep.ms_threshold <= min(rep.necessary_bounds) * (1 + 1e-9)
    assert rep.rank_one_bound <= rep.generalized_sharpness * (1 + 1e-9)
    etas = list(rep.threshold_curve.values())
    assert all(a <= b * (1 + 1e-9) for a, b in itertools.pairwise(etas))  # MM Prop 1

    sub = data.subset(12, seed=0)
    small = diagnose(model, sub, lr=1e-5, batch_size=4, batch_sizes=[1, 12], rank_one=False)
    jac = parameter_jacobian(model, sub.X_train)[:, 0, :]  # (12, d)
    _, sing, vt = np.linalg.svd(jac, full_matrices=False)
    basis = vt[sing > 1e-10 * sing[0]].T  # orthonormal basis of range(H), d x r
    reduced = (jac @ basis)[:, :, None] * (jac @ basis)[:, None, :]  # r x r per sample
    for b in (4, 1, 12):
        dense = thresholds.ms_threshold(reduced, b, method="dense")
        assert small.threshold_curve[b] == pytest.approx(dense, rel=1e-8)
    assert small.ms_threshold == pytest.approx(
        thresholds.ms_threshold_bisection(reduced, 4), rel=1e-8
    )
