"""Tests for companion.stability.dynamics: simulation, exact moments, regular minima, Lyapunov."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.stability import dynamics
from companion.stability.dynamics import (
    covariance_limit,
    lyapunov_exponent,
    mixture_process_operator,
    second_moment_recursion,
    simulate_linearized_sgd,
    stationary_statistics,
)
from companion.stability.operators import kron_operators, second_moment_operator
from companion.stability.sampling import batch_noise_factor
from companion.stability.thresholds import ms_threshold

# Moments here are O(1)-O(10) numbers built from a few hundred float64 products; rounding
# leaves relative errors of order 1e-14, so 1e-11 is an exact-agreement tolerance.
EXACT = 1e-11


def random_hessians(rng, n, d, rank=1, subspace=None):
    """H_i = J_i^T J_i with J_i (rank, d); rows in the column span of ``subspace`` if given."""
    jac = rng.normal(size=(n, rank, d if subspace is None else subspace.shape[1]))
    if subspace is not None:
        jac = jac @ subspace.T
    return np.einsum("nki,nkj->nij", jac, jac)


def centred_gradients(rng, n, d):
    g = rng.normal(size=(n, d))
    return g - g.mean(axis=0)


def reference_threshold(hs, batch_size, replacement):
    """eta* = 2 / lambda_max(C^+ D) (MM Thm 3), from companion.stability.thresholds."""
    return ms_threshold(hs, batch_size, replacement)


def batches_of(n, b, replacement):
    if replacement:
        return list(itertools.product(range(n), repeat=b))
    return list(itertools.combinations(range(n), b))


def brute_force_moments(hs, grads, lr, b, steps, support, weights, replacement):
    """E x_t and E x_t x_t^T by following every batch sequence from a discrete start law."""
    n, d, _ = hs.shape
    g = np.zeros((n, d)) if grads is None else grads
    batches = batches_of(n, b, replacement)
    states = [(w, x) for w, x in zip(weights, support, strict=True)]
    means, seconds = [], []
    for t in range(steps + 1):
        means.append(sum(w * x for w, x in states))
        seconds.append(sum(w * np.outer(x, x) for w, x in states))
        if t == steps:
            break
        states = [
            (w / len(batches), x - lr * (hs[list(bt)].mean(0) @ x + g[list(bt)].mean(0)))
            for w, x in states
            for bt in batches
        ]
    return np.array(means), np.array(seconds)


# ------------------------------------------------------------------------------------
# exact recursion against enumeration
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("with_gradients", [False, True])
def test_second_moment_recursion_matches_enumeration(replacement, with_gradients):
    rng = np.random.default_rng(7 + 2 * replacement + with_gradients)
    n, d, b, steps = (4, 3, 2, 3) if not replacement else (3, 3, 2, 3)
    hs = random_hessians(rng, n, d, rank=2)
    grads = centred_gradients(rng, n, d) if with_gradients else None
    lr = 0.6 * reference_threshold(hs, b, replacement)
    support = rng.normal(size=(2, d)) + 0.5  # a start law with nonzero mean
    weights = np.array([0.3, 0.7])
    m_ref, s_ref = brute_force_moments(hs, grads, lr, b, steps, support, weights, replacement)
    out = second_moment_recursion(
        hs,
        lr,
        b,
        steps,
        S0=s_ref[0],
        gradients=grads,
        replacement=replacement,
        m0=m_ref[0],
    )
    scale = np.abs(s_ref).max()
    np.testing.assert_allclose(out.second_moments, s_ref, rtol=0, atol=EXACT * scale)
    np.testing.assert_allclose(out.means, m_ref, rtol=0, atol=EXACT * np.abs(m_ref).max())
    np.testing.assert_allclose(out.mean_sq_norms, np.trace(s_ref, axis1=1, axis2=2), rtol=EXACT)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 4),
    d=st.integers(1, 3),
    replacement=st.booleans(),
    lr_fraction=st.floats(0.1, 1.5),
)
def test_recursion_matches_enumeration_property(seed, n, d, replacement, lr_fraction):
    rng = np.random.default_rng(seed)
    b = int(rng.integers(1, n + 1)) if not replacement else int(rng.integers(1, 3))
    hs = random_hessians(rng, n, d, rank=1)
    grads = centred_gradients(rng, n, d)
    lr = lr_fraction / np.linalg.eigvalsh(hs.mean(0))[-1]
    support = rng.normal(size=(1, d))
    m_ref, s_ref = brute_force_moments(hs, grads, lr, b, 2, support, [1.0], replacement)
    out = second_moment_recursion(
        hs, lr, b, 2, S0=s_ref[0], gradients=grads, replacement=replacement, m0=m_ref[0]
    )
    scale = max(np.abs(s_ref).max(), 1.0)
    np.testing.assert_allclose(out.second_moments, s_ref, rtol=0, atol=EXACT * scale)


def test_recursion_defaults_identity_start_and_covariances():
    rng = np.random.default_rng(3)
    hs = random_hessians(rng, 5, 3, rank=2)
    out = second_moment_recursion(hs, 0.05, 2, 4)
    np.testing.assert_array_equal(out.second_moments[0], np.eye(3))
    np.testing.assert_array_equal(out.means, np.zeros((5, 3)))
    np.testing.assert_allclose(out.covariances, out.second_moments)
    # the one-dimensional case is the WME formula E x^2 <- ((1 - lr a)^2 + lr^2 p s^2) E x^2
    a = rng.uniform(0.5, 2.0, size=6)
    hs1 = a[:, None, None]
    lr, b = 0.4, 2
    p = batch_noise_factor(6, b)
    factor = (1 - lr * a.mean()) ** 2 + lr**2 * p * a.var()
    seq = second_moment_recursion(hs1, lr, b, 5).mean_sq_norms
    np.testing.assert_allclose(seq, factor ** np.arange(6), rtol=EXACT)


# ------------------------------------------------------------------------------------
# simulation
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("with_gradients", [False, True])
def test_simulation_matches_exact_recursion(replacement, with_gradients):
    # Far below the threshold (0.5 eta*) ||x_t||^2 has light tails, so the sample mean is
    # close to normal and its standard error is reliable (see the FORMULAS.md trap).
    rng = np.random.default_rng(11)
    n, d, b = 6, 3, 2
    hs = random_hessians(rng, n, d, rank=1)
    grads = 0.3 * centred_gradients(rng, n, d) if with_gradients else None
    lr = 0.5 * reference_threshold(hs, b, replacement)
    sim = simulate_linearized_sgd(
        hs, lr, b, steps=40, n_trajectories=20_000, gradients=grads,
        replacement=replacement, seed=5, record_every=4,
    )  # fmt: skip
    exact = second_moment_recursion(hs, lr, b, 40, gradients=grads, replacement=replacement)
    want = exact.mean_sq_norms[sim.times]
    z = np.abs(sim.mean_sq_norm() - want) / sim.sq_norm_standard_error()
    # 11 correlated comparisons; |z| > 4.5 has probability < 1e-4 for any one of them
    assert z.max() < 4.5, f"max z-score {z.max():.2f} (means {sim.mean_sq_norm()} vs {want})"


def test_simulation_is_seeded_and_reproducible():
    rng = np.random.default_rng(0)
    hs = random_hessians(rng, 7, 4, rank=2)
    grads = centred_gradients(rng, 7, 4)
    kw = dict(lr=0.05, batch_size=3, steps=10, n_trajectories=50, gradients=grads)
    a = simulate_linearized_sgd(hs, seed=1, **kw)
    b = simulate_linearized_sgd(hs, seed=1, **kw)
    c = simulate_linearized_sgd(hs, seed=2, **kw)
    np.testing.assert_array_equal(a.sq_norms, b.sq_norms)
    np.testing.assert_array_equal(a.final_states, b.final_states)
    assert not np.array_equal(a.sq_norms, c.sq_norms)


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize(("n", "b", "d", "rank"), [(6, 2, 3, 2), (20, 2, 4, 1), (5, 5, 4, 2)])
def test_vectorised_step_matches_per_trajectory_loop(monkeypatch, replacement, n, b, d, rank):
    # rank 2 in d = 3 takes the gather route, rank <= d/2 the low-rank factor route; a tiny
    # block size forces several trajectory blocks.
    monkeypatch.setattr(dynamics, "_GATHER_ENTRIES", 7 * 9)
    rng = np.random.default_rng(n + b)
    hs = random_hessians(rng, n, d, rank=rank)
    assert (dynamics._hessian_factors(hs) is None) == (2 * rank > d)
    grads = centred_gradients(rng, n, d)
    x0 = rng.normal(size=(30, d))
    lr = 0.1
    sim = simulate_linearized_sgd(
        hs, lr, b, steps=3, n_trajectories=30, x0=x0, gradients=grads,
        replacement=replacement, seed=9, record_states=True,
    )  # fmt: skip
    # replay the same batches with a plain loop over trajectories
    from companion.stability.sampling import sample_batches

    replay = np.random.default_rng(9)
    x = x0.copy()
    for t in range(1, 4):
        idx = sample_batches(replay, n, b, 30, replacement)
        x = np.array(
            [x[k] - lr * (hs[idx[k]].mean(0) @ x[k] + grads[idx[k]].mean(0)) for k in range(30)]
        )
        np.testing.assert_allclose(sim.states[t], x, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(sim.sq_norms[-1], np.sum(x**2, axis=1), rtol=1e-12)


def test_simulation_recording_and_start_options():
    rng = np.random.default_rng(4)
    hs = random_hessians(rng, 5, 2, rank=1)
    sim = simulate_linearized_sgd(hs, 0.1, 2, steps=10, n_trajectories=3, record_every=4)
    np.testing.assert_array_equal(sim.times, [0, 4, 8, 10])
    assert sim.sq_norms.shape == (4, 3) and sim.states is None
    x0 = np.array([1.0, -2.0])
    one = simulate_linearized_sgd(hs, 0.1, 2, 2, 4, x0=x0, record_states=True)
    np.testing.assert_array_equal(one.states[0], np.tile(x0, (4, 1)))
    np.testing.assert_allclose(one.sq_norms[0], 5.0)
    single = simulate_linearized_sgd(hs, 0.1, 2, 2, 1)
    np.testing.assert_array_equal(single.sq_norm_standard_error(), np.zeros(3))


def test_simulation_overflow_is_reported_not_nan():
    hs = np.array([[[1.0]], [[3.0]]])
    with pytest.raises(FloatingPointError, match="overflowed"):
        simulate_linearized_sgd(hs, 50.0, 1, steps=400, n_trajectories=4)


# ------------------------------------------------------------------------------------
# mixture process (MM Prop. 2)
# ------------------------------------------------------------------------------------
def _radius(q):
    return np.max(np.abs(np.linalg.eigvals(q)))


def _bisect_threshold(operator_at, hi, iters=60):
    """Largest lr with rho(operator_at(lr)) <= 1, by bisection on [0, hi] (rho(hi) > 1)."""
    lo = 0.0
    assert _radius(operator_at(hi)) > 1
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _radius(operator_at(mid)) <= 1 + 1e-12 else (lo, mid)
    return lo


@pytest.mark.parametrize("replacement", [False, True])
def test_mixture_operator_is_the_branch_average(replacement):
    rng = np.random.default_rng(21)
    n, d, b = 5, 3, 2
    hs = random_hessians(rng, n, d, rank=2)
    lr = 0.07
    p = batch_noise_factor(n, b, replacement)
    eye = np.eye(d)
    branches = [(p / n, eye - lr * h) for h in hs] + [(1 - p, eye - lr * hs.mean(0))]
    brute = sum(w * np.kron(m, m) for w, m in branches)
    mix = mixture_process_operator(hs, lr, b, replacement)
    np.testing.assert_allclose(mix, brute, rtol=0, atol=EXACT)
    # and it is the SGD operator itself
    np.testing.assert_allclose(mix, second_moment_operator(hs, lr, b, replacement), atol=EXACT)


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_mixture_threshold_equals_sgd_threshold(replacement, b):
    rng = np.random.default_rng(31 + b)
    n, d = 6, 3
    hs = random_hessians(rng, n, d, rank=1)
    hi = 2.0 / np.linalg.eigvalsh(hs.mean(0))[-1] * 1.01  # above eta* <= 2 / lambda_max
    eta_mix = _bisect_threshold(lambda lr: mixture_process_operator(hs, lr, b, replacement), hi)
    eta_sgd = reference_threshold(hs, b, replacement)
    assert eta_mix == pytest.approx(eta_sgd, rel=1e-9)


# ------------------------------------------------------------------------------------
# regular minima: covariance limit, null-space random walk, stationary statistics
# ------------------------------------------------------------------------------------
def regular_minimum(seed, n=6, d=4, r=3, rank=1):
    """Hessians supported on an r-dimensional subspace of R^d and generic centred gradients."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, r)))
    hs = random_hessians(rng, n, d, rank=rank, subspace=basis)
    grads = centred_gradients(rng, n, d)
    return hs, grads


