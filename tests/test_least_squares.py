"""Tests for companion.theory.least_squares: min-norm limit, slow deterioration, norm bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.theory.least_squares import (
    convex_norm_bound,
    distance_to_reference,
    early_stopping_time,
    expected_gd_error,
    gd_least_squares,
    gd_least_squares_closed_form,
    gd_logistic,
    gradient_descent,
    is_linearly_separable,
    least_squares_risk,
    least_squares_smoothness,
    logistic_gradient,
    logistic_minimizer,
    logistic_risk,
    logistic_smoothness,
    min_norm_solution,
    slow_deterioration_bound,
)


def _problem(seed: int, n: int, d: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n), rng


def _spectrum_problem(seed: int, n: int, d: int, singular_values: np.ndarray):
    """X = U diag(s) V^T with random orthonormal U (n x n) and V (d x n), d >= n."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((d, n)))
    return (u * singular_values) @ v.T, u, v, rng


# --- minimum norm ------------------------------------------------------------------------


def test_min_norm_solution_interpolates_and_is_orthogonal_to_null_space():
    x, y, _ = _problem(0, 8, 20)
    beta = min_norm_solution(x, y)
    np.testing.assert_allclose(x @ beta, y, atol=1e-10)
    # any other interpolant differs by a null-space vector, orthogonal to beta
    null = np.linalg.svd(x)[2][8:]
    np.testing.assert_allclose(null @ beta, 0.0, atol=1e-10)
    other = beta + null.T @ np.ones(12)
    assert np.linalg.norm(other) > np.linalg.norm(beta)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), extra=st.integers(1, 10))
def test_gd_from_zero_converges_to_pinv(seed, n, extra):
    x, y, _ = _problem(seed, n, n + extra)
    lr = 1.0 / least_squares_smoothness(x)
    # the slowest rate is 1 - lr * s_min^2 / n; enough steps to bring it below 1e-12
    s = np.linalg.svd(x, compute_uv=False)
    rate = 1 - lr * s[-1] ** 2 / n
    steps = int(np.ceil(np.log(1e-12) / np.log(max(rate, 1e-300)))) if rate > 0 else 1
    steps = min(max(steps, 1), 200_000)
    beta = gd_least_squares_closed_form(x, y, lr, steps)
    target = np.linalg.pinv(x) @ y
    # relative 1e-8: the remaining error is rate**steps <= 1e-12 times the start gap,
    # plus rounding in the SVD amplified by the condition number of x
    cond = s[0] / s[-1]
    assert np.linalg.norm(beta - target) <= 1e-8 * cond * (1 + np.linalg.norm(target))


def test_closed_form_matches_iteration_and_null_component_never_moves():
    x, y, rng = _problem(1, 10, 25)
    init = rng.standard_normal(25)
    lr = 1.5 / least_squares_smoothness(x)
    path = gd_least_squares(x, y, lr, 60, init=init)
    closed = gd_least_squares_closed_form(x, y, lr, np.arange(61), init=init)
    # both are exact; differences are rounding accumulated over 60 steps
    np.testing.assert_allclose(path, closed, atol=1e-9)
    null = np.linalg.svd(x)[2][10:]
    np.testing.assert_allclose(path @ null.T, np.broadcast_to(null @ init, (61, 15)), atol=1e-12)


def test_closed_form_scalar_and_array_steps_agree():
    x, y, _ = _problem(2, 5, 9)
    lr = 0.3
    many = gd_least_squares_closed_form(x, y, lr, [0, 3, 7])
    np.testing.assert_allclose(many[1], gd_least_squares_closed_form(x, y, lr, 3))
    np.testing.assert_allclose(many[0], 0.0)


def test_gd_limit_with_nonzero_init_keeps_null_component():
    x, y, rng = _problem(3, 6, 15)
    init = rng.standard_normal(15)
    beta = gd_least_squares_closed_form(x, y, 1.0 / least_squares_smoothness(x), 10**6, init=init)
    proj_null = np.eye(15) - np.linalg.pinv(x) @ x
    np.testing.assert_allclose(beta, np.linalg.pinv(x) @ y + proj_null @ init, atol=1e-8)


def test_rank_deficient_features_are_handled():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 10))  # rank 2
    y = x @ rng.standard_normal(10)
    beta = gd_least_squares_closed_form(x, y, 1.0 / least_squares_smoothness(x), 10**6)
    np.testing.assert_allclose(beta, np.linalg.pinv(x) @ y, atol=1e-8)
    assert np.all(np.isfinite(expected_gd_error(x, np.zeros(10), 0.1, 0.01, [0, 10])))


def test_risk_and_smoothness():
    x, y, _ = _problem(5, 7, 4)
    beta = np.arange(4.0)
    assert least_squares_risk(beta, x, y) == pytest.approx(np.sum((x @ beta - y) ** 2) / 14)
    hess = x.T @ x / 7
    assert least_squares_smoothness(x) == pytest.approx(np.linalg.eigvalsh(hess)[-1])


