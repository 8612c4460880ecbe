"""The Curvature object: every route against brute force from the definitions.

The reference (tests/references.py) never touches the package: it enumerates every batch
and bisects on the spectral radius of the full d^2 x d^2 second-moment matrix. The
bisection runs to 1e-12 and the radius moves by O(eta * lambda) per relative change of
eta, so agreement to 1e-8 relative is what the numerics allow.
"""

from __future__ import annotations

import itertools
import math
import pathlib

import numpy as np
import pytest
from references import brute_force_threshold

from companion.stability import bounds, thresholds
from companion.stability.curvature import (
    RANGE_RTOL,
    Curvature,
    noise_covariance,
    range_mask,
)

RTOL = 1e-8


def random_jacobians(rng, n, k, d, rank=None):
    jac = rng.standard_normal((n, k, d))
    if rank is not None:  # all rows in a rank-dimensional subspace: H singular
        basis = np.linalg.qr(rng.standard_normal((d, rank)))[0]
        jac = jac @ basis @ basis.T
    return jac


def random_loss_hessians(rng, n, k, rank=None):
    root = rng.standard_normal((n, rank or k, k))
    return np.einsum("nak,nal->nkl", root, root)


INSTANCES = {
    "full rank, d=3": dict(n=5, k=1, d=3, rank=None),
    "rank-deficient, d=5": dict(n=4, k=1, d=5, rank=3),
    "K=2, nK > d": dict(n=5, k=2, d=4, rank=None),
    "K=3, nK < d": dict(n=3, k=3, d=12, rank=None),
}


def _hessians(jac, lam):
    return np.einsum("nkd,nkl,nle->nde", jac, lam, jac)


@pytest.mark.parametrize("name", list(INSTANCES))
@pytest.mark.parametrize("replacement", [False, True])
def test_every_route_matches_brute_force(name, replacement):
    spec = INSTANCES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    jac = random_jacobians(rng, spec["n"], spec["k"], spec["d"], spec["rank"])
    lam = random_loss_hessians(rng, spec["n"], spec["k"], rank=max(1, spec["k"] - 1))
    hs = _hessians(jac, lam)
    n = spec["n"]
    routes = {
        "hessians": Curvature.from_hessians(hs),
        "jacobians": Curvature.from_jacobians(jac, lam),
    }
    weighted = np.einsum("nkl,nld->nkd", _sqrt_psd(lam), jac).reshape(n * spec["k"], -1)
    routes["gram"] = Curvature.from_gram(weighted @ weighted.T, num_outputs=spec["k"])
    for b in sorted({1, 2, n - 1, n}):  # n = 5 or 3: 2 does not divide n
        reference = brute_force_threshold(hs, b, replacement)
        for route, curv in routes.items():
            for method in ("dense", "lanczos"):
                value = curv.ms_threshold(b, replacement, method=method)
                assert value == pytest.approx(reference, rel=RTOL), (route, method, b)


def _sqrt_psd(mats):
    w, q = np.linalg.eigh(mats)
    return np.sqrt(np.clip(w, 0, None))[..., :, None] * np.swapaxes(q, -1, -2)


def test_sum_reduction_divides_by_batch_size():
    rng = np.random.default_rng(1)
    jac = random_jacobians(rng, 6, 2, 5)
    mean = Curvature.from_jacobians(jac)
    total = Curvature.from_jacobians(jac, reduction="sum")
    hs = _hessians(jac, np.broadcast_to(np.eye(2), (6, 2, 2)))
    for b in (1, 3, 4):
        # brute force with the step of the summed loss: eta * sum_i grad = eta * B * mean
        reference = brute_force_threshold(hs, b, False, lr_scale=b)
        assert total.ms_threshold(b) == pytest.approx(reference, rel=RTOL)
        assert total.ms_threshold(b) == pytest.approx(mean.ms_threshold(b) / b, rel=1e-12)
    top = float(np.linalg.eigvalsh(hs.mean(axis=0))[-1])
    assert total.gd_threshold() == pytest.approx(2 / (6 * top), rel=1e-12)


def test_mse_mean_convention_scales_by_k_over_2():
    """MSELoss(mean) over K outputs: l_i = |f - y|^2 / K, Lambda = (2/K) I: eta* x K/2."""
    rng = np.random.default_rng(2)
    k = 4
    jac = random_jacobians(rng, 5, k, 7)
    half = Curvature.from_jacobians(jac)
    mse = Curvature.from_jacobians(jac, np.full((5, k), 2.0 / k))
    for b in (1, 2, 5):
        assert mse.ms_threshold(b) == pytest.approx(half.ms_threshold(b) * k / 2, rel=1e-10)