@pytest.mark.parametrize("replacement", [False, True])
def test_covariance_limit_is_fixed_point_of_exact_recursion(replacement):
    hs, grads = regular_minimum(1, rank=2)
    b = 2
    lr = 0.7 * reference_threshold(hs, b, replacement)
    lim = covariance_limit(hs, grads, lr, b, replacement)
    proj = lim.range_projector
    perp = np.eye(4) - proj
    # a state whose range and cross blocks sit at the limit, any null block, zero mean
    null_block = perp @ np.diag([1.0, 2.0, 3.0, 4.0]) @ perp
    s0 = lim.range_covariance + lim.cross_covariance + lim.cross_covariance.T + null_block
    nxt = second_moment_recursion(hs, lr, b, 1, S0=s0, gradients=grads, replacement=replacement)
    s1 = nxt.second_moments[1]
    scale = np.abs(s0).max()
    np.testing.assert_allclose(proj @ s1 @ proj, lim.range_covariance, atol=EXACT * scale)
    np.testing.assert_allclose(proj @ s1 @ perp, lim.cross_covariance, atol=EXACT * scale)
    np.testing.assert_allclose(
        perp @ s1 @ perp, null_block + lim.null_covariance_rate, atol=EXACT * scale
    )
    assert lim.null_growth_rate > 0


