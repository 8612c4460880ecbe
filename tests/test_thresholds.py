"""Tests for companion.thresholds: exact mean-square thresholds, bounds, higher orders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import validation
from companion.stability.curvature import Curvature, gd_threshold
from companion.stability.operators import second_moment_operator, symmetric_tensor_basis
from companion.stability.sampling import batch_noise_factor
from companion.stability.thresholds import (
    NecessaryBounds,
    generalized_sharpness,
    kth_order_threshold,
    ms_necessary_bounds,
    ms_threshold,
    ms_threshold_bisection,
    rank_one_bound,
    wu_condition,
)


def _gauss_newton_curvature(jacobians, gram=None, num_outputs=None):
    """The 0.1 ``*_gn`` inputs (Jacobians, or a Gram matrix) as a Curvature."""
    if gram is not None:
        return Curvature.from_gram(gram, num_outputs=num_outputs)
    return Curvature.from_jacobians(jacobians)


def ms_threshold_gn(jacobians, batch_size, replacement=False, *, gram=None, num_outputs=None):
    return _gauss_newton_curvature(jacobians, gram, num_outputs).ms_threshold(
        batch_size, replacement
    )


def generalized_sharpness_gn(jacobians, batch_size, replacement=False):
    return Curvature.from_jacobians(jacobians).generalized_sharpness(batch_size, replacement)


def ms_necessary_bounds_gn(jacobians, batch_size, replacement=False):
    return Curvature.from_jacobians(jacobians).necessary_bounds(batch_size, replacement)


def ms_threshold_curve_gn(jacobians, batch_sizes, replacement=False, *, gram=None, num_outputs=None):  # noqa: E501
    return _gauss_newton_curvature(jacobians, gram, num_outputs).ms_threshold_curve(
        batch_sizes, replacement
    )


def rank_one_bound_gn(jacobians, batch_size, replacement=False, **kwargs):
    return Curvature.from_jacobians(jacobians).rank_one_bound(batch_size, replacement, **kwargs)

# Every route computes the same eigenvalue with backward-stable dense linear algebra or a
# Lanczos residual of 1e-12; 1e-8 relative leaves four orders of magnitude of slack.
AGREE = 1e-8


def gauss_newton(jac):
    """Dense H_i = J_i^T J_i from (n, K, d) Jacobians."""
    return np.einsum("nki,nkj->nij", jac, jac)


def random_jacobians(rng, n, k, d, rank=None):
    """Jacobians whose rows span a random ``rank``-dimensional subspace of R^d."""
    jac = rng.normal(size=(n, k, d if rank is None else rank))
    if rank is not None:
        basis, _ = np.linalg.qr(rng.normal(size=(d, rank)))
        jac = jac @ basis.T
    return jac


def brute_force_q(hessians, lr, batch_size, replacement):
    """E[(I - lr Hhat) (x) (I - lr Hhat)] averaged over every batch, with np.kron."""
    n, d, _ = hessians.shape
    if replacement:
        batches = list(itertools.product(range(n), repeat=batch_size))
    else:
        batches = list(itertools.combinations(range(n), batch_size))
    total = np.zeros((d * d, d * d))
    for batch in batches:
        step = np.eye(d) - lr * hessians[list(batch)].mean(axis=0)
        total += np.kron(step, step)
    return total / len(batches)


def spectral_radius(mat):
    return float(np.max(np.abs(np.linalg.eigvals(mat))))


# ------------------------------------------------------------------------------------
# the four routes agree
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize(
    ("n", "k", "d", "rank"),
    [
        (6, 1, 4, None),  # full rank H, rank-one samples
        (7, 2, 5, None),  # K = 2 outputs
        (9, 1, 6, 3),  # rank-deficient H (null space of dimension 3)
        (5, 3, 6, 4),  # K = 3, rank-deficient
        (30, 1, 12, None),  # r = 12 >= 8 with rank-one samples: factored noise product
        (6, 12, 10, None),  # r = 10 with full-rank samples: plain noise product
    ],
)
def test_all_routes_agree(n, k, d, rank, replacement):
    rng = np.random.default_rng(n * 100 + k * 10 + d)
    jac = random_jacobians(rng, n, k, d, rank)
    hs = gauss_newton(jac)
    gram = np.einsum("nki,mli->nkml", jac, jac)
    for batch_size in (1, 2, n - 1):
        dense = ms_threshold(hs, batch_size, replacement, method="dense")
        others = {
            "lanczos": ms_threshold(hs, batch_size, replacement, method="lanczos"),
            "auto": ms_threshold(hs, batch_size, replacement),
            "bisection": ms_threshold_bisection(hs, batch_size, replacement),
            "gram (J)": ms_threshold_gn(jac if k > 1 else jac[:, 0], batch_size, replacement),
            "gram (4-D G)": ms_threshold_gn(None, batch_size, replacement, gram=gram),
            "gram (2-D G)": ms_threshold_gn(
                None, batch_size, replacement, gram=gram.reshape(n * k, n * k), num_outputs=k
            ),
        }
        for name, value in others.items():
            assert value == pytest.approx(dense, rel=AGREE), name
        assert generalized_sharpness(hs, batch_size, replacement) == pytest.approx(
            2 / dense, rel=AGREE
        )
        assert generalized_sharpness_gn(jac, batch_size, replacement) == pytest.approx(
            2 / dense, rel=AGREE
        )


def test_threshold_matches_brute_force_second_moment():
    # Exactness (MM Thm 3), independent of the package's operators: the average over every
    # batch of (I - lr Hhat)^{(x)2} has spectral radius < 1 just below eta*, > 1 just above.
    rng = np.random.default_rng(11)
    for replacement in (False, True):
        for trial in range(4):
            hs = gauss_newton(random_jacobians(rng, 5, 1 + trial % 2, 3))
            eta = ms_threshold(hs, 2, replacement)
            below = spectral_radius(brute_force_q(hs, 0.99 * eta, 2, replacement))
            above = spectral_radius(brute_force_q(hs, 1.01 * eta, 2, replacement))
            assert below < 1 < above
            # and at eta* itself the radius is 1 (to rounding of a 9 x 9 eigenproblem)
            at = spectral_radius(brute_force_q(hs, eta, 2, replacement))
            assert at == pytest.approx(1.0, abs=1e-10)


def test_threshold_with_package_operator_just_below_and_above():
    rng = np.random.default_rng(12)
    hs = gauss_newton(random_jacobians(rng, 8, 2, 5))
    for replacement in (False, True):
        eta = ms_threshold(hs, 3, replacement)
        assert spectral_radius(second_moment_operator(hs, 0.99 * eta, 3, replacement)) < 1
        assert spectral_radius(second_moment_operator(hs, 1.01 * eta, 3, replacement)) > 1


def test_repeated_eigenvalues_closed_form():
    # H_i = e_i e_i^T (n = d): H = I/d, every eigenvalue repeated; on diagonal X,
    # D(X) = ((1-p)/d^2 + p/d) X and C = I/d, so eta* = 2 / ((1-p)/d + p).
    d = 5
    hs = np.stack([np.outer(e, e) for e in np.eye(d)])
    for replacement in (False, True):
        for batch_size in (1, 2, 5):
            p = batch_noise_factor(d, batch_size, replacement)
            expected = 2.0 / ((1 - p) / d + p)
            for method in ("dense", "lanczos"):
                got = ms_threshold(hs, batch_size, replacement, method=method)
                assert got == pytest.approx(expected, rel=AGREE)
            assert ms_threshold_bisection(hs, batch_size, replacement) == pytest.approx(
                expected, rel=AGREE
            )
            assert ms_threshold_gn(np.eye(d), batch_size, replacement) == pytest.approx(
                expected, rel=AGREE
            )


def test_one_dimensional_threshold_closed_form():
    # 1-D: Q = (1 - lr a)^2 + lr^2 p s^2, so eta* = 2a / (a^2 + p s^2) (wme-1d).
    rng = np.random.default_rng(13)
    curv = rng.uniform(0.2, 2.0, size=7)
    a, s2 = curv.mean(), curv.var()
    hs = curv[:, None, None]
    for replacement in (False, True):
        p = batch_noise_factor(7, 3, replacement)
        expected = 2 * a / (a**2 + p * s2)
        assert ms_threshold(hs, 3, replacement) == pytest.approx(expected, rel=1e-12)
        assert ms_threshold_bisection(hs, 3, replacement) == pytest.approx(expected, rel=1e-11)
        assert ms_threshold_gn(np.sqrt(curv)[:, None], 3, replacement) == pytest.approx(
            expected, rel=1e-12
        )
        # in 1-D both necessary bounds and the rank-one bound are exact
        bounds = ms_necessary_bounds(hs, 3, replacement)
        assert bounds.top_eigenvector == pytest.approx(expected, rel=1e-12)
        assert bounds.trace == pytest.approx(expected, rel=1e-12)
        value, v = rank_one_bound(hs, 3, replacement)
        assert value == pytest.approx(2 / expected, rel=1e-12)
        assert abs(v[0]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------
# structure: GD limit, monotone in B, invariances
# ------------------------------------------------------------------------------------
def test_full_batch_is_gd_threshold():
    rng = np.random.default_rng(14)
    for rank in (None, 2):
        jac = random_jacobians(rng, 6, 2, 4, rank)
        hs = gauss_newton(jac)
        gd = gd_threshold(hs)
        assert gd_threshold(hs) == gd
        for method in ("dense", "lanczos"):
            assert ms_threshold(hs, 6, method=method) == pytest.approx(gd, rel=AGREE)
        assert ms_threshold_bisection(hs, 6) == pytest.approx(gd, rel=AGREE)
        assert ms_threshold_gn(jac, 6) == pytest.approx(gd, rel=AGREE)
        # with noise, eta* is strictly below the GD threshold for these generic instances
        assert ms_threshold(hs, 3) < gd * (1 - 1e-6)


@pytest.mark.parametrize("replacement", [False, True])
def test_threshold_non_decreasing_in_batch_size(replacement):
    # MM Prop 1. Without replacement p(B) strictly decreases in B; with replacement B > n
    # is allowed and p = 1/B keeps decreasing.
    rng = np.random.default_rng(15)
    for _ in range(5):
        n = 7
        hs = gauss_newton(random_jacobians(rng, n, 2, 4))
        sizes = range(1, (2 * n if replacement else n) + 1)
        curve = np.array([ms_threshold(hs, b, replacement) for b in sizes])
        assert np.all(np.diff(curve) >= -AGREE * curve[1:])
        assert curve[-1] <= gd_threshold(hs) * (1 + AGREE)


def test_embedding_in_larger_space_changes_nothing():
    # Null directions are handled exactly: padding with zeros and rotating keeps eta*.
    rng = np.random.default_rng(16)
    hs = gauss_newton(random_jacobians(rng, 6, 2, 3))
    padded = np.zeros((6, 7, 7))
    padded[:, :3, :3] = hs
    rot, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    big = rot @ padded @ rot.T
    for method in ("dense", "lanczos"):
        assert ms_threshold(big, 2, method=method) == pytest.approx(
            ms_threshold(hs, 2, method="dense"), rel=AGREE
        )


def test_duplicate_samples_equal_a_weighted_problem():
    # Duplicating every sample keeps H and (1/n) sum H_i (x) H_i, so with replacement
    # (p = 1/B independent of n) eta* is unchanged.
    rng = np.random.default_rng(17)
    hs = gauss_newton(random_jacobians(rng, 5, 1, 4))
    doubled = np.concatenate([hs, hs])
    for batch_size in (1, 3):
        assert ms_threshold(doubled, batch_size, True) == pytest.approx(
            ms_threshold(hs, batch_size, True), rel=AGREE
        )
        assert ms_threshold_bisection(doubled, batch_size, True) == pytest.approx(
            ms_threshold(hs, batch_size, True), rel=AGREE
        )


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 7),
    k=st.integers(1, 3),
    d=st.integers(1, 5),
    rank=st.integers(1, 5),
    log_scale=st.floats(-3, 3),
    replacement=st.booleans(),
    duplicate=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_routes_agree_property(n, k, d, rank, log_scale, replacement, duplicate, seed, data):
    rng = np.random.default_rng(seed)
    jac = random_jacobians(rng, n, k, d, min(rank, d)) * 10**log_scale
    if duplicate:
        jac = np.concatenate([jac, jac[:2]])
        n += 2
    hs = gauss_newton(jac)
    batch_size = data.draw(st.integers(1, n))
    dense = ms_threshold(hs, batch_size, replacement, method="dense")
    assert ms_threshold(hs, batch_size, replacement, method="lanczos") == pytest.approx(
        dense, rel=AGREE
    )
    assert ms_threshold_bisection(hs, batch_size, replacement) == pytest.approx(dense, rel=AGREE)
    assert ms_threshold_gn(jac, batch_size, replacement) == pytest.approx(dense, rel=AGREE)
    # eta* never exceeds the GD threshold, and the necessary bounds hold
    assert dense <= gd_threshold(hs) * (1 + AGREE)
    bounds = ms_necessary_bounds(hs, batch_size, replacement)
    assert min(bounds) >= dense * (1 - AGREE)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    log_c=st.floats(-4, 4),
    replacement=st.booleans(),
)
def test_scaling_and_rotation_property(seed, log_c, replacement):
    rng = np.random.default_rng(seed)
    hs = gauss_newton(random_jacobians(rng, 6, 2, 4))
    c = 10**log_c
    base = ms_threshold(hs, 2, replacement)
    assert ms_threshold(c * hs, 2, replacement) == pytest.approx(base / c, rel=AGREE)
    rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rotated = rot @ hs @ rot.T
    for method in ("dense", "lanczos"):
        assert ms_threshold(rotated, 2, replacement, method=method) == pytest.approx(
            base, rel=AGREE
        )


# ------------------------------------------------------------------------------------
# sufficient condition, necessary bounds, rank-one bound
# ------------------------------------------------------------------------------------
def test_wu_condition_bounds_the_exact_rate():
    # E||x_{t+1}||^2 = tr(M S) for M = (I - lr H)^2 + lr^2 p Sigma and the top eigenvector S
    # of Q is PSD, so rho(Q) <= lambda_max(M): the condition is sufficient (MY Prop 1).
    rng = np.random.default_rng(18)
    for _ in range(10):
        hs = gauss_newton(random_jacobians(rng, 6, 2, 3))
        for replacement in (False, True):
            eta = ms_threshold(hs, 2, replacement)
            for lr in (0.3 * eta, eta, 1.5 * eta):
                q = second_moment_operator(hs, lr, 2, replacement)
                assert wu_condition(hs, lr, 2, replacement) >= spectral_radius(q) - 1e-12
            # at eta* the exact rate is 1, so the sufficient quantity is at least 1
            assert wu_condition(hs, eta, 2, replacement) >= 1 - 1e-10


def test_wu_condition_one_dimensional_is_exact():
    curv = np.array([0.5, 1.0, 2.5, 3.0])
    hs = curv[:, None, None]
    p = batch_noise_factor(4, 2)
    value = wu_condition(hs, 0.4, 2)
    assert value == pytest.approx((1 - 0.4 * curv.mean()) ** 2 + 0.16 * p * curv.var())


def test_necessary_and_rank_one_bounds():
    rng = np.random.default_rng(19)
    for trial in range(12):
        rank = None if trial % 3 else 2
        jac = random_jacobians(rng, 8, 1 + trial % 3, 4, rank)
        hs = gauss_newton(jac)
        h = hs.mean(axis=0)
        lam = np.linalg.eigvalsh(h)[-1]
        for replacement in (False, True):
            b = 1 + trial % 4
            eta = ms_threshold(hs, b, replacement)
            bounds = ms_necessary_bounds(hs, b, replacement)
            assert isinstance(bounds, NecessaryBounds)
            assert bounds.top_eigenvector >= eta * (1 - AGREE)
            assert bounds.trace >= eta * (1 - AGREE)
            assert bounds.gd == pytest.approx(2 / lam)
            assert bounds.best == min(bounds)
            # the Gram-space version computes the same three numbers
            np.testing.assert_allclose(ms_necessary_bounds_gn(jac, b, replacement), bounds)
            value, v = rank_one_bound(hs, b, replacement, restarts=3)
            assert np.linalg.norm(v) == pytest.approx(1.0)
            assert lam * (1 - 1e-12) <= value <= (2 / eta) * (1 + AGREE)
            # the ascent starts at the top eigenvector, whose value is 2 / bound (15)
            assert value >= 2 / bounds.top_eigenvector * (1 - 1e-12)
            # the returned v attains the value (recomputed from the definition)
            hv = v @ h @ v
            forms = np.einsum("a,nab,b->n", v, hs, v)
            p = batch_noise_factor(8, b, replacement)
            assert value == pytest.approx(hv + p * np.mean((forms - hv) ** 2) / hv, rel=1e-10)
            value_gn, _ = rank_one_bound_gn(jac, b, replacement, restarts=3)
            assert value_gn == pytest.approx(value, rel=1e-6)


def test_rank_one_bound_reaches_the_maximum_on_the_sphere():
    # Compare with a brute-force search over many directions on a d = 2 instance.
    rng = np.random.default_rng(20)
    hs = gauss_newton(random_jacobians(rng, 6, 1, 2))
    p = batch_noise_factor(6, 1)
    angles = np.linspace(0, np.pi, 200001)
    vs = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    hv = np.einsum("ta,ab,tb->t", vs, hs.mean(axis=0), vs)
    forms = np.einsum("ta,nab,tb->tn", vs, hs, vs)
    brute = np.max(hv + p * np.mean((forms - hv[:, None]) ** 2, axis=1) / hv)
    value, _ = rank_one_bound(hs, 1)
    assert value >= brute * (1 - 1e-9)
    assert value <= generalized_sharpness(hs, 1) * (1 + AGREE)


def test_zero_hessians():
    hs = np.zeros((3, 2, 2))
    assert ms_threshold(hs, 1) == math.inf
    assert ms_threshold(hs, 1, method="lanczos") == math.inf
    assert ms_threshold_bisection(hs, 1) == math.inf
    assert generalized_sharpness(hs, 2) == 0.0
    assert ms_threshold_gn(np.zeros((3, 2)), 1) == math.inf
    assert kth_order_threshold(hs, 1, order=3) == math.inf
    assert all(math.isinf(b) for b in ms_necessary_bounds(hs, 1))
    assert all(math.isinf(b) for b in ms_necessary_bounds_gn(np.zeros((3, 2)), 1))
    value, v = rank_one_bound(hs, 1)
    assert value == 0.0
    assert v.shape == (2,)
    value, v = rank_one_bound_gn(np.zeros((3, 4)), 1)
    assert value == 0.0
    assert v.shape == (4,)


# ------------------------------------------------------------------------------------
# higher-order thresholds
# ------------------------------------------------------------------------------------
def test_kth_order_low_orders():
    rng = np.random.default_rng(21)
    for rank in (None, 2):
        hs = gauss_newton(random_jacobians(rng, 6, 1, 3, rank))
        for replacement in (False, True):
            gd = gd_threshold(hs)
            assert kth_order_threshold(hs, 2, 1, replacement) == pytest.approx(gd, rel=AGREE)
            eta2 = kth_order_threshold(hs, 2, 2, replacement)
            assert eta2 == pytest.approx(ms_threshold(hs, 2, replacement), rel=AGREE)


def test_kth_order_full_batch_is_gd():
    # p = 0: T_k = (I - lr H)^{(x)k}, radius |1 - lr lambda|^k, threshold 2/lambda_max.
    rng = np.random.default_rng(22)
    hs = gauss_newton(random_jacobians(rng, 4, 1, 3))
    for order in (1, 2, 3, 4):
        assert kth_order_threshold(hs, 4, order) == pytest.approx(gd_threshold(hs), rel=AGREE)


@pytest.mark.parametrize("order", [3, 4])
def test_kth_order_threshold_against_brute_force(order):
    # Build T_k from every batch with np.kron, restrict to symmetric tensors with the basis,
    # and check the radius crosses 1 at the returned rate.
    rng = np.random.default_rng(23 + order)
    n, d, b = 5, 2, 2
    hs = gauss_newton(random_jacobians(rng, n, 1, d))
    basis = symmetric_tensor_basis(d, order)

    def radius(lr):
        total = 0
        for batch in itertools.combinations(range(n), b):
            step = np.eye(d) - lr * hs[list(batch)].mean(axis=0)
            power = step
            for _ in range(order - 1):
                power = np.kron(power, step)
            total = total + power
        return spectral_radius(basis.T @ (total / math.comb(n, b)) @ basis)

    eta = kth_order_threshold(hs, b, order)
    assert radius(0.999 * eta) <= 1 < radius(1.001 * eta)
    for lr in np.linspace(0, eta, 40)[1:]:
        assert radius(lr) <= 1 + 1e-12


# ------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------
GOOD = np.stack([np.eye(2), np.diag([2.0, 0.0])])
GOOD_J = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


@pytest.mark.parametrize(
    ("hessians", "error", "match"),
    [
        (np.array([[[1.0, 2.0], [0.0, 1.0]]]), ValueError, "symmetric"),
        (np.array([[[1.0, 0.0], [0.0, -1.0]]]), ValueError, "positive semi-definite"),
        (np.array([[[np.nan, 0.0], [0.0, 1.0]]]), ValueError, "NaN"),
        (np.eye(2), ValueError, "3 dimensions"),
    ],
)
def test_bad_hessians(hessians, error, match):
    calls = [
        lambda: ms_threshold(hessians, 1),
        lambda: ms_threshold_bisection(hessians, 1),
        lambda: generalized_sharpness(hessians, 1, method="lanczos"),
        lambda: wu_condition(hessians, 0.1, 1),
        lambda: ms_necessary_bounds(hessians, 1),
        lambda: rank_one_bound(hessians, 1),
        lambda: kth_order_threshold(hessians, 1, 2),
    ]
    for call in calls:
        with pytest.raises(error, match=match):
            call()


@pytest.mark.parametrize(
    ("batch_size", "error"), [(0, ValueError), (3, ValueError), (1.0, TypeError), (True, TypeError)]
)
def test_bad_batch_size(batch_size, error):
    for call in (
        lambda: ms_threshold(GOOD, batch_size),
        lambda: ms_threshold_bisection(GOOD, batch_size),
        lambda: ms_threshold_gn(GOOD_J[:2], batch_size),
        lambda: ms_necessary_bounds(GOOD, batch_size),
        lambda: rank_one_bound(GOOD, batch_size),
        lambda: kth_order_threshold(GOOD, batch_size, 2),
        lambda: wu_condition(GOOD, 0.1, batch_size),
    ):
        with pytest.raises(error, match="batch_size"):
            call()


def test_bad_scalars():
    with pytest.raises(ValueError, match="lr"):
        wu_condition(GOOD, 0.0, 1)
    with pytest.raises(TypeError, match="lr"):
        wu_condition(GOOD, None, 1)
    with pytest.raises(TypeError, match="replacement"):
        ms_threshold(GOOD, 1, replacement="no")
    with pytest.raises(ValueError, match="rtol"):
        ms_threshold_bisection(GOOD, 1, rtol=0.0)
    with pytest.raises(ValueError, match="rtol"):
        ms_threshold_bisection(GOOD, 1, rtol=2.0)
    with pytest.raises(ValueError, match="order"):
        kth_order_threshold(GOOD, 1, 0)
    with pytest.raises(TypeError, match="order"):
        kth_order_threshold(GOOD, 1, 2.0)
    with pytest.raises(ValueError, match="lr_max"):
        kth_order_threshold(GOOD, 1, 2, lr_max=-1.0)
    with pytest.raises(ValueError, match="grid"):
        kth_order_threshold(GOOD, 1, 2, grid=0)
    with pytest.raises(ValueError, match="restarts"):
        rank_one_bound(GOOD, 1, restarts=-1)
    with pytest.raises(TypeError, match="steps"):
        rank_one_bound(GOOD, 1, steps=1.5)
    with pytest.raises(ValueError, match="seed"):
        rank_one_bound_gn(GOOD_J, 1, seed=-3)


def test_bad_method():
    with pytest.raises(ValueError, match="method must be one of"):
        ms_threshold(GOOD, 1, method="eigenbasis")
    with pytest.raises(ValueError, match="method must be one of"):
        generalized_sharpness(GOOD, 1, method="gram")


def test_dense_refused(monkeypatch):
    monkeypatch.setattr(validation, "DENSE_MEMORY_LIMIT", 100)
    with pytest.raises(ValueError, match="lanczos"):
        ms_threshold(GOOD, 1, method="dense")
    with pytest.raises(ValueError, match="lanczos"):
        ms_threshold_bisection(GOOD, 1)
    # the matrix-free route needs no dense d^2 x d^2 matrix
    assert ms_threshold(GOOD, 1, method="lanczos") > 0


def test_bad_gauss_newton_inputs():
    gram = GOOD_J @ GOOD_J.T
    with pytest.raises(ValueError, match="2 or 3 dimensions"):
        ms_threshold_gn(np.ones(3), 1)
    with pytest.raises(ValueError, match="NaN"):
        ms_threshold_gn(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(ValueError, match="divisible"):
        ms_threshold_gn(None, 1, gram=gram, num_outputs=2)
    with pytest.raises(ValueError, match="divisible"):
        ms_threshold_gn(None, 1, gram=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"\(n, K, n, K\)"):
        ms_threshold_gn(None, 1, gram=np.ones((3, 1, 2, 1)))
    with pytest.raises(ValueError, match="does not match"):
        ms_threshold_gn(None, 1, gram=gram.reshape(3, 1, 3, 1), num_outputs=2)
    with pytest.raises(ValueError, match="symmetric"):
        ms_threshold_gn(None, 1, gram=gram + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="positive semi-definite"):
        ms_threshold_gn(None, 1, gram=-np.eye(3))
    with pytest.raises(ValueError, match="2 or 4 dimensions"):
        ms_threshold_gn(None, 1, gram=np.ones(3))
    with pytest.raises(ValueError, match="batch_size"):
        ms_threshold_gn(None, 4, gram=gram)


# ------------------------------------------------------------------------------------
# larger instances
# ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("d", [20, 30])
def test_eigenbasis_agrees_with_dense_at_moderate_size(d):
    rng = np.random.default_rng(24)
    hs = gauss_newton(random_jacobians(rng, 15, 3, d))
    for replacement in (False, True):
        dense = ms_threshold(hs, 4, replacement, method="dense")
        eig = ms_threshold(hs, 4, replacement, method="lanczos")
        assert eig == pytest.approx(dense, rel=AGREE)


@pytest.mark.slow
def test_gram_route_at_large_d():
    # n = 200, d = 5000: reference = the eigenbasis route on Hessians reduced to the row
    # space of J by an SVD (independent of the Gram code path).
    rng = np.random.default_rng(25)
    n, d = 200, 5000
    jac = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=(n, 1))
    _, _, vt = np.linalg.svd(jac, full_matrices=False)
    coords = jac @ vt.T  # (n, r): a_i in an orthonormal basis of the row space
    reduced = np.einsum("ni,nj->nij", coords, coords)
    for batch_size in (1, 10):
        gram_value = ms_threshold_gn(jac, batch_size)
        reference = ms_threshold(reduced, batch_size, method="lanczos")
        assert gram_value == pytest.approx(reference, rel=AGREE)
    value, v = rank_one_bound_gn(jac, 10, restarts=2)
    assert v.shape == (d,)
    assert value <= generalized_sharpness_gn(jac, 10) * (1 + AGREE)


def test_lanczos_retries_when_arpack_stalls(monkeypatch):
    import scipy.sparse.linalg as spla

    real_eigsh = spla.eigsh
    calls = []

    def stalling_eigsh(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise spla.ArpackNoConvergence("no convergence", np.array([]), np.array([]))
        return real_eigsh(*args, **kwargs)

    monkeypatch.setattr(spla, "eigsh", stalling_eigsh)
    hs = gauss_newton(random_jacobians(np.random.default_rng(26), 6, 2, 4))
    value = ms_threshold(hs, 2, method="lanczos")
    assert len(calls) == 2 and calls[1]["ncv"] == 16
    assert value == pytest.approx(ms_threshold(hs, 2, method="dense"), rel=AGREE)


@pytest.mark.parametrize("replacement", [False, True])
def test_threshold_curve_equals_pointwise_gn(replacement):
    """One reduction of the Gram matrix, many B: same η*(B) as one call per B."""
    rng = np.random.default_rng(11)
    jac = rng.standard_normal((15, 2, 9))
    sizes = [1, 2, 5, 15]
    curve = ms_threshold_curve_gn(jac, sizes, replacement)
    single = [ms_threshold_gn(jac, b, replacement) for b in sizes]
    np.testing.assert_allclose(curve, single, rtol=1e-9)
    assert np.all(np.diff(curve) >= -1e-12 * curve[:-1])  # MM Prop 1: non-decreasing in B


def test_threshold_curve_rejects_bad_batch_sizes():
    jac = np.ones((4, 3))
    with pytest.raises(ValueError, match="batch_size"):
        ms_threshold_curve_gn(jac, [1, 5])
    with pytest.raises(ValueError, match="batch_sizes"):
        ms_threshold_curve_gn(jac, [])
