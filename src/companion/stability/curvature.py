r"""Per-sample curvature of a training set, and every stability quantity built from it.

Linearised SGD at a minimum :math:`\theta^*` is governed by the per-sample Hessians
:math:`H_i` (symmetric PSD, :math:`i = 1..n`) and their mean :math:`H = \frac1n\sum_iH_i`
(:cite:p:`wu2018sgd`, :cite:p:`ma2021linear`, :cite:p:`mulayoff2024exact`). They reach us in
three forms, and :class:`Curvature` accepts each:

* the matrices themselves, ``(n, d, d)`` (:meth:`Curvature.from_hessians`);
* generalized Gauss-Newton factors :math:`H_i = J_i^\top\Lambda_iJ_i`, with the output
  Jacobian :math:`J_i` (:math:`K\times d`) and the loss's output Hessian :math:`\Lambda_i`
  (:meth:`Curvature.from_jacobians`);
* the Gram matrix :math:`G = \tilde J\tilde J^\top` (:math:`nK\times nK`) of the weighted rows
  :math:`\tilde J_i = \Lambda_i^{1/2}J_i` (:meth:`Curvature.from_gram`), which is all one
  needs when :math:`d` is large.

Whatever the form, the object restricts the problem once to :math:`\mathrm{range}(H)` (rank
:math:`r`), in the orthonormal eigenbasis of :math:`H`. This loses nothing: for PSD
:math:`H_i`, :math:`\mathrm{null}(H) = \bigcap_i\mathrm{null}(H_i)`, so on the null space
every linearised step is the identity. In that basis :math:`H = \mathrm{diag}(\lambda)` and
each :math:`H_i` becomes :math:`\tilde U_i = U_r^\top H_iU_r` (:math:`r\times r`), stored either
as matrices or, when it is cheaper, as factors :math:`\tilde U_i = A_i^\top A_i` with
:math:`A_i` of shape :math:`k\times r` (:math:`k = K` rows of a Gauss-Newton factor, or the
rank of :math:`H_i`). Every quantity below is computed from :math:`(\lambda, \tilde U_i)`;
the eigendecomposition is done once, when the object is built.

The one rank rule of the package is :func:`range_mask`: eigenvalues at most
``RANGE_RTOL`` times the largest are zero.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import cached_property
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from ..validation import (
    as_float_array,
    as_hessians,
    as_jacobians,
    check_dense_size,
    check_lr,
    check_positive_int,
    check_replacement,
)
from .sampling import batch_noise_factor

__all__ = [
    "RANGE_RTOL",
    "Curvature",
    "NecessaryBounds",
    "RankOneBound",
    "as_curvature",
    "gd_threshold",
    "mean_hessian",
    "noise_covariance",
    "non_uniformity",
    "psd_factor",
    "range_mask",
    "sharpness",
]

#: Eigenvalues of :math:`H` (or of the Gram matrix) at most this times the largest count as
#: zero. Rounding leaves the null-space eigenvalues of a sum of PSD matrices at about
#: :math:`m\,\epsilon\,\lambda_{\max}` (~1e-13 relative for a side m ~ 1e3); 1e-10 sits well
#: above that. Dropping a genuine eigenvalue :math:`\lambda_a` this small changes the
#: generalized sharpness by :math:`O(n\lambda_a)`, since every quadratic form of
#: :math:`H_i \preceq nH` is :math:`O(n\lambda_a)` on that direction.
RANGE_RTOL = 1e-10

#: Pivoted Cholesky of :math:`\tilde U_i = F_iF_i^\top` stops when every remaining pivot is at
#: most this times the largest diagonal entry: the discarded Schur complement is PSD with
#: norm at most :math:`r\cdot10^{-13}` times the largest diagonal entry.
_FACTOR_RTOL = 1e-13
#: ARPACK relative residual tolerance: for a symmetric operator some eigenvalue lies within
#: the residual of the Ritz value, so the result is accurate to about 1e-10 relative.
_LANCZOS_TOL = 1e-10
#: Up to this many unknowns (r^2) the operator is applied to every basis vector and
#: diagonalised: ARPACK needs a Krylov space larger than its block size.
_SMALL_OPERATOR = 9
#: method="auto" uses the dense generalized eigenproblem up to this rank (r^2 = 400).
_DENSE_AUTO_RANK = 20
_METHODS = ("auto", "dense", "lanczos")
_REDUCTIONS = ("mean", "sum")


def _top_eigenvalue_arpack(op: spla.LinearOperator, **kwargs) -> float:
    """``eigsh(op, k=1, which="LA")`` with ARPACK's own BLAS calls on one thread.

    In the NumPy and SciPy wheels ARPACK (SciPy's OpenBLAS) and the operator's matrix products
    (NumPy's OpenBLAS) use two thread pools, and OpenBLAS workers spin for a while after each
    call. Alternating between the two pools makes each compete with the other's spinning
    threads: at nK = r = 1000 a Lanczos run took 3.2 s instead of 1.9 s on two cores (same
    result to the last digit). ARPACK's work between products is memory-bound and gains nothing
    from threads, so it runs on one; every operator product runs with the thread counts the
    caller had. Without ``threadpoolctl`` (an optional dependency) nothing is changed.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return float(spla.eigsh(op, k=1, which="LA", **kwargs)[0][0])
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    threads = [lib.num_threads for lib in libs]

    def restore() -> None:
        for lib, count in zip(libs, threads, strict=True):
            lib.set_num_threads(count)

    def serial() -> None:
        for lib in libs:
            lib.set_num_threads(1)

    def matvec(vec: np.ndarray) -> np.ndarray:
        restore()
        try:
            return op.matvec(vec)
        finally:
            serial()

    wrapped = spla.LinearOperator(op.shape, matvec=matvec, dtype=op.dtype)
    serial()
    try:
        return float(spla.eigsh(wrapped, k=1, which="LA", **kwargs)[0][0])
    finally:
        restore()


#: Symmetry tolerance for a Gram matrix, relative to its largest entry.
_GRAM_SYMMETRY_RTOL = 1e-8


def range_mask(eigenvalues) -> np.ndarray:
    r"""Which eigenvalues of a PSD matrix belong to its range: the package's one rank rule.

    An eigenvalue counts as non-zero iff it exceeds ``RANGE_RTOL`` (1e-10) times the largest
    one. Used for :math:`H`, for Gram matrices and by every exact route, so that "rank" and
    "below the threshold" mean the same everywhere.

    Parameters
    ----------
    eigenvalues : array_like, shape (m,)
        Eigenvalues in ascending order (as ``numpy.linalg.eigh`` returns them).

    Returns
    -------
    numpy.ndarray of bool, shape (m,)

    Examples
    --------
    >>> range_mask([1e-14, 0.5, 2.0]).tolist()
    [False, True, True]
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    top = values[-1] if values.size else 0.0
    if top <= 0:
        return np.zeros(values.shape, dtype=bool)
    return values > RANGE_RTOL * top


class NecessaryBounds(NamedTuple):
    r"""Upper bounds on :math:`\eta^*` (:cite:p:`mulayoff2024exact` Prop. 3 and Thm 1).

    Attributes
    ----------
    top_eigenvector : float
        MM eq. (15): :math:`2\lambda/(\lambda^2 + p\frac1n\sum_i(v^\top H_iv - \lambda)^2)`,
        :math:`v` a unit top eigenvector of :math:`H`, :math:`\lambda = \lambda_{\max}(H)`.
    trace : float
        MM eq. (16): :math:`2\,\mathrm{Tr}(H)/((1-p)\|H\|_F^2 + p\frac1n\sum_i\|H_i\|_F^2)`.
    gd : float
        :math:`2/\lambda_{\max}(H)`.

    All three are in the learning-rate units of the :class:`Curvature` they came from (see
    its ``reduction``).
    """

    top_eigenvector: float
    trace: float
    gd: float

    @property
    def best(self) -> float:
        """The tightest (smallest) of the three."""
        return min(self)


class RankOneBound(NamedTuple):
    r"""A rank-one lower bound on the generalized sharpness (:cite:p:`mulayoff2024exact` eq. 24).

    Attributes
    ----------
    value : float
        :math:`\max_v` of the Rayleigh quotient of :math:`C^\dagger D` at :math:`vv^\top` found by
        ascent: at most the generalized sharpness, so :math:`2/\text{value} \ge \eta^*`.
    direction : numpy.ndarray of shape (d,), or None
        The unit :math:`v` attaining it; None when the curvature was built from a Gram matrix
        alone (there is no :math:`\mathbb R^d` to return to).
    """

    value: float
    direction: np.ndarray | None


def _ratio(numerator: float, denominator: float) -> float:
    return math.inf if denominator <= 0 else numerator / denominator


def _check_reduction(reduction) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _low_rank_factors(small: np.ndarray) -> np.ndarray | None:
    r"""Factors :math:`A_i` (n, k, r) with :math:`\tilde U_i = A_i^\top A_i`, if all ranks are low.

    Rank-revealing pivoted Cholesky (LAPACK ``dpstrf``, :math:`O(r^2k)` per sample). Returns
    None (keep the matrices) unless the largest rank ``k`` is at most ``r / 4``, where the
    factored products pay off.
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
    out = np.zeros((n, k, r))
    for i, f in enumerate(pieces):
        out[i, : f.shape[1], :] = f.T
    return out


def _gram_of_rows(rows: np.ndarray) -> np.ndarray:
    """:math:`FF^\\top` of a stacked ``(m, d)`` factor with one symmetric rank-k update."""
    m = rows.shape[0]
    check_dense_size(m * m, f"the {m} x {m} Gram matrix", "fewer samples")
    upper = scipy.linalg.blas.dsyrk(1.0, rows.T, trans=1)  # rows.T is F-ordered: no copy
    return np.triu(upper) + np.triu(upper, 1).T


def _check_gram(gram, num_outputs) -> tuple[np.ndarray, int, int]:
    g = as_float_array(gram, "gram", ndim=(2, 4))
    if g.ndim == 4:
        n, k, n2, k2 = g.shape
        if (n, k) != (n2, k2) or n < 1 or k < 1:
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
    if asym > _GRAM_SYMMETRY_RTOL * max(scale, 1e-300):
        raise ValueError(f"gram must be symmetric: largest |G - G^T| entry is {asym:.3g}")
    return 0.5 * (g + g.T), n, k


def _check_loss_hessians(loss_hessians, n: int, k: int) -> np.ndarray:
    """Output Hessians as an ``(n, K, K)`` stack of square roots ``S_i`` (``S_i^T S_i = Λ_i``)."""
    lam = as_float_array(loss_hessians, "loss_hessians", ndim=(2, 3))
    if lam.ndim == 2:
        if lam.shape != (n, k):
            raise ValueError(
                f"loss_hessians of 2 dimensions is the diagonal of each Λ_i and must have "
                f"shape (n, K) = {(n, k)}, got {lam.shape}"
            )
        if np.any(lam < 0):
            raise ValueError("loss_hessians must be >= 0 (diagonals of PSD matrices)")
        roots = np.zeros((n, k, k))
        idx = np.arange(k)
        roots[:, idx, idx] = np.sqrt(lam)
        return roots
    if lam.shape != (n, k, k):
        raise ValueError(f"loss_hessians must have shape (n, K, K) = {(n, k, k)}, got {lam.shape}")
    scale = float(np.max(np.abs(lam))) if lam.size else 0.0
    asym = float(np.max(np.abs(lam - np.swapaxes(lam, 1, 2))))
    if asym > 1e-8 * max(scale, 1e-300):
        raise ValueError(f"loss_hessians must be symmetric: largest |Λ - Λ^T| is {asym:.3g}")
    lowest = float(np.linalg.eigvalsh(0.5 * (lam + np.swapaxes(lam, 1, 2))).min())
    if lowest < -1e-8 * max(scale * k, 1e-300):
        raise ValueError(
            f"loss_hessians must be positive semi-definite: smallest eigenvalue {lowest:.3g} "
            "(the generalized Gauss-Newton needs a loss convex in the outputs)"
        )
    return psd_factor(lam)


def psd_factor(matrices) -> np.ndarray:
    r"""Square factors :math:`S_i` with :math:`S_i^\top S_i = M_i` of a PSD stack ``(..., K, K)``.

    :math:`S_i = \mathrm{diag}(\sqrt{w})Q^\top` from :math:`M_i = Q\,\mathrm{diag}(w)Q^\top`;
    eigenvalues below zero by rounding are clipped to 0.

    Examples
    --------
    >>> import numpy as np
    >>> s = psd_factor(np.array([[[4.0, 0.0], [0.0, 1.0]]]))
    >>> (s[0].T @ s[0]).round(12).tolist()
    [[4.0, 0.0], [0.0, 1.0]]
    """
    mats = np.asarray(matrices, dtype=np.float64)
    w, q = np.linalg.eigh(0.5 * (mats + np.swapaxes(mats, -1, -2)))
    return np.sqrt(np.clip(w, 0.0, None))[..., :, None] * np.swapaxes(q, -1, -2)


class Curvature:
    r"""Per-sample curvature :math:`H_1, \dots, H_n` at a point, with every stability route.

    Build one with :meth:`from_hessians`, :meth:`from_jacobians` or :meth:`from_gram` (or,
    for a torch model, :func:`companion.nets.curvature.model_curvature`). The restriction to
    :math:`\mathrm{range}(H)` and its eigendecomposition are computed once, at construction;
    every method reuses them.

    **Learning-rate units.** ``reduction`` says how the mini-batch loss the optimiser
    differentiates combines the per-sample losses :math:`\ell_i` whose Hessians are the
    :math:`H_i`: ``"mean"`` (batch loss :math:`\frac1B\sum_{i\in\mathcal B}\ell_i`, the
    papers' convention) or ``"sum"`` (batch loss :math:`\sum_{i\in\mathcal B}\ell_i`, so a
    step is :math:`B` times the batch-mean step). Every threshold is for the learning rate
    applied to exactly that batch loss; curvature statistics (sharpness, non-uniformity,
    trace) are those of the per-sample-mean Hessian :math:`H`.

    **The exact threshold** (:cite:p:`mulayoff2024exact` Thm 3). With batch-noise factor
    :math:`p` (:func:`~companion.stability.sampling.batch_noise_factor`), the second moment of
    linearised SGD evolves by :math:`Q = I - 2\eta C + \eta^2D`,

    .. math::

        C = \tfrac12(H\otimes I + I\otimes H), \qquad
        D = (1 - p)H\otimes H + p\,\tfrac1n\textstyle\sum_i H_i\otimes H_i,

    and SGD is mean-square stable iff :math:`\eta \le \eta^* = 2/\lambda_{\max}(C^\dagger D)`.
    On :math:`\mathrm{range}(H)` the operator :math:`C` is diagonal in the eigenbasis
    (:math:`c_{ab} = (\lambda_a + \lambda_b)/2 > 0`), so two strategies compute
    :math:`\lambda_{\max}(C^{-1}D)`:

    * ``"dense"``: the :math:`r^2\times r^2` symmetric-definite problem :math:`Dv = \lambda Cv`,
      :math:`O(r^6)`;
    * ``"lanczos"``: matrix-free Lanczos on :math:`X\mapsto C^{-1/2}D(C^{-1/2}X)` acting on
      :math:`r\times r` matrices, :math:`O(nkr^2)` per product with factors of rank :math:`k`
      (a Gauss-Newton Gram route: :math:`k = K`, whatever :math:`d` is) and :math:`O(nr^3)`
      with full matrices.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.stability.curvature import Curvature
    >>> hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])
    >>> curv = Curvature.from_hessians(hs)
    >>> round(curv.sharpness, 12), curv.rank
    (1.5, 2)
    >>> round(curv.gd_threshold(), 12)       # 2 / lambda_max(H)
    1.333333333333
    >>> round(curv.ms_threshold(1), 12)      # B = 1: each step uses one H_i
    0.666666666667
    """

    def __init__(
        self,
        *,
        eigenvalues: np.ndarray,
        n: int,
        num_outputs: int,
        dim: int | None,
        reduction: str,
        matrices: np.ndarray | None = None,
        factors: np.ndarray | None = None,
        lift: Callable[[np.ndarray], np.ndarray] | None = None,
        source: str = "",
    ):
        """Internal: use :meth:`from_hessians`, :meth:`from_jacobians` or :meth:`from_gram`."""
        if (matrices is None) == (factors is None):
            raise ValueError("give exactly one of matrices and factors")
        self.eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
        self.n = int(n)
        self.num_outputs = int(num_outputs)
        self.dim = None if dim is None else int(dim)
        self.reduction = _check_reduction(reduction)
        self._matrices = matrices
        self._factors = factors
        self._lift = lift
        self.source = source
        #: Number of products with :math:`C^{-1/2}DC^{-1/2}` made by the Lanczos route so far
        #: (each costs two :math:`(nk\times r)\cdot(r\times r)` matrix products with factors);
        #: the benchmarks divide time by it.
        self.operator_products = 0
        if factors is not None:
            self._factors_flat = factors.reshape(factors.shape[0] * factors.shape[1], self.rank)
            self._factors_t = np.ascontiguousarray(np.swapaxes(factors, 1, 2))

    # ----------------------------------------------------------------------------------
    # constructors
    # ----------------------------------------------------------------------------------
    @classmethod
    def from_hessians(cls, hessians, *, reduction: str = "mean") -> Curvature:
        r"""From per-sample Hessians :math:`H_i`, shape ``(n, d, d)``, symmetric PSD.

        One eigendecomposition of :math:`H` (:math:`O(d^3)`) and the projections
        :math:`U_r^\top H_iU_r` (:math:`O(nd^2r)`); low-rank :math:`\tilde U_i` are factored
        by pivoted Cholesky so that later products cost :math:`O(nkr^2)`.

        Examples
        --------
        >>> import numpy as np
        >>> curv = Curvature.from_hessians(np.ones((3, 1, 1)))
        >>> curv.rank, curv.sharpness
        (1, 1.0)
        """
        hs = as_hessians(hessians)
        reduction = _check_reduction(reduction)
        n, d, _ = hs.shape
        lam, vecs = np.linalg.eigh(hs.mean(axis=0))
        keep = range_mask(lam)
        lam, basis = lam[keep], vecs[:, keep]
        small = basis.T @ hs @ basis
        small = 0.5 * (small + np.swapaxes(small, 1, 2))
        factors = _low_rank_factors(small)
        return cls(
            eigenvalues=lam,
            n=n,
            num_outputs=1,
            dim=d,
            reduction=reduction,
            matrices=small if factors is None else None,
            factors=factors,
            lift=lambda c: basis @ c,
            source="hessians",
        )

    @classmethod
    def from_jacobians(
        cls, jacobians, loss_hessians=None, *, reduction: str = "mean"
    ) -> Curvature:
        r"""Generalized Gauss-Newton curvature :math:`H_i = J_i^\top\Lambda_iJ_i`.

        :math:`J_i` (:math:`K\times d`) is the Jacobian of the outputs :math:`f(x_i)` and
        :math:`\Lambda_i = \partial^2\ell_i/\partial f^2` the Hessian of the per-sample loss in
        the outputs (PSD for every loss convex in the outputs). At a minimum of a square
        loss :math:`H_i` is the per-sample Hessian exactly; elsewhere it is the curvature of
        the local quadratic model. With :math:`\tilde J_i = S_iJ_i`, :math:`S_i^\top S_i =
        \Lambda_i`, the route is chosen by size: if :math:`nK \le d`, the Gram matrix
        :math:`G = \tilde J\tilde J^\top = V\Gamma V^\top` gives the eigenbasis
        :math:`U_r = \tilde J^\top V_r\Gamma_r^{-1/2}` of :math:`\mathrm{range}(H)`,
        :math:`H = U_r(\Gamma_r/n)U_r^\top` and :math:`\tilde U_i = A_i^\top A_i` with
        :math:`A = V_r\Gamma_r^{1/2}` (rows of sample :math:`i`), nothing of size :math:`d^2`;
        otherwise :math:`H` itself is diagonalised and :math:`A = \tilde JU_r`.

        Parameters
        ----------
        jacobians : array_like, shape (n, d) or (n, K, d)
            Per-sample output Jacobians (``(n, d)``: one output).
        loss_hessians : array_like, shape (n, K, K) or (n, K), optional
            :math:`\Lambda_i` (``(n, K)``: their diagonals). Default: the identity, i.e.
            :math:`\ell_i = \frac12\|f_i - y_i\|^2`.
        reduction : {"mean", "sum"}
            How the mini-batch loss combines the :math:`\ell_i` (see the class docstring).

        Examples
        --------
        >>> import numpy as np
        >>> jac = np.array([[1.0, 0.0], [0.0, 2.0]])     # two samples, one output, d = 2
        >>> Curvature.from_jacobians(jac).eigenvalues    # H = diag(1, 4) / 2
        array([0.5, 2. ])
        """
        jac = as_jacobians(jacobians)
        reduction = _check_reduction(reduction)
        n, k, d = jac.shape
        if loss_hessians is not None:
            roots = _check_loss_hessians(loss_hessians, n, k)
            jac = np.einsum("nkl,nld->nkd", roots, jac)
        rows = np.ascontiguousarray(jac.reshape(n * k, d))
        if n * k <= d:
            return cls._from_gram_matrix(_gram_of_rows(rows), n, k, reduction, rows=rows)
        gauss_newton = rows.T @ rows / n
        lam, vecs = np.linalg.eigh(0.5 * (gauss_newton + gauss_newton.T))
        keep = range_mask(lam)
        lam, basis = lam[keep], vecs[:, keep]
        factors = (rows @ basis).reshape(n, k, -1)
        return cls(
            eigenvalues=lam,
            n=n,
            num_outputs=k,
            dim=d,
            reduction=reduction,
            factors=factors,
            lift=lambda c: basis @ c,
            source="jacobians",
        )

    @classmethod
    def from_gram(cls, gram, num_outputs: int | None = None, *, reduction: str = "mean"):
        r"""From the Gram matrix :math:`G = \tilde J\tilde J^\top` of the weighted output rows.

        Rows are sample-major (row ``i*K + k`` is output ``k`` of sample ``i``), e.g. from
        :func:`companion.nets.jacobians.gram_matrix`. One eigendecomposition of :math:`G`,
        :math:`O((nK)^3)`; nothing depends on :math:`d`. Quantities that need a vector of
        :math:`\mathbb R^d` (the rank-one direction, :meth:`mean_hessian`) are unavailable.

        Parameters
        ----------
        gram : array_like, shape (nK, nK) or (n, K, n, K)
            Symmetric PSD.
        num_outputs : int, optional
            :math:`K` for a 2-D ``gram`` (default 1).
        reduction : {"mean", "sum"}
            See the class docstring.

        Examples
        --------
        >>> import numpy as np
        >>> jac = np.array([[1.0, 0.0], [0.0, 2.0]])
        >>> Curvature.from_gram(jac @ jac.T).eigenvalues
        array([0.5, 2. ])
        """
        g, n, k = _check_gram(gram, num_outputs)
        return cls._from_gram_matrix(g, n, k, _check_reduction(reduction), rows=None)

    @classmethod
    def from_eigenbasis(cls, eigenvalues, factors, *, reduction: str = "mean") -> Curvature:
        r"""From a problem already reduced to the eigenbasis of :math:`H`.

        ``eigenvalues`` :math:`\lambda` (``(r,)``, ascending, positive) of :math:`H` and
        factors :math:`A_i` (``(n, k, r)``) with :math:`\tilde U_i = A_i^\top A_i` and
        :math:`\frac1n\sum_i\tilde U_i = \mathrm{diag}(\lambda)` (checked to 1e-8). Used by
        :mod:`companion.stability.bracket` for the problem restricted to the top-:math:`m`
        eigenspace of :math:`H`.

        Examples
        --------
        >>> import numpy as np
        >>> a = np.array([[[1.0, 0.0]], [[0.0, 2.0]]])     # n = 2, k = 1, r = 2
        >>> Curvature.from_eigenbasis([0.5, 2.0], a).sharpness
        2.0
        """
        lam = as_float_array(eigenvalues, "eigenvalues", ndim=1)
        a = as_float_array(factors, "factors", ndim=3)
        if a.shape[2] != lam.size or a.shape[0] < 1:
            raise ValueError(
                f"factors must have shape (n, k, r) with r = {lam.size}, got {a.shape}"
            )
        if lam.size and (np.any(lam <= 0) or np.any(np.diff(lam) < 0)):
            raise ValueError("eigenvalues must be positive and ascending")
        n = a.shape[0]
        mean = np.einsum("nka,nkb->ab", a, a) / n
        scale = float(lam[-1]) if lam.size else 1.0
        if np.max(np.abs(mean - np.diag(lam)), initial=0.0) > 1e-8 * scale:
            raise ValueError("factors do not average to diag(eigenvalues): not an eigenbasis")
        return cls(
            eigenvalues=lam,
            n=n,
            num_outputs=a.shape[1],
            dim=None,
            reduction=_check_reduction(reduction),
            factors=np.ascontiguousarray(a),
            source="eigenbasis",
        )

    @classmethod
    def _from_gram_matrix(cls, g: np.ndarray, n: int, k: int, reduction: str, rows):
        gamma, vecs = np.linalg.eigh(g)
        if gamma.size and gamma[0] < -1e-8 * max(abs(gamma[-1]), 1e-300):
            raise ValueError(
                f"gram must be positive semi-definite: smallest eigenvalue {gamma[0]:.3g}"
            )
        keep = range_mask(gamma)
        gamma, vecs = gamma[keep], vecs[:, keep]
        factors = (vecs * np.sqrt(gamma)).reshape(n, k, -1)
        lift = None
        if rows is not None:

            def lift(c: np.ndarray) -> np.ndarray:
                return rows.T @ (vecs @ (c / np.sqrt(gamma)))

        return cls(
            eigenvalues=gamma / n,
            n=n,
            num_outputs=k,
            dim=None if rows is None else rows.shape[1],
            reduction=reduction,
            factors=factors,
            lift=lift,
            source="gram" if rows is None else "jacobians",
        )

    # ----------------------------------------------------------------------------------
    # the reduced problem
    # ----------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        r""":math:`r = \mathrm{rank}\,H` (by :func:`range_mask`)."""
        return int(self.eigenvalues.size)

    def __repr__(self) -> str:
        return (
            f"Curvature(n={self.n}, K={self.num_outputs}, d={self.dim}, rank={self.rank}, "
            f"sharpness={self.sharpness:.6g}, reduction={self.reduction!r}, from {self.source})"
        )

    def reduced_hessians(self) -> np.ndarray:
        r"""The stack :math:`\tilde U_i = U_r^\top H_iU_r`, shape ``(n, r, r)``."""
        if self._matrices is not None:
            return self._matrices
        check_dense_size(self.n * self.rank**2, "the reduced per-sample Hessians", "factors")
        return self._factors_t @ self._factors

    def _noise(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\frac1n\sum_i\tilde U_iX\tilde U_i` for an :math:`r\times r` matrix :math:`X`."""
        n, r = self.n, self.rank
        if self._factors is None:
            small = self._matrices
            left = (small.reshape(n * r, r) @ x).reshape(n, r, r).transpose(1, 0, 2)
            left = left.reshape(r, n * r)
            return left @ small.reshape(n * r, r) / n
        a, a_t = self._factors, self._factors_t
        k = a.shape[1]
        if k == 1:
            flat = self._factors_flat
            weights = (flat @ x * flat).sum(axis=1)
            return flat.T @ (weights[:, None] * flat) / n
        # one (nk x r) @ (r x r) GEMM (4x faster than numpy's stacked matmul), then the
        # small (k x k) blocks A_i X A_i^T, then one (r x nk) @ (nk x r) GEMM
        inner = (self._factors_flat @ x).reshape(n, k, r) @ a_t
        return self._factors_flat.T @ (inner @ a).reshape(n * k, r) / n

    def _forms(self, c: np.ndarray) -> np.ndarray:
        r"""The ``n`` values :math:`c^\top\tilde U_ic`."""
        if self._factors is None:
            return np.einsum("nab,a,b->n", self._matrices, c, c)
        return np.sum((self._factors @ c) ** 2, axis=1)

    def _form_grad(self, w: np.ndarray, c: np.ndarray) -> np.ndarray:
        r""":math:`\sum_iw_i\tilde U_ic`."""
        if self._factors is None:
            return np.einsum("n,nab,b->a", w, self._matrices, c)
        ac = self._factors @ c  # (n, k)
        return self._factors_flat.T @ (w[:, None] * ac).reshape(-1)

    def _sample_frobenius2(self) -> np.ndarray:
        r""":math:`\|H_i\|_F^2 = \|\tilde U_i\|_F^2` (:math:`= \|A_iA_i^\top\|_F^2` for factors)."""
        if self._factors is None:
            return np.sum(self._matrices**2, axis=(1, 2))
        blocks = self._factors @ self._factors_t  # (n, k, k)
        return np.sum(blocks**2, axis=(1, 2))

    def top_direction_curvatures(self) -> np.ndarray:
        r"""The ``n`` curvatures :math:`v^\top H_iv` along the top eigenvector :math:`v` of H.

        Their mean is :math:`\lambda_{\max}(H)`; their spread enters MM eq. (15) and their
        :math:`k`-th moments MY Thm 2 along the sharpest direction.
        """
        if not self.rank:
            return np.zeros(self.n)
        return self._forms(np.eye(self.rank)[-1])

    def sample_traces(self) -> np.ndarray:
        r"""The ``n`` traces :math:`\mathrm{Tr}\,H_i` (Gauss-Newton: :math:`\|\tilde J_i\|_F^2`)."""
        if self._factors is None:
            return np.trace(self._matrices, axis1=1, axis2=2)
        return np.sum(self._factors**2, axis=(1, 2))

    # ----------------------------------------------------------------------------------
    # statistics of H
    # ----------------------------------------------------------------------------------
    @property
    def sharpness(self) -> float:
        r"""Sharpness :math:`a = \lambda_{\max}(H)` (:cite:p:`wu2018sgd`); 0 when :math:`H = 0`."""
        return float(self.eigenvalues[-1]) if self.rank else 0.0

    @property
    def trace(self) -> float:
        r""":math:`\mathrm{Tr}\,H` (the flatness of :cite:p:`ma2021linear` eq. (3))."""
        return float(self.eigenvalues.sum())

    @cached_property
    def sigma(self) -> np.ndarray:
        r"""Hessian noise :math:`\Sigma = \frac1n\sum_iH_i^2 - H^2` on :math:`\mathrm{range}(H)`.

        In the eigenbasis of :math:`H` (``(r, r)``); :math:`\Sigma` vanishes on
        :math:`\mathrm{null}(H)` since :math:`\mathrm{null}(H) \subseteq \mathrm{null}(H_i)`
        (:cite:p:`wu2018sgd`).
        """
        if not self.rank:
            return np.zeros((0, 0))
        if self._factors is None:
            small = self._matrices
            mean_sq = np.einsum("nab,nbc->ac", small, small) / self.n
        else:
            a, a_t = self._factors, self._factors_t
            weighted = ((a @ a_t) @ a).reshape(-1, self.rank)  # A_i (A_i^T A_i) rows
            mean_sq = self._factors_flat.T @ weighted / self.n
        out = mean_sq - np.diag(self.eigenvalues**2)
        return 0.5 * (out + out.T)

    @property
    def non_uniformity(self) -> float:
        r"""Non-uniformity :math:`s = \sqrt{\lambda_{\max}(\Sigma)}` (:cite:p:`wu2018sgd`)."""
        if not self.rank:
            return 0.0
        return math.sqrt(max(float(np.linalg.eigvalsh(self.sigma)[-1]), 0.0))

    def mean_hessian(self) -> np.ndarray:
        r"""The dense :math:`H = \frac1n\sum_iH_i`, ``(d, d)``; needs :math:`\mathbb R^d`."""
        basis = self._basis()
        return (basis * self.eigenvalues) @ basis.T

    def _basis(self) -> np.ndarray:
        if self._lift is None:
            raise ValueError(
                "this Curvature was built from a Gram matrix: vectors of R^d need the "
                "Jacobians (use Curvature.from_jacobians)"
            )
        return np.column_stack([self._lift(e) for e in np.eye(self.rank)]).reshape(
            self.dim, self.rank
        )

    def worst_alignment_factor(self) -> float:
        r"""Smallest alignment factor :math:`\mu_0` of the model linearised at this point.

        For residuals :math:`r_i = \tilde J_ix` of the linearised model, :math:`2L = x^\top Hx`
        and :math:`\mathrm{Tr}(\Sigma_gH) = x^\top Mx` with :math:`M = \frac1n\sum_iH_iHH_i -
        H^3`, so :math:`\mu_0 = \lambda_{\min}(\Lambda^{-1/2}M\Lambda^{-1/2})/\|H\|_F^2` on
        :math:`\mathrm{range}(H)` (:cite:p:`wu2022alignment`; definition reconstructed, see
        :func:`companion.stability.bounds.alignment_factor`). ``nan`` when :math:`H = 0`.
        """
        if not self.rank:
            return math.nan
        lam = self.eigenvalues
        if self._factors is None:
            small = self._matrices
            m = np.einsum("nab,b,nbc->ac", small, lam, small) / self.n
        else:
            a, a_t = self._factors, self._factors_t
            inner = (a * lam) @ a_t  # A_i Lambda A_i^T
            m = self._factors_flat.T @ (inner @ a).reshape(-1, self.rank) / self.n
        m = m - np.diag(lam**3)
        scaled = m / np.sqrt(np.outer(lam, lam))
        low = float(np.linalg.eigvalsh(0.5 * (scaled + scaled.T))[0])
        # Tr(Sigma_g H) >= 0 exactly (both PSD): a negative value is rounding of a zero
        return max(low, 0.0) / float(np.sum(lam**2))

    def alignment_factor(self, residuals) -> float:
        r"""Alignment factor :math:`\mu` of the current residuals (square loss).

        :math:`\mu = \mathrm{Tr}(\Sigma_gH)/(2L\|H\|_F^2)` with per-sample gradients
        :math:`g_i = J_i^\top r_i` (:cite:p:`wu2022alignment`, reconstructed;
        :func:`companion.stability.bounds.alignment_factor` is the dense definition). Needs
        the Gauss-Newton form with the identity loss Hessian (:math:`\ell_i =
        \frac12\|r_i\|^2`); computed in the reduced basis as :math:`g_i = A_i^\top r_i`.

        Parameters
        ----------
        residuals : array_like, shape (n,) or (n, K)
            :math:`r_i = f(x_i) - y_i`, not all zero.
        """
        if self._factors is None or self._factors.shape[1] != self.num_outputs:
            raise ValueError(
                "alignment_factor needs a Gauss-Newton Curvature (from_jacobians or from_gram)"
            )
        res = as_float_array(residuals, "residuals", ndim=(1, 2)).reshape(-1)
        if res.size != self.n * self.num_outputs:
            raise ValueError(f"residuals must have n*K = {self.n * self.num_outputs} entries")
        loss2 = float(res @ res) / self.n
        if loss2 == 0:
            raise ValueError("residuals are all zero: the alignment factor is undefined")
        if not self.rank:
            raise ValueError("H = 0: the alignment factor is undefined")
        grads = np.einsum("nkr,nk->nr", self._factors, res.reshape(self.n, -1))
        mean = grads.mean(axis=0)
        noise = grads.T @ grads / self.n - np.outer(mean, mean)
        return float(np.sum(np.diag(noise) * self.eigenvalues) / (loss2 * self.frobenius2))

    @property
    def frobenius2(self) -> float:
        r""":math:`\|H\|_F^2 = \sum_a\lambda_a^2`."""
        return float(np.sum(self.eigenvalues**2))

    # ----------------------------------------------------------------------------------
    # batches and learning-rate units
    # ----------------------------------------------------------------------------------
    def noise_factor(self, batch_size: int, replacement: bool = False) -> float:
        r"""Batch-noise factor :math:`p` for these :math:`n` samples (``batch_noise_factor``)."""
        return batch_noise_factor(self.n, batch_size, replacement)

    def lr_scale(self, batch_size: int) -> float:
        r"""How many batch-mean steps one step of the user's learning rate is: 1 or :math:`B`."""
        return 1.0 if self.reduction == "mean" else float(batch_size)

    def gd_threshold(self) -> float:
        r"""Largest stable learning rate of full-batch GD, :math:`2/\lambda_{\max}(H)`.

        GD linearised at a minimum is :math:`x_{t+1} = (I - \eta H)x_t`, stable iff
        :math:`\eta \le 2/\lambda_{\max}(H)` (:cite:p:`mulayoff2024exact` Thm 1); with
        ``reduction="sum"`` over all :math:`n` samples the step is :math:`n` times larger.
        ``inf`` when :math:`H = 0`.
        """
        return _ratio(2.0, self.lr_scale(self.n) * self.sharpness)

    # ----------------------------------------------------------------------------------
    # the exact threshold
    # ----------------------------------------------------------------------------------
    def kron_operators(self, batch_size: int, replacement: bool = False):
        r"""The operators :math:`(C, D)` on :math:`\mathrm{range}(H)^{\otimes 2}`, ``(r^2, r^2)``.

        In the eigenbasis of :math:`H`, in batch-mean units (see
        :func:`companion.stability.operators.kron_operators` for the dense definition).
        """
        from .operators import kron_operators

        r = self.rank
        check_dense_size(3 * r**4, f"C and D on range(H) of rank {r}", "method='lanczos'")
        return kron_operators(self.reduced_hessians(), batch_size, replacement)

    def _top_dense(self, batch_size: int, replacement: bool) -> float:
        c, dd = self.kron_operators(batch_size, replacement)
        r2 = self.rank**2
        top = scipy.linalg.eigh(dd, c, eigvals_only=True, subset_by_index=[r2 - 1, r2 - 1])
        return float(top[0])

    def _top_lanczos(self, p: float) -> float:
        lam = self.eigenvalues
        r = lam.size
        inv_sqrt_c = 1.0 / np.sqrt(0.5 * (lam[:, None] + lam[None, :]))
        # C^{-1/2} (1-p) H X H C^{-1/2} is entrywise: (1-p) lam_a lam_b / c_ab times X; the
        # factors are folded into two constant matrices so that a product makes four passes
        # over the r x r entries besides the noise term (memory-bound at large r)
        mean_part = (1.0 - p) * np.outer(lam, lam) * inv_sqrt_c**2
        noise_scale = p * inv_sqrt_c

        def apply(vec: np.ndarray) -> np.ndarray:
            self.operator_products += 1
            v = vec.reshape(r, r)
            out = mean_part * v
            if p > 0:
                noise = self._noise(inv_sqrt_c * v)
                noise *= noise_scale
                out += noise
            return out.reshape(-1)

        if r * r <= _SMALL_OPERATOR:
            mat = np.column_stack([apply(col) for col in np.eye(r * r)])
            return float(np.linalg.eigvalsh(0.5 * (mat + mat.T))[-1])
        # Seeded symmetric start: the top eigenvector is symmetric (MM Thm 6) and the
        # operator commutes with transposition, so the Krylov space stays symmetric.
        rng = np.random.default_rng(0)
        g = rng.standard_normal((r, r))
        guess = g @ g.T / r**2
        guess[-1, -1] += 1.0
        start = (guess / inv_sqrt_c).reshape(-1)
        op = spla.LinearOperator((r * r, r * r), matvec=apply, dtype=np.float64)
        try:
            return _top_eigenvalue_arpack(op, v0=start, tol=_LANCZOS_TOL)
        except spla.ArpackNoConvergence:
            return _top_eigenvalue_arpack(
                op, v0=start, tol=_LANCZOS_TOL, ncv=min(r * r, 80), maxiter=100 * r * r
            )

    def generalized_sharpness(
        self, batch_size: int, replacement: bool = False, method: str = "auto"
    ) -> float:
        r"""Generalized sharpness :math:`\lambda_{\max}(C^\dagger D) = 2/\eta^*(B)`.

        (:cite:p:`mulayoff2024exact` Thm 3.) Equals :math:`\lambda_{\max}(H)` for :math:`p = 0`
        and is at least that otherwise; multiplied by :meth:`lr_scale` (``reduction="sum"``).
        0 when :math:`H = 0`.

        Parameters
        ----------
        batch_size : int
            :math:`B`.
        replacement : bool
            Sampling scheme (see ``batch_noise_factor``).
        method : {"auto", "dense", "lanczos"}
            Strategy (see the class docstring); "auto": dense for :math:`r \le 20`.
        """
        replacement = check_replacement(replacement)
        p = self.noise_factor(batch_size, replacement)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if not self.rank:
            return 0.0
        if method == "auto":
            method = "dense" if self.rank <= _DENSE_AUTO_RANK else "lanczos"
        top = (
            self._top_dense(batch_size, replacement) if method == "dense" else self._top_lanczos(p)
        )
        return self.lr_scale(batch_size) * top

    def sharpness_for_noise(self, noise_factor: float) -> float:
        r""":math:`\lambda_{\max}(C^\dagger D)` in batch-mean units for a given factor :math:`p`.

        :math:`D = (1-p)H\otimes H + p\frac1n\sum_iH_i\otimes H_i`, ``p`` in
        :math:`[0, 1]`; matrix-free Lanczos (see :meth:`generalized_sharpness`).
        """
        p = float(noise_factor)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"noise_factor must be in [0, 1], got {noise_factor!r}")
        return self._top_lanczos(p) if self.rank else 0.0

    def sharpness_bracket(self, batch_size: int, m: int, replacement: bool = False):
        r"""Certified bracket on the generalized sharpness from the top ``m`` eigen-directions.

        Proposition ``new-bracket`` (see :mod:`companion.stability.bracket`):
        :math:`\rho_m\le\rho\le\rho_m^+`, equal at :math:`m = r`. Here every
        :math:`H_i` is known, so :math:`q = \max_i\|P_RH_iP_R\|` is computed from the
        reduced matrices; :class:`~companion.stability.bracket.GramSpectrum` does the same
        from the top of a Gram matrix only.

        Parameters
        ----------
        batch_size : int
            :math:`B`.
        m : int
            :math:`1\le m\le r`.
        replacement : bool
            Sampling scheme.

        Returns
        -------
        companion.stability.bracket.SharpnessBracket

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> curv = Curvature.from_jacobians(rng.standard_normal((6, 2, 5)))
        >>> b = curv.sharpness_bracket(2, m=2)
        >>> bool(b.lower <= curv.generalized_sharpness(2) <= b.upper)
        True
        """
        from .bracket import bracket_from_parts

        p = self.noise_factor(batch_size, replacement)
        r = self.rank
        m = check_positive_int(m, "m")
        if m > r:
            raise ValueError(f"m must be at most the rank r = {r}, got {m}")
        lam = self.eigenvalues
        if self._factors is not None:
            a = self._factors
            top_factors = a[:, :, r - m :]
            rest = a[:, :, : r - m]
            gram_rest = rest @ np.swapaxes(rest, 1, 2)  # same nonzero spectrum as P_R H_i P_R
            q = float(np.linalg.eigvalsh(gram_rest)[:, -1].max()) if m < r else 0.0
        else:
            small = self._matrices
            top_factors = psd_factor(small[:, r - m :, r - m :])  # S_i^T S_i = block
            rr = small[:, : r - m, : r - m]
            q = float(np.linalg.eigvalsh(rr)[:, -1].max()) if m < r else 0.0
        restricted = Curvature.from_eigenbasis(lam[r - m :], top_factors)
        nxt = float(lam[r - m - 1]) if m < r else 0.0
        return bracket_from_parts(
            restricted, p, float(lam[-1]), nxt, max(q, 0.0), self.lr_scale(batch_size)
        )

    def ms_threshold(
        self, batch_size: int, replacement: bool = False, method: str = "auto"
    ) -> float:
        r"""Exact mean-square threshold :math:`\eta^*(B)` (:cite:p:`mulayoff2024exact` Thm 3).

        Linearised SGD is mean-square stable (:math:`\sup_t\mathbb E\|x_t\|^2 < \infty` for
        every start) iff :math:`\eta \le \eta^*`; ``inf`` when :math:`H = 0`. Arguments as in
        :meth:`generalized_sharpness`.
        """
        return _ratio(2.0, self.generalized_sharpness(batch_size, replacement, method))

    def ms_threshold_curve(self, batch_sizes, replacement: bool = False) -> np.ndarray:
        r""":math:`\eta^*(B)` for several batch sizes, reusing the one reduction.

        Only :math:`p(B)` changes with :math:`B` (:cite:p:`mulayoff2024exact` Thm 3), so each
        size costs one Lanczos (or dense) solve. Returns an array aligned with
        ``batch_sizes``.
        """
        sizes = np.atleast_1d(np.asarray(batch_sizes))
        if sizes.size == 0:
            raise ValueError("batch_sizes must hold at least one batch size")
        out = [self.ms_threshold(_as_batch_size(b), replacement) for b in sizes.tolist()]
        return np.asarray(out, dtype=np.float64)

    # ----------------------------------------------------------------------------------
    # bounds
    # ----------------------------------------------------------------------------------
    def necessary_bounds(self, batch_size: int, replacement: bool = False) -> NecessaryBounds:
        r"""Necessary conditions for mean-square stability: upper bounds on :math:`\eta^*`.

        Rayleigh quotients of :math:`C^\dagger D` at :math:`X = vv^\top` (MM eq. 15) and
        :math:`X = I` (MM eq. 16) (:cite:p:`mulayoff2024exact` Prop. 3), and
        :math:`2/\lambda_{\max}(H)`. In the eigenbasis :math:`v = e_r`,
        :math:`v^\top H_iv = (\tilde U_i)_{rr}` and :math:`\|H_i\|_F = \|\tilde U_i\|_F`. All
        ``inf`` when :math:`H = 0`.
        """
        p = self.noise_factor(batch_size, replacement)
        scale = self.lr_scale(batch_size)
        if not self.rank:
            return NecessaryBounds(math.inf, math.inf, math.inf)
        lam = self.sharpness
        var_top = float(np.mean((self.top_direction_curvatures() - lam) ** 2))
        hi_fro2 = float(np.mean(self._sample_frobenius2()))
        return NecessaryBounds(
            top_eigenvector=_ratio(2.0 * lam, scale * (lam**2 + p * var_top)),
            trace=_ratio(2.0 * self.trace, scale * ((1.0 - p) * self.frobenius2 + p * hi_fro2)),
            gd=_ratio(2.0, scale * lam),
        )

    def wu_condition(
        self, lr: float, batch_size: int, replacement: bool = False, *, on_range: bool = False
    ) -> float:
        r"""Wu-Ma-E quantity :math:`\lambda_{\max}\{(I - \eta H)^2 + \eta^2p\,\Sigma\}`.

        A value :math:`\le 1` is *sufficient* for mean-square stability
        (:cite:p:`ma2021linear` Prop. 1, :cite:p:`wu2018sgd`):
        :math:`\mathbb E\|x_{t+1}\|^2 = \mathbb E[x_t^\top((I-\eta H)^2 + \eta^2p\Sigma)x_t]`.
        :math:`\eta` is taken in batch-mean units (:meth:`lr_scale`).

        On :math:`\mathrm{null}(H)` the matrix is the identity (those directions never move),
        so over :math:`\mathbb R^d` the value is at least 1 whenever :math:`H` is singular.
        ``on_range=True`` returns the largest eigenvalue on :math:`\mathrm{range}(H)` instead:
        the margin of the condition where anything moves (what
        :func:`~companion.nets.diagnosis.diagnose` reports).
        A Curvature built from a Gram matrix does not know :math:`d` and counts as singular.
        """
        lr = check_lr(lr) * self.lr_scale(batch_size)
        p = self.noise_factor(batch_size, replacement)
        singular = self.dim is None or self.rank < self.dim
        if not self.rank:
            return 1.0
        mat = np.diag((1.0 - lr * self.eigenvalues) ** 2) + lr**2 * p * self.sigma
        top = float(np.linalg.eigvalsh(0.5 * (mat + mat.T))[-1])
        return max(top, 1.0) if singular and not on_range else top

    def rank_one_bound(
        self,
        batch_size: int,
        replacement: bool = False,
        *,
        restarts: int = 8,
        steps: int = 200,
        seed: int = 0,
    ) -> RankOneBound:
        r"""Rank-one lower bound on the generalized sharpness, by ascent on the sphere.

        For every unit :math:`v` with :math:`v^\top Hv > 0`,

        .. math::

            \lambda_{\max}(C^\dagger D) \;\ge\; v^\top Hv
            + p\,\frac1n\sum_i\frac{(v^\top H_iv - v^\top Hv)^2}{v^\top Hv}

        (the Rayleigh quotient at :math:`X = vv^\top`; :cite:p:`mulayoff2024exact` eqs.
        24-25), maximised by projected gradient ascent with backtracking from the top
        eigenvector of :math:`H` and ``restarts`` seeded random starts, on the :math:`r`
        coordinates of :math:`\mathrm{range}(H)`. Multiplied by :meth:`lr_scale`.
        """
        p = self.noise_factor(batch_size, replacement)
        restarts = check_positive_int(restarts, "restarts", minimum=0)
        steps = check_positive_int(steps, "steps", minimum=0)
        seed = check_positive_int(seed, "seed", minimum=0)
        if not self.rank:
            direction = None if self.dim is None else np.eye(self.dim)[0]
            return RankOneBound(0.0, direction)
        rng = np.random.default_rng(seed)
        starts = [np.eye(self.rank)[-1]]
        for _ in range(restarts):
            x = rng.standard_normal(self.rank)
            starts.append(x / np.linalg.norm(x))
        best_value, best_c = -math.inf, starts[0]
        for start in starts:
            value, c = self._ascend(p, start, steps)
            if value > best_value:
                best_value, best_c = value, c
        direction = None
        if self._lift is not None:
            v = self._lift(best_c)
            direction = v / np.linalg.norm(v)
        return RankOneBound(self.lr_scale(batch_size) * best_value, direction)

    def _rank_one_objective(self, p: float, c: np.ndarray) -> tuple[float, np.ndarray]:
        lam, n = self.eigenvalues, self.n
        h = float(c @ (lam * c))
        hi = self._forms(c)
        num = (1.0 - p) * h**2 + p * float(hi @ hi) / n
        grad_num = 4.0 * (1.0 - p) * h * (lam * c) + 4.0 * p / n * self._form_grad(hi, c)
        value = num / h
        grad = grad_num / h - num * 2.0 * (lam * c) / h**2 - 2.0 * value * c
        return value, grad - (grad @ c) * c

    def _ascend(self, p: float, c: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
        value, grad = self._rank_one_objective(p, c)
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
                new_value, new_grad = self._rank_one_objective(p, trial)
                if new_value >= value + 1e-4 * step * norm**2 or step < 1e-16 / max(
                    value, 1e-300
                ):
                    break
                step *= 0.5
            if new_value < value:
                break
            c, value, grad = trial, new_value, new_grad
        return value, c


def _as_batch_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | float):
        raise TypeError(f"batch_sizes must hold integers, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"batch_sizes must hold integers, got {value!r}")
    return int(value)


def as_curvature(curvature) -> Curvature:
    r"""A :class:`Curvature` as it is, or per-sample Hessians ``(n, d, d)`` made into one.

    The functional front door (``sharpness(h)``, ``ms_threshold(h, B)``, ...) accepts either;
    pass a :class:`Curvature` to reuse its eigendecomposition across calls.
    """
    if isinstance(curvature, Curvature):
        return curvature
    return Curvature.from_hessians(curvature)


def mean_hessian(hessians) -> np.ndarray:
    r"""The loss Hessian :math:`H = \frac1n\sum_i H_i`, ``(d, d)``.

    Examples
    --------
    >>> import numpy as np
    >>> mean_hessian(np.array([[[1.0]], [[3.0]]]))
    array([[2.]])
    """
    if isinstance(hessians, Curvature):
        return hessians.mean_hessian()
    return as_hessians(hessians).mean(axis=0)


def noise_covariance(hessians) -> np.ndarray:
    r"""Hessian noise :math:`\Sigma = \frac1n\sum_i H_i^2 - H^2` (:cite:p:`wu2018sgd`), ``(d, d)``.

    :math:`\Sigma` is PSD: :math:`v^\top\Sigma v = \frac1n\sum_i\|(H_i - H)v\|^2`. The dense
    definition (:attr:`Curvature.sigma` is the same matrix on :math:`\mathrm{range}(H)`).

    Examples
    --------
    >>> import numpy as np
    >>> noise_covariance(np.array([[[1.0]], [[3.0]]]))   # variance of 1 and 3
    array([[1.]])
    """
    if isinstance(hessians, Curvature):
        basis = hessians._basis()
        return basis @ hessians.sigma @ basis.T
    hs = as_hessians(hessians)
    centred = hs - hs.mean(axis=0)
    sigma = np.einsum("nij,njk->ik", centred, centred) / hs.shape[0]
    return 0.5 * (sigma + sigma.T)


def sharpness(hessians) -> float:
    r"""Sharpness :math:`a = \lambda_{\max}(H)` (:cite:p:`wu2018sgd`).

    Examples
    --------
    >>> import numpy as np
    >>> sharpness(np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])]))
    1.5
    """
    return as_curvature(hessians).sharpness


def non_uniformity(hessians) -> float:
    r"""Non-uniformity :math:`s = \sqrt{\lambda_{\max}(\Sigma)}` (:cite:p:`wu2018sgd`).

    In one dimension :math:`s` is the standard deviation of the per-sample curvatures.

    Examples
    --------
    >>> import numpy as np
    >>> non_uniformity(np.array([[[1.0]], [[3.0]]]))
    1.0
    """
    return as_curvature(hessians).non_uniformity


def gd_threshold(hessians) -> float:
    r"""Largest stable learning rate of gradient descent, :math:`2/\lambda_{\max}(H)`.

    (:cite:p:`wu2018sgd`, :cite:p:`mulayoff2024exact` Thm 1.) ``inf`` when :math:`H = 0`.

    Examples
    --------
    >>> import numpy as np
    >>> gd_threshold(np.array([[[1.0]], [[3.0]]]))
    1.0
    """
    return as_curvature(hessians).gd_threshold()