@pytest.mark.parametrize("replacement", [False, True])
def test_covariance_limit_equals_mm_pseudoinverse_formula(replacement):
    # MM Thm 5 on the full d^2 space: vec S = lr p (2C - lr D)^+ vec(P Sigma_g P)
    hs, grads = regular_minimum(2)
    n, d, b = 6, 4, 3
    lr = 0.9 * reference_threshold(hs, b, replacement)
    p = batch_noise_factor(n, b, replacement)
    lim = covariance_limit(hs, grads, lr, b, replacement)
    c, dmat = kron_operators(hs, b, replacement)
    proj = lim.range_projector
    sigma = proj @ (grads.T @ grads / n) @ proj
    want = (lr * p * np.linalg.pinv(2 * c - lr * dmat) @ sigma.reshape(-1)).reshape(d, d)
    np.testing.assert_allclose(lim.range_covariance, want, atol=1e-9 * np.abs(want).max())


def test_recursion_converges_to_the_limit_and_null_part_grows_linearly():
    hs, grads = regular_minimum(3, rank=2)
    b, steps = 2, 400
    lr = 0.5 * reference_threshold(hs, b, False)
    lim = covariance_limit(hs, grads, lr, b)
    seq = second_moment_recursion(hs, lr, b, steps, S0=np.zeros((4, 4)), gradients=grads)
    proj = lim.range_projector
    perp = np.eye(4) - proj
    # contraction rate of the range part (spectral radius of Q on range(H))
    u = np.linalg.eigh(hs.mean(0))[1][:, 1:]
    rho = np.max(np.abs(np.linalg.eigvalsh(second_moment_operator(u.T @ hs @ u, lr, b))))
    assert rho < 1
    tail = 10 * rho**steps * np.abs(lim.range_covariance).max()
    np.testing.assert_allclose(proj @ seq.second_moments[-1] @ proj, lim.range_covariance,
                               atol=max(tail, 1e-12))  # fmt: skip
    null_traces = np.trace(perp @ seq.second_moments @ perp, axis1=1, axis2=2)
    np.testing.assert_allclose(null_traces, lim.null_growth_rate * np.arange(steps + 1),
                               rtol=1e-10, atol=1e-14)  # fmt: skip


