"""Tests for companion.theory.geometry: Ma & Ying's Defs 2-4 (distances, covering, scattering)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.theory import geometry as geo

# Distances and norms below are sums of at most a few hundred float64 products of O(1)
# numbers: rounding errors are ~1e-14 relative, so 1e-12 is a safe "exact" tolerance.
EXACT = 1e-12


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
    monkeypatch.setattr(geo, "_DISTANCE_BLOCK_ENTRIES", 10)
    np.testing.assert_allclose(
        geo.nearest_distances(ref, qry), _brute_nearest(ref, qry), rtol=EXACT
    )
    np.testing.assert_allclose(
        geo.nearest_distances(ref), _brute_nearest(ref, ref, leave_one_out=True), rtol=EXACT
    )


def test_nearest_distances_accept_images_and_exact_zero():
    ref = np.arange(12.0).reshape(3, 1, 2, 2)
    assert geo.nearest_distances(ref, ref[1:2])[0] == 0.0
    with pytest.raises(ValueError, match="features"):
        geo.nearest_distances(ref, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="two points"):
        geo.nearest_distances(ref[:1])
    with pytest.raises(ValueError, match="NaN"):
        geo.nearest_distances(np.array([[np.nan, 1.0]]), np.zeros((1, 2)))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 40),
    epsilon=st.floats(0.01, 1.0),
)
def test_covering_radius_is_the_smallest_covering_delta(seed, m, epsilon):
    rng = np.random.default_rng(seed)
    train, queries = rng.normal(size=(5, 2)), rng.normal(size=(m, 2))
    delta = geo.covering_radius(train, queries, epsilon)
    assert geo.uncovered_fraction(train, queries, delta) < epsilon
    # just below delta, one more query (the one at distance delta) becomes uncovered
    assert geo.uncovered_fraction(train, queries, delta * (1 - 1e-9)) >= epsilon


def test_covering_radius_rejects_bad_epsilon():
    x = np.zeros((2, 2))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="epsilon"):
            geo.covering_radius(x, x, bad)
    with pytest.raises(TypeError, match="epsilon"):
        geo.covering_radius(x, x, "0.1")


def test_covered_condition_reproduces_its_draws():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(40, 3))
    cc = geo.covered_condition(pool, n=15, delta=1.0, epsilon2=0.3, n_draws=5, n_queries=20, seed=3)
    perm_rng = np.random.default_rng(3)
    for d in range(5):
        perm = perm_rng.permutation(40)
        train, queries = pool[perm[:15]], pool[perm[15:35]]
        np.testing.assert_array_equal(cc.distances[d], geo.nearest_distances(train, queries))
        assert cc.uncovered[d] == geo.uncovered_fraction(train, queries, 1.0)
        assert cc.scattering_upper[d] == geo.scattering(train, 1.0, n_samples=10).upper
    assert cc.epsilon1 == np.mean(cc.uncovered >= 0.3)
    radii = cc.radius(0.3)
    assert all(np.mean(row > r) < 0.3 for row, r in zip(cc.distances, radii, strict=True))


def test_covered_condition_more_data_covers_better():
    """On a segment, n points leave gaps of size ~1/n: the uncovered mass must shrink."""
    pool = np.linspace(0, 1, 2001)[:, None]
    small = geo.covered_condition(pool, n=20, delta=0.01, epsilon2=0.5, n_draws=5, seed=0)
    large = geo.covered_condition(pool, n=400, delta=0.01, epsilon2=0.5, n_draws=5, seed=0)
    assert large.uncovered.mean() < small.uncovered.mean()
    assert large.epsilon1 <= small.epsilon1


def test_covered_condition_validates():
    pool = np.zeros((5, 2))
    with pytest.raises(ValueError, match="n must be smaller"):
        geo.covered_condition(pool, n=5, delta=1.0, epsilon2=0.1)
    with pytest.raises(ValueError, match="n_queries"):
        geo.covered_condition(pool, n=2, delta=1.0, epsilon2=0.1, n_queries=4)
    with pytest.raises(ValueError, match="delta"):
        geo.covered_condition(pool, n=2, delta=0.0, epsilon2=0.1)


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
    sc = geo.scattering(pts, delta, n_samples=200, seed=seed)
    assert sc.lower <= exact <= sc.upper
    assert 1.0 <= sc.mean_kappa <= exact * (1 + 1e-12)


def test_scattering_upper_uses_twice_delta():
    # three points on a line at spacing 1: with delta = 0.6 the middle point's 2 delta
    # neighbourhood holds all three, but no point of R is in more than two balls (the
    # overlaps (0.4, 0.6) and (1.4, 1.6) carry 1/8 of the mixture mass: 2000 draws hit them)
    pts = np.array([[0.0], [1.0], [2.0]])
    sc = geo.scattering(pts, 0.6, n_samples=2000, seed=0)
    assert sc.upper == 3 and sc.lower == 2 == _max_interval_overlap(pts[:, 0], 0.6)


def _lens_area(radius, distance):
    """Area of the intersection of two disks of equal radius."""
    return 2 * radius**2 * math.acos(distance / (2 * radius)) - 0.5 * distance * math.sqrt(
        4 * radius**2 - distance**2
    )


def test_union_of_two_disks_matches_closed_form():
    delta, s = 1.0, 1.2
    centres = np.array([[0.0, 0.0], [s, 0.0]])
    sample = geo.sample_union_of_balls(centres, delta, 40_000, seed=2)
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
    sample = geo.sample_union_of_balls(centres, 1.5, 500, seed=0)
    assert np.all(sample.kappa == 1)
    assert sample.log_volume == pytest.approx(math.log(3 * 4 / 3 * math.pi * 1.5**3), rel=EXACT)
    mean, err = sample.uniform_mean(np.full(500, 2.5))
    assert mean == pytest.approx(2.5, rel=EXACT) and err < EXACT


def test_high_dimensional_ball_volume_stays_finite():
    sample = geo.sample_union_of_balls(np.zeros((1, 400)), 10.0, 5, seed=0)
    expected = 200 * math.log(math.pi) - math.lgamma(201) + 400 * math.log(10.0)
    assert sample.log_volume == pytest.approx(expected, rel=EXACT)
