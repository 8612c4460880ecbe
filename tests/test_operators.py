"""Tests for companion.stability.operators: exact moment operators of linearised SGD."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import validation
from companion.stability import operators
from companion.stability.operators import (
    kron_operators,
    moment_operator,
    second_moment_map,
    second_moment_operator,
    symmetric_tensor_basis,
)
from companion.stability.sampling import batch_noise_factor

# Entries of the operators here are O(1) sums of a few hundred products of O(1) numbers;
# float64 rounding leaves errors of a few 1e-15, so 1e-12 is a safe exact-agreement bound.
EXACT = 1e-12


def random_hessians(rng, n, d, rank=None):
    """PSD per-sample Hessians H_i = J_i^T J_i with J_i of shape (rank, d)."""
    rank = d if rank is None else rank
    jac = rng.normal(size=(n, rank, d))
    return np.einsum("nki,nkj->nij", jac, jac)


def brute_force_moment(hessians, lr, batch_size, order, replacement):
    """Average of (I - lr Hhat_b)^{(x) k} over every equally likely batch, with np.kron."""
    n, d, _ = hessians.shape
    if replacement:
        batches = list(itertools.product(range(n), repeat=batch_size))
    else:
        batches = list(itertools.combinations(range(n), batch_size))
    total = np.zeros((d**order, d**order))
    for batch in batches:
        step = np.eye(d) - lr * hessians[list(batch)].mean(axis=0)
        power = step
        for _ in range(order - 1):
            power = np.kron(power, step)
        total += power
    return total / len(batches)


# ------------------------------------------------------------------------------------
# moment operators against brute force
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("method", ["moments", "enumerate", "auto"])
def test_moment_operator_equals_average_over_every_batch(replacement, order, method):
    rng = np.random.default_rng(100 + order)
    n, d = 5, 3
    hs = random_hessians(rng, n, d, rank=2) / 3.0
    for batch_size in (1, 2, 4):
        expected = brute_force_moment(hs, 0.37, batch_size, order, replacement)
        got = moment_operator(
            hs, 0.37, batch_size, order=order, replacement=replacement, method=method
        )
        assert got.shape == (d**order, d**order)
        np.testing.assert_allclose(got, expected, rtol=0, atol=EXACT)


def test_moment_operator_full_batch_is_gd_power():
    # B = n without replacement (p = 0) and n = 1 with replacement are deterministic.
    rng = np.random.default_rng(1)
    hs = random_hessians(rng, 4, 2)
    step = np.eye(2) - 0.1 * hs.mean(axis=0)
    expected = np.kron(np.kron(step, step), step)
    np.testing.assert_allclose(moment_operator(hs, 0.1, 4, order=3), expected, atol=EXACT)
    single = hs[:1]
    step1 = np.eye(2) - 0.1 * single[0]
    np.testing.assert_allclose(
        moment_operator(single, 0.1, 3, order=2, replacement=True),
        np.kron(step1, step1),
        atol=EXACT,
    )


def test_first_moment_operator_is_one_minus_lr_h():
    rng = np.random.default_rng(2)
    hs = random_hessians(rng, 6, 4)
    np.testing.assert_allclose(
        moment_operator(hs, 0.05, 3, order=1), np.eye(4) - 0.05 * hs.mean(axis=0), atol=EXACT
    )


def test_order_two_equals_second_moment_operator():
    rng = np.random.default_rng(3)
    hs = random_hessians(rng, 7, 3, rank=1)
    for replacement in (False, True):
        q = second_moment_operator(hs, 0.2, 3, replacement=replacement)
        t2 = moment_operator(hs, 0.2, 3, order=2, replacement=replacement)
        np.testing.assert_allclose(q, t2, atol=EXACT)


# ------------------------------------------------------------------------------------
# second moment closed forms
# ------------------------------------------------------------------------------------
def test_second_moment_map_matches_q_on_vec():
    rng = np.random.default_rng(4)
    n, d = 6, 4
    hs = random_hessians(rng, n, d, rank=2)
    stack = rng.normal(size=(2, 3, d, d))  # not symmetric on purpose: the map is linear
    for replacement in (False, True):
        q = second_moment_operator(hs, 0.03, 2, replacement=replacement)
        out = second_moment_map(hs, 0.03, 2, stack, replacement=replacement)
        assert out.shape == stack.shape
        for idx in np.ndindex(2, 3):
            np.testing.assert_allclose(
                out[idx].reshape(-1), q @ stack[idx].reshape(-1), rtol=0, atol=1e-12
            )


def test_second_moment_map_is_expectation_over_batches():
    rng = np.random.default_rng(5)
    n, d, batch_size, lr = 5, 3, 2, 0.15
    hs = random_hessians(rng, n, d)
    s = rng.normal(size=(d, d))
    s = s @ s.T
    for replacement, batches in (
        (False, list(itertools.combinations(range(n), batch_size))),
        (True, list(itertools.product(range(n), repeat=batch_size))),
    ):
        expected = np.zeros((d, d))
        for batch in batches:
            step = np.eye(d) - lr * hs[list(batch)].mean(axis=0)
            expected += step @ s @ step
        expected /= len(batches)
        got = second_moment_map(hs, lr, batch_size, s, replacement=replacement)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_kron_operators_match_their_definition_on_matrices():
    rng = np.random.default_rng(6)
    n, d = 5, 3
    hs = random_hessians(rng, n, d)
    h = hs.mean(axis=0)
    p = batch_noise_factor(n, 2)
    c, dd = kron_operators(hs, 2)
    x = rng.normal(size=(d, d))
    np.testing.assert_allclose(c @ x.reshape(-1), (0.5 * (h @ x + x @ h)).reshape(-1), atol=1e-12)
    expected_d = (1 - p) * h @ x @ h + p * np.mean([hi @ x @ hi for hi in hs], axis=0)
    np.testing.assert_allclose(dd @ x.reshape(-1), expected_d.reshape(-1), atol=1e-12)
    np.testing.assert_allclose(c, c.T, atol=0)
    np.testing.assert_allclose(dd, dd.T, atol=0)


def test_one_dimensional_second_moment_factor():
    # wme-1d: in 1-D, E x^2 is multiplied by (1 - lr a)^2 + lr^2 p s^2 per step.
    rng = np.random.default_rng(7)
    curvatures = rng.uniform(0.1, 3.0, size=9)
    hs = curvatures[:, None, None]
    a, s2 = curvatures.mean(), curvatures.var()
    for replacement in (False, True):
        p = batch_noise_factor(9, 4, replacement)
        q = second_moment_operator(hs, 0.4, 4, replacement=replacement)
        assert q.shape == (1, 1)
        assert q[0, 0] == pytest.approx((1 - 0.4 * a) ** 2 + 0.4**2 * p * s2, rel=1e-13)


# ------------------------------------------------------------------------------------
# symmetric tensors
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("d", "k"), [(1, 3), (3, 1), (3, 2), (2, 4), (4, 3)])
def test_symmetric_tensor_basis_is_orthonormal_and_symmetric(d, k):
    basis = symmetric_tensor_basis(d, k)
    assert basis.shape == (d**k, math.comb(d + k - 1, k))
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-14)
    # Every column is invariant under every permutation of the tensor positions.
    for perm in itertools.permutations(range(k)):
        permuted = basis.reshape((d,) * k + (-1,)).transpose((*perm, k)).reshape(d**k, -1)
        np.testing.assert_array_equal(permuted, basis)
    # And they span all symmetric tensors: symmetrising a random tensor stays in the span.
    rng = np.random.default_rng(d * 10 + k)
    tensor = rng.normal(size=(d,) * k)
    sym = np.mean([tensor.transpose(p) for p in itertools.permutations(range(k))], axis=0)
    vec = sym.reshape(-1)
    np.testing.assert_allclose(basis @ (basis.T @ vec), vec, atol=1e-13)


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_symmetric_restriction(order, replacement):
    rng = np.random.default_rng(8)
    hs = random_hessians(rng, 4, 3, rank=1)
    full = moment_operator(hs, 0.2, 2, order=order, replacement=replacement)
    restricted = moment_operator(hs, 0.2, 2, order=order, replacement=replacement, symmetric=True)
    basis = symmetric_tensor_basis(3, order)
    # Sym^k is invariant: T P = P (P^T T P).
    np.testing.assert_allclose(full @ basis, basis @ restricted, atol=1e-13)


# ------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    d=st.integers(1, 3),
    rank=st.integers(1, 3),
    order=st.integers(1, 3),
    replacement=st.booleans(),
    scale=st.floats(1e-2, 1e2),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_moment_operator_property(n, d, rank, order, replacement, scale, seed, data):
    batch_size = data.draw(st.integers(1, n if not replacement else 3))
    rng = np.random.default_rng(seed)
    hs = scale * random_hessians(rng, n, d, rank=min(rank, d))
    lr = 0.5 / max(np.linalg.eigvalsh(hs).max(), 1e-12)
    got = moment_operator(hs, lr, batch_size, order=order, replacement=replacement)
    expected = brute_force_moment(hs, lr, batch_size, order, replacement)
    # lr * |H_i| <= 0.5, so every entry is O(1): absolute 1e-12 is rounding-level.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), order=st.integers(1, 4))
def test_moment_operator_orthogonal_equivariance(seed, order):
    # Rotating every H_i by U rotates T_k by U^{(x)k}.
    rng = np.random.default_rng(seed)
    hs = random_hessians(rng, 4, 2)
    u, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    rotated = np.einsum("ab,nbc,dc->nad", u, hs, u)
    big = u
    for _ in range(order - 1):
        big = np.kron(big, u)
    t = moment_operator(hs, 0.05, 2, order=order)
    t_rot = moment_operator(rotated, 0.05, 2, order=order)
    np.testing.assert_allclose(t_rot, big @ t @ big.T, atol=1e-12)


# ------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------
GOOD = np.stack([np.eye(2), np.diag([2.0, 0.0])])


@pytest.mark.parametrize(
    ("hessians", "error", "match"),
    [
        (np.array([[[1.0, 2.0], [0.0, 1.0]]]), ValueError, "symmetric"),
        (np.array([[[1.0, 0.0], [0.0, -1.0]]]), ValueError, "positive semi-definite"),
        (np.array([[[np.nan, 0.0], [0.0, 1.0]]]), ValueError, "NaN"),
        (np.eye(2), ValueError, "3 dimensions"),
        (np.ones((1, 2, 3)), ValueError, "square"),
        ("abc", TypeError, "real numbers"),
    ],
)
def test_bad_hessians(hessians, error, match):
    with pytest.raises(error, match=match):
        moment_operator(hessians, 0.1, 1)
    with pytest.raises(error, match=match):
        second_moment_operator(hessians, 0.1, 1)
    with pytest.raises(error, match=match):
        second_moment_map(hessians, 0.1, 1, np.eye(2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 3}, ValueError, "batch_size"),
        ({"batch_size": 1.0}, TypeError, "batch_size"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"lr": "0.1"}, TypeError, "lr"),
        ({"order": 0}, ValueError, "order"),
        ({"order": 2.0}, TypeError, "order"),
        ({"method": "exact"}, ValueError, "method"),
        ({"replacement": 1}, TypeError, "replacement"),
        ({"symmetric": "yes"}, TypeError, "symmetric"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"lr": 0.1, "batch_size": 1, "order": 2}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        moment_operator(GOOD, **args)


def test_batch_size_above_n_allowed_with_replacement():
    out = moment_operator(GOOD, 0.1, 3, order=2, replacement=True)
    assert out.shape == (4, 4)


def test_second_moment_map_bad_s():
    with pytest.raises(ValueError, match="S must have shape"):
        second_moment_map(GOOD, 0.1, 1, np.eye(3))
    with pytest.raises(ValueError, match="S must have shape"):
        second_moment_map(GOOD, 0.1, 1, np.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        second_moment_map(GOOD, 0.1, 1, np.full((2, 2), np.inf))


def test_dense_builds_refused(monkeypatch):
    monkeypatch.setattr(validation, "DENSE_MEMORY_LIMIT", 200)
    with pytest.raises(ValueError, match="lanczos"):
        kron_operators(GOOD, 1)
    with pytest.raises(ValueError, match="lanczos"):
        second_moment_operator(GOOD, 0.1, 1)
    with pytest.raises(ValueError, match="matrix-free"):
        moment_operator(GOOD, 0.1, 1, order=3)
    with pytest.raises(ValueError, match="GiB"):
        symmetric_tensor_basis(4, 4)


def test_enumeration_refused_when_too_many_batches(monkeypatch):
    monkeypatch.setattr(operators, "_MAX_ENUMERATED_BATCHES", 3)
    hs = np.stack([np.eye(2)] * 5)
    with pytest.raises(ValueError, match="method='moments'"):
        moment_operator(hs, 0.1, 2, order=3, method="enumerate")
    # the closed form still works
    assert moment_operator(hs, 0.1, 2, order=3, method="moments").shape == (8, 8)


def test_symmetric_tensor_basis_bad_arguments():
    with pytest.raises(ValueError, match="d must be"):
        symmetric_tensor_basis(0, 2)
    with pytest.raises(TypeError, match="k must be"):
        symmetric_tensor_basis(2, 1.5)