def test_null_space_random_walk_in_simulation():
    # E||P_perp x_t||^2 = t * rate exactly; check the Monte Carlo average against it.
    hs, grads = regular_minimum(4)
    b = 2
    lr = 0.5 * reference_threshold(hs, b, False)
    lim = covariance_limit(hs, grads, lr, b)
    perp = np.eye(4) - lim.range_projector
    sim = simulate_linearized_sgd(
        hs, lr, b, steps=60, n_trajectories=4000, x0=np.zeros(4), gradients=grads,
        seed=3, record_every=20, record_states=True,
    )  # fmt: skip
    null_sq = np.sum((sim.states @ perp) ** 2, axis=2)
    mean = null_sq.mean(axis=1)
    se = null_sq.std(axis=1, ddof=1) / np.sqrt(null_sq.shape[1])
    want = lim.null_growth_rate * sim.times
    assert np.all(np.abs(mean[1:] - want[1:]) < 4.5 * se[1:]), (mean, want, se)


def test_stationary_statistics_grow_with_learning_rate():
    for seed in range(4):
        hs, grads = regular_minimum(10 + seed, rank=2)
        for replacement in (False, True):
            b = 2
            top = reference_threshold(hs, b, replacement)
            rates = top * np.linspace(0.05, 0.95, 10)
            stats = [stationary_statistics(hs, grads, lr, b, replacement) for lr in rates]
            limits = [covariance_limit(hs, grads, lr, b, replacement) for lr in rates]
            for name in ("sq_distance", "excess_loss", "sq_grad_norm"):
                vals = np.array([getattr(s, name) for s in stats])
                assert np.all(np.diff(vals) > 0), (name, vals)
            # stronger: S_inf is Loewner-increasing in lr
            for lo, hi in itertools.pairwise(limits):
                gap = np.linalg.eigvalsh(hi.range_covariance - lo.range_covariance)
                assert gap.min() > -1e-12 * np.abs(hi.range_covariance).max()