# --- slow deterioration --------------------------------------------------------------------


def test_expected_error_matches_monte_carlo():
    n, d = 20, 40
    s = np.sqrt(n * np.arange(1, n + 1) ** -1.5)
    x, _, v, rng = _spectrum_problem(6, n, d, s)
    beta_star = v @ rng.standard_normal(n) + 0.3 * rng.standard_normal(d)
    eps, lr = 0.2, 0.5
    steps = np.array([0, 1, 5, 30, 300, 5000])
    draws = 4000
    errors = np.empty((draws, steps.size))
    for i in range(draws):
        y = x @ beta_star + eps * rng.standard_normal(n)
        errors[i] = np.sum((gd_least_squares_closed_form(x, y, lr, steps) - beta_star) ** 2, 1)
    exact = expected_gd_error(x, beta_star, eps, lr, steps)
    # 4000 draws: the sample mean is within 4 standard errors of the expectation
    stderr = errors.std(axis=0, ddof=1) / np.sqrt(draws)
    assert np.all(np.abs(errors.mean(axis=0) - exact) <= 4 * stderr + 1e-12)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    alpha=st.floats(0.0, 3.0),
    eps=st.floats(1e-3, 1.0),
    lr_fraction=st.floats(0.01, 1.0),
)
def test_slow_deterioration_bound_holds(seed, alpha, eps, lr_fraction):
    n, d = 15, 30
    s = np.sqrt(n * np.arange(1, n + 1) ** -alpha)
    x, _, v, _ = _spectrum_problem(seed, n, d, s)
    lr = lr_fraction * n / s[0] ** 2  # eta * sigma_1^2 / n <= 1, the theorem's regime
    steps = np.unique(np.logspace(0, 6, 60).astype(np.int64))
    exact = expected_gd_error(x, v[:, 0], eps, lr, steps)
    bound = slow_deterioration_bound(lr * steps, s[0], eps, n)
    assert np.all(exact <= bound * (1 + 1e-12))


def test_slow_deterioration_bound_fails_for_a_signal_off_the_top_direction():
    # the theorem assumes beta* = v_1; a signal on v_n is learned at rate sigma_n, not sigma_1
    n, d = 10, 20
    s = np.sqrt(n * np.arange(1, n + 1) ** -2.0)
    x, _, v, _ = _spectrum_problem(7, n, d, s)
    lr = 0.5 * n / s[0] ** 2
    steps = np.array([10, 100])
    exact = expected_gd_error(x, v[:, -1], 0.0, lr, steps)
    assert np.any(exact > slow_deterioration_bound(lr * steps, s[0], 0.0, n))


def test_early_stopping_time_minimises_the_bound():
    sigma1, eps, n = 9.0, 0.05, 80
    t0 = early_stopping_time(sigma1, eps, n)
    grid = np.linspace(0, 5 * t0, 20001)
    values = slow_deterioration_bound(grid, sigma1, eps, n)
    # grid spacing 2.5e-4 * t0: the grid minimiser is within one spacing of t0
    assert abs(grid[np.argmin(values)] - t0) <= grid[1] - grid[0]
    at_t0 = slow_deterioration_bound(t0, sigma1, eps, n)
    ratio = 2 * sigma1**2 / (n * eps**2)
    assert at_t0 == pytest.approx(n * eps**2 / (2 * sigma1**2) * (1 + np.log(ratio)))


def test_early_stopping_time_edge_cases():
    assert early_stopping_time(1.0, 0.0, 5) == np.inf
    assert early_stopping_time(1.0, 10.0, 5) == 0.0


# --- convex norm bound ---------------------------------------------------------------------


