"""Tests for companion.smoothness: data geometry, bound formulas and searches on torch models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import smoothness as sm
from companion.bounds import gradient_norm_bound

# Distances and norms below are sums of at most a few hundred float64 products of O(1)
# numbers: rounding errors are ~1e-14 relative, so 1e-12 is a safe "exact" tolerance.
EXACT = 1e-12


# ------------------------------------------------------------------------------------
# small models with closed forms
# ------------------------------------------------------------------------------------
class _OneUnit(torch.nn.Module):
    """f(x) = act(w . x) with an explicit bias-free first layer (K = 1)."""

    def __init__(self, p: int, act):
        super().__init__()
        self.first_layer = torch.nn.Linear(p, 1, bias=False)
        self.act = act

    def forward(self, x):
        return self.act(self.first_layer(x.reshape(x.shape[0], -1)))


def _model(p, act, seed=0):
    torch.manual_seed(seed)
    return _OneUnit(p, act).double()


def _half_square(z):
    return 0.5 * z**2


def _mlp(p=6, width=8, seed=0):
    from companion.models import make_model

    return make_model("mlp", seed=seed, in_dim=p, widths=(width,), out_dim=1, activation="tanh")


# ------------------------------------------------------------------------------------
# nearest distances, covering (Defs 2, 4)
# ------------------------------------------------------------------------------------
def _brute_nearest(ref, qry, leave_one_out=False):
    out = []
    for a, q in enumerate(qry):
        best = math.inf
        for b, r in enumerate(ref):
            if leave_one_out and a == b:
                continue
            best = min(best, math.sqrt(sum((qi - ri) ** 2 for qi, ri in zip(q, r, strict=True))))
        out.append(best)
    return np.array(out)


def test_nearest_distances_match_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    ref, qry = rng.normal(size=(9, 3)), rng.normal(size=(7, 3))
    # tiny blocks exercise the chunked path
    monkeypatch.setattr(sm, "_DISTANCE_BLOCK_ENTRIES", 10)
    np.testing.assert_allclose(sm.nearest_distances(ref, qry), _brute_nearest(ref, qry), rtol=EXACT)
    np.testing.assert_allclose(
        sm.nearest_distances(ref), _brute_nearest(ref, ref, leave_one_out=True), rtol=EXACT
    )


def test_nearest_distances_accept_images_and_exact_zero():
    ref = np.arange(12.0).reshape(3, 1, 2, 2)
    assert sm.nearest_distances(ref, ref[1:2])[0] == 0.0
    with pytest.raises(ValueError, match="features"):
        sm.nearest_distances(ref, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="two points"):
        sm.nearest_distances(ref[:1])
    with pytest.raises(ValueError, match="NaN"):
        sm.nearest_distances(np.array([[np.nan, 1.0]]), np.zeros((1, 2)))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 40),
    epsilon=st.floats(0.01, 1.0),
)
def test_covering_radius_is_the_smallest_covering_delta(seed, m, epsilon):
    rng = np.random.default_rng(seed)
    train, queries = rng.normal(size=(5, 2)), rng.normal(size=(m, 2))
    delta = sm.covering_radius(train, queries, epsilon)
    assert sm.uncovered_fraction(train, queries, delta) < epsilon
    # just below delta, one more query (the one at distance delta) becomes uncovered
    assert sm.uncovered_fraction(train, queries, delta * (1 - 1e-9)) >= epsilon


def test_covering_radius_rejects_bad_epsilon():
    x = np.zeros((2, 2))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="epsilon"):
            sm.covering_radius(x, x, bad)
    with pytest.raises(TypeError, match="epsilon"):
        sm.covering_radius(x, x, "0.1")


def test_covered_condition_reproduces_its_draws():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(40, 3))
    cc = sm.covered_condition(pool, n=15, delta=1.0, epsilon2=0.3, n_draws=5, n_queries=20, seed=3)
    perm_rng = np.random.default_rng(3)
    for d in range(5):
        perm = perm_rng.permutation(40)
        train, queries = pool[perm[:15]], pool[perm[15:35]]
        np.testing.assert_array_equal(cc.distances[d], sm.nearest_distances(train, queries))
        assert cc.uncovered[d] == sm.uncovered_fraction(train, queries, 1.0)
        assert cc.scattering_upper[d] == sm.scattering(train, 1.0, n_samples=10).upper
    assert cc.epsilon1 == np.mean(cc.uncovered >= 0.3)
    radii = cc.radius(0.3)
    assert all(np.mean(row > r) < 0.3 for row, r in zip(cc.distances, radii, strict=True))


def test_covered_condition_more_data_covers_better():
    """On a segment, n points leave gaps of size ~1/n: the uncovered mass must shrink."""
    pool = np.linspace(0, 1, 2001)[:, None]
    small = sm.covered_condition(pool, n=20, delta=0.01, epsilon2=0.5, n_draws=5, seed=0)
    large = sm.covered_condition(pool, n=400, delta=0.01, epsilon2=0.5, n_draws=5, seed=0)
    assert large.uncovered.mean() < small.uncovered.mean()
    assert large.epsilon1 <= small.epsilon1


def test_covered_condition_validates():
    pool = np.zeros((5, 2))
    with pytest.raises(ValueError, match="n must be smaller"):
        sm.covered_condition(pool, n=5, delta=1.0, epsilon2=0.1)
    with pytest.raises(ValueError, match="n_queries"):
        sm.covered_condition(pool, n=2, delta=1.0, epsilon2=0.1, n_queries=4)
    with pytest.raises(ValueError, match="delta"):
        sm.covered_condition(pool, n=2, delta=0.0, epsilon2=0.1)


# ------------------------------------------------------------------------------------
# scattering and the union of balls (Def 3, Remark 2, Thm 4)
# ------------------------------------------------------------------------------------
def _max_interval_overlap(points, delta):
    """Exact sup of kappa in 1-D: closed intervals, checked at every endpoint."""
    ends = np.concatenate([points - delta, points + delta])
    return max(int(np.sum(np.abs(points - e) <= delta * (1 + 1e-12))) for e in ends)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), delta=st.floats(0.05, 2.0))
def test_scattering_brackets_the_exact_constant_in_1d(seed, n, delta):
    pts = np.random.default_rng(seed).uniform(0, 5, size=(n, 1))
    exact = _max_interval_overlap(pts[:, 0], delta)
    sc = sm.scattering(pts, delta, n_samples=200, seed=seed)
    assert sc.lower <= exact <= sc.upper
    assert 1.0 <= sc.mean_kappa <= exact * (1 + 1e-12)


def _lens_area(radius, distance):
    """Area of the intersection of two disks of equal radius."""
    return 2 * radius**2 * math.acos(distance / (2 * radius)) - 0.5 * distance * math.sqrt(
        4 * radius**2 - distance**2
    )


def test_union_of_two_disks_matches_closed_form():
    delta, s = 1.0, 1.2
    centres = np.array([[0.0, 0.0], [s, 0.0]])
    sample = sm.sample_union_of_balls(centres, delta, 40_000, seed=2)
    lens = _lens_area(delta, s)
    union = 2 * math.pi * delta**2 - lens
    # 40k draws: the Monte Carlo error of mean(1/kappa) is ~0.3 %; allow 2 %
    assert math.exp(sample.log_volume) == pytest.approx(union, rel=0.02)
    assert sample.mean_kappa == pytest.approx(2 * math.pi / union, rel=0.02)
    # uniform-law mass of the lens (kappa = 2) is lens / union
    in_lens, err = sample.uniform_mean((sample.kappa == 2).astype(float))
    assert in_lens == pytest.approx(lens / union, abs=4 * err + 1e-3)
    # every point lies in the ball it was drawn from; kappa counts the balls exactly
    own = np.linalg.norm(sample.points - centres[sample.ball], axis=1)
    assert np.all(own <= delta * (1 + EXACT))
    brute = (np.linalg.norm(sample.points[:, None] - centres[None], axis=2) <= delta).sum(1)
    np.testing.assert_array_equal(np.maximum(brute, 1), sample.kappa)


def test_disjoint_balls_have_exact_volume_and_unit_overlap():
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    sample = sm.sample_union_of_balls(centres, 1.5, 500, seed=0)
    assert np.all(sample.kappa == 1)
    assert sample.log_volume == pytest.approx(math.log(3 * 4 / 3 * math.pi * 1.5**3), rel=EXACT)
    mean, err = sample.uniform_mean(np.full(500, 2.5))
    assert mean == pytest.approx(2.5, rel=EXACT) and err < EXACT


def test_high_dimensional_ball_volume_stays_finite():
    sample = sm.sample_union_of_balls(np.zeros((1, 400)), 10.0, 5, seed=0)
    expected = 200 * math.log(math.pi) - math.lgamma(201) + 400 * math.log(10.0)
    assert sample.log_volume == pytest.approx(expected, rel=EXACT)


# ------------------------------------------------------------------------------------
# constants and bound formulas
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


def test_robustness_bound_holds_for_a_linear_model_and_is_tight_at_d_1():
    """f(x) = w x on R: |f(x) - f(x_i)| = |w| delta exactly at the end of the ball."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1)).double()
    centres = np.array([[0.3], [-1.0]])
    worst = sm.worst_case_inputs(model, centres, 0.2, steps=5)
    grad = abs(float(model[0].weight.detach()))
    b = sm.robustness_bound(worst.values, gradient_bound=grad, delta=0.2, input_dim=1)
    assert b.holds and b.worst_ratio == pytest.approx(1.0, rel=1e-12)


