r"""Stability thresholds of linearised SGD: exact, sufficient, necessary and higher order.

At an interpolating minimum with per-sample Hessians :math:`H_i` (symmetric PSD),
:math:`H = \frac1n\sum_iH_i` and batch-noise factor :math:`p`, the second moment of
linearised SGD evolves by :math:`Q = I - 2\eta C + \eta^2 D` with

.. math::

    C = \tfrac12(H\otimes I + I\otimes H), \qquad
    D = (1 - p)H\otimes H + p\,\tfrac1n\textstyle\sum_i H_i\otimes H_i

(``operators.kron_operators``). SGD is mean-square stable iff
:math:`\eta \le \eta^* = 2/\lambda_{\max}(C^\dagger D)` (:cite:p:`mulayoff2024exact` Thm 3);
:math:`\lambda_{\max}(C^\dagger D)` is the *generalized sharpness*.

Every exact route first restricts to :math:`\mathrm{range}(H)`: for PSD :math:`H_i`,
:math:`\mathrm{null}(H) = \bigcap_i\mathrm{null}(H_i)`, so :math:`D` maps every matrix into
:math:`\mathrm{range}(H)\otimes\mathrm{range}(H)` and vanishes on any matrix with a row or
column space in :math:`\mathrm{null}(H)`; the non-zero eigenvalues of :math:`C^\dagger D` are those
of the restriction. On that range :math:`C` is invertible. Three routes compute
:math:`\lambda_{\max}(C^\dagger D)`:

* ``"dense"``: the :math:`r^2\times r^2` generalized symmetric-definite eigenproblem
  :math:`Dv = \lambda Cv` (:math:`r = \mathrm{rank}\,H`), :math:`O(r^6)`;
* ``"eigenbasis"``: Lanczos on :math:`X\mapsto C^{-1/2}D(C^{-1/2}X)` acting on
  :math:`r\times r` matrices in the eigenbasis of :math:`H`, :math:`O(nr^3)` per product;
* the Gram route (``ms_threshold_gn``) for Gauss-Newton Hessians :math:`H_i = J_i^\top J_i`,
  in the basis of the :math:`nK\times nK` Gram matrix, :math:`O(nKr^2)` per product with
  :math:`r \le nK`, whatever :math:`d` is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from ._validation import (
    as_float_array,
    as_hessians,
    as_jacobians,
    check_dense_size,
    check_lr,
    check_positive_int,
    check_replacement,
)
from .curvature import gd_threshold, mean_hessian, noise_covariance
from .operators import _moment_operator_coefficients, kron_operators
from .sampling import batch_noise_factor

__all__ = [
    "NecessaryBounds",
    "generalized_sharpness",
    "generalized_sharpness_gn",
    "kth_order_threshold",
    "mean_threshold",
    "ms_necessary_bounds",
    "ms_necessary_bounds_gn",
    "ms_threshold",
    "ms_threshold_bisection",
    "ms_threshold_gn",
    "rank_one_bound",
    "rank_one_bound_gn",
    "wu_condition",
]

#: Eigenvalues of H (or of the Gram matrix) at most this times the largest are treated as 0.
#: Rounding leaves the null-space eigenvalues of a sum of PSD matrices at about
#: d * eps * lambda_max (~1e-13 relative for d ~ 1e3); 1e-10 sits well above that. Dropping a
#: genuine eigenvalue lambda_a this small changes the generalized sharpness by O(n lambda_a):
#: every quadratic form of H_i <= n H is O(n lambda_a) on that direction.
_RANGE_RTOL = 1e-10
#: Pivoted Cholesky of U_r^T H_i U_r = F_i F_i^T stops when every remaining pivot is at most
#: this times the largest diagonal entry. The discarded Schur complement R_i is PSD with
#: ||R_i|| <= tr R_i <= r * 1e-13 * max diag; for an exactly low-rank H_i it is rounding
#: (about k * eps relative). Dropping it lowers D by at most 2 p n ||R_i|| C (Loewner order),
#: i.e. the generalized sharpness by a relative 2 p n^2 r * 1e-13 at the very worst.
_FACTOR_RTOL = 1e-13
#: ARPACK relative residual tolerance. For a symmetric operator some eigenvalue lies within
#: the residual norm of the Ritz value (and within residual**2 / gap when the top eigenvalue
#: is separated), so the result is accurate to 1e-10 relative or better: two orders below
#: the 1e-8 agreement the tests ask for. (1e-12 costs ~15% more products for no visible
#: change in the value.)
_LANCZOS_TOL = 1e-10
#: Up to this many unknowns (r^2) the operator is applied to every basis vector and
#: diagonalised: ARPACK needs a Krylov space larger than its block size.
_SMALL_OPERATOR = 9
#: method="auto" of ms_threshold uses the dense eigenproblem up to this rank (r^2 = 400).
_DENSE_AUTO_RANK = 20
_THRESHOLD_METHODS = ("auto", "dense", "eigenbasis")

#: Full-batch GD threshold 2 / lambda_max(H) (:cite:p:`mulayoff2024exact` Thm 1).
mean_threshold = gd_threshold


# --------------------------------------------------------------------------------------
# the problem restricted to range(H)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Reduced:
    r"""Per-sample curvature restricted to :math:`\mathrm{range}(H)`, in H's eigenbasis.

    ``lam``: the ``r`` positive eigenvalues of ``H``; ``noise(X)`` returns
    :math:`\frac1n\sum_i\tilde U_iX\tilde U_i`; ``forms(c)`` the ``n`` values
    :math:`c^\top\tilde U_ic`; ``form_grad(w, c)`` returns :math:`\sum_iw_i\tilde U_ic`;
    ``to_original(c)`` maps coordinates to a vector of :math:`\mathbb R^d`;
    ``matrices()`` the stack :math:`\tilde U_i` (r, r).
    """

    lam: np.ndarray
    n: int
    noise: Callable[[np.ndarray], np.ndarray]
    forms: Callable[[np.ndarray], np.ndarray]
    form_grad: Callable[[np.ndarray, np.ndarray], np.ndarray]
    to_original: Callable[[np.ndarray], np.ndarray]
    matrices: Callable[[], np.ndarray]


def _kept(eigenvalues: np.ndarray) -> np.ndarray:
    top = eigenvalues[-1] if eigenvalues.size else 0.0
    if top <= 0:
        return np.zeros(eigenvalues.shape, dtype=bool)
    return eigenvalues > _RANGE_RTOL * top


def _reduce_hessians(hs: np.ndarray) -> _Reduced:
    n = hs.shape[0]
    lam, vecs = np.linalg.eigh(hs.mean(axis=0))
    keep = _kept(lam)
    lam, basis = lam[keep], vecs[:, keep]
    small = basis.T @ hs @ basis  # (n, r, r): U_r^T H_i U_r
    small = 0.5 * (small + np.swapaxes(small, 1, 2))
    r = lam.size
    factors = _low_rank_factors(small)
    factors_t = None if factors is None else np.ascontiguousarray(np.swapaxes(factors, 1, 2))

    def noise(x: np.ndarray) -> np.ndarray:
        if factors is None:
            # sum_i U_i X U_i as one GEMM: [U_1 X, ..., U_n X] (r x nr) @ [U_1; ...; U_n]
            left = (small @ x).transpose(1, 0, 2).reshape(r, n * r)
            return left @ small.reshape(n * r, r) / n
        # U_i = F_i F_i^T: sum_i F_i (F_i^T X F_i) F_i^T, O(n k r^2) instead of O(n r^3).
        # Every batched product runs on C-contiguous stacks, so numpy hands it to BLAS.
        k = factors.shape[2]
        inner = factors_t @ (x @ factors)  # (n, k, k)
        left = (factors @ inner).transpose(1, 0, 2).reshape(r, n * k)
        return left @ factors_t.reshape(n * k, r) / n

    return _Reduced(
        lam=lam,
        n=n,
        noise=noise,
        forms=lambda c: np.einsum("nab,a,b->n", small, c, c),
        form_grad=lambda w, c: np.einsum("n,nab,b->a", w, small, c),
        to_original=lambda c: basis @ c,
        matrices=lambda: small,
    )


def _low_rank_factors(small: np.ndarray) -> np.ndarray | None:
    r"""Factors :math:`F_i` (n, r, k) with :math:`\tilde U_i = F_iF_i^\top`, if all ranks are low.

    Rank-revealing pivoted Cholesky (LAPACK ``dpstrf``, :math:`O(r^2k)` per sample) stops
    once every remaining pivot is at most ``_FACTOR_RTOL`` times the largest diagonal entry.
    Returns ``None`` (use the plain product) unless the largest rank ``k`` is at most
    ``r / 4``, where the factored product pays off.
    """
    n, r, _ = small.shape
    if r < 8:
        return None
    pieces = []
    for mat in small:
        top = float(np.max(np.diag(mat)))
        if top <= 0:
            pieces.append(np.zeros((r, 0)))
            continue
        chol, piv, rank, _ = scipy.linalg.lapack.dpstrf(mat, tol=_FACTOR_RTOL * top, lower=1)
        if rank > r // 4:
            return None
        factor = np.empty((r, rank))
        factor[piv - 1] = np.tril(chol)[:, :rank]
        pieces.append(factor)
    k = max(1, max(f.shape[1] for f in pieces))
    out = np.zeros((n, r, k))
    for i, f in enumerate(pieces):
        out[i, :, : f.shape[1]] = f
    return out


def _gram_matrix(jac: np.ndarray) -> np.ndarray:
    """J J^T of the stacked (nK, d) Jacobian, with one symmetric rank-k update (syrk)."""
    n, k, d = jac.shape
    flat = jac.reshape(n * k, d)
    check_dense_size((n * k) ** 2, f"the {n * k} x {n * k} Gram matrix", "fewer samples")
    # dsyrk with trans=1 computes a^T a; flat.T is Fortran-ordered, so nothing is copied.
    upper = scipy.linalg.blas.dsyrk(1.0, flat.T, trans=1)
    return np.triu(upper) + np.triu(upper, 1).T


def _as_gram(gram, num_outputs) -> tuple[np.ndarray, int, int]:
    g = as_float_array(gram, "gram", ndim=(2, 4))
    if g.ndim == 4:
        n, k, n2, k2 = g.shape
        if (n, k) != (n2, k2):
            raise ValueError(f"gram of 4 dimensions must have shape (n, K, n, K), got {g.shape}")
        if num_outputs is not None and num_outputs != k:
            raise ValueError(f"num_outputs = {num_outputs} does not match gram shape {g.shape}")
        g = g.reshape(n * k, n * k)
    else:
        k = 1 if num_outputs is None else check_positive_int(num_outputs, "num_outputs")
        rows, cols = g.shape
        if rows != cols or rows % k or rows == 0:
            raise ValueError(
                f"gram must be square with a side divisible by num_outputs = {k}, got {g.shape}"
            )
        n = rows // k
    scale = float(np.max(np.abs(g)))
    asym = float(np.max(np.abs(g - g.T)))
    if asym > 1e-8 * max(scale, 1e-300):
        raise ValueError(f"gram must be symmetric: largest |G - G^T| entry is {asym:.3g}")
    return 0.5 * (g + g.T), n, k


def _gram_input(jacobians, gram, num_outputs) -> tuple[np.ndarray | None, np.ndarray, int, int]:
    """Exactly one of ``jacobians`` (n, d) / (n, K, d) and ``gram``: (J or None, G, n, K)."""
    if (jacobians is None) == (gram is None):
        raise ValueError("give exactly one of jacobians and gram")
    if jacobians is None:
        g, n, k = _as_gram(gram, num_outputs)
        return None, g, n, k
    if num_outputs is not None:
        raise ValueError("num_outputs is read from the jacobians; give it only with gram")
    jac = as_jacobians(jacobians)
    n, k, _ = jac.shape
    return jac, _gram_matrix(jac), n, k


def _reduce_gauss_newton(jacobians, gram, num_outputs) -> _Reduced:
    r"""Gauss-Newton Hessians :math:`H_i = J_i^\top J_i` in the basis of the Gram matrix.

    With the stacked :math:`J` (:math:`nK\times d`) and :math:`G = JJ^\top = V\Gamma V^\top`,
    :math:`U_r = J^\top V_r\Gamma_r^{-1/2}` is an orthonormal eigenbasis of
    :math:`\mathrm{range}(H)`, :math:`H = U_r(\Gamma_r/n)U_r^\top`, and
    :math:`JU_r = V_r\Gamma_r^{1/2} =: A`, so :math:`U_r^\top H_iU_r = A_i^\top A_i` with
    :math:`A_i` the :math:`K` rows of sample :math:`i`. Nothing of size :math:`d` is formed
    besides :math:`J` and :math:`G`.
    """
    jac, g, n, k = _gram_input(jacobians, gram, num_outputs)
    gamma, vecs = np.linalg.eigh(g)
    if gamma.size and gamma[0] < -1e-8 * max(abs(gamma[-1]), 1e-300):
        raise ValueError(f"gram must be positive semi-definite: smallest eigenvalue {gamma[0]:.3g}")
    keep = _kept(gamma)
    gamma, vecs = gamma[keep], vecs[:, keep]
    r = gamma.size
    a = vecs * np.sqrt(gamma)  # (nK, r)
    a3 = a.reshape(n, k, r)
    a3_t = np.ascontiguousarray(np.swapaxes(a3, 1, 2))

    def noise(x: np.ndarray) -> np.ndarray:
        # (1/n) sum_i A_i^T (A_i X A_i^T) A_i, O(nK r^2)
        ax = (a @ x).reshape(n, k, r)
        if k == 1:
            weights = np.einsum("nr,nr->n", ax[:, 0], a3[:, 0])
            return a.T @ (weights[:, None] * a) / n
        inner = ax @ a3_t  # (n, K, K) = A_i X A_i^T, batched BLAS on contiguous stacks
        return a.T @ (inner @ a3).reshape(n * k, r) / n

    def forms(c: np.ndarray) -> np.ndarray:
        return np.sum((a @ c).reshape(n, k) ** 2, axis=1)

    def form_grad(w: np.ndarray, c: np.ndarray) -> np.ndarray:
        return a.T @ (np.repeat(w, k) * (a @ c))

    def to_original(c: np.ndarray) -> np.ndarray:
        if jac is None:
            raise ValueError("a vector of R^d needs the jacobians, not only their Gram matrix")
        return jac.reshape(n * k, -1).T @ (vecs @ (c / np.sqrt(gamma)))

    return _Reduced(
        lam=gamma / n,
        n=n,
        noise=noise,
        forms=forms,
        form_grad=form_grad,
        to_original=to_original,
        matrices=lambda: a3_t @ a3,
    )


# --------------------------------------------------------------------------------------
# generalized sharpness
# --------------------------------------------------------------------------------------
def _sharpness_dense(reduced: _Reduced, batch_size: int, replacement: bool) -> float:
    r = reduced.lam.size
    check_dense_size(
        3 * r**4,
        f"C and D on range(H) of rank {r}",
        "method='eigenbasis' or ms_threshold_gn (the 'gram' route)",
    )
    c, dd = kron_operators(reduced.matrices(), batch_size, replacement)
    # D v = lambda C v with C positive definite on range(H): a symmetric-definite problem,
    # so the eigenvalues of C^{-1} D are real and eigh returns them accurately.
    top = scipy.linalg.eigh(dd, c, eigvals_only=True, subset_by_index=[r * r - 1, r * r - 1])
    return float(top[0])


def _sharpness_lanczos(reduced: _Reduced, p: float) -> float:
    r"""Largest eigenvalue of :math:`A(X) = C^{-1/2}D(C^{-1/2}X)` on :math:`r\times r` matrices.

    In the eigenbasis :math:`C` scales entry :math:`(a, b)` by :math:`c_{ab} =
    (\lambda_a + \lambda_b)/2 > 0` and :math:`D(X) = (1-p)\Lambda X\Lambda + p\,\mathrm{noise}(X)`
    is symmetric PSD for the Frobenius inner product, so :math:`A` is symmetric PSD with the
    eigenvalues of :math:`C^{-1}D`.
    """
    lam = reduced.lam
    r = lam.size
    inv_sqrt_c = 1.0 / np.sqrt(0.5 * (lam[:, None] + lam[None, :]))

    def apply(vec: np.ndarray) -> np.ndarray:
        x = inv_sqrt_c * vec.reshape(r, r)
        out = (1.0 - p) * (lam[:, None] * x * lam[None, :])
        if p > 0:
            out = out + p * reduced.noise(x)
        return (inv_sqrt_c * out).reshape(-1)

    if r * r <= _SMALL_OPERATOR:
        mat = np.column_stack([apply(col) for col in np.eye(r * r)])
        return float(np.linalg.eigvalsh(0.5 * (mat + mat.T))[-1])
    # Seeded symmetric start: the top eigenvector is symmetric (MM Thm 6), and A commutes
    # with transposition, so the Krylov space stays among symmetric matrices. Weighting
    # u u^T (u the top eigenvector of H, the rank-one guess) saves ~15% of the products.
    rng = np.random.default_rng(0)
    g = rng.standard_normal((r, r))
    guess = g @ g.T / r**2
    guess[-1, -1] += 1.0
    start = guess / inv_sqrt_c
    op = spla.LinearOperator((r * r, r * r), matvec=apply, dtype=np.float64)
    try:
        top = spla.eigsh(op, k=1, which="LA", v0=start.reshape(-1), tol=_LANCZOS_TOL)[0]
    except spla.ArpackNoConvergence:
        # A nearly repeated top eigenvalue can stall the default Krylov space: widen it.
        top = spla.eigsh(
            op,
            k=1,
            which="LA",
            v0=start.reshape(-1),
            tol=_LANCZOS_TOL,
            ncv=min(r * r, 80),
            maxiter=100 * r * r,
        )[0]
    return float(top[0])


def _check_method(method: str) -> str:
    if method == "gram":
        raise ValueError(
            "method='gram' needs Jacobians: call ms_threshold_gn / generalized_sharpness_gn"
        )
    if method not in _THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {_THRESHOLD_METHODS}, got {method!r}")
    return method


def generalized_sharpness(
    hessians, batch_size: int, replacement: bool = False, method: str = "auto"
) -> float:
    r"""Generalized sharpness :math:`\lambda_{\max}(C^\dagger D) = 2/\eta^*`.

    (:cite:p:`mulayoff2024exact` Thm 3.) Equals :math:`\lambda_{\max}(H)` when :math:`p = 0` and
    is at least :math:`\lambda_{\max}(H)` otherwise. ``0.0`` when :math:`H = 0`.

    Parameters
    ----------
    hessians : array_like, shape (n, d, d)
        Per-sample Hessians (symmetric PSD).
    batch_size : int
        Batch size :math:`B`.
    replacement : bool
        Sampling scheme (see ``batch_noise_factor``).
    method : {"auto", "dense", "eigenbasis"}
        ``"dense"``: generalized eigenproblem :math:`Dv = \lambda Cv` on
        :math:`\mathrm{range}(H)^{\otimes 2}` (:math:`r^2\times r^2`, :math:`r =
        \mathrm{rank}\,H`). ``"eigenbasis"``: matrix-free Lanczos in the eigenbasis of
        :math:`H`, :math:`O(nr^3)` per product. ``"auto"``: dense for :math:`r \le 20`.
        For Gauss-Newton Hessians with large :math:`d` use ``generalized_sharpness_gn``.
    """
    hs = as_hessians(hessians)
    replacement = check_replacement(replacement)
    p = batch_noise_factor(hs.shape[0], batch_size, replacement)
    method = _check_method(method)
    reduced = _reduce_hessians(hs)
    r = reduced.lam.size
    if r == 0:
        return 0.0
    if method == "auto":
        method = "dense" if r <= _DENSE_AUTO_RANK else "eigenbasis"
    if method == "dense":
        return _sharpness_dense(reduced, batch_size, replacement)
    return _sharpness_lanczos(reduced, p)


def _threshold_from_sharpness(value: float) -> float:
    return math.inf if value <= 0 else 2.0 / value


def ms_threshold(
    hessians, batch_size: int, replacement: bool = False, method: str = "auto"
) -> float:
    r"""Exact mean-square stability threshold :math:`\eta^* = 2/\lambda_{\max}(C^\dagger D)`.

    Linearised SGD at an interpolating minimum is mean-square stable
    (:math:`\sup_t\mathbb E\|x_t\|^2 < \infty` for every start) iff :math:`\eta \le \eta^*`
    (:cite:p:`mulayoff2024exact` Thm 3). :math:`\eta^* = 2/\lambda_{\max}(H)` for :math:`p = 0`
    and :math:`\eta^*` is non-decreasing in :math:`B` (Prop. 1). Returns ``inf`` when
    :math:`H = 0`. Parameters as in ``generalized_sharpness``.
    """
    return _threshold_from_sharpness(
        generalized_sharpness(hessians, batch_size, replacement, method)
    )


def generalized_sharpness_gn(
    jacobians,
    batch_size: int,
    replacement: bool = False,
    *,
    gram=None,
    num_outputs: int | None = None,
) -> float:
    r"""Generalized sharpness for Gauss-Newton Hessians :math:`H_i = J_i^\top J_i`, Gram route.

    Same value as ``generalized_sharpness`` on the :math:`H_i`, computed in the eigenbasis of
    the Gram matrix :math:`G = JJ^\top` (:math:`nK\times nK`, sample-major rows
    :math:`iK + k`), where :math:`\tilde U_i = A_i^\top A_i` with :math:`A = V_r\Gamma_r^{1/2}`
    and :math:`H` has eigenvalues :math:`\Gamma_r/n` (see ``_reduce_gauss_newton``). Lanczos
    costs :math:`O(nKr^2)` per product; nothing depends on :math:`d` after :math:`G`.

    Parameters
    ----------
    jacobians : array_like, shape (n, d) or (n, K, d), or None
        Per-sample Jacobians of the outputs (the rows :math:`J_i`); ``None`` if ``gram``
        is given.
    batch_size, replacement
        As in ``generalized_sharpness``.
    gram : array_like, shape (nK, nK) or (n, K, n, K), optional
        A precomputed Gram matrix :math:`G = JJ^\top` instead of ``jacobians``.
    num_outputs : int, optional
        :math:`K` for a 2-D ``gram`` (default 1).
    """
    replacement = check_replacement(replacement)
    reduced = _reduce_gauss_newton(jacobians, gram, num_outputs)
    p = batch_noise_factor(reduced.n, batch_size, replacement)
    if reduced.lam.size == 0:
        return 0.0
    return _sharpness_lanczos(reduced, p)


def ms_threshold_gn(
    jacobians,
    batch_size: int,
    replacement: bool = False,
    *,
    gram=None,
    num_outputs: int | None = None,
) -> float:
    r"""Exact :math:`\eta^*` for Gauss-Newton Hessians :math:`H_i = J_i^\top J_i` (Gram route).

    :math:`\eta^* = 2/\lambda_{\max}(C^\dagger D)` (:cite:p:`mulayoff2024exact` Thm 3); see
    ``generalized_sharpness_gn`` for the parameters. ``inf`` when every :math:`J_i = 0`.
    """
    return _threshold_from_sharpness(
        generalized_sharpness_gn(
            jacobians, batch_size, replacement, gram=gram, num_outputs=num_outputs
        )
    )


def ms_threshold_curve_gn(
    jacobians,
    batch_sizes,
    replacement: bool = False,
    *,
    gram=None,
    num_outputs: int | None = None,
) -> np.ndarray:
    r"""Exact :math:`\eta^*(B)` for several batch sizes at once (Gram route).

    Same value as ``ms_threshold_gn`` for each ``B`` in ``batch_sizes``, but the Gram matrix
    is reduced (eigendecomposition, basis of its range) once and only the Lanczos run is
    repeated, since only the batch-noise factor :math:`p(B)` changes with :math:`B`
    (:cite:p:`mulayoff2024exact` Thm 3). Returns a float array aligned with ``batch_sizes``.
    """
    sizes = list(np.atleast_1d(batch_sizes).tolist()) if not isinstance(batch_sizes, int) else [
        batch_sizes
    ]
    if not sizes:
        raise ValueError("batch_sizes must hold at least one batch size")
    reduced = _reduce_gauss_newton(jacobians, gram, num_outputs)
    noise = [batch_noise_factor(reduced.n, b, replacement) for b in sizes]
    if reduced.lam.size == 0:
        return np.full(len(sizes), math.inf)
    return np.array([_threshold_from_sharpness(_sharpness_lanczos(reduced, p)) for p in noise])


def _second_moment_radius(c: np.ndarray, dd: np.ndarray, lr: float) -> float:
    q = np.eye(c.shape[0]) - 2.0 * lr * c + lr**2 * dd
    eig = np.linalg.eigvalsh(0.5 * (q + q.T))
    return float(max(eig[-1], -eig[0]))


def ms_threshold_bisection(
    hessians, batch_size: int, replacement: bool = False, rtol: float = 1e-12
) -> float:
    r"""Brute-force :math:`\eta^*`: bisection on the spectral radius of :math:`Q(\eta)`.

    :math:`Q = I - 2\eta C + \eta^2 D` restricted to :math:`\mathrm{range}(H)^{\otimes 2}`
    (on :math:`\mathrm{null}(H)` it has the eigenvalue 1 for every :math:`\eta`) is a
    symmetric Kronecker system, so its spectral radius :math:`\max|\mathrm{eig}\,Q|` is
    computed by ``eigvalsh`` (:cite:p:`mulayoff2024exact` Thm 6: it equals
    :math:`\lambda_{\max}(Q)`). Starts from the bracket :math:`[0, 2.02/\lambda_{\max}(H)]`
    (:math:`\eta^* \le 2/\lambda_{\max}(H)`) and halves it until its width is at most
    ``rtol`` times its upper end. Independent of the eigenvalue formula: a reference for
    tests and the book. :math:`O(r^6)` per step.
    """
    hs = as_hessians(hessians)
    replacement = check_replacement(replacement)
    batch_noise_factor(hs.shape[0], batch_size, replacement)
    rtol = check_lr(rtol, "rtol")
    if rtol >= 1:
        raise ValueError(f"rtol must be < 1, got {rtol}")
    reduced = _reduce_hessians(hs)
    r = reduced.lam.size
    if r == 0:
        return math.inf
    check_dense_size(4 * r**4, f"Q on range(H) of rank {r}", "ms_threshold(method='eigenbasis')")
    c, dd = kron_operators(reduced.matrices(), batch_size, replacement)
    lo, hi = 0.0, 2.02 / reduced.lam[-1]
    while _second_moment_radius(c, dd, hi) <= 1.0:  # never expected; kept for safety
        lo, hi = hi, 2.0 * hi
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if _second_moment_radius(c, dd, mid) <= 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------------------
# sufficient and necessary conditions
# --------------------------------------------------------------------------------------
def wu_condition(hessians, lr: float, batch_size: int, replacement: bool = False) -> float:
    r"""Wu-Ma-E quantity :math:`\lambda_{\max}\{(I - \eta H)^2 + \eta^2 p\,\Sigma\}`.

    :math:`\Sigma = \frac1n\sum_iH_i^2 - H^2` (``curvature.noise_covariance``). A value
    :math:`\le 1` is *sufficient* for mean-square stability (:cite:p:`ma2021linear` Prop. 1,
    :cite:p:`wu2018sgd`): :math:`\mathbb E\|x_{t+1}\|^2 = \mathbb E[x_t^\top((I-\eta H)^2 +
    \eta^2p\Sigma)x_t]`. In one dimension it is :math:`(1 - \eta a)^2 + \eta^2ps^2`, exact.
    """
    hs = as_hessians(hessians)
    lr = check_lr(lr)
    n, d, _ = hs.shape
    p = batch_noise_factor(n, batch_size, replacement)
    step = np.eye(d) - lr * mean_hessian(hs)
    mat = step @ step + lr**2 * p * noise_covariance(hs)
    return float(np.linalg.eigvalsh(0.5 * (mat + mat.T))[-1])


class NecessaryBounds(NamedTuple):
    r"""Upper bounds on :math:`\eta^*` (:cite:p:`mulayoff2024exact` Prop. 3 and Thm 1).

    Attributes
    ----------
    top_eigenvector : float
        Eq. (15): :math:`2\lambda/(\lambda^2 + p\frac1n\sum_i(v^\top H_iv - \lambda)^2)`,
        :math:`v` a unit top eigenvector of :math:`H`, :math:`\lambda = \lambda_{\max}(H)`.
    trace : float
        Eq. (16): :math:`2\,\mathrm{Tr}(H)/((1-p)\|H\|_F^2 + p\frac1n\sum_i\|H_i\|_F^2)`.
    gd : float
        :math:`2/\lambda_{\max}(H)`.
    """

    top_eigenvector: float
    trace: float
    gd: float

    @property
    def best(self) -> float:
        """The tightest (smallest) of the three."""
        return min(self)


def _ratio(numerator: float, denominator: float) -> float:
    return math.inf if denominator <= 0 else numerator / denominator


def _bounds_from_parts(
    lam: float, var_top: float, trace: float, h_fro2: float, hi_fro2: float, p: float
) -> NecessaryBounds:
    return NecessaryBounds(
        top_eigenvector=_ratio(2.0 * lam, lam**2 + p * var_top),
        trace=_ratio(2.0 * trace, (1.0 - p) * h_fro2 + p * hi_fro2),
        gd=_ratio(2.0, lam),
    )


def ms_necessary_bounds(hessians, batch_size: int, replacement: bool = False) -> NecessaryBounds:
    r"""Necessary conditions for mean-square stability: upper bounds on :math:`\eta^*`.

    Both come from the Rayleigh quotient :math:`\langle X, DX\rangle/\langle X, CX\rangle \le
    \lambda_{\max}(C^\dagger D)`, with :math:`X = vv^\top` (eq. 15) and :math:`X = I` (eq. 16)
    (:cite:p:`mulayoff2024exact` Prop. 3). All ``inf`` when :math:`H = 0`.
    """
    hs = as_hessians(hessians)
    n = hs.shape[0]
    p = batch_noise_factor(n, batch_size, replacement)
    h = hs.mean(axis=0)
    eigenvalues, vecs = np.linalg.eigh(h)
    lam, v = float(eigenvalues[-1]), vecs[:, -1]
    top_forms = np.einsum("a,nab,b->n", v, hs, v)
    return _bounds_from_parts(
        lam,
        float(np.mean((top_forms - lam) ** 2)),
        float(np.trace(h)),
        float(np.sum(h * h)),
        float(np.mean(np.sum(hs * hs, axis=(1, 2)))),
        p,
    )


def ms_necessary_bounds_gn(
    jacobians,
    batch_size: int,
    replacement: bool = False,
    *,
    gram=None,
    num_outputs: int | None = None,
) -> NecessaryBounds:
    r"""``ms_necessary_bounds`` for :math:`H_i = J_i^\top J_i`, from the Gram matrix only.

    With :math:`G = JJ^\top` (:math:`K\times K` blocks :math:`G_{ii}`) and its top eigenpair
    :math:`(\gamma, u)`: :math:`\lambda_{\max}(H) = \gamma/n`,
    :math:`v^\top H_iv = \gamma\|u_i\|^2`,
    :math:`\mathrm{Tr}H = \mathrm{Tr}G/n`, :math:`\|H\|_F = \|G\|_F/n`,
    :math:`\|H_i\|_F = \|G_{ii}\|_F`. Arguments as in ``generalized_sharpness_gn``.
    """
    replacement = check_replacement(replacement)
    _, g, n, k = _gram_input(jacobians, gram, num_outputs)
    p = batch_noise_factor(n, batch_size, replacement)
    gamma, vecs = np.linalg.eigh(g)
    top, u = float(gamma[-1]), vecs[:, -1]
    lam = top / n
    top_forms = top * np.sum(u.reshape(n, k) ** 2, axis=1)
    blocks = g.reshape(n, k, n, k)[np.arange(n), :, np.arange(n), :]  # (n, K, K)
    return _bounds_from_parts(
        lam,
        float(np.mean((top_forms - lam) ** 2)),
        float(np.trace(g)) / n,
        float(np.sum(g * g)) / n**2,
        float(np.mean(np.sum(blocks * blocks, axis=(1, 2)))),
        p,
    )


# --------------------------------------------------------------------------------------
# rank-one lower bound on the generalized sharpness
# --------------------------------------------------------------------------------------
def _rank_one_objective(reduced: _Reduced, p: float, c: np.ndarray) -> tuple[float, np.ndarray]:
    r"""Value and sphere gradient of :math:`g(c) = N(c)/(h(c)\|c\|^2)` at a unit :math:`c`.

    :math:`h = c^\top\Lambda c`, :math:`h_i = c^\top\tilde U_ic`,
    :math:`N = (1-p)h^2 + \frac pn\sum_ih_i^2`; :math:`g` is scale invariant, so its gradient
    is tangent to the sphere.
    """
    lam, n = reduced.lam, reduced.n
    h = float(c @ (lam * c))
    hi = reduced.forms(c)
    num = (1.0 - p) * h**2 + p * float(hi @ hi) / n
    grad_num = 4.0 * (1.0 - p) * h * (lam * c) + 4.0 * p / n * reduced.form_grad(hi, c)
    value = num / h
    grad = grad_num / h - num * 2.0 * (lam * c) / h**2 - 2.0 * value * c
    return value, grad - (grad @ c) * c


def _ascend(reduced: _Reduced, p: float, c: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
    """Projected gradient ascent on the sphere with a backtracking (Armijo) geodesic step."""
    value, grad = _rank_one_objective(reduced, p, c)
    step = 1.0 / max(value, 1e-300)
    for _ in range(steps):
        norm = float(np.linalg.norm(grad))
        if norm <= 1e-12 * value:
            break
        direction = grad / norm
        step *= 2.0
        while True:
            angle = step * norm
            trial = np.cos(angle) * c + np.sin(angle) * direction
            trial /= np.linalg.norm(trial)
            new_value, new_grad = _rank_one_objective(reduced, p, trial)
            if new_value >= value + 1e-4 * step * norm**2 or step < 1e-16 / max(value, 1e-300):
                break
            step *= 0.5
        if new_value < value:
            break
        c, value, grad = trial, new_value, new_grad
    return value, c


def _rank_one(
    reduced: _Reduced, p: float, restarts: int, steps: int, seed: int
) -> tuple[float, np.ndarray]:
    r = reduced.lam.size
    rng = np.random.default_rng(seed)
    top = np.zeros(r)
    top[-1] = 1.0  # the top eigenvector of H (eigh sorts ascending)
    starts = [top]
    for _ in range(restarts):
        x = rng.standard_normal(r)
        starts.append(x / np.linalg.norm(x))
    best_value, best_c = -math.inf, starts[0]
    for start in starts:
        value, c = _ascend(reduced, p, start, steps)
        if value > best_value:
            best_value, best_c = value, c
    v = reduced.to_original(best_c)
    return best_value, v / np.linalg.norm(v)


def _check_ascent_args(restarts, steps, seed) -> tuple[int, int, int]:
    restarts = check_positive_int(restarts, "restarts", minimum=0)
    steps = check_positive_int(steps, "steps", minimum=0)
    seed = check_positive_int(seed, "seed", minimum=0)
    return restarts, steps, seed


def rank_one_bound(
    hessians,
    batch_size: int,
    replacement: bool = False,
    restarts: int = 8,
    steps: int = 200,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    r"""Rank-one lower bound on the generalized sharpness, by ascent on the sphere.

    For every unit :math:`v` with :math:`v^\top Hv > 0`,

    .. math::

        \lambda_{\max}(C^\dagger D) \;\ge\; v^\top Hv
        + p\,\frac1n\sum_i\frac{(v^\top H_iv - v^\top Hv)^2}{v^\top Hv}

    (the Rayleigh quotient of :math:`C^\dagger D` at :math:`X = vv^\top`;
    :cite:p:`mulayoff2024exact` eqs. 24-25). Maximised by projected gradient ascent with
    backtracking, from the top eigenvector of :math:`H` and ``restarts`` seeded random
    starts, in the eigenbasis of :math:`\mathrm{range}(H)` (components in
    :math:`\mathrm{null}(H)` only lower the quotient). The start from the top eigenvector
    already gives a value :math:`\ge\lambda_{\max}(H)`; ascent never decreases it.

    Returns
    -------
    (value, v) : tuple of float and numpy.ndarray of shape (d,)
        ``value`` :math:`\le 2/\eta^*`, ``v`` the unit vector that attains it. ``(0.0, e_1)``
        when :math:`H = 0`.
    """
    hs = as_hessians(hessians)
    p = batch_noise_factor(hs.shape[0], batch_size, replacement)
    restarts, steps, seed = _check_ascent_args(restarts, steps, seed)
    reduced = _reduce_hessians(hs)
    if reduced.lam.size == 0:
        return 0.0, np.eye(hs.shape[1])[0]
    return _rank_one(reduced, p, restarts, steps, seed)


def rank_one_bound_gn(
    jacobians,
    batch_size: int,
    replacement: bool = False,
    restarts: int = 8,
    steps: int = 200,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    r"""``rank_one_bound`` for :math:`H_i = J_i^\top J_i`, in the Gram basis.

    :math:`v^\top H_iv = \|J_iv\|^2`; the ascent runs on :math:`r \le nK` coordinates and
    only the returned :math:`v\in\mathbb R^d` touches :math:`J` again.
    """
    jac = as_jacobians(jacobians)
    p = batch_noise_factor(jac.shape[0], batch_size, replacement)
    restarts, steps, seed = _check_ascent_args(restarts, steps, seed)
    reduced = _reduce_gauss_newton(jac, None, None)
    if reduced.lam.size == 0:
        return 0.0, np.eye(jac.shape[2])[0]
    return _rank_one(reduced, p, restarts, steps, seed)


# --------------------------------------------------------------------------------------
# higher-order thresholds
# --------------------------------------------------------------------------------------
def kth_order_threshold(
    hessians,
    batch_size: int,
    order: int,
    replacement: bool = False,
    lr_max: float | None = None,
    grid: int = 256,
    rtol: float = 1e-10,
) -> float:
    r"""Largest :math:`\eta` with :math:`\rho(T_k(\eta')) \le 1` for every :math:`\eta' \le \eta`.

    :math:`T_k = \mathbb E[(I - \eta\hat H)^{\otimes k}]` (``operators.moment_operator``) is
    restricted to symmetric tensors on :math:`\mathrm{range}(H)` (an invariant subspace; on
    :math:`\mathrm{null}(H)` nothing moves). :math:`T_k` is symmetric (an average of tensor
    powers of symmetric matrices), so on symmetric tensors its operator norm
    :math:`\max\|T_kA\|_F/\|A\|_F` equals :math:`\rho`, the largest ``|eigvalsh|``; it is a
    polynomial of degree :math:`k` in :math:`\eta`, so the restriction is built once per
    power of :math:`\eta`. The stable set need not be an interval for :math:`k \ne 2`: the scan
    runs over ``grid`` equally spaced rates in :math:`(0, \eta_{\max}]` (doubling
    :math:`\eta_{\max}` until an unstable rate is found), then bisects the first crossing to
    relative width ``rtol``. A crossing inside the first grid cell that is stable again at
    its end would be missed: refine ``grid`` if in doubt.

    What the result means (:cite:p:`ma2021linear` Def. 5, Thm 1; :cite:p:`mulayoff2024exact`):

    * odd :math:`k`: exact, :math:`k`-th order stability iff
      :math:`\|T_kA\|_F \le \|A\|_F` on all symmetric tensors; :math:`k = 1` gives
      :math:`2/\lambda_{\max}(H)`;
    * :math:`k = 2`: exact, equal to ``ms_threshold`` (the top eigenvector of the symmetric
      Kronecker system is PSD, MM Thm 6);
    * even :math:`k > 2`: also exact. MY Thm 1 only asks for contraction on the cone of PSD
      symmetric tensors, but the powers :math:`v^{\otimes k}` of that cone span all symmetric
      tensors and the deterministic start :math:`x_0 = v` has :math:`\mathbb E x_0^{\otimes k} =
      v^{\otimes k}`, so an eigenvalue of modulus :math:`> 1` anywhere on symmetric tensors makes
      some moment grow (proved in the book's chapter on higher moments).

    Parameters
    ----------
    hessians, batch_size, replacement
        As in ``ms_threshold``.
    order : int
        :math:`k \ge 1`.
    lr_max : float, optional
        End of the first scan; default :math:`4/\lambda_{\max}(H)`.
    grid : int
        Number of scanned rates per interval.
    rtol : float
        Relative accuracy of the bisection.

    Returns
    -------
    float
        The threshold; ``inf`` when :math:`H = 0`.
    """
    hs = as_hessians(hessians)
    replacement = check_replacement(replacement)
    batch_noise_factor(hs.shape[0], batch_size, replacement)
    order = check_positive_int(order, "order")
    grid = check_positive_int(grid, "grid")
    rtol = check_lr(rtol, "rtol")
    if rtol >= 1:
        raise ValueError(f"rtol must be < 1, got {rtol}")
    reduced = _reduce_hessians(hs)
    if reduced.lam.size == 0:
        return math.inf
    lr_max = 4.0 / reduced.lam[-1] if lr_max is None else check_lr(lr_max, "lr_max")
    coefficients = _moment_operator_coefficients(
        reduced.matrices(), batch_size, order, replacement, "auto", True
    )

    def radius(lr: float) -> float:
        mat = sum((-lr) ** m * coef for m, coef in enumerate(coefficients))
        eig = np.linalg.eigvalsh(0.5 * (mat + mat.T))
        return float(max(eig[-1], -eig[0]))

    lo, start = 0.0, 0.0
    hi = None
    for _ in range(64):
        for lr in np.linspace(start, lr_max, grid + 1)[1:]:
            if radius(float(lr)) > 1.0:
                hi = float(lr)
                break
            lo = float(lr)
        if hi is not None:
            break
        start, lr_max = lr_max, 2.0 * lr_max
    if hi is None:  # pragma: no cover - E[Hhat^{(x)k}] > 0 on range(H) makes this unreachable
        raise RuntimeError("no unstable learning rate found")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if radius(mid) <= 1.0:
            lo = mid
        else:
            hi = mid
    return lo
