"""Tests for companion.theory.random_features: ReLU kernel, random features, two-layer networks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.theory.least_squares import min_norm_solution
from companion.theory.random_features import (
    feature_gram,
    random_feature_curve,
    random_feature_weights,
    relu,
    relu_features,
    relu_kernel,
    relu_kernel_constant,
    relu_kernel_monte_carlo,
    sample_inputs,
    single_neuron_target,
    top_neuron_share,
    train_two_layer,
    two_layer_gradients,
    two_layer_output,
)

# --- ReLU kernel ---------------------------------------------------------------------------


def test_kernel_special_angles_gaussian():
    """Closed values for x ~ N(0, I): theta = 0, pi/2, pi, from one-dimensional integrals."""
    b = np.array([3.0, 0.0, 0.0])
    # theta = 0: E[relu(z)^2] for z ~ N(0, 9) is 9/2
    assert relu_kernel(b, b)[0, 0] == pytest.approx(4.5, rel=1e-14)
    # theta = pi: relu(z) relu(-z) = 0
    assert relu_kernel(b, -b)[0, 0] == pytest.approx(0.0, abs=1e-14)
    # theta = pi/2: independent coordinates, (E relu(z))^2 = ||b|| ||b'|| / (2 pi)
    bp = np.array([0.0, 2.0, 0.0])
    assert relu_kernel(b, bp)[0, 0] == pytest.approx(6.0 / (2 * np.pi), rel=1e-14)


def test_kernel_is_zero_for_zero_weights():
    k = relu_kernel(np.zeros((1, 4)), np.ones((2, 4)))
    np.testing.assert_array_equal(k, 0.0)


def test_kernel_constant_by_law():
    assert relu_kernel_constant(7) == pytest.approx(1 / (2 * np.pi))
    assert relu_kernel_constant(7, "sphere") == pytest.approx(1 / (2 * np.pi * 7))
    # sphere of radius sqrt(d) has the Gaussian constant
    assert relu_kernel_constant(7, "sphere", np.sqrt(7)) == pytest.approx(1 / (2 * np.pi))


@pytest.mark.parametrize(
    ("law", "radius"), [("gaussian", None), ("sphere", None), ("sphere", np.sqrt(5.0))]
)
def test_kernel_matches_monte_carlo(law, radius):
    rng = np.random.default_rng(0)
    wa = rng.standard_normal((4, 5))
    wb = np.vstack([wa[:2], -wa[2], rng.standard_normal((3, 5))])  # includes theta = 0 and pi
    mean, stderr = relu_kernel_monte_carlo(rng, wa, wb, 200_000, law=law, radius=radius)
    exact = relu_kernel(wa, wb, law=law, radius=radius)
    # 5 standard errors: a false failure has probability < 1e-5 per entry
    assert np.all(np.abs(mean - exact) <= 5 * stderr + 1e-12)


def test_kernel_without_the_constant_fails_monte_carlo():
    """The slide's formula (no constant) is off by 2 pi d on the unit sphere."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4))
    mean, stderr = relu_kernel_monte_carlo(rng, w, w, 50_000, law="sphere")
    slide = relu_kernel(w, w, law="sphere") / relu_kernel_constant(4, "sphere")
    assert np.all(np.abs(mean - slide) > 20 * stderr)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 6))
def test_kernel_symmetric_psd_homogeneous(seed, d):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, d))
    k = relu_kernel(w, w)
    np.testing.assert_allclose(k, k.T, atol=1e-14)
    # a kernel matrix is PSD; rounding in arccos near +-1 leaves ~1e-8 relative slack
    assert np.linalg.eigvalsh(k)[0] >= -1e-8 * np.abs(k).max()
    np.testing.assert_allclose(relu_kernel(2.5 * w, w), 2.5 * k, rtol=1e-12, atol=1e-14)


def test_gram_tends_to_kernel():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 3)) / np.sqrt(3)
    x = sample_inputs(rng, 400_000, 3)
    gram = feature_gram(relu_features(x, w))
    # entries are means of 4e5 bounded-variance terms: error ~ 1e-3 relative
    np.testing.assert_allclose(gram, relu_kernel(w, w), rtol=2e-2, atol=2e-3)