# ------------------------------------------------------------------------------------
# searches on torch models
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2])
def test_local_smoothness_finds_the_exact_supremum(k):
    """f = (w.x)^2/2: grad_w f = (w.x) x, whose largest 2k-norm over |w' - w| <= r is
    (|w.x| + r |x|_2) |x|_2k (w' = w + r sign(w.x) x/|x|)."""
    torch.manual_seed(1)
    X = torch.randn(5, 4, dtype=torch.float64)
    model = _model(4, _half_square, seed=1)
    w = model.first_layer.weight.detach()[0]
    radius = 0.7
    est = sm.local_smoothness(model, X, radius, k=k, n_samples=4, ascent_steps=80)
    dot, xk = (X @ w).abs(), torch.linalg.vector_norm(X, 2 * k, dim=1)
    np.testing.assert_allclose(est.base_norms, (dot * xk).numpy(), rtol=EXACT)
    exact = ((dot + radius * X.norm(dim=1)) * xk).numpy()
    # the ascent's last steps are 1e-3 r long; the objective is flat (quadratic) at its
    # maximum on the sphere, so an iterate that close loses ~1e-5 relative at most
    np.testing.assert_allclose(est.max_norms, exact, rtol=1e-4)
    assert np.all(est.max_norms <= exact * (1 + 1e-12))
    assert est.constant == pytest.approx(float(np.max(exact / (est.base_norms + 1))), rel=1e-4)
    sampled = sm.local_smoothness(model, X, radius, k=k, n_samples=4, ascent_steps=0)
    assert np.all(sampled.max_norms <= est.max_norms * (1 + 1e-12))
    assert np.all(sampled.max_norms >= sampled.base_norms)


