"""Tests for companion.book.toy: the two-minima example of Wu, Ma and E."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.book.toy import (
    simulate_two_minima,
    two_minima_component,
    two_minima_component_grad,
    two_minima_grad,
    two_minima_hessians,
    two_minima_loss,
)
from companion.stability.curvature import non_uniformity, sharpness
from companion.stability.sampling import batch_noise_factor

LR = 0.7
START = 1 - 1e-5


def test_both_points_are_global_minima():
    assert two_minima_loss(0.0) == 0.0
    assert two_minima_loss(1.0) == 0.0
    grid = np.linspace(-3, 5, 2001)
    assert np.all(two_minima_loss(grid) >= 0)
    # the only zeros on the grid are 0 and 1
    zeros = grid[two_minima_loss(grid) < 1e-14]
    assert set(np.round(zeros, 8)) == {0.0, 1.0}


def _branch_switches() -> np.ndarray:
    """Where x^2 = c (x - 1)^2, i.e. x = sqrt(c) / (1 + sqrt(c)) or sqrt(c) / (sqrt(c) - 1)."""
    r = np.sqrt(np.array([0.1, 1.9]))
    return np.concatenate([r / (1 + r), r / (r - 1)])  # 0.240, 0.580, -0.462, 3.64


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-3, 5).filter(lambda v: np.min(np.abs(v - _branch_switches())) > 1e-3))
def test_gradients_match_finite_differences(x):
    # the kinks where a component switches branch are excluded
    h = 1e-7
    for which in (0, 1):
        fd = (two_minima_component(x + h, which) - two_minima_component(x - h, which)) / (2 * h)
        # piecewise quadratic: central differences exact up to rounding ~ eps * x^2 / h
        assert two_minima_component_grad(x, which) == pytest.approx(fd, abs=1e-6)
    fd = (two_minima_loss(x + h) - two_minima_loss(x - h)) / (2 * h)
    assert two_minima_grad(x) == pytest.approx(fd, abs=1e-6)


def test_curvatures_by_finite_differences():
    """f_i'' from second differences equals two_minima_hessians (0.2, 3.8 at 1; 2, 2 at 0)."""
    h = 1e-4
    for minimum in (0, 1):
        second = [
            (
                two_minima_component(minimum + h, i)
                - 2 * two_minima_component(float(minimum), i)
                + two_minima_component(minimum - h, i)
            )
            / h**2
            for i in (0, 1)
        ]
        # exact for quadratics up to rounding ~ eps / h^2 ~ 2e-8
        np.testing.assert_allclose(second, two_minima_hessians(minimum).ravel(), atol=1e-6)


def test_equal_sharpness_different_non_uniformity():
    h0, h1 = two_minima_hessians(0), two_minima_hessians(1)
    assert sharpness(h0) == pytest.approx(2.0)
    assert sharpness(h1) == pytest.approx(2.0)
    assert non_uniformity(h0) == pytest.approx(0.0, abs=1e-12)
    assert non_uniformity(h1) == pytest.approx(1.8)


def test_mean_square_factor_separates_the_minima():
    p = batch_noise_factor(2, 1)
    factor = {
        m: (1 - LR * sharpness(two_minima_hessians(m))) ** 2
        + LR**2 * p * non_uniformity(two_minima_hessians(m)) ** 2
        for m in (0, 1)
    }
    assert factor[0] == pytest.approx(0.16)
    assert factor[1] == pytest.approx(0.16 + 0.49 * 3.24)
    assert factor[0] < 1 < factor[1]


def test_gd_stays_at_one():
    path = simulate_two_minima(START, LR, 500, stochastic=False)
    assert path.shape == (1, 501)
    # |x - 1| shrinks by |1 - 2 lr| = 0.4 per step
    assert abs(path[0, -1] - 1) < 1e-12
    np.testing.assert_allclose(np.abs(path[0, 1:6] - 1), 1e-5 * 0.4 ** np.arange(1, 6), rtol=1e-9)


def test_sgd_escapes_to_zero():
    runs = 400
    path = simulate_two_minima(START, LR, 400, runs=runs, rng=np.random.default_rng(0))
    final = path[:, -1]
    assert np.mean(np.abs(final) < 1e-6) >= 0.95
    assert np.all(np.abs(final - 1) > 0.5)


def test_sgd_stays_at_one_with_small_lr():
    """Below 2/3.8 both per-sample steps contract around 1: SGD stays (a control)."""
    path = simulate_two_minima(START, 0.3, 400, runs=100, rng=np.random.default_rng(1))
    assert np.all(np.abs(path[:, -1] - 1) < 1e-6)


def test_simulation_is_reproducible_and_validated():
    a = simulate_two_minima(START, LR, 50, runs=3, rng=np.random.default_rng(5))
    b = simulate_two_minima(START, LR, 50, runs=3, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="rng"):
        simulate_two_minima(START, LR, 5)
    with pytest.raises(ValueError, match="lr"):
        simulate_two_minima(START, 0.0, 5, stochastic=False)
    with pytest.raises(ValueError, match="minimum"):
        two_minima_hessians(0.5)
    with pytest.raises(ValueError, match="which"):
        two_minima_component(0.0, 2)
    with pytest.raises(ValueError, match="which"):
        two_minima_component_grad(0.0, np.array([0, 3]))