def _logistic_data(seed: int, n: int, d: int):
    """Non-separable data: labels from a noisy linear rule, so a unique minimiser exists."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = np.where(x @ w + 1.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return x, y, rng


def test_logistic_gradient_matches_finite_differences():
    x, y, rng = _logistic_data(8, 30, 4)
    theta = rng.standard_normal(4)
    h = 1e-6
    fd = np.array(
        [
            (logistic_risk(theta + h * e, x, y) - logistic_risk(theta - h * e, x, y)) / (2 * h)
            for e in np.eye(4)
        ]
    )
    # central differences: truncation O(h^2) ~ 1e-12, rounding O(eps/h) ~ 1e-10
    np.testing.assert_allclose(logistic_gradient(theta, x, y), fd, atol=1e-8)


def test_logistic_minimizer_is_stationary_and_gd_approaches_it():
    x, y, _ = _logistic_data(9, 200, 3)
    theta_bar = logistic_minimizer(x, y)
    assert np.linalg.norm(logistic_gradient(theta_bar, x, y)) < 1e-10
    path = gd_logistic(x, y, 1.0 / logistic_smoothness(x), 3000)
    assert logistic_risk(path[-1], x, y) >= logistic_risk(theta_bar, x, y) - 1e-14
    assert np.linalg.norm(path[-1] - theta_bar) < 1e-3


def test_logistic_minimizer_refuses_separable_data():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((20, 3))
    y = np.where(x[:, 0] > 0, 1.0, -1.0)
    assert is_linearly_separable(x, y)
    with pytest.raises(ValueError, match="separable"):
        logistic_minimizer(x, y)
    # flipping one label of a point deep inside makes a 1-D problem non-separable
    x1 = np.array([[1.0], [2.0], [-1.0], [3.0]])
    assert not is_linearly_separable(x1, np.array([1.0, 1.0, -1.0, -1.0]))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), lr_fraction=st.floats(0.05, 1.99))
def test_convex_norm_bound_logistic(seed, lr_fraction):
    x, y, rng = _logistic_data(seed, 60, 3)
    theta_bar = logistic_minimizer(x, y)
    init = 3 * rng.standard_normal(3)
    path = gd_logistic(x, y, lr_fraction / logistic_smoothness(x), 300, init=init)
    dist = distance_to_reference(path, theta_bar)
    # Fejer monotone for lr <= 2/L: distances to the exact minimiser never increase. theta_bar
    # is Newton's answer, within delta = |grad(theta_bar)| / mu of the exact one (mu the
    # smallest Hessian eigenvalue), so distances to it may rise by at most 2 delta, plus rounding.
    margins = y * (x @ theta_bar)
    weights = 1 / (np.exp(margins / 2) + np.exp(-margins / 2)) ** 2  # s(1 - s), s = sigmoid
    mu = np.linalg.eigvalsh((x.T * weights) @ x / x.shape[0])[0]
    delta = np.linalg.norm(logistic_gradient(theta_bar, x, y)) / mu
    assert np.all(np.diff(dist) <= 2 * delta + 1e-12 * (1 + dist[:-1]))
    assert np.all(np.linalg.norm(path, axis=1) <= convex_norm_bound(init, theta_bar) + 1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), lr_fraction=st.floats(0.05, 1.99))
def test_convex_norm_bound_least_squares(seed, lr_fraction):
    x, y, rng = _problem(seed, 8, 20)
    theta_bar = min_norm_solution(x, y)
    init = rng.standard_normal(20)
    path = gd_least_squares(x, y, lr_fraction / least_squares_smoothness(x), 200, init=init)
    dist = distance_to_reference(path, theta_bar)
    assert np.all(np.diff(dist) <= 1e-12 * (1 + dist[:-1]))
    assert np.all(np.linalg.norm(path, axis=1) <= convex_norm_bound(init, theta_bar) + 1e-12)


def test_distance_grows_above_the_stable_learning_rate():
    # the Fejer property needs lr <= 2/L: at 2.2/L the top direction is amplified by 1.2
    x, y, rng = _problem(11, 8, 20)
    theta_bar = min_norm_solution(x, y)
    path = gd_least_squares(x, y, 2.2 / least_squares_smoothness(x), 100, init=rng.normal(size=20))
    dist = distance_to_reference(path, theta_bar)
    assert dist[-1] > dist[0]


# --- input validation ----------------------------------------------------------------------


def test_bad_inputs_raise():
    x, y, _ = _problem(12, 4, 6)
    with pytest.raises(ValueError, match="targets"):
        min_norm_solution(x, y[:3])
    with pytest.raises(ValueError, match="lr"):
        gd_least_squares(x, y, -1.0, 5)
    with pytest.raises(TypeError, match="steps"):
        gd_least_squares_closed_form(x, y, 0.1, 2.5)
    with pytest.raises(ValueError, match="steps"):
        gd_least_squares_closed_form(x, y, 0.1, [-1])
    with pytest.raises(ValueError, match="NaN"):
        least_squares_risk(np.zeros(6), np.full((4, 6), np.nan), y)
    with pytest.raises(ValueError, match="noise_std"):
        expected_gd_error(x, np.zeros(6), -0.1, 0.1, 3)
    with pytest.raises(ValueError, match="init"):
        gd_least_squares(x, y, 0.1, 3, init=np.zeros(5))
    with pytest.raises(ValueError, match="labels"):
        logistic_risk(np.zeros(6), x, y)


def test_divergence_is_reported_not_silent():
    x, y, _ = _problem(13, 4, 6)
    with pytest.raises(FloatingPointError, match="diverged"):
        gd_least_squares(x, y, 10 / least_squares_smoothness(x), 2000)
    with pytest.raises(ValueError, match="shape"):
        gradient_descent(lambda b: b[:2], np.zeros(6), 1.0, 5)