def test_local_smoothness_of_a_model_linear_in_parameters_is_constant():
    """f = w.x: grad_w f = x everywhere, so C = max |x|/(|x| + 1)."""
    X = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = _model(3, lambda z: z)
    est = sm.local_smoothness(model, X, 5.0, n_samples=8, ascent_steps=5)
    norms = X.norm(dim=1).numpy()
    np.testing.assert_allclose(est.max_norms, norms, rtol=EXACT)
    assert est.constant == pytest.approx(float(np.max(norms / (norms + 1))), rel=EXACT)


@pytest.mark.parametrize("radius", [0.1, 0.5, 3.0])
@pytest.mark.parametrize("k", [1, 2])
def test_worst_input_gradient_matches_closed_form(radius, k):
    """f = tanh(w.x): |grad f|_2k = |w|_2k sech^2(w.x), largest where |w.x| is smallest."""
    X = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    model = _model(5, torch.tanh, seed=3)
    w = model.first_layer.weight.detach()[0]
    found = sm.worst_case_inputs(model, X, radius, "input_gradient", k=k, steps=50)
    closest = ((X @ w).abs() - radius * w.norm()).clamp(min=0)
    exact = (torch.linalg.vector_norm(w, 2 * k) / torch.cosh(closest) ** 2).numpy()
    np.testing.assert_allclose(found.values, exact, rtol=1e-6)
    assert np.all(np.linalg.norm(found.points - X.numpy(), axis=1) <= radius * (1 + EXACT))
    at_centre = (torch.linalg.vector_norm(w, 2 * k) / torch.cosh(X @ w) ** 2).numpy()
    np.testing.assert_allclose(found.centre_values, at_centre, rtol=EXACT)