def test_statistics_against_dense_definitions():
    rng = np.random.default_rng(3)
    jac = random_jacobians(rng, 6, 2, 5, rank=4)
    hs = _hessians(jac, np.broadcast_to(np.eye(2), (6, 2, 2)))
    h = hs.mean(axis=0)
    sigma = noise_covariance(hs)  # dense definition, no Curvature
    for curv in (Curvature.from_hessians(hs), Curvature.from_jacobians(jac)):
        assert curv.rank == 4
        assert curv.sharpness == pytest.approx(np.linalg.eigvalsh(h)[-1], rel=1e-12)
        assert curv.trace == pytest.approx(np.trace(h), rel=1e-12)
        top_sigma = np.linalg.eigvalsh(sigma)[-1]
        assert curv.non_uniformity == pytest.approx(math.sqrt(top_sigma), rel=1e-10)
        np.testing.assert_allclose(curv.mean_hessian(), h, atol=1e-12 * np.abs(h).max())
        assert curv.worst_alignment_factor() == pytest.approx(
            bounds.worst_alignment_factor(jac), rel=1e-8
        )
    res = rng.standard_normal((6, 2))
    assert Curvature.from_jacobians(jac).alignment_factor(res) == pytest.approx(
        bounds.alignment_factor(jac, res), rel=1e-10
    )


def test_necessary_bounds_against_their_formulas_and_tight_instance():
    rng = np.random.default_rng(4)
    hs = _hessians(random_jacobians(rng, 5, 1, 4), np.ones((5, 1, 1)))
    n = 5
    h = hs.mean(axis=0)
    w, v = np.linalg.eigh(h)
    lam, top = w[-1], v[:, -1]
    for b, repl in ((1, False), (2, True), (3, False)):
        p = 1 / b if repl else (n - b) / (b * (n - 1))
        forms = np.einsum("a,nab,b->n", top, hs, top)
        eq15 = 2 * lam / (lam**2 + p * np.mean((forms - lam) ** 2))
        fro = np.mean([np.sum(x * x) for x in hs])
        eq16 = 2 * np.trace(h) / ((1 - p) * np.sum(h * h) + p * fro)
        got = thresholds.ms_necessary_bounds(hs, b, repl)
        assert got.top_eigenvector == pytest.approx(eq15, rel=1e-10)
        assert got.trace == pytest.approx(eq16, rel=1e-10)
        exact = brute_force_threshold(hs, b, repl)
        assert got.best >= exact * (1 - 1e-9)  # upper bounds on eta*
        value, direction = thresholds.rank_one_bound(hs, b, repl)
        assert 2 / value >= exact * (1 - 1e-9)
        assert np.linalg.norm(direction) == pytest.approx(1.0)
    # tight: disjoint coordinate curvatures, B = 1: the maximiser is rank one (e_2)
    hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])
    exact = brute_force_threshold(hs, 1, False)
    assert 2 / thresholds.rank_one_bound(hs, 1).value == pytest.approx(exact, rel=1e-8)
    assert thresholds.ms_necessary_bounds(hs, 1).top_eigenvector == pytest.approx(exact, rel=1e-8)


def test_curve_and_front_door_reuse_one_object():
    rng = np.random.default_rng(5)
    hs = _hessians(random_jacobians(rng, 6, 1, 3), np.ones((6, 1, 1)))
    curv = Curvature.from_hessians(hs)
    curve = thresholds.ms_threshold_curve(curv, [1, 2, 6])
    for b, value in zip([1, 2, 6], curve, strict=True):
        assert value == pytest.approx(brute_force_threshold(hs, b, False), rel=RTOL)
    assert curve[-1] == pytest.approx(curv.gd_threshold(), rel=1e-12)  # B = n is GD


def test_zero_curvature():
    curv = Curvature.from_hessians(np.zeros((3, 2, 2)))
    assert curv.rank == 0 and curv.sharpness == 0.0
    assert math.isinf(curv.ms_threshold(1)) and math.isinf(curv.gd_threshold())
    assert math.isinf(curv.necessary_bounds(1).best)