def test_sample_inputs_laws():
    rng = np.random.default_rng(3)
    sphere = sample_inputs(rng, 100, 4, "sphere", 2.0)
    np.testing.assert_allclose(np.linalg.norm(sphere, axis=1), 2.0)
    gauss = sample_inputs(rng, 20_000, 4)
    # sample covariance of 2e4 standard Gaussians: entries within ~5/sqrt(2e4) = 0.035
    np.testing.assert_allclose(np.cov(gauss.T), np.eye(4), atol=0.05)


# --- random-feature models -----------------------------------------------------------------


def test_relu_features_and_gram_shapes():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((7, 3)), rng.standard_normal((5, 3))
    psi = relu_features(x, w)
    np.testing.assert_array_equal(psi, np.maximum(x @ w.T, 0))
    np.testing.assert_allclose(feature_gram(psi), psi.T @ psi / 7)


def test_double_descent_peak_at_interpolation_threshold():
    n, d = 60, 8
    widths = np.array([15, 30, 45, 54, 60, 66, 90, 240, 600])
    errors, smallest = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        x, xt = sample_inputs(rng, n, d), sample_inputs(rng, 500, d)
        f = single_neuron_target()
        curve = random_feature_curve(
            random_feature_weights(rng, 600, d), widths, x, f(x), xt, f(xt)
        )
        errors.append(curve.test_error)
        smallest.append(curve.smallest_singular_value)
        # at and beyond m = n the fit interpolates (Psi has full row rank n)
        assert np.all(curve.train_error[widths >= n] < 1e-12)
    median = np.median(errors, axis=0)
    assert widths[np.argmax(median)] == n
    assert widths[np.argmin(np.median(smallest, axis=0))] == n
    # and the over-parameterised end beats the best under-parameterised width
    assert median[-1] < median[widths < n].min()


def test_random_feature_curve_matches_direct_fits():
    rng = np.random.default_rng(5)
    x, xt = rng.standard_normal((20, 3)), rng.standard_normal((30, 3))
    y, yt = relu(x[:, 0]), relu(xt[:, 0])
    w = random_feature_weights(rng, 11, 3)
    curve = random_feature_curve(w, [4, 11], x, y, xt, yt)
    for i, width in enumerate([4, 11]):
        psi, psit = relu_features(x, w[:width]), relu_features(xt, w[:width])
        coef = np.linalg.pinv(psi) @ y
        assert curve.test_error[i] == pytest.approx(np.mean((psit @ coef - yt) ** 2), rel=1e-8)
        assert curve.coefficient_norm[i] == pytest.approx(np.linalg.norm(coef), rel=1e-8)
        smin = np.linalg.svd(psi, compute_uv=False).min()
        assert curve.smallest_singular_value[i] == pytest.approx(smin, rel=1e-10)


def test_random_feature_weights_law():
    w = random_feature_weights(np.random.default_rng(6), 20_000, 5)
    # covariance I/d = 0.2 I, estimated from 2e4 rows: entries within ~5 * 0.2 * sqrt(2/2e4)
    np.testing.assert_allclose(np.cov(w.T), 0.2 * np.eye(5), atol=0.01)


# --- two-layer networks --------------------------------------------------------------------


def _net(seed, n=12, d=4, m=5):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, d)),
        rng.standard_normal(n),
        rng.standard_normal(m),
        rng.standard_normal((m, d)),
    )


@pytest.mark.parametrize("scaling", ["conventional", "mean_field"])
def test_two_layer_gradients_match_finite_differences(scaling):
    x, y, a, b = _net(6)

    def loss(a_, b_):
        r = two_layer_output(x, a_, b_, scaling) - y
        return 0.5 * np.mean(r**2)

    grad_a, grad_b = two_layer_gradients(x, y, a, b, scaling)
    h = 1e-6
    fd_a = [(loss(a + h * e, b) - loss(a - h * e, b)) / (2 * h) for e in np.eye(a.size)]
    fd_b = np.zeros_like(b)
    for idx in np.ndindex(b.shape):
        e = np.zeros_like(b)
        e[idx] = h
        fd_b[idx] = (loss(a, b + e) - loss(a, b - e)) / (2 * h)
    # central differences on a piecewise quadratic: exact away from ReLU kinks (random
    # points are a distance >> h from them), rounding ~ eps/h ~ 1e-10
    np.testing.assert_allclose(grad_a, fd_a, atol=1e-7)
    np.testing.assert_allclose(grad_b, fd_b, atol=1e-7)