def test_worst_case_inputs_use_given_starts():
    """Starting at the known maximiser of |grad f| for f = tanh(w.x), even steps=0 finds it."""
    X = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    model = _model(3, torch.tanh, seed=8)
    w = model.first_layer.weight.detach()[0]
    radius = 0.4
    dot = X @ w
    # move each centre along -sign(w.x) w towards the hyperplane w.x = 0, by at most radius
    move = torch.minimum(dot.abs() / w.norm(), torch.tensor(radius, dtype=torch.float64))
    best = X - (torch.sign(dot) * move)[:, None] * w / w.norm()
    found = sm.worst_case_inputs(model, X, radius, "input_gradient", steps=0, starts=best)
    exact = (w.norm() / torch.cosh(dot.abs() - move * w.norm()) ** 2).numpy()
    np.testing.assert_allclose(found.values, exact, rtol=EXACT)
    # starts outside the ball are projected back onto it
    far = sm.worst_case_inputs(model, X, radius, "input_gradient", steps=0, starts=X + 10.0)
    assert np.all(np.linalg.norm(far.points - X.numpy(), axis=1) <= radius * (1 + EXACT))
    with pytest.raises(ValueError, match="starts"):
        sm.worst_case_inputs(model, X, radius, "input_gradient", starts=X[:2])


def test_worst_output_change_of_a_linear_model_is_one_fgsm_step():
    model = torch.nn.Sequential(torch.nn.Linear(7, 1)).double()
    X = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    one_step = sm.worst_case_inputs(model, X, 0.3, steps=0)
    exact = 0.3 * float(model[0].weight.detach().norm())
    np.testing.assert_allclose(one_step.values, exact, rtol=EXACT)
    with_pgd = sm.worst_case_inputs(model, X, 0.3, steps=10, restarts=2)
    assert np.all(with_pgd.values >= one_step.values * (1 - EXACT))
    assert np.all(with_pgd.values <= exact * (1 + EXACT))
    assert np.all(one_step.centre_values == 0)


def test_worst_output_change_never_loses_to_random_points():
    model = _mlp()
    X = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    found = sm.worst_case_inputs(model, X, 0.8, steps=15, restarts=1)
    with torch.no_grad():
        f0 = model(X)
        gen = torch.Generator().manual_seed(9)
        for _ in range(20):
            u = torch.randn(6, 6, dtype=torch.float64, generator=gen)
            x = X + 0.8 * u / u.norm(dim=1, keepdim=True)
            change = (model(x) - f0).abs()[:, 0].numpy()
            assert np.all(change <= found.values * (1 + 1e-9))
        again = (model(torch.as_tensor(found.points)) - f0).abs()[:, 0].numpy()
    np.testing.assert_allclose(again, found.values, rtol=1e-10)


def test_worst_case_inputs_validates():
    model = _mlp()
    X = torch.zeros(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="objective"):
        sm.worst_case_inputs(model, X, 0.1, objective="loss")
    with pytest.raises(ValueError, match="radius"):
        sm.worst_case_inputs(model, X, -0.1)
    with pytest.raises(TypeError, match="steps"):
        sm.worst_case_inputs(model, X, 0.1, steps=1.5)