def test_rank_rule_is_defined_once():
    assert range_mask([0.0, RANGE_RTOL * 0.5, 1.0]).tolist() == [False, False, True]
    root = pathlib.Path(__file__).resolve().parents[1] / "src" / "companion"
    defining = [p.name for p in root.rglob("*.py") if "RANGE_RTOL =" in p.read_text()]
    assert defining == ["curvature.py"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Curvature.from_hessians(np.eye(2)[None], reduction="none"), "reduction"),
        (lambda: Curvature.from_gram(np.array([[1.0, 2.0], [0.0, 1.0]])), "symmetric"),
        (lambda: Curvature.from_gram(np.eye(3), num_outputs=2), "divisible"),
        (lambda: Curvature.from_gram(-np.eye(2)), "positive semi-definite"),
        (lambda: Curvature.from_jacobians(np.ones((2, 2, 3)), -np.ones((2, 2, 2))), "Λ|PSD|semi"),
        (lambda: Curvature.from_jacobians(np.ones((2, 2, 3)), np.ones((3, 2))), "loss_hessians"),
        (lambda: Curvature.from_hessians(np.eye(2)[None]).ms_threshold(1, method="x"), "method"),
        (lambda: Curvature.from_hessians(np.eye(2)[None]).ms_threshold(2), "batch_size"),
        (lambda: Curvature.from_gram(np.eye(2)).mean_hessian(), "Gram"),
        (lambda: Curvature.from_hessians(np.eye(2)[None]).ms_threshold_curve([]), "batch_sizes"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_kth_order_on_singular_hessian_includes_lower_orders():
    """Issue: y (x) y (x) z with z in null(H) evolves like T_2, so eta_3 <= eta_2."""
    rng = np.random.default_rng(6)
    jac = random_jacobians(rng, 4, 1, 3, rank=2)
    hs = _hessians(jac, np.ones((4, 1, 1)))
    b = 1
    eta3 = thresholds.kth_order_threshold(hs, b, 3)
    # brute force: T_3 = E[(I - eta H_b)^{(x)3}] in the full 27-dim space, projected on
    # symmetric tensors; first rate where its spectral radius exceeds 1
    d = 3
    sym = np.zeros((d**3, d**3))
    for perm in itertools.permutations(range(3)):
        sym += np.eye(d**3).reshape((d,) * 6).transpose(*perm, 3, 4, 5).reshape(d**3, d**3)
    sym /= 6

    def radius(lr):
        mats = [np.eye(d) - lr * hs[i] for i in range(4)]
        t3 = np.mean([np.kron(np.kron(m, m), m) for m in mats], axis=0)
        return float(np.max(np.abs(np.linalg.eigvalsh(sym @ t3 @ sym))))

    top = float(np.linalg.eigvalsh(hs.mean(axis=0))[-1])
    grid = np.linspace(0, 2.2 / top, 2000)[1:]
    first = next(lr for lr in grid if radius(lr) > 1 + 1e-10)
    lo, hi = first - grid[0], first
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if radius(mid) <= 1 + 1e-10 else (lo, mid)
    assert eta3 == pytest.approx(lo, rel=1e-7)
    assert eta3 <= thresholds.ms_threshold(hs, b) * (1 + 1e-9)


def test_lanczos_leaves_blas_thread_counts_as_it_found_them(monkeypatch, request):
    """ARPACK runs single-threaded inside the Lanczos route; the caller's BLAS thread counts
    are restored afterwards, also when ARPACK fails, and the operator products ran with them."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.sparse.linalg as spla

    from companion.stability import curvature as curvature_module

    def blas_threads():
        return [lib.num_threads for lib in threadpoolctl.ThreadpoolController().select(
            user_api="blas").lib_controllers]  # fmt: skip

    limits = threadpoolctl.threadpool_limits(limits=2, user_api="blas")  # teeth on 1-core CI
    request.addfinalizer(limits.restore_original_limits)
    before = blas_threads()
    assert all(count == 2 for count in before)
    rng = np.random.default_rng(5)
    jac = random_jacobians(rng, 8, 2, 12)
    curv = Curvature.from_jacobians(jac)
    dense = curv.generalized_sharpness(2, method="dense")
    seen = []
    noise = curv._noise

    def recording_noise(x):
        seen.append(blas_threads())
        return noise(x)

    monkeypatch.setattr(curv, "_noise", recording_noise)
    assert curv.generalized_sharpness(2, method="lanczos") == pytest.approx(dense, rel=1e-9)
    assert blas_threads() == before
    assert seen and all(counts == before for counts in seen)

    def failing_eigsh(*args, **kwargs):
        raise spla.ArpackError(-9999)

    monkeypatch.setattr(curvature_module.spla, "eigsh", failing_eigsh)
    with pytest.raises(spla.ArpackError):
        Curvature.from_jacobians(jac).generalized_sharpness(2, method="lanczos")
    assert blas_threads() == before