def test_stationary_statistics_are_traces_of_the_limit():
    hs, grads = regular_minimum(5)
    lim = covariance_limit(hs, grads, 0.01, 2)
    st_ = stationary_statistics(hs, grads, 0.01, 2)
    h = hs.mean(0)
    s = lim.range_covariance
    assert st_.sq_distance == pytest.approx(np.trace(s), rel=1e-12)
    assert st_.excess_loss == pytest.approx(0.5 * np.trace(h @ s), rel=1e-12)
    assert st_.sq_grad_norm == pytest.approx(np.trace(h @ h @ s), rel=1e-12)
    assert st_.null_growth_rate == pytest.approx(lim.null_growth_rate, rel=1e-12)


def test_covariance_limit_with_zero_hessian_is_pure_random_walk():
    grads = centred_gradients(np.random.default_rng(0), 3, 2)
    lim = covariance_limit(np.zeros((3, 2, 2)), grads, 0.1, 1)
    p = batch_noise_factor(3, 1)
    np.testing.assert_allclose(lim.null_covariance_rate, 0.01 * p * grads.T @ grads / 3)
    np.testing.assert_array_equal(lim.range_covariance, np.zeros((2, 2)))


# ------------------------------------------------------------------------------------
# Lyapunov exponent versus mean-square growth
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("replacement", [False, True])
def test_lyapunov_exponent_one_dimensional_closed_form(replacement):
    # In 1-D, log|x_t| is a sum of i.i.d. log|1 - lr hhat|: the exponent is its mean over
    # batches, and the mean-square exponent is (1/2) log E(1 - lr hhat)^2.
    a = np.array([0.2, 0.5, 1.0, 3.0])
    hs = a[:, None, None]
    b, lr = 2, 0.45
    factors = np.array([1 - lr * a[list(bt)].mean() for bt in batches_of(4, b, replacement)])
    est = lyapunov_exponent(hs, lr, b, steps=200, n_trajectories=400, replacement=replacement)
    want = np.mean(np.log(np.abs(factors)))
    assert abs(est.exponent - want) < 4.5 * est.standard_error, (est, want)
    assert est.ms_exponent == pytest.approx(0.5 * np.log(np.mean(factors**2)), rel=1e-12)


def test_mean_square_diverges_while_typical_trajectory_converges():
    # One sample far sharper than the rest, B = 1: E x^2 grows, yet almost every path shrinks.
    # factors 1 - lr a_i: 0.625 (w.p. 0.8) and -2 (w.p. 0.2): E f^2 = 1.1125 > 1 while
    # E log|f| = 0.8 log 0.625 + 0.2 log 2 = -0.237 < 0.
    a = np.array([1.0, 1.0, 1.0, 1.0, 8.0])
    hs = a[:, None, None]
    lr = 0.375
    est = lyapunov_exponent(hs, lr, 1, steps=300, n_trajectories=300, seed=2)
    assert est.ms_exponent == pytest.approx(0.5 * np.log(0.8 * 0.625**2 + 0.2 * 4), rel=1e-12)
    assert est.ms_exponent > 0
    assert est.exponent + 5 * est.standard_error < 0, est
    assert est.exponent <= est.ms_exponent


def test_lyapunov_below_mean_square_exponent_on_random_instances():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        hs = random_hessians(rng, 6, 3, rank=1)
        lr = 1.05 * reference_threshold(hs, 2, False)
        est = lyapunov_exponent(hs, lr, 2, steps=150, n_trajectories=200, seed=seed)
        assert est.ms_exponent > 0  # just above eta*: the second moment grows
        assert est.exponent < est.ms_exponent + 4.5 * est.standard_error


