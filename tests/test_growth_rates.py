"""Tests for companion.nets.probes.sgd_growth_rates: typical and mean-square growth rates.

References are independent of the package: the mean-square rate is checked against the
spectral radius of E[(I - eta H_b) (x) (I - eta H_b)] averaged over every equally likely
batch (numpy, d^2 x d^2), and the Lyapunov exponent against GD (B = n), where the product
is deterministic and its growth rate is log max_i |1 - eta lambda_i| exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from references import project_on_range

from companion.nets.probes import GrowthRates, sgd_growth_rates
from companion.stability.curvature import Curvature


def _brute_force_rate(hs: np.ndarray, lr: float, b: int, replacement: bool) -> float:
    """0.5 log rho(E_b[(I - lr H_b) kron (I - lr H_b)]) on range(H), by enumeration."""
    small = project_on_range(hs)
    n, r, _ = small.shape
    batches = (
        itertools.product(range(n), repeat=b)
        if replacement
        else itertools.combinations(range(n), b)
    )
    q, count = np.zeros((r * r, r * r)), 0
    for batch in batches:
        a = np.eye(r) - lr * small[list(batch)].mean(axis=0)
        q += np.kron(a, a)
        count += 1
    return 0.5 * math.log(max(abs(np.linalg.eigvals(q / count))))


def _curvature(n: int, k: int, d: int, seed: int, reduction: str = "mean") -> Curvature:
    jac = np.random.default_rng(seed).standard_normal((n, k, d))
    return Curvature.from_jacobians(jac, reduction=reduction)


@pytest.mark.parametrize(
    ("n", "k", "d", "b", "replacement"),
    [
        (6, 1, 4, 2, False),
        (6, 2, 3, 1, False),
        (5, 1, 3, 2, True),
        (7, 1, 5, 3, False),
    ],
)
@pytest.mark.parametrize("factor", [0.5, 1.0, 1.3])
def test_ms_rate_against_enumerated_batches(n, k, d, b, replacement, factor):
    curv = _curvature(n, k, d, seed=n + d + b)
    hs = np.einsum(
        "nki,nkj->nij", *(2 * [np.random.default_rng(n + d + b).standard_normal((n, k, d))])
    )
    lr = factor * curv.ms_threshold(b, replacement)
    got = sgd_growth_rates(curv, lr, b, steps=50, n_trajectories=4, replacement=replacement)
    assert isinstance(got, GrowthRates)
    assert got.ms_rate == pytest.approx(_brute_force_rate(hs, lr, b, replacement), abs=1e-10)
    assert got.lr_ratio == pytest.approx(factor, rel=1e-12)


def test_lanczos_route_against_dense_route():
    """r^2 > 400 takes the matrix-free eigsh route; it must agree with the dense one."""
    from companion.stability.operators import second_moment_operator

    curv = _curvature(21, 1, 25, seed=3)  # rank 21: a 441-dimensional operator
    small = curv.reduced_hessians()
    for b in (1, 5):
        for factor in (0.9, 1.0, 1.1):
            lr = factor * curv.ms_threshold(b)
            got = sgd_growth_rates(curv, lr, b, steps=20, n_trajectories=2).ms_rate
            q = second_moment_operator(small, lr, b)
            rho = max(abs(np.linalg.eigvalsh(0.5 * (q + q.T))))
            assert got == pytest.approx(0.5 * math.log(rho), abs=1e-8)
            if factor == 1.0:  # the threshold of Lanczos on C^+ D is where rho(Q) = 1
                assert abs(got) < 1e-8


def test_lyapunov_equals_ms_rate_for_gd():
    """B = n: the product is deterministic, both rates are log max|1 - eta lambda| (tight
    Jensen), so the Lyapunov estimate must attain the mean-square rate."""
    curv = _curvature(8, 1, 5, seed=1)
    lam = curv.eigenvalues
    for lr in (0.5 / lam.max(), 2.2 / lam.max()):
        got = sgd_growth_rates(curv, lr, 8, steps=400, burn_in=200, n_trajectories=4)
        exact = math.log(max(abs(1 - lr * lam)))
        assert got.ms_rate == pytest.approx(exact, abs=1e-10)
        assert got.lyapunov == pytest.approx(exact, abs=1e-6)


def test_jensen_holds_with_a_gap_for_small_batches():
    curv = _curvature(10, 1, 6, seed=2)
    got = sgd_growth_rates(curv, 1.05 * curv.ms_threshold(1), 1, steps=3000, n_trajectories=50)
    assert got.lyapunov <= got.ms_rate + 3 * got.lyapunov_stderr
    assert got.lyapunov < got.ms_rate - 5 * got.lyapunov_stderr  # strict for B = 1 here


def test_sum_reduction_scales_the_learning_rate():
    mean, total = _curvature(6, 1, 4, 0), _curvature(6, 1, 4, 0, reduction="sum")
    a = sgd_growth_rates(mean, 0.6, 3, steps=30, n_trajectories=3)
    b = sgd_growth_rates(total, 0.2, 3, steps=30, n_trajectories=3)  # one step = 3 x the mean
    assert b.ms_rate == pytest.approx(a.ms_rate, abs=1e-12)
    assert b.lr_ratio == pytest.approx(a.lr_ratio, rel=1e-12)


def test_bad_input():
    curv = _curvature(6, 1, 4, 0)
    with pytest.raises(TypeError, match="curvature"):
        sgd_growth_rates(np.eye(3), 0.1, 2)
    with pytest.raises(ValueError, match="lr"):
        sgd_growth_rates(curv, -1.0, 2)
    with pytest.raises(ValueError, match="batch"):
        sgd_growth_rates(curv, 0.1, 7)