@pytest.mark.parametrize("k", [1, 2])
def test_union_seminorm_of_a_linear_model_is_its_gradient_norm(k):
    model = _model(3, lambda z: 2.0 * z, seed=5)
    w = model.first_layer.weight.detach()[0]
    centres = np.random.default_rng(0).normal(size=(4, 3))
    est = sm.union_seminorm(model, centres, 0.8, k=k, n_samples=300)
    expected = 2.0 * float(torch.linalg.vector_norm(w, 2 * k))
    assert est.normalized == pytest.approx(expected, rel=EXACT)
    assert est.stderr < EXACT * expected ** (2 * k)
    assert est.log_seminorm == pytest.approx(
        math.log(expected) + est.sample.log_volume / (2 * k), rel=EXACT
    )


def test_union_seminorm_of_a_quadratic_matches_the_exact_ball_average():
    """f = |x|^2/2 on one ball around 0 in R^2: |grad f|^2 = |x|^2, average r^2/2 over the disk."""

    class Half(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first_layer = torch.nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.first_layer.weight.copy_(torch.eye(2))

        def forward(self, x):
            return 0.5 * (self.first_layer(x) ** 2).sum(dim=1, keepdim=True)

    est = sm.union_seminorm(Half().double(), np.zeros((1, 2)), 1.5, k=1, n_samples=20_000)
    assert est.mean_power == pytest.approx(1.5**2 / 2, abs=4 * est.stderr)
    assert est.stderr < 0.01


def test_shifted_model_moves_the_input_into_the_parameters():
    model = _mlp(p=5, width=7, seed=2)
    rng = np.random.default_rng(0)
    x_star, x = rng.normal(size=5), rng.normal(size=5)
    moved = sm.shifted_model(model, x, x_star)
    with torch.no_grad():
        here = model(torch.as_tensor(x[None]))
        there = moved(torch.as_tensor(x_star[None]))
    assert float(here) == pytest.approx(float(there), rel=1e-12, abs=1e-12)
    # the original model is untouched
    with torch.no_grad():
        assert not torch.equal(model.first_layer.weight, moved.first_layer.weight)


def test_shifted_model_refuses_a_convolution():
    from companion.models import make_model

    cnn = make_model("cnn", seed=0, in_shape=(1, 4, 4), channels=(2,))
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        sm.shifted_model(cnn, np.ones(16), np.ones(16))


def test_proposition3_chain_on_a_network():
    """The exact steps of Prop. 3 on a random MLP: for x near x*,
    |grad_x f(x)|_2 <= |W1|_2 |grad_W1 f(x*, W')|_2 / |x*|_2, with W' = shifted_model."""
    from companion.jacobians import first_layer_gradients, input_gradients

    model = _mlp(p=6, width=9, seed=7)
    rng = np.random.default_rng(7)
    x_star = rng.normal(size=6)
    w1_norm = float(torch.linalg.matrix_norm(model.first_layer.weight.detach(), 2))
    for scale in (0.1, 0.5, 1.0):
        x = x_star + scale * rng.normal(size=6)
        lhs = np.linalg.norm(input_gradients(model, x[None]))
        moved = sm.shifted_model(model, x, x_star)
        g_w1 = first_layer_gradients(moved, x_star[None], k=1).first_layer_grad_norms[0]
        assert lhs <= w1_norm * g_w1 / np.linalg.norm(x_star) * (1 + 1e-10)


def test_torch_is_imported_lazily():
    import subprocess
    import sys

    code = (
        "import sys; import companion.smoothness as s; "
        "s.covering_radius([[0.0], [1.0]], [[0.4]], 0.5); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_public_name_is_documented():
    for name in sm.__all__:
        obj = getattr(sm, name)
        assert obj.__doc__ and len(obj.__doc__.strip()) > 20, name


def test_scattering_upper_uses_twice_delta():
    # three points on a line at spacing 1: with delta = 0.6 the middle point's 2 delta
    # neighbourhood holds all three, but no point of R is in more than two balls (the
    # overlaps (0.4, 0.6) and (1.4, 1.6) carry 1/8 of the mixture mass: 2000 draws hit them)
    pts = np.array([[0.0], [1.0], [2.0]])
    sc = sm.scattering(pts, 0.6, n_samples=2000, seed=0)
    assert sc.upper == 3 and sc.lower == 2 == _max_interval_overlap(pts[:, 0], 0.6)
