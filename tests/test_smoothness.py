"""Tests for companion.theory.smoothness: the constants and bounds of Ma & Ying Thms 3-7."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.stability.bounds import gradient_norm_bound
from companion.theory import smoothness as sm

# Distances and norms below are sums of at most a few hundred float64 products of O(1)
# numbers: rounding errors are ~1e-14 relative, so 1e-12 is a safe "exact" tolerance.
EXACT = 1e-12


# ------------------------------------------------------------------------------------
# constants of the bounds
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3])
def test_stability_factor_is_theorem2_summed(k):
    w, lr, b, n = 37, 0.3, 4, 11
    per_coordinate = 2.0**k * b ** (k - 1) / lr**k  # Thm 2, eq. (18)
    assert sm.stability_factor(w, lr, b, k) ** (2 * k) == pytest.approx(w * per_coordinate)
    # the paper's constant for the max over n samples carries an extra factor 2
    assert sm.stability_factor(w, lr, b, k, n_samples=n) ** (2 * k) == pytest.approx(
        2 * n * w * per_coordinate
    )
    # Cor 1 of companion.bounds states the same factor
    grads = np.ones((3, w))
    assert sm.stability_factor(w, lr, b, k) == pytest.approx(
        gradient_norm_bound(grads, lr, b, k).rhs, rel=EXACT
    )


def test_stability_factor_validates():
    with pytest.raises(ValueError, match="lr"):
        sm.stability_factor(10, -1.0, 2, 1)
    with pytest.raises(TypeError, match="batch_size"):
        sm.stability_factor(10, 0.1, 2.0, 1)
    with pytest.raises(ValueError, match="k"):
        sm.stability_factor(10, 0.1, 2, 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 5), p=st.integers(1, 5))
def test_first_layer_shift_is_the_minimum_norm_solution(seed, m, p):
    rng = np.random.default_rng(seed)
    w1, x, xs = rng.normal(size=(m, p)), rng.normal(size=p), rng.normal(size=p)
    shift = sm.first_layer_shift(w1, x, xs)
    np.testing.assert_allclose((w1 + shift) @ xs, w1 @ x, atol=1e-10 * (1 + np.abs(w1 @ x).max()))
    # min-norm solution of shift @ xs = w1 (x - xs), i.e. (I (x) xs^T) vec(shift) = rhs
    system = np.kron(np.eye(m), xs[None, :])
    lstsq = np.linalg.pinv(system) @ (w1 @ (x - xs))
    np.testing.assert_allclose(shift.reshape(-1), lstsq, atol=1e-9 * (1 + np.abs(lstsq).max()))
    bound = np.linalg.norm(w1, 2) * np.linalg.norm(x - xs) / np.linalg.norm(xs)
    assert np.linalg.norm(shift, "fro") <= bound * (1 + 1e-12)
    assert np.linalg.norm(shift, 2) == pytest.approx(np.linalg.norm(shift, "fro"), rel=1e-9)


def test_first_layer_shift_validates():
    with pytest.raises(ValueError, match="nonzero"):
        sm.first_layer_shift(np.eye(2), np.ones(2), np.zeros(2))
    with pytest.raises(ValueError, match="entries"):
        sm.first_layer_shift(np.eye(2), np.ones(3), np.ones(2))


def test_required_parameter_radius_inverts_the_condition():
    rad = sm.required_parameter_radius(0.5, 2.0, 4.0)
    assert rad == pytest.approx(0.25)
    # the condition delta <= delta_approx min|x| / |W1| holds with equality
    assert 0.5 == pytest.approx(rad * 4.0 / 2.0)
    with pytest.raises(ValueError, match="min_input_norm"):
        sm.required_parameter_radius(0.5, 2.0, 0.0)


# ------------------------------------------------------------------------------------
# bound formulas
# ------------------------------------------------------------------------------------
def test_bound_formulas_against_hand_computation():
    common = {"w1t_norm": 2.0, "min_input_norm": 4.0, "n_params": 8, "lr": 1.0, "batch_size": 2}
    # Thm 3: |W1^T| / min|x| * (w/B)^(1/2k) sqrt(2B/lr), k = 1: 0.5 * 2 * 2 = 2
    b3 = sm.theorem3_bound(1.9, **common, k=1)
    assert b3.rhs == pytest.approx(2.0) and b3.holds
    assert not sm.theorem3_bound(2.1, **common, k=1).holds
    # Thm 4 normalised: K^(1/2k) 2 C |W1^T|/min|x| (factor + 1) = 3 * 2 * 1.5 * 0.5 * 5
    b4 = sm.theorem4_bound(1.0, scattering_constant=9.0, constant=1.5, **common, k=1)
    assert b4.rhs == pytest.approx(22.5)
    # Thm 5: C |W1^T|/min|x| ((2nw/B)^(1/2k) sqrt(2B/lr) + 1), n = 2: 1.5 * 0.5 * (4 * 2 + 1)
    b5 = sm.theorem5_bound(1.0, constant=1.5, n_samples=2, **common, k=1)
    assert b5.rhs == pytest.approx(6.75)
    # Prop 3: C |W1^T| (g + 1) / |x*|
    b = sm.proposition3_bound(
        [0.5, 1.0], constant=2.0, w1t_norm=1.0, centre_norm=4.0, centre_gradient_norm=1.0
    )
    assert b.rhs == pytest.approx(1.0) and b.holds
    assert not sm.proposition3_bound(
        [1.01], constant=2.0, w1t_norm=1.0, centre_norm=4.0, centre_gradient_norm=1.0
    ).holds


def test_generalization_bound_terms():
    g = sm.generalization_bound(
        0.1,
        gradient_bound=2.0,
        delta=0.5,
        epsilon2=0.1,
        bound_f=1.0,
        lipschitz_target=3.0,
        input_dim=4,
    )
    assert g.terms["gradient"] == pytest.approx(2 * 4 * 4 * 0.25)
    assert g.terms["target"] == pytest.approx(2 * 9 * 0.25)
    assert g.terms["uncovered"] == pytest.approx(0.4)
    assert g.rhs == pytest.approx(8 + 4.5 + 0.4)
    assert g.holds and g.vacuous and g.dominant == "gradient"
    sharp = sm.generalization_bound(
        0.1,
        gradient_bound=2.0,
        delta=0.5,
        epsilon2=0.1,
        bound_f=1.0,
        lipschitz_target=3.0,
        input_dim=4,
        sharp_dimension_factor=True,
    )
    assert sharp.terms["gradient"] == pytest.approx(2 * 4 * 0.25)  # d^(1 - 1/k) = 1 at k = 1
    small = sm.generalization_bound(
        0.01,
        gradient_bound=0.1,
        delta=0.1,
        epsilon2=0.01,
        bound_f=1.0,
        lipschitz_target=0.1,
        input_dim=4,
    )
    assert not small.vacuous and small.holds
    with pytest.raises(ValueError, match="epsilon2"):
        sm.generalization_bound(
            0.1, gradient_bound=1, delta=1, epsilon2=2, bound_f=1, lipschitz_target=1, input_dim=2
        )


def test_robustness_bound():
    b = sm.robustness_bound([0.1, 0.3], gradient_bound=0.5, delta=0.3, input_dim=4, k=2)
    assert b.rhs == pytest.approx(2 * 0.5 * 0.3) and b.holds
    sharp = sm.robustness_bound(
        [0.1], gradient_bound=0.5, delta=0.3, input_dim=4, k=2, sharp_dimension_factor=True
    )
    assert sharp.rhs == pytest.approx(4**0.25 * 0.15)
    with pytest.raises(ValueError, match="output_change"):
        sm.robustness_bound([-0.1], gradient_bound=0.5, delta=0.3, input_dim=4)
