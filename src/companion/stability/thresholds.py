r"""Stability thresholds of linearised SGD: the functional front door, and brute force.

Every function takes per-sample Hessians ``(n, d, d)`` or a
:class:`~companion.stability.curvature.Curvature` (pass the object to reuse its
eigendecomposition, or to work from Jacobians or a Gram matrix) and is implemented through
that object; see its docstring for the operators :math:`C`, :math:`D` and the two
strategies ("dense", "lanczos").

* exact: :func:`generalized_sharpness`, :func:`ms_threshold`, :func:`ms_threshold_curve`
  (:cite:p:`mulayoff2024exact` Thm 3), :func:`kth_order_threshold` (:cite:p:`ma2021linear`
  Def. 5);
* necessary: :func:`ms_necessary_bounds` (MM Prop. 3), :func:`rank_one_bound` (MM eq. 24);
* sufficient: :func:`wu_condition` (:cite:p:`wu2018sgd`, MY Prop. 1);
* brute force, for tests and the book: :func:`ms_threshold_bisection` (bisection on the
  spectral radius of :math:`Q(\eta)`, sharing no eigenvalue formula with the routes above).
"""

from __future__ import annotations

import math

import numpy as np

from ..validation import (
    as_hessians,
    check_dense_size,
    check_lr,
    check_positive_int,
    check_replacement,
)
from .curvature import (
    NecessaryBounds,
    RankOneBound,
    as_curvature,
    gd_threshold,
    range_mask,
)
from .operators import kron_operators, moment_operator_coefficients
from .sampling import batch_noise_factor

__all__ = [
    "NecessaryBounds",
    "RankOneBound",
    "gd_threshold",
    "generalized_sharpness",
    "kth_order_threshold",
    "ms_necessary_bounds",
    "ms_threshold",
    "ms_threshold_bisection",
    "ms_threshold_curve",
    "rank_one_bound",
    "wu_condition",
]


def generalized_sharpness(
    curvature, batch_size: int, replacement: bool = False, method: str = "auto"
) -> float:
    r"""Generalized sharpness :math:`\lambda_{\max}(C^\dagger D) = 2/\eta^*` (MM Thm 3).

    Parameters
    ----------
    curvature : array_like of shape (n, d, d), or Curvature
        Per-sample Hessians (symmetric PSD), or a :class:`Curvature`.
    batch_size : int
        Batch size :math:`B`.
    replacement : bool
        Sampling scheme (see ``batch_noise_factor``).
    method : {"auto", "dense", "lanczos"}
        ``"dense"``: the :math:`r^2\times r^2` generalized eigenproblem :math:`Dv = \lambda Cv`
        on :math:`\mathrm{range}(H)^{\otimes2}`; ``"lanczos"``: matrix-free Lanczos in the
        eigenbasis of :math:`H`; ``"auto"``: dense for rank :math:`\le 20`.

    Returns
    -------
    float
        ``0.0`` when :math:`H = 0` (:cite:p:`mulayoff2024exact` Thm 3).

    Examples
    --------
    >>> import numpy as np
    >>> hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])
    >>> round(generalized_sharpness(hs, 2), 12)    # B = n: gradient descent, lambda_max(H)
    1.5
    """
    return as_curvature(curvature).generalized_sharpness(batch_size, replacement, method)


def ms_threshold(
    curvature, batch_size: int, replacement: bool = False, method: str = "auto"
) -> float:
    r"""Exact mean-square stability threshold :math:`\eta^* = 2/\lambda_{\max}(C^\dagger D)`.

    Linearised SGD at an interpolating minimum is mean-square stable
    (:math:`\sup_t\mathbb E\|x_t\|^2 < \infty` for every start) iff :math:`\eta \le \eta^*`
    (:cite:p:`mulayoff2024exact` Thm 3); :math:`\eta^*` is non-decreasing in :math:`B`
    (MM Prop. 1). ``inf`` when :math:`H = 0`. Arguments as in :func:`generalized_sharpness`.

    Examples
    --------
    >>> import numpy as np
    >>> hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])
    >>> round(ms_threshold(hs, 1), 12)
    0.666666666667
    """
    return as_curvature(curvature).ms_threshold(batch_size, replacement, method)


def ms_threshold_curve(curvature, batch_sizes, replacement: bool = False) -> np.ndarray:
    r"""Exact :math:`\eta^*(B)` for several batch sizes, from one reduction.

    Only the batch-noise factor :math:`p(B)` changes with :math:`B`
    (:cite:p:`mulayoff2024exact` Thm 3). Returns a float array aligned with ``batch_sizes``.

    Examples
    --------
    >>> import numpy as np
    >>> hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])
    >>> ms_threshold_curve(hs, [1, 2]).round(6)
    array([0.666667, 1.333333])
    """
    return as_curvature(curvature).ms_threshold_curve(batch_sizes, replacement)


def ms_necessary_bounds(curvature, batch_size: int, replacement: bool = False) -> NecessaryBounds:
    r"""Necessary conditions for mean-square stability: upper bounds on :math:`\eta^*`.

    Both come from the Rayleigh quotient :math:`\langle X, DX\rangle/\langle X, CX\rangle \le
    \lambda_{\max}(C^\dagger D)`, with :math:`X = vv^\top` (MM eq. 15) and :math:`X = I` (MM eq.
    16) (:cite:p:`mulayoff2024exact` Prop. 3). All ``inf`` when :math:`H = 0`.

    Examples
    --------
    >>> import numpy as np
    >>> hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])
    >>> round(ms_necessary_bounds(hs, 1).best, 6)
    0.666667
    """
    return as_curvature(curvature).necessary_bounds(batch_size, replacement)


