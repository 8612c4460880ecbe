"""Tests for companion.stability.optimizers: the WME general optimizer and preconditioned GD."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.stability.operators import second_moment_operator
from companion.stability.optimizers import general_optimizer_stability, preconditioned_threshold
from companion.stability.thresholds import ms_threshold, wu_condition

# Radii are eigenvalues of O(1) matrices: float64 rounding leaves ~1e-15; 1e-11 is exact.
EXACT = 1e-11


def random_hessians(rng, n, d, rank=1):
    jac = rng.normal(size=(n, rank, d))
    return np.einsum("nki,nkj->nij", jac, jac)


def sgd_batch_hessians(hs, b, replacement):
    """Every equally likely batch-mean Hessian: SGD as a general optimizer, A_xi = Hhat."""
    n = hs.shape[0]
    if replacement:
        batches = itertools.product(range(n), repeat=b)
    else:
        batches = itertools.combinations(range(n), b)
    return np.array([hs[list(bt)].mean(0) for bt in batches])


@pytest.mark.parametrize("replacement", [False, True])
def test_sgd_as_general_optimizer(replacement):
    rng = np.random.default_rng(1)
    hs = random_hessians(rng, 5, 3, rank=2)
    b = 2
    samples = sgd_batch_hessians(hs, b, replacement)
    for lr in (0.02, 0.08, 0.2):
        out = general_optimizer_stability(samples, lr)
        # mean condition: rho(I - lr H)
        want_mean = np.max(np.abs(1 - lr * np.linalg.eigvalsh(hs.mean(0))))
        assert out.mean_radius == pytest.approx(want_mean, rel=EXACT)
        # the WME matrix E[B^T B] is (I - lr H)^2 + lr^2 p Sigma (MY Prop. 1)
        want_wme = wu_condition(hs, lr, b, replacement)
        assert out.wme_sufficient_value == pytest.approx(want_wme, rel=EXACT)
        # E[B (x) B] is the SGD second-moment operator Q
        q = second_moment_operator(hs, lr, b, replacement)
        assert out.ms_radius == pytest.approx(np.max(np.abs(np.linalg.eigvalsh(q))), rel=EXACT)
    # around the exact threshold the ms condition switches
    top = ms_threshold(hs, b, replacement)
    assert general_optimizer_stability(samples, 0.999 * top).ms_stable
    assert not general_optimizer_stability(samples, 1.001 * top).ms_stable


def test_ms_radius_is_the_growth_rate_of_exact_second_moments():
    # non-symmetric A_xi with unequal probabilities: iterate S <- E[B S B^T] by brute force
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 3, 3))
    probs = np.array([0.5, 0.3, 0.2])
    lr = 0.3
    out = general_optimizer_stability(a, lr, probs)
    steps = np.eye(3) - lr * a
    s = np.eye(3)
    logs = []
    for _ in range(400):
        s = sum(w * m @ s @ m.T for w, m in zip(probs, steps, strict=True))
        norm = np.linalg.norm(s)
        logs.append(np.log(norm))
        s /= norm
    rate = np.exp(np.mean(logs[-100:]))
    assert rate == pytest.approx(out.ms_radius, rel=1e-6)  # power iteration, geometric error
    mean_step = np.einsum("k,kij->ij", probs, steps)
    assert out.mean_radius == pytest.approx(np.max(np.abs(np.linalg.eigvals(mean_step))))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), lr=st.floats(0.01, 1.0), m=st.integers(1, 4))
def test_wme_condition_is_sufficient_and_mean_is_necessary(seed, lr, m):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(m, 3, 3))
    out = general_optimizer_stability(a, lr)
    # E||x_{t+1}||^2 <= lambda_max(E B^T B) E||x_t||^2, and rho(E[B (x) B]) <= that
    assert out.ms_radius <= out.wme_sufficient_value * (1 + 1e-9)
    # Jensen: the mean cannot grow faster than the root of the second moment
    assert out.mean_radius**2 <= out.ms_radius * (1 + 1e-9)
    if out.wme_sufficient:
        assert out.ms_stable
    if out.ms_stable:
        assert out.mean_stable


def test_wme_condition_is_not_necessary():
    # a rotation-like step: ||B x|| can grow in one step while B^t -> 0
    a = np.array([[[1.0, -4.0], [0.0, 1.0]]])
    out = general_optimizer_stability(a, 0.5)
    assert out.ms_stable and out.mean_stable and not out.wme_sufficient


def test_preconditioned_threshold_matches_eigenvalues_and_switches_stability():
    rng = np.random.default_rng(3)
    j = rng.normal(size=(6, 4))
    h = j.T @ j
    k = rng.normal(size=(4, 4))
    dmat = k @ k.T + 0.5 * np.eye(4)
    eta = preconditioned_threshold(h, dmat)
    top = np.max(np.linalg.eigvals(np.linalg.solve(dmat, h)).real)
    assert eta == pytest.approx(2 / top, rel=1e-12)
    step = lambda lr: np.eye(4) - lr * np.linalg.solve(dmat, h)  # noqa: E731
    assert np.max(np.abs(np.linalg.eigvals(step(0.999 * eta)))) < 1
    assert np.max(np.abs(np.linalg.eigvals(step(1.001 * eta)))) > 1
    # D = I is gradient descent; D = H (Newton) gives 2
    assert preconditioned_threshold(h, np.eye(4)) == pytest.approx(2 / np.linalg.eigvalsh(h)[-1])
    assert preconditioned_threshold(h, h) == pytest.approx(2.0, rel=1e-10)
    assert preconditioned_threshold(np.zeros((2, 2)), np.eye(2)) == np.inf


def test_error_paths():
    a = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="shape"):
        general_optimizer_stability(np.zeros((2, 3, 4)), 0.1)
    with pytest.raises(ValueError, match="3 dimensions"):
        general_optimizer_stability(np.zeros((3, 3)), 0.1)
    with pytest.raises(ValueError, match="lr must be"):
        general_optimizer_stability(a, 0.0)
    with pytest.raises(ValueError, match="one entry per Jacobian"):
        general_optimizer_stability(a, 0.1, probs=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        general_optimizer_stability(a, 0.1, probs=[1.5, -0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        general_optimizer_stability(a, 0.1, probs=[0.5, 0.6])
    with pytest.raises(ValueError, match="NaN"):
        general_optimizer_stability(np.full((1, 2, 2), np.nan), 0.1)
    with pytest.raises(ValueError, match="would need"):
        general_optimizer_stability(np.zeros((1, 200, 200)), 0.1)
    with pytest.raises(ValueError, match="positive definite"):
        preconditioned_threshold(np.eye(2), np.diag([1.0, 0.0]))
    with pytest.raises(ValueError, match="preconditioner must be symmetric"):
        preconditioned_threshold(np.eye(2), np.array([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="hessian must be positive semi-definite"):
        preconditioned_threshold(-np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="same shape"):
        preconditioned_threshold(np.eye(2), np.eye(3))
    with pytest.raises(TypeError, match="hessian must be an array"):
        preconditioned_threshold("h", np.eye(2))


def test_radius_one_with_a_jordan_block_is_not_stable():
    """At rho = 1 a non-symmetric iteration can grow polynomially: E x_t and E x_t x_t^T."""
    shear = np.array([[[0.0, -1.0], [0.0, 0.0]]])  # I - A = [[1, 1], [0, 1]]
    signs = np.array([[[0.0, -1.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])  # [[1, +-1], [0, 1]]
    for samples in (shear, signs):
        res = general_optimizer_stability(samples, 1.0)
        steps = np.eye(2) - samples
        # independent: iterate the second moment from x0 = e_2 for 1000 steps
        second = np.outer([0.0, 1.0], [0.0, 1.0])
        for _ in range(1000):
            second = np.mean([b @ second @ b.T for b in steps], axis=0)
        print(res, np.trace(second))
        assert res.ms_radius == pytest.approx(1.0, abs=1e-12)
        assert np.trace(second) >= 1000  # grows like 1 + t (or 1 + t^2)
        assert not res.ms_stable
    assert not general_optimizer_stability(shear, 1.0).mean_stable  # E x_t grows like t


def test_radius_one_without_jordan_blocks_is_stable():
    angle = 1.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for samples in (np.eye(2)[None] - rotation[None], np.zeros((1, 2, 2)), 2 * np.eye(2)[None]):
        res = general_optimizer_stability(samples, 1.0)
        powers = [np.linalg.matrix_power(np.eye(2) - samples[0], t) for t in (10, 1000)]
        assert max(np.linalg.norm(m, 2) for m in powers) <= 1 + 1e-9  # bounded, by iteration
        assert res.mean_stable and res.ms_stable