def test_mean_field_is_conventional_with_scaled_outer_weights():
    x, _, a, b = _net(7, m=6)
    np.testing.assert_allclose(
        two_layer_output(x, a, b, "mean_field"), two_layer_output(x, a / 6, b), rtol=1e-14
    )


def test_width_one_scalings_coincide():
    x, y, _, _ = _net(8)
    runs = [
        train_two_layer(np.random.default_rng(0), x, y, 1, 0.05, 50, s, outer_init_std=0.5)
        for s in ("conventional", "mean_field")
    ]
    np.testing.assert_allclose(runs[0].train_loss, runs[1].train_loss, rtol=1e-13)
    np.testing.assert_allclose(runs[0].inner, runs[1].inner, rtol=1e-13)


def test_random_feature_mode_freezes_inner_weights_and_reaches_least_squares():
    rng = np.random.default_rng(9)
    x = sample_inputs(rng, 80, 3)
    y = single_neuron_target()(x)
    start = train_two_layer(np.random.default_rng(1), x, y, 6, 0.1, 0)
    run = train_two_layer(np.random.default_rng(1), x, y, 6, 0.5, 20_000, train_inner=False)
    np.testing.assert_array_equal(run.inner, start.inner)
    psi = relu_features(x, run.inner)
    best = min_norm_solution(psi, y)
    optimum = 0.5 * np.mean((psi @ best - y) ** 2)
    # GD on a strongly convex quadratic (n > m, Psi full rank) converges linearly
    assert run.train_loss[-1] == pytest.approx(optimum, rel=1e-6)
    np.testing.assert_allclose(run.outer, best, atol=1e-5)


def test_training_records_and_loss_decreases():
    rng = np.random.default_rng(10)
    x, xt = sample_inputs(rng, 100, 4), sample_inputs(rng, 50, 4)
    f = single_neuron_target()
    run = train_two_layer(
        rng, x, f(x), 10, 0.05, 205, record_every=50, test_inputs=xt, test_targets=f(xt)
    )
    np.testing.assert_array_equal(run.steps, [0, 50, 100, 150, 200, 205])
    assert run.neuron_magnitude.shape == (6, 10)
    assert run.test_loss.shape == (6,)
    assert run.train_loss[-1] < 0.5 * run.train_loss[0]


def test_conventional_scaling_concentrates_on_few_neurons():
    """The quenching-activation picture of the slides, at small size (d=6, m=20)."""
    rng = np.random.default_rng(11)
    x = sample_inputs(rng, 200, 6)
    y = single_neuron_target()(x)
    conv = train_two_layer(np.random.default_rng(2), x, y, 20, 0.05, 4000, outer_init_std=1e-3)
    mf = train_two_layer(
        np.random.default_rng(2), x, y, 20, 0.05, 4000, "mean_field", outer_init_std=1.0
    )
    share_conv = top_neuron_share(conv.neuron_magnitude[-1])
    share_mf = top_neuron_share(mf.neuron_magnitude[-1])
    assert share_conv > 0.5 > share_mf


def test_top_neuron_share():
    assert top_neuron_share(np.array([3.0, 1.0, 0.0, 0.0])) == pytest.approx(0.75)
    np.testing.assert_allclose(top_neuron_share(np.ones((2, 4)), top=2), [0.5, 0.5])
    assert top_neuron_share(np.zeros(3)) == 0.0


# --- validation ----------------------------------------------------------------------------


def test_bad_inputs_raise():
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="law"):
        sample_inputs(rng, 3, 2, law="uniform")
    with pytest.raises(ValueError, match="radius"):
        relu_kernel_constant(3, "gaussian", 2.0)
    with pytest.raises(ValueError, match="dimension"):
        relu_kernel(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="Generator"):
        sample_inputs(0, 3, 2)
    with pytest.raises(ValueError, match="scaling"):
        two_layer_output(np.ones((2, 2)), np.ones(3), np.ones((3, 2)), "ntk")
    with pytest.raises(ValueError, match="inner"):
        two_layer_output(np.ones((2, 2)), np.ones(3), np.ones((2, 2)))
    with pytest.raises(ValueError, match="widths"):
        random_feature_curve(np.ones((3, 2)), [4], np.ones((2, 2)), np.ones(2), np.ones((2, 2)),
                             np.ones(2))
    with pytest.raises(FloatingPointError, match="diverged"):
        train_two_layer(rng, rng.standard_normal((20, 3)), np.ones(20), 3, 100.0, 2000,
                        outer_init_std=1.0, train_inner=False)