def rank_one_bound(
    curvature,
    batch_size: int,
    replacement: bool = False,
    *,
    restarts: int = 8,
    steps: int = 200,
    seed: int = 0,
) -> RankOneBound:
    r"""Rank-one lower bound on the generalized sharpness (:cite:p:`mulayoff2024exact` eq. 24).

    See :meth:`~companion.stability.curvature.Curvature.rank_one_bound`. Returns
    ``RankOneBound(value, direction)``; the value is at most :math:`2/\eta^*`.

    Examples
    --------
    >>> import numpy as np
    >>> hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])
    >>> value, v = rank_one_bound(hs, 1)
    >>> round(value, 6), np.abs(v).round(6).tolist()    # attained at e_2: 3.0 = 2 / eta*
    (3.0, [0.0, 1.0])
    """
    return as_curvature(curvature).rank_one_bound(
        batch_size, replacement, restarts=restarts, steps=steps, seed=seed
    )


def wu_condition(curvature, lr: float, batch_size: int, replacement: bool = False) -> float:
    r"""Wu-Ma-E quantity :math:`\lambda_{\max}\{(I - \eta H)^2 + \eta^2p\,\Sigma\}`.

    :math:`\Sigma = \frac1n\sum_iH_i^2 - H^2`. A value :math:`\le 1` is *sufficient* for
    mean-square stability (:cite:p:`ma2021linear` Prop. 1, :cite:p:`wu2018sgd`); in one
    dimension it is :math:`(1 - \eta a)^2 + \eta^2ps^2`, exact.

    Examples
    --------
    >>> import numpy as np
    >>> round(wu_condition(np.array([[[1.0]], [[3.0]]]), 0.5, 1), 12)   # (1-1)^2 + 0.25
    0.25
    """
    return as_curvature(curvature).wu_condition(lr, batch_size, replacement)


# --------------------------------------------------------------------------------------
# brute force: bisection on the spectral radius of Q
# --------------------------------------------------------------------------------------
def _brute_force_setup(hessians, batch_size, replacement, rtol):
    """Validated (hessians, their restriction to range(H), rtol) for the scans below."""
    hs = as_hessians(hessians)
    batch_noise_factor(hs.shape[0], batch_size, check_replacement(replacement))
    rtol = check_lr(rtol, "rtol")
    if rtol >= 1:
        raise ValueError(f"rtol must be < 1, got {rtol}")
    return hs, _range_restricted(hs), rtol


def _range_restricted(hs: np.ndarray) -> np.ndarray:
    """``U_r^T H_i U_r`` on range(H) by the package's rank rule (no Curvature involved)."""
    lam, vecs = np.linalg.eigh(hs.mean(axis=0))
    basis = vecs[:, range_mask(lam)]
    small = basis.T @ hs @ basis
    return 0.5 * (small + np.swapaxes(small, 1, 2))


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
    _, small, rtol = _brute_force_setup(hessians, batch_size, replacement, rtol)
    r = small.shape[1]
    if r == 0:
        return math.inf
    check_dense_size(4 * r**4, f"Q on range(H) of rank {r}", "ms_threshold(method='lanczos')")
    c, dd = kron_operators(small, batch_size, replacement)
    lo, hi = 0.0, 2.02 / float(np.linalg.eigvalsh(small.mean(axis=0))[-1])
    while _second_moment_radius(c, dd, hi) <= 1.0:  # never expected; kept for safety
        lo, hi = hi, 2.0 * hi
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if _second_moment_radius(c, dd, mid) <= 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


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
    restricted to symmetric tensors on :math:`\mathrm{range}(H)`. When :math:`H` is singular,
    a state :math:`x = y + z` with :math:`z \in \mathrm{null}(H)` (fixed by every step) has
    :math:`k`-th moment blocks :math:`y^{\otimes j}\otimes z^{\otimes(k-j)}` that evolve by
    :math:`T_j` on the range, for every :math:`j \le k`; the threshold is then the smallest of
    the range thresholds of orders :math:`1..k` (e.g. :math:`\min(\eta_3, \eta_2)` for
    :math:`k = 3`, since :math:`\eta_2 \le \eta_1`). :math:`T_k` is symmetric (an average of tensor
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
    order = check_positive_int(order, "order")
    grid = check_positive_int(grid, "grid")
    hs, small, rtol = _brute_force_setup(hessians, batch_size, replacement, rtol)
    r = small.shape[1]
    if r == 0:
        return math.inf
    top = float(np.linalg.eigvalsh(small.mean(axis=0))[-1])
    lr_max = 4.0 / top if lr_max is None else check_lr(lr_max, "lr_max")
    # With a null space N, x = y + z (y in range(H), z in N is fixed by every step): the
    # k-th moment holds the blocks y^(j) (x) z^(k-j) for every j <= k, which evolve by T_j
    # on the range. So the k-th order threshold is the smallest of the range thresholds of
    # orders 1..k; with H of full rank only j = k remains.
    orders = [order] if r == hs.shape[1] else list(range(1, order + 1))
    return min(
        _first_crossing(small, batch_size, j, replacement, lr_max, grid, rtol) for j in orders
    )


def _first_crossing(small, batch_size, order, replacement, lr_max, grid, rtol) -> float:
    """First rate at which rho(T_order) on symmetric tensors of the range exceeds 1."""
    coefficients = moment_operator_coefficients(
        small, batch_size, order, replacement, "auto", True
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
