"""Tests for companion.stability.bounds: MY Thm 2 / Cor 1 / Remark 3, WME region and WWS bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.stability.bounds import (
    Bound,
    alignment_factor,
    frobenius_bound,
    gradient_moment_bound,
    gradient_norm_bound,
    moment_tensor_norms,
    wme_boundary,
    wme_necessary_conditions,
    wme_region_contains,
    worst_alignment_factor,
)
from companion.stability.operators import second_moment_map, second_moment_operator
from companion.stability.sampling import batch_noise_factor
from companion.stability.thresholds import kth_order_threshold, ms_threshold, wu_condition


def rank_one_instance(rng, replacement):
    """Per-sample gradients a_i with uneven scales, H_i = a_i a_i^T, and a batch size."""
    n = int(rng.integers(3, 7))
    d = int(rng.integers(2, 4))
    grads = rng.normal(size=(n, d)) * rng.lognormal(0.0, 0.7, size=(n, 1))
    b = int(rng.integers(1, 4)) if replacement else int(rng.integers(1, n + 1))
    return grads, np.einsum("ni,nj->nij", grads, grads), b


def exact_threshold(hs, b, k, replacement):
    """k-th order threshold (exact for every k; see kth_order_threshold) at which to test."""
    if k == 2:
        return ms_threshold(hs, b, replacement)
    return kth_order_threshold(hs, b, k, replacement=replacement)


# ------------------------------------------------------------------------------------
# Ma-Ying Theorem 2 and Corollary 1 at the exact threshold
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_my_theorem2_and_corollary1_hold_at_the_threshold(k):
    rng = np.random.default_rng(100 + k)
    worst = {"coordinates": 0.0, "directions": 0.0, "corollary": 0.0}
    for trial in range(20):
        replacement = bool(trial % 2)
        grads, hs, b = rank_one_instance(rng, replacement)
        lr = exact_threshold(hs, b, k, replacement)
        coords = gradient_moment_bound(grads, lr, b, k)
        dirs = gradient_moment_bound(grads, lr, b, k, direction=rng.normal(size=(10, hs.shape[1])))
        cor = gradient_norm_bound(grads, lr, b, k)
        for key, bound in zip(worst, (coords, dirs, cor), strict=True):
            worst[key] = max(worst[key], bound.worst_ratio)
            assert bound.holds, f"k={k}, trial {trial}, {key}: ratio {bound.worst_ratio}"
    # record the tightness: every ratio <= 1, the coordinate bound not absurdly loose
    assert max(worst.values()) <= 1 + 1e-9, f"worst lhs/rhs ratios for k={k}: {worst}"
    assert worst["directions"] > 0.3, f"worst lhs/rhs ratios for k={k}: {worst}"


def test_my_theorem2_first_order_is_tight_along_the_top_eigenvector():
    # k = 1: lhs along v is v^T H v; at lr = 2/lambda_max, v = top eigenvector gives equality
    rng = np.random.default_rng(5)
    grads = rng.normal(size=(6, 3))
    h = grads.T @ grads / 6
    lam, vecs = np.linalg.eigh(h)
    bound = gradient_moment_bound(grads, 2 / lam[-1], 4, 1, direction=vecs[:, -1])
    assert bound.worst_ratio == pytest.approx(1.0, rel=1e-12)
    assert bound.holds
    assert not gradient_moment_bound(grads, 2.01 / lam[-1], 4, 1, direction=vecs[:, -1]).holds


def test_my_bounds_sides_are_the_stated_formulas():
    grads = np.array([[1.0, -2.0], [3.0, 0.5]])
    b, lr = 2, 0.1
    bound = gradient_moment_bound(grads, lr, b, 2)
    np.testing.assert_allclose(bound.lhs, [(1 + 81) / 2, (16 + 0.0625) / 2])
    assert bound.rhs == pytest.approx(4 * 2 / 0.01)
    cor = gradient_norm_bound(grads, lr, b, 2)
    want = 0.5 * ((1 + 16) ** 0.25 + (81 + 0.0625) ** 0.25)
    assert cor.lhs == pytest.approx(want)
    assert cor.rhs == pytest.approx((2 / 2) ** 0.25 * np.sqrt(2 * 2 / 0.1))
    # Cor 1 follows from Thm 2 summed over coordinates and Jensen: rhs^(2k) = sum of rhs
    thm = gradient_moment_bound(grads, lr, b, 3)
    assert gradient_norm_bound(grads, lr, b, 3).rhs ** 6 == pytest.approx(2 * thm.rhs)


# ------------------------------------------------------------------------------------
# Wu-Ma-E conditions
# ------------------------------------------------------------------------------------
def test_wme_conditions_hold_where_the_wme_sufficient_condition_holds():
    rng = np.random.default_rng(7)
    for trial in range(30):
        replacement = bool(trial % 2)
        _, hs, b = rank_one_instance(rng, replacement)
        if batch_noise_factor(hs.shape[0], b, replacement) == 0:
            continue
        # largest lr with lambda_max{(I - lr H)^2 + lr^2 p Sigma} <= 1, by bisection
        lo, hi = 0.0, ms_threshold(hs, b, replacement) * 1.0001
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if wu_condition(hs, mid, b, replacement) <= 1 else (lo, mid)
        sharp, nonuni = wme_necessary_conditions(hs, lo, b, replacement)
        assert sharp.holds and nonuni.holds, (sharp, nonuni)


def test_wme_sharpness_condition_holds_at_the_exact_threshold():
    rng = np.random.default_rng(8)
    for trial in range(30):
        replacement = bool(trial % 2)
        _, hs, b = rank_one_instance(rng, replacement)
        sharp, _ = wme_necessary_conditions(hs, ms_threshold(hs, b, replacement), b, replacement)
        assert sharp.holds, sharp


def test_wme_non_uniformity_condition_is_not_necessary_for_exact_stability():
    # n = 3, d = 2, B = 1 without replacement (p = 1): mean-square stable at eta*, yet
    # s > 1/(eta* sqrt(p)). Found by random search; see the bounds module docstring.
    grads = np.array([[-0.826, -1.020], [-0.930, 0.255], [-0.516, 1.257]])
    hs = np.einsum("ni,nj->nij", grads, grads)
    lr = ms_threshold(hs, 1)
    q = second_moment_operator(hs, lr, 1)
    assert np.max(np.abs(np.linalg.eigvalsh(q))) <= 1 + 1e-10  # stable at eta*
    sharp, nonuni = wme_necessary_conditions(hs, lr, 1)
    assert sharp.holds
    assert not nonuni.holds and nonuni.worst_ratio > 1.05, nonuni


def test_wme_gradient_descent_has_no_non_uniformity_condition():
    hs = np.einsum("ni,nj->nij", np.eye(3), np.eye(3))
    _, nonuni = wme_necessary_conditions(hs, 0.5, 3)
    assert nonuni.rhs == np.inf and nonuni.holds


def one_dimensional_instance(a: float, s: float, n: int) -> np.ndarray:
    """n scalar curvatures with mean a and population std s: one outlier, n - 1 equal.

    z = (sqrt(n-1), -1/sqrt(n-1), ...) has mean 0 and population variance 1, so
    a_i = a + s z_i works; all a_i >= 0 iff s <= a sqrt(n - 1).
    """
    z = np.full(n, -1.0 / np.sqrt(n - 1))
    z[0] = np.sqrt(n - 1)
    curv = a + s * z
    assert curv.min() >= -1e-12
    return np.maximum(curv, 0.0)[:, None, None]


def exact_multiplier(hessians, lr, batch_size, replacement=False) -> float:
    """E x_{t+1}^2 / E x_t^2 for d = 1, from the exact second-moment map (no WME formula)."""
    return float(second_moment_map(hessians, lr, batch_size, np.ones((1, 1)), replacement)[0, 0])


# ------------------------------------------------------------------------------------
# the Wu-Ma-E region in the (sharpness, non-uniformity) plane (wme_boundary)
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("lr", "batch_size", "n", "replacement"),
                         [(0.5, 1, 10, False), (1.3, 3, 8, False), (0.2, 2, 5, True)])
def test_boundary_is_where_exact_1d_second_moment_neither_grows_nor_decays(
    lr, batch_size, n, replacement
):
    a, s = wme_boundary(lr, batch_size, n, replacement, num=101)
    feasible = (a > 0) & (s <= a * np.sqrt(n - 1))
    assert feasible.sum() > 20  # the test must look at many boundary points
    for ai, si in zip(a[feasible], s[feasible], strict=True):
        hs = one_dimensional_instance(ai, si, n)
        # one step of an O(1) recursion: rounding is a few ulps of the terms (~1e-15).
        assert exact_multiplier(hs, lr, batch_size, replacement) == pytest.approx(1.0, abs=1e-12)
        # just inside and just outside the ellipse along the ray from its centre (1/lr, 0)
        for factor, grows in ((0.98, False), (1.02, True)):
            a2 = 1 / lr + factor * (ai - 1 / lr)
            s2 = factor * si
            if a2 <= 0 or s2 > a2 * np.sqrt(n - 1):
                continue
            m = exact_multiplier(one_dimensional_instance(a2, s2, n), lr, batch_size, replacement)
            assert (m > 1) == grows
            assert bool(wme_region_contains(a2, s2, lr, batch_size, n, replacement)) == (not grows)


def test_boundary_end_points_and_bounding_box():
    lr, batch_size, n = 0.4, 2, 9
    p = batch_noise_factor(n, batch_size)
    a, s = wme_boundary(lr, batch_size, n, num=1001)
    assert (a[0], s[0]) == (0.0, 0.0)
    assert a[-1] == pytest.approx(2 / lr) and s[-1] == 0.0
    # the bounding box is the pair of necessary conditions a <= 2/eta, s <= 1/(eta sqrt p)
    assert a.max() <= 2 / lr * (1 + 1e-14)
    assert s.max() == pytest.approx(1 / (lr * np.sqrt(p)), rel=1e-5)  # grid-limited maximum
    assert a[np.argmax(s)] == pytest.approx(1 / lr, rel=1e-2)
    assert np.all(np.diff(a) >= 0)


def test_gradient_descent_boundary_is_a_vertical_line():
    a, s = wme_boundary(0.5, 6, 6)  # B = n without replacement: p = 0
    np.testing.assert_array_equal(a, [4.0, 4.0])
    assert s[0] == 0 and np.isinf(s[1])
    inside = wme_region_contains([3.9, 4.1], [1e6, 0.0], 0.5, 6, 6)
    np.testing.assert_array_equal(inside, [True, False])


@settings(max_examples=40, deadline=None)
@given(
    lr=st.floats(1e-3, 1e3),
    n=st.integers(2, 50),
    batch_frac=st.floats(0, 1),
    replacement=st.booleans(),
)
def test_boundary_points_satisfy_condition_and_dilations_do_not(lr, n, batch_frac, replacement):
    batch_size = 1 + int(batch_frac * (n - 1))
    if batch_noise_factor(n, batch_size, replacement) == 0:
        return
    a, s = wme_boundary(lr, batch_size, n, replacement, num=51)
    assert np.all(wme_region_contains(a, s, lr, batch_size, n, replacement, rtol=1e-9))
    centre = 1 / lr
    out_a, out_s = centre + 1.05 * (a - centre), 1.05 * s
    keep = out_a >= 0
    assert not np.any(wme_region_contains(out_a[keep], out_s[keep], lr, batch_size, n,
                                          replacement))


def test_wme_boundary_errors():
    with pytest.raises(ValueError, match="lr"):
        wme_boundary(0.0, 1, 5)
    with pytest.raises(ValueError, match="batch_size"):
        wme_boundary(1.0, 6, 5)
    with pytest.raises(TypeError, match="batch_size"):
        wme_boundary(1.0, 1.5, 5)
    with pytest.raises(ValueError, match="num"):
        wme_boundary(1.0, 1, 5, num=1)
    with pytest.raises(ValueError, match=">= 0"):
        wme_region_contains(-1.0, 0.0, 1.0, 1, 5)
    with pytest.raises(ValueError, match="NaN"):
        wme_region_contains(np.nan, 0.0, 1.0, 1, 5)


# ------------------------------------------------------------------------------------
# Wu-Wang-Su alignment and Frobenius bound
# ------------------------------------------------------------------------------------
def linear_model(rng):
    n = int(rng.integers(2, 9))
    d = int(rng.integers(1, 6))
    k = int(rng.integers(1, 3))
    jac = rng.normal(size=(n, k, d)) * rng.lognormal(0.0, 0.7, size=(n, 1, 1))
    return jac


def test_alignment_factor_matches_its_definition():
    rng = np.random.default_rng(9)
    jac = rng.normal(size=(7, 4))
    res = rng.normal(size=7)
    grads = jac * res[:, None]
    noise = np.cov(grads.T, bias=True)  # single-sample covariance, 1/n normalisation
    g = jac.T @ jac / 7
    loss = 0.5 * np.mean(res**2)
    want = np.trace(noise @ g) / (2 * loss * np.linalg.norm(g) ** 2)
    assert alignment_factor(jac, res) == pytest.approx(want, rel=1e-12)
    # homogeneous of degree 0 in the residuals and in the Jacobians' scale
    assert alignment_factor(jac, 3 * res) == pytest.approx(want, rel=1e-12)
    assert alignment_factor(jac[:, None, :], res[:, None]) == pytest.approx(want, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_worst_alignment_factor_is_the_infimum_over_linear_residuals(seed):
    rng = np.random.default_rng(seed)
    jac = linear_model(rng)
    mu0 = worst_alignment_factor(jac)
    d = jac.shape[2]
    values = []
    for _ in range(20):
        res = np.einsum("nkd,d->nk", jac, rng.normal(size=d))
        if np.sum(res**2) > 1e-12:
            values.append(alignment_factor(jac, res))
    # each value >= the infimum (rounding in Tr(Sigma G) is ~1e-12 of its scale)
    assert all(v >= mu0 - 1e-9 * max(1.0, v) for v in values)


def test_worst_alignment_factor_is_attained():
    rng = np.random.default_rng(10)
    jac = rng.normal(size=(5, 3))
    mu0 = worst_alignment_factor(jac)
    g = jac.T @ jac / 5
    hs = np.einsum("ni,nj->nij", jac, jac)
    m = np.einsum("nab,bc,ncd->ad", hs, g, hs) / 5 - g @ g @ g
    import scipy.linalg

    _, vecs = scipy.linalg.eigh(m, g)
    res = jac @ vecs[:, 0]
    assert alignment_factor(jac, res) == pytest.approx(mu0, rel=1e-9)


def test_frobenius_bound_with_replacement_holds_at_the_exact_threshold():
    # The reconstructed WWS constant, i.i.d. sampling (p = 1/B), linear models at eta*
    rng = np.random.default_rng(11)
    worst = 0.0
    for _ in range(60):
        jac = linear_model(rng)
        n = jac.shape[0]
        hs = np.einsum("nki,nkj->nij", jac, jac)
        mu0 = worst_alignment_factor(jac)
        b = int(rng.integers(1, n + 1))
        bound = frobenius_bound(hs.mean(0), ms_threshold(hs, b, True), b, mu0)
        worst = max(worst, bound.worst_ratio)
        assert bound.holds, bound
    assert 0.5 < worst <= 1 + 1e-9, f"worst ratio {worst}"


def test_frobenius_bound_without_replacement_needs_the_noise_factor():
    rng = np.random.default_rng(12)
    worst_default, worst_p = 0.0, 0.0
    for _ in range(80):
        jac = linear_model(rng)
        n = jac.shape[0]
        hs = np.einsum("nki,nkj->nij", jac, jac)
        mu0 = worst_alignment_factor(jac)
        b = int(rng.integers(1, n + 1))
        lr = ms_threshold(hs, b, False)
        p = batch_noise_factor(n, b)
        with_p = frobenius_bound(hs.mean(0), lr, b, mu0, noise_factor=p)
        assert with_p.holds, with_p
        worst_p = max(worst_p, with_p.worst_ratio)
        worst_default = max(worst_default, frobenius_bound(hs.mean(0), lr, b, mu0).worst_ratio)
    # the sqrt(B/mu)/lr form is violated somewhere: sampling without replacement is less noisy
    assert worst_default > 1, f"worst default ratio {worst_default}, with p {worst_p}"


def test_frobenius_bound_sides():
    h = np.diag([3.0, 4.0])
    bound = frobenius_bound(h, 0.1, 4, 0.25)
    assert bound.lhs == pytest.approx(5.0)
    assert bound.rhs == pytest.approx(np.sqrt(4 / 0.25) / 0.1)
    assert frobenius_bound(h, 0.1, 4, 0.0).rhs == np.inf
    assert frobenius_bound(h, 0.1, 4, 0.25, noise_factor=0.0).rhs == np.inf


# ------------------------------------------------------------------------------------
# Ma-Ying Remark 3
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_moment_tensor_norms_match_explicit_tensors(k):
    rng = np.random.default_rng(20 + k)
    x = rng.normal(size=(40, 3)) + np.array([0.5, 0.0, -1.0])
    tensor = np.zeros((3,) * k)
    for row in x:
        outer = row
        for _ in range(k - 1):
            outer = np.multiply.outer(outer, row)
        tensor += outer / len(x)
    out = moment_tensor_norms(x, k)
    assert out.tensor_norm == pytest.approx(np.linalg.norm(tensor.ravel()), rel=1e-12)
    assert out.upper == pytest.approx(np.mean(np.linalg.norm(x, axis=1) ** k), rel=1e-12)
    assert out.holds
    if k % 2:
        assert out.lower is None
    else:
        assert out.lower == pytest.approx(out.upper / 3 ** (k / 4))


def test_remark3_both_sides_are_attained():
    w = 4
    # a point mass: ||E x x^T||_F = ||x||^2 (upper side tight)
    point = moment_tensor_norms(np.array([[1.0, 2.0, 0.0, -1.0]]), 2)
    assert point.tensor_norm == pytest.approx(point.upper)
    # +-e_j uniformly: E x x^T = I / w, so ||.||_F = 1/sqrt(w) = E||x||^2 / sqrt(w)
    pm = np.vstack([np.eye(w), -np.eye(w)])
    spread = moment_tensor_norms(pm, 2)
    assert spread.tensor_norm == pytest.approx(spread.lower)
    assert spread.tensor_norm == pytest.approx(1 / np.sqrt(w))
    # k = 3 for a symmetric law: E x^{(x)3} = 0, no lower bound possible
    assert moment_tensor_norms(pm, 3).tensor_norm == pytest.approx(0.0, abs=1e-15)


def test_moment_tensor_norms_weights_and_blocks(monkeypatch):
    import companion.stability.bounds

    monkeypatch.setattr(companion.stability.bounds, "_GRAM_ENTRIES", 7 * 50)  # blocks of 7 rows
    rng = np.random.default_rng(30)
    x = rng.normal(size=(50, 2))
    wts = rng.uniform(size=50)
    wts /= wts.sum()
    out = moment_tensor_norms(x, 2, weights=wts)
    s = (x * wts[:, None]).T @ x
    assert out.tensor_norm == pytest.approx(np.linalg.norm(s), rel=1e-12)
    assert out.upper == pytest.approx(np.trace(s), rel=1e-12)


def test_remark3_on_simulated_sgd_states():
    from companion.stability.dynamics import simulate_linearized_sgd

    rng = np.random.default_rng(31)
    _, hs, b = rank_one_instance(rng, False)
    sim = simulate_linearized_sgd(hs, 0.05, b, 20, 500, seed=1, record_states=True)
    for states in sim.states[::5]:
        assert moment_tensor_norms(states, 2).holds


# ------------------------------------------------------------------------------------
# Bound bookkeeping and error paths
# ------------------------------------------------------------------------------------
def test_bound_ratio_and_holds():
    assert Bound(lhs=np.array([1.0, 3.0]), rhs=2.0, description="").worst_ratio == 1.5
    assert not Bound(lhs=np.array([1.0, 3.0]), rhs=2.0, description="").holds
    assert Bound(lhs=1.0, rhs=np.inf, description="").ratio == 0.0
    assert Bound(lhs=1.0, rhs=0.0, description="").ratio == np.inf
    assert Bound(lhs=0.0, rhs=0.0, description="").holds


def test_error_paths():
    grads = np.ones((3, 2))
    with pytest.raises(ValueError, match="grads must have 2 dimensions"):
        gradient_moment_bound(np.ones(3), 0.1, 1, 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        gradient_moment_bound(grads, 0.1, 1, 0)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        gradient_norm_bound(grads, 0.1, 1.5, 1)
    with pytest.raises(ValueError, match="direction must have 2 entries"):
        gradient_moment_bound(grads, 0.1, 1, 1, direction=[1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="direction must be nonzero"):
        gradient_moment_bound(grads, 0.1, 1, 1, direction=[0.0, 0.0])
    with pytest.raises(ValueError, match="lr must be"):
        gradient_norm_bound(grads, -1.0, 1, 1)
    with pytest.raises(ValueError, match="residuals must have shape"):
        alignment_factor(grads, np.ones(4))
    with pytest.raises(ValueError, match="zero loss"):
        alignment_factor(grads, np.zeros(3))
    with pytest.raises(ValueError, match="G = 0"):
        alignment_factor(np.zeros((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="G = 0"):
        worst_alignment_factor(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="mu must be >= 0"):
        frobenius_bound(np.eye(2), 0.1, 1, -0.5)
    with pytest.raises(ValueError, match="noise_factor must be in"):
        frobenius_bound(np.eye(2), 0.1, 1, 0.5, noise_factor=2.0)
    with pytest.raises(ValueError, match="hessian must be symmetric"):
        frobenius_bound(np.array([[1.0, 1.0], [0.0, 1.0]]), 0.1, 1, 0.5)
    with pytest.raises(ValueError, match="batch_size"):
        wme_necessary_conditions(np.ones((2, 1, 1)), 0.1, 3)
    with pytest.raises(ValueError, match="grads must have shape"):
        gradient_norm_bound(np.ones((0, 2)), 0.1, 1, 1)
    with pytest.raises(ValueError, match="samples must have shape"):
        moment_tensor_norms(np.ones((0, 2)))
    with pytest.raises(ValueError, match="samples must have 2 dimensions"):
        moment_tensor_norms(np.ones(3))
    with pytest.raises(ValueError, match="weights must be 2"):
        moment_tensor_norms(np.ones((2, 2)), weights=[1.0])
    with pytest.raises(ValueError, match="weights must sum to 1"):
        moment_tensor_norms(np.ones((2, 2)), weights=[0.5, 0.6])
