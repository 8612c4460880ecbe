"""Tests for companion.book.instances: the random instances of the book's chapters.

Each generator's contract (shapes, symmetry, PSD, ranks, the structure it promises) is
checked against independent computations with numpy.linalg, and seeding against fresh
generators: an integer seed and ``default_rng(seed)`` give the same instance, a generator
is advanced in place, and the draws are those the chapters made before the generators
moved here (so the book's numbers do not change).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from companion.book.instances import (
    KroneckerSystem,
    RankOneInstance,
    RegularMinimum,
    adaptive_sgd_samples,
    as_generator,
    dominant_direction_hessians,
    exponential_rank_one_instance,
    incoherent_hessians,
    kronecker_system,
    rank_one_hessians,
    rank_one_instance,
    regular_minimum_instance,
)


def assert_symmetric_psd(mats: np.ndarray, rtol: float = 1e-12) -> None:
    scale = np.abs(mats).max()
    assert np.allclose(mats, np.swapaxes(mats, -1, -2), rtol=0, atol=rtol * scale)
    assert np.linalg.eigvalsh(mats).min() >= -1e-12 * scale * mats.shape[-1]


# --- rank-one instances ---------------------------------------------------------------


@pytest.mark.parametrize("n, d, spread", [(1, 1, 0.5), (6, 2, 0.5), (10, 6, 1.0), (7, 3, 0.0)])
def test_rank_one_instance_shapes_psd_and_rank(n, d, spread):
    grads, hs = rank_one_instance(np.random.default_rng(3), n, d, spread)
    assert grads.shape == (n, d) and hs.shape == (n, d, d)
    assert_symmetric_psd(hs)
    for a, h in zip(grads, hs, strict=True):
        assert np.allclose(h, np.outer(a, a), rtol=1e-15, atol=0)
        assert np.linalg.matrix_rank(h) == 1
        # the only nonzero eigenvalue of a a^T is |a|^2, along a
        w, v = np.linalg.eigh(h)
        assert np.isclose(w[-1], a @ a, rtol=1e-12)
        assert np.isclose(abs(v[:, -1] @ a), np.linalg.norm(a), rtol=1e-12)


def test_rank_one_instance_draws_what_the_chapters_drew():
    # the definition the chapters of Part II had, with a fresh generator
    for seed, spread in [(0, 0.5), (7, 1.0), (12, 0.0)]:
        rng = np.random.default_rng(seed)
        grads = rng.standard_normal((10, 6)) * np.exp(spread * rng.standard_normal((10, 1)))
        inst = rank_one_instance(np.random.default_rng(seed), 10, 6, spread)
        assert np.array_equal(inst.gradients, grads)
        assert np.array_equal(inst.hessians, np.einsum("ni,nj->nij", grads, grads))


def test_rank_one_spread_zero_gives_gaussian_gradients_and_spread_widens_norms():
    grads = rank_one_instance(5, 4, 3, spread=0.0).gradients
    assert np.array_equal(grads, np.random.default_rng(5).standard_normal((4, 3)))
    # log-norms: a larger spread gives a larger standard deviation across samples
    tight = np.log(np.linalg.norm(rank_one_instance(1, 4000, 3, 0.1).gradients, axis=1)).std()
    wide = np.log(np.linalg.norm(rank_one_instance(1, 4000, 3, 1.0).gradients, axis=1)).std()
    assert wide > 2 * tight


def test_rank_one_hessians_are_those_of_the_instance():
    for seed in (0, 1, 2):
        hs = rank_one_hessians(np.random.default_rng(seed), 8, 3)
        assert np.array_equal(hs, rank_one_instance(np.random.default_rng(seed), 8, 3).hessians)
    # same stream consumption: the next draw after either call is the same
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    rank_one_hessians(a, 5, 2, spread=0.7)
    rank_one_instance(b, 5, 2, spread=0.7)
    assert a.random() == b.random()


def test_rank_one_instance_is_a_named_pair():
    inst = rank_one_instance(0, 3, 2)
    assert isinstance(inst, RankOneInstance)
    grads, hs = inst
    assert grads is inst.gradients and hs is inst.hessians and inst[1] is hs


def test_exponential_rank_one_instance():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((9, 4)) * rng.exponential(1.0, (9, 1))
    grads, hs = exponential_rank_one_instance(np.random.default_rng(4), 9, 4)
    assert np.array_equal(grads, a)
    assert_symmetric_psd(hs)
    assert all(np.linalg.matrix_rank(h) == 1 for h in hs)
    assert np.allclose(hs.mean(axis=0), a.T @ a / 9, rtol=1e-12, atol=1e-14)


# --- seeds ----------------------------------------------------------------------------


GENERATORS = [
    lambda rng: rank_one_instance(rng, 6, 3),
    lambda rng: exponential_rank_one_instance(rng, 6, 3),
    lambda rng: adaptive_sgd_samples(rng, 5, 3, 2),
    lambda rng: kronecker_system(rng, 3, 2),
    lambda rng: dominant_direction_hessians(rng, 6, 3),
    lambda rng: incoherent_hessians(rng, 6, 3),
    lambda rng: regular_minimum_instance(rng, 8, 4, 2),
]


def _arrays(result):
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("make", GENERATORS)
def test_seed_and_generator_reproducible(make):
    by_seed = _arrays(make(11))
    again = _arrays(make(11))
    by_generator = _arrays(make(np.random.default_rng(11)))
    other = _arrays(make(12))
    for x, y, z in zip(by_seed, again, by_generator, strict=True):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    assert not all(np.array_equal(x, w) for x, w in zip(by_seed, other, strict=True))


@pytest.mark.parametrize("make", GENERATORS)
def test_generator_is_advanced_in_place(make):
    rng = np.random.default_rng(0)
    first, second = _arrays(make(rng)), _arrays(make(rng))
    assert not all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def test_as_generator():
    rng = np.random.default_rng(1)
    assert as_generator(rng) is rng
    assert as_generator(np.int64(3)).random() == np.random.default_rng(3).random()
    for bad in ("0", 1.0, True, None, np.random.RandomState(0)):
        with pytest.raises(TypeError, match="rng"):
            as_generator(bad)
    with pytest.raises(ValueError, match="rng"):
        as_generator(-1)


# --- adaptive SGD ---------------------------------------------------------------------


@pytest.mark.parametrize("n, d, b", [(5, 3, 2), (4, 2, 1), (4, 2, 4)])
def test_adaptive_sgd_samples_are_diagonally_preconditioned_batch_hessians(n, d, b):
    samples = adaptive_sgd_samples(np.random.default_rng(3), n, d, b)
    batches = list(itertools.combinations(range(n), b))
    assert samples.shape == (math.comb(n, b), d, d)
    # the Hessians are drawn first, exactly as rank_one_hessians draws them
    hs = rank_one_hessians(np.random.default_rng(3), n, d)
    for A, batch in zip(samples, batches, strict=True):
        batch_mean = hs[list(batch)].mean(axis=0)
        ratio = A / batch_mean  # row i is p_i times the batch mean: constant along rows
        assert np.all(ratio > 0)
        assert np.allclose(ratio, ratio[:, :1], rtol=1e-12)
        # P H with P > 0 diagonal and H PSD: real, non-negative eigenvalues
        eig = np.linalg.eigvals(A)
        assert np.allclose(eig.imag, 0, atol=1e-10 * np.abs(A).max())
        assert eig.real.min() >= -1e-10 * np.abs(A).max()


def test_adaptive_sgd_samples_are_not_symmetric():
    samples = adaptive_sgd_samples(0, 5, 3, 2)
    assert not np.allclose(samples, samples.transpose(0, 2, 1))


# --- Kronecker systems ----------------------------------------------------------------


def test_kronecker_system():
    mats, Q = kronecker_system(np.random.default_rng(1), 4, 3)
    assert isinstance(kronecker_system(1, 4, 3), KroneckerSystem)
    assert mats.shape == (3, 4, 4) and Q.shape == (16, 16)
    assert np.array_equal(mats, mats.transpose(0, 2, 1))
    assert any(np.linalg.eigvalsh(a).min() < 0 for a in mats)  # indefinite, in general
    X = np.random.default_rng(2).standard_normal((4, 4))
    assert np.allclose(Q @ X.reshape(-1), sum(a @ X @ a for a in mats).reshape(-1), rtol=1e-12)
    evals = np.linalg.eigvalsh(Q)
    assert np.allclose(Q, Q.T, rtol=0, atol=1e-12 * np.abs(Q).max())
    assert evals[-1] >= abs(evals[0])  # Theorem 6, item 2


def test_kronecker_system_draws_what_chapter_7_drew():
    rng = np.random.default_rng(1)
    mats = rng.standard_normal((4, 5, 5))
    mats = mats + mats.transpose(0, 2, 1)
    got = kronecker_system(np.random.default_rng(1), d=5, m=4)
    assert np.array_equal(got.matrices, mats)
    assert np.array_equal(got.operator, sum(np.kron(a, a) for a in mats))


# --- the two families of chapter 7 ------------------------------------------------------


@pytest.mark.parametrize("n, d", [(12, 4), (3, 2), (20, 6)])
def test_dominant_direction_hessians(n, d):
    hs = dominant_direction_hessians(np.random.default_rng(n + d), n, d)
    assert hs.shape == (n, d, d)
    assert_symmetric_psd(hs)
    H = hs.mean(axis=0)
    v = np.linalg.eigh(H)[1][:, -1]
    curv = np.einsum("a,nab,b->n", v, hs, v)  # c_i^2
    # v is an eigenvector of every H_i, with eigenvalue c_i^2 ...
    assert np.allclose(hs @ v, curv[:, None] * v, atol=1e-12 * np.abs(hs).max())
    # ... and what is left is one shared G with G v = 0, lambda_max(G) = mean(c^2) / 2
    G = hs - curv[:, None, None] * np.outer(v, v)
    assert np.allclose(G, G[0], atol=1e-12 * np.abs(hs).max())
    assert np.isclose(np.linalg.eigvalsh(G[0])[-1], 0.5 * curv.mean(), rtol=1e-10)
    scale = np.abs(hs).max()
    assert np.allclose(G[0] @ v, 0, atol=1e-12 * scale)
    assert np.linalg.matrix_rank(G[0], tol=1e-8 * scale) == d - 1


def test_incoherent_hessians():
    hs = incoherent_hessians(np.random.default_rng(9), 30, 4)
    assert hs.shape == (30, 4, 4)
    assert_symmetric_psd(hs)
    spectra = np.linalg.eigvalsh(hs)
    assert np.allclose(spectra, spectra[0], rtol=1e-10)  # one spectrum ...
    tops = np.abs(np.linalg.eigh(hs)[1][:, :, -1])
    assert np.ptp(tops[:, 0]) > 0.3  # ... in unrelated bases


def test_families_draw_what_chapter_7_drew():
    rng = np.random.default_rng(9)
    spectrum = rng.exponential(1.0, 4)
    rotations = np.linalg.qr(rng.standard_normal((80, 4, 4)))[0]
    expected = np.einsum("nab,b,ncb->nac", rotations, spectrum, rotations)
    assert np.array_equal(incoherent_hessians(np.random.default_rng(9), 80, 4), expected)


# --- the regular minimum of chapter 8 ---------------------------------------------------


@pytest.mark.parametrize("n, d, rank", [(16, 5, 3), (6, 4, 4), (10, 3, 1)])
def test_regular_minimum_instance(n, d, rank):
    m = regular_minimum_instance(np.random.default_rng(4), n, d, rank)
    assert isinstance(m, RegularMinimum)
    assert m.hessians.shape == (n, d, d) and m.gradients.shape == (n, d)
    assert m.range_basis.shape == (d, rank) and m.null_basis.shape == (d, d - rank)
    basis = np.hstack([m.range_basis, m.null_basis])
    assert np.allclose(basis.T @ basis, np.eye(d), atol=1e-12)
    assert_symmetric_psd(m.hessians)
    H = m.hessians.mean(axis=0)
    assert np.linalg.matrix_rank(H) == rank
    assert np.allclose(H @ m.null_basis, 0, atol=1e-12)
    assert np.allclose(m.hessians, np.einsum("ni,nj->nij", m.features, m.features))
    # theta* is the minimum-norm least-squares solution, and it does not interpolate
    assert np.allclose(m.theta_star, np.linalg.pinv(m.features) @ m.labels, rtol=1e-10)
    assert np.allclose(m.residuals, m.features @ m.theta_star - m.labels)
    assert np.abs(m.residuals).max() > 1e-3
    # a minimum: the per-sample gradients average to zero; the pulls lie in the null space
    assert np.abs(m.gradients.mean(axis=0)).max() < 1e-12
    pulls = m.gradients - m.residuals[:, None] * m.features
    assert np.allclose(pulls @ m.range_basis, 0, atol=1e-12)


def test_regular_minimum_draws_what_chapter_8_drew():
    rng = np.random.default_rng(4)
    n, d, rank = 16, 5, 3
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    range_basis, null_basis = basis[:, :rank], basis[:, rank:]
    features = rng.standard_normal((n, rank)) @ range_basis.T
    labels = features @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    theta_star = np.linalg.lstsq(features, labels, rcond=None)[0]
    residuals = features @ theta_star - labels
    pulls = rng.standard_normal((n, d - rank)) @ null_basis.T
    pulls -= pulls.mean(axis=0)
    gradients = residuals[:, None] * features + 0.3 * pulls
    m = regular_minimum_instance(np.random.default_rng(4), n, d, rank)
    assert np.array_equal(m.gradients, gradients) and np.array_equal(m.labels, labels)
    assert np.array_equal(m.hessians, np.einsum("ni,nj->nij", features, features))


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: rank_one_instance("seed", 3, 2), TypeError, "rng"),
        (lambda: rank_one_instance(0, 0, 2), ValueError, "n"),
        (lambda: rank_one_instance(0, 3, 2.0), TypeError, "d"),
        (lambda: rank_one_instance(0, 3, 2, spread=-0.1), ValueError, "spread"),
        (lambda: rank_one_instance(0, 3, 2, spread=np.inf), ValueError, "spread"),
        (lambda: rank_one_hessians(0, 3, 2, spread="wide"), TypeError, "spread"),
        (lambda: exponential_rank_one_instance(0, 3, 0), ValueError, "d"),
        (lambda: adaptive_sgd_samples(0, 4, 2, 5), ValueError, "batch_size"),
        (lambda: adaptive_sgd_samples(0, 4, 2, 0), ValueError, "batch_size"),
        (lambda: kronecker_system(0, 3, 0), ValueError, "m"),
        (lambda: dominant_direction_hessians(0, 5, 1), ValueError, "d"),
        (lambda: incoherent_hessians(0, True, 3), TypeError, "n"),
        (lambda: regular_minimum_instance(0, 8, 3, 4), ValueError, "rank"),
        (lambda: regular_minimum_instance(0, 8, 3, 0), ValueError, "rank"),
        (lambda: regular_minimum_instance(0, 8, 3, 2, noise_std=-1.0), ValueError, "noise_std"),
        (lambda: regular_minimum_instance(0, 8, 3, 2, pull=np.nan), ValueError, "pull"),
    ],
)
def test_invalid_arguments_are_named(call, error, name):
    with pytest.raises(error, match=rf"^{name} must"):
        call()