def test_lyapunov_runs_on_the_range_of_a_singular_hessian():
    hs, _ = regular_minimum(6)
    lr = 0.5 * reference_threshold(hs, 2, False)
    est = lyapunov_exponent(hs, lr, 2, steps=100, n_trajectories=50, burn_in=10, exact=False)
    assert est.ms_exponent is None
    assert est.exponent < 0  # on range(H) the dynamics contracts; the null space is excluded


def test_lyapunov_exact_zero_is_minus_infinity():
    hs = np.array([[[1.0]], [[1.0]]])
    est = lyapunov_exponent(hs, 1.0, 1, steps=3, n_trajectories=2)
    assert est.exponent == -np.inf and est.standard_error == np.inf


# ------------------------------------------------------------------------------------
# error paths
# ------------------------------------------------------------------------------------
def test_error_paths():
    rng = np.random.default_rng(0)
    hs = random_hessians(rng, 4, 2, rank=1)
    grads = centred_gradients(rng, 4, 2)
    with pytest.raises(ValueError, match="average to zero"):
        simulate_linearized_sgd(hs, 0.1, 2, 3, 2, gradients=grads + 1.0)
    with pytest.raises(ValueError, match="gradients must have shape"):
        second_moment_recursion(hs, 0.1, 2, 3, gradients=grads[:, :1])
    with pytest.raises(ValueError, match="S0 must have shape"):
        second_moment_recursion(hs, 0.1, 2, 3, S0=np.eye(3))
    with pytest.raises(ValueError, match="S0 must be symmetric"):
        second_moment_recursion(hs, 0.1, 2, 3, S0=np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="m0 must have shape"):
        second_moment_recursion(hs, 0.1, 2, 3, m0=np.zeros(3))
    with pytest.raises(ValueError, match="steps must be >= 0"):
        second_moment_recursion(hs, 0.1, 2, -1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        simulate_linearized_sgd(hs, 0.1, 2, 0, 2)
    with pytest.raises(TypeError, match="n_trajectories must be an integer"):
        simulate_linearized_sgd(hs, 0.1, 2, 3, 2.0)
    with pytest.raises(ValueError, match="record_every must be >= 1"):
        simulate_linearized_sgd(hs, 0.1, 2, 3, 2, record_every=0)
    with pytest.raises(TypeError, match="record_states"):
        simulate_linearized_sgd(hs, 0.1, 2, 3, 2, record_states="yes")
    with pytest.raises(ValueError, match="x0 must have shape"):
        simulate_linearized_sgd(hs, 0.1, 2, 3, 2, x0=np.zeros(3))
    with pytest.raises(ValueError, match="x0 must have shape"):
        simulate_linearized_sgd(hs, 0.1, 2, 3, 2, x0=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="batch_size"):
        simulate_linearized_sgd(hs, 0.1, 5, 3, 2)
    with pytest.raises(TypeError, match="replacement"):
        second_moment_recursion(hs, 0.1, 2, 3, replacement=1)
    with pytest.raises(ValueError, match="lr must be"):
        mixture_process_operator(hs, -0.1, 2)
    with pytest.raises(ValueError, match="positive semi-definite"):
        second_moment_recursion(-hs, 0.1, 2, 3)
    with pytest.raises(ValueError, match="would need"):
        mixture_process_operator(np.zeros((1, 100, 100)), 0.1, 1)
    with pytest.raises(TypeError, match="gradients is required"):
        covariance_limit(hs, None, 0.1, 2)
    top = reference_threshold(hs, 2, False)
    with pytest.raises(ValueError, match="not below the mean-square threshold"):
        covariance_limit(hs, grads, 1.01 * top, 2)
    with pytest.raises(ValueError, match="not below the mean-square threshold"):
        stationary_statistics(hs, grads, 1.01 * top, 2)
    with pytest.raises(ValueError, match="n_trajectories must be >= 2"):
        lyapunov_exponent(hs, 0.1, 2, 3, 1)
    with pytest.raises(ValueError, match="burn_in must be >= 0"):
        lyapunov_exponent(hs, 0.1, 2, 3, 2, burn_in=-1)
    with pytest.raises(TypeError, match="exact must be"):
        lyapunov_exponent(hs, 0.1, 2, 3, 2, exact=None)
    with pytest.raises(ValueError, match="H = 0"):
        lyapunov_exponent(np.zeros((2, 2, 2)), 0.1, 1, 3, 2)
