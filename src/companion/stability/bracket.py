r"""A certified bracket on the exact threshold :math:`\eta^*` from the top of the spectrum.

The exact threshold needs every eigenpair of the Gram matrix (or of :math:`H`); for a
network on a whole data set that is out of reach. This module brackets it from the top
:math:`m` eigenpairs alone (proposition ``new-bracket`` of the book's appendix
"Computing at scale").

Setting (:cite:p:`mulayoff2024exact` Thm 3): per-sample PSD :math:`H_i`, :math:`H =
\frac1n\sum_iH_i = \sum_a\lambda_au_au_a^\top` (:math:`\lambda_1\ge\lambda_2\ge\dots`),
:math:`C = \frac12(H\otimes I + I\otimes H)`, :math:`D = (1-p)H\otimes H +
p\frac1n\sum_iH_i\otimes H_i`, generalized sharpness :math:`\rho = \lambda_{\max}(C^\dagger D)`
and :math:`\eta^* = 2/\rho`. Let :math:`T` be the span of the top :math:`m` eigenvectors,
:math:`R` its complement in :math:`\mathrm{range}(H)`, and

.. math::

    \rho_m = \max_{S = S^\top,\ \mathrm{range}\,S\subseteq T}
        \frac{\langle S, DS\rangle}{\langle S, CS\rangle}, \qquad
    q = \max_i\|P_RH_iP_R\| \le n\lambda_{m+1}, \qquad
    h = \frac{2\lambda_1\lambda_{m+1}}{\lambda_1 + \lambda_{m+1}}.

Then, with :math:`d_N = 4pq` and :math:`d = d_N + (1-p)h`,

.. math::

    \rho_m \;\le\; \rho \;\le\; \rho_m^+ = \frac{\rho_m + d}2
        + \sqrt{\Big(\frac{\rho_m - d}2\Big)^2 + \rho_m d_N},

and both sides equal :math:`\rho` at :math:`m = r` (:math:`q = h = 0`). The lower side is
the Rayleigh quotient restricted to :math:`T`; the upper side splits :math:`S` into its
:math:`T\times T` block and the rest, on which :math:`C` is block diagonal and the
:math:`(1-p)` part of :math:`D` is diagonal, and bounds the rest and the coupling (proof in
the appendix). In Gram form (:math:`G = \tilde J\tilde J^\top = \sum_a\kappa_av_av_a^\top`,
:math:`\lambda_a = \kappa_a/n`) everything comes from the top :math:`m` eigenpairs, the
:math:`K\times K` diagonal blocks :math:`G_{ii}` and :math:`\kappa_{m+1}`: the restricted
factors are :math:`P_i = (V_m\Gamma_m^{1/2})_i` and
:math:`\|P_RH_iP_R\| = \lambda_{\max}(G_{ii} - P_iP_i^\top)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..validation import as_float_array, check_positive_int, check_replacement
from .curvature import RANGE_RTOL, Curvature
from .sampling import batch_noise_factor

__all__ = ["GramSpectrum", "SharpnessBracket", "bracket_from_parts", "gram_spectrum"]

_REDUCTIONS = ("mean", "sum")


class SharpnessBracket(NamedTuple):
    r"""Two-sided bound on the generalized sharpness :math:`\rho = 2/\eta^*`.

    Attributes
    ----------
    lower, upper : float
        :math:`\rho_m \le \rho \le \rho_m^+` (learning-rate units of the curvature).
    m : int
        Number of top eigen-directions used.
    """

    lower: float
    upper: float
    m: int

    @property
    def eta_lo(self) -> float:
        r"""Lower end of the bracket on :math:`\eta^*`: :math:`2/\rho_m^+`."""
        return math.inf if self.upper <= 0 else 2.0 / self.upper

    @property
    def eta_hi(self) -> float:
        r"""Upper end of the bracket on :math:`\eta^*`: :math:`2/\rho_m`."""
        return math.inf if self.lower <= 0 else 2.0 / self.lower

    @property
    def relative_width(self) -> float:
        r""":math:`(\eta_{hi} - \eta_{lo})/\eta_{lo} = \rho_m^+/\rho_m - 1`."""
        return math.inf if self.lower <= 0 else self.upper / self.lower - 1.0


def bracket_from_parts(
    restricted: Curvature,
    p: float,
    top_eigenvalue: float,
    next_eigenvalue: float,
    complement_norm: float,
    lr_scale: float = 1.0,
) -> SharpnessBracket:
    r"""The bracket of proposition ``new-bracket`` from its ingredients.

    Parameters
    ----------
    restricted : Curvature
        The problem restricted to the top-:math:`m` eigenspace :math:`T` (its
        generalized sharpness is :math:`\rho_m`).
    p : float
        Batch-noise factor.
    top_eigenvalue, next_eigenvalue : float
        :math:`\lambda_1` and :math:`\lambda_{m+1}` of :math:`H` (0 when :math:`m = r`).
    complement_norm : float
        :math:`q = \max_i\|P_RH_iP_R\|` (0 when :math:`m = r`).
    lr_scale : float
        1 (``reduction="mean"``) or :math:`B` (``"sum"``).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.stability.curvature import Curvature
    >>> full = Curvature.from_hessians(np.array([np.diag([2.0, 1.0]), np.diag([0.0, 1.0])]))
    >>> top = Curvature.from_hessians(np.array([[[2.0]], [[0.0]]]))   # T = e_1
    >>> b = bracket_from_parts(top, 1.0, 1.0, 1.0, 1.0)
    >>> bool(b.lower <= full.generalized_sharpness(1) <= b.upper)
    True
    """
    if restricted.reduction != "mean":
        raise ValueError("restricted must be a Curvature with reduction='mean'")
    a = restricted.sharpness_for_noise(p)
    lam1, lam_next, q = float(top_eigenvalue), float(next_eigenvalue), float(complement_norm)
    if min(lam1, lam_next, q) < 0 or not 0 <= p <= 1:
        raise ValueError("eigenvalues, complement_norm must be >= 0 and p in [0, 1]")
    h = 0.0 if lam_next == 0 else 2.0 * lam1 * lam_next / (lam1 + lam_next)
    d_noise = 4.0 * p * q
    d = d_noise + (1.0 - p) * h
    upper = 0.5 * (a + d) + math.sqrt((0.5 * (a - d)) ** 2 + a * d_noise)
    return SharpnessBracket(lr_scale * a, lr_scale * max(upper, a), restricted.rank)


@dataclass(frozen=True)
class GramSpectrum:
    r"""Top eigenpairs of a Gram matrix and its diagonal blocks: all the bracket needs.

    :math:`G = \tilde J\tilde J^\top` (``nK x nK``, rows sample-major), with
    :math:`\kappa_1\ge\dots\ge\kappa_M` its top :math:`M` eigenvalues (``eigenvalues``,
    descending), the orthonormal eigenvectors (``eigenvectors``, ``(nK, M)``), the
    :math:`K\times K` diagonal blocks :math:`G_{ii}` (``diagonal_blocks``, ``(n, K, K)``)
    and ``next_eigenvalue`` :math:`\ge\kappa_{M+1}` (0 if :math:`M = nK`). Build it with
    :func:`gram_spectrum` (dense :math:`G`) or
    :func:`companion.nets.jacobians.gram_top_eigenpairs` (matrix-free).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    diagonal_blocks: np.ndarray
    next_eigenvalue: float
    reduction: str = "mean"

    def __post_init__(self):
        vals = as_float_array(self.eigenvalues, "eigenvalues", ndim=1)
        vecs = as_float_array(self.eigenvectors, "eigenvectors", ndim=2)
        blocks = as_float_array(self.diagonal_blocks, "diagonal_blocks", ndim=3)
        n, k, k2 = blocks.shape
        if k != k2 or n < 1:
            raise ValueError(f"diagonal_blocks must have shape (n, K, K), got {blocks.shape}")
        if vals.size < 1 or vecs.shape != (n * k, vals.size):
            raise ValueError(
                f"eigenvectors must have shape (nK, M) = ({n * k}, {vals.size}) with M >= 1, "
                f"got {vecs.shape}"
            )
        if np.any(np.diff(vals) > 0):
            raise ValueError("eigenvalues must be in descending order")
        nxt = float(self.next_eigenvalue)
        if not (0 <= nxt <= vals[-1] * (1 + 1e-8) + 1e-300) and vals[-1] > 0:
            raise ValueError(
                f"next_eigenvalue must be in [0, smallest given eigenvalue {vals[-1]:.6g}], "
                f"got {nxt!r}"
            )
        if self.reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {self.reduction!r}")
        object.__setattr__(self, "eigenvalues", vals)
        object.__setattr__(self, "eigenvectors", vecs)
        object.__setattr__(self, "diagonal_blocks", 0.5 * (blocks + np.swapaxes(blocks, 1, 2)))
        object.__setattr__(self, "next_eigenvalue", max(nxt, 0.0))

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.diagonal_blocks.shape[0])

    @property
    def num_outputs(self) -> int:
        """:math:`K`."""
        return int(self.diagonal_blocks.shape[1])

    @property
    def size(self) -> int:
        """:math:`M`, the number of eigenpairs held."""
        return int(self.eigenvalues.size)

    def bracket(
        self, batch_size: int, replacement: bool = False, m: int | None = None
    ) -> SharpnessBracket:
        r"""The bracket :math:`[\rho_m, \rho_m^+]` on the generalized sharpness from the top ``m``.

        Parameters
        ----------
        batch_size : int
            :math:`B`.
        replacement : bool
            Sampling scheme.
        m : int, optional
            How many of the held eigenpairs to use, :math:`1\le m\le M` (default all).
            Eigenvalues at most ``RANGE_RTOL`` times the largest are outside
            :math:`\mathrm{range}(H)` (the package's rank rule) and are not used.

        Returns
        -------
        SharpnessBracket
            ``eta_lo``, ``eta_hi`` bracket :math:`\eta^*` for the learning rate of the
            batch loss with this ``reduction``.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> J = rng.standard_normal((12, 30))
        >>> spec = gram_spectrum(J @ J.T, 12)
        >>> exact = Curvature.from_gram(J @ J.T).generalized_sharpness(3)
        >>> b = spec.bracket(3, m=4)
        >>> bool(b.lower <= exact <= b.upper)
        True
        >>> round(spec.bracket(3).upper / exact, 8)                 # closes at m = r
        1.0
        """
        replacement = check_replacement(replacement)
        size = self.size
        if m is None:
            m = size
        m = check_positive_int(m, "m")
        if m > size:
            raise ValueError(f"m must be at most the {size} eigenpairs held, got {m}")
        n, k = self.n, self.num_outputs
        p = batch_noise_factor(n, batch_size, replacement)
        scale = 1.0 if self.reduction == "mean" else float(batch_size)
        kappa = self.eigenvalues
        top = kappa[0]
        if top <= 0:
            return SharpnessBracket(0.0, 0.0, 0)
        cut = RANGE_RTOL * top
        used = int(np.count_nonzero(kappa[:m] > cut))
        nxt = kappa[m] if m < size else self.next_eigenvalue
        nxt = 0.0 if nxt <= cut else float(nxt)
        vals = kappa[:used]
        factors = (self.eigenvectors[:, :used] * np.sqrt(vals)).reshape(n, k, used)
        restricted = Curvature.from_eigenbasis(vals[::-1] / n, factors[:, :, ::-1])
        q = 0.0
        if nxt > 0:
            rest = self.diagonal_blocks - factors @ np.swapaxes(factors, 1, 2)
            q = float(np.linalg.eigvalsh(0.5 * (rest + np.swapaxes(rest, 1, 2)))[:, -1].max())
            q = min(max(q, 0.0), nxt)  # ||P_R H_i P_R|| <= kappa_{m+1}: a principal block
        return bracket_from_parts(restricted, p, top / n, nxt / n, q, scale)


def gram_spectrum(gram, m: int, num_outputs: int = 1, *, reduction: str = "mean"):
    r"""The top ``m`` eigenpairs of a dense Gram matrix as a :class:`GramSpectrum`.

    Full ``numpy.linalg.eigh`` (the reference; for large :math:`nK` use
    :func:`companion.nets.jacobians.gram_top_eigenpairs`).

    Parameters
    ----------
    gram : array_like, shape (nK, nK)
        Symmetric PSD, rows sample-major.
    m : int
        :math:`1 \le m \le nK`.
    num_outputs : int
        :math:`K`.
    reduction : {"mean", "sum"}
        As in :class:`~companion.stability.curvature.Curvature`.

    Examples
    --------
    >>> import numpy as np
    >>> gram_spectrum(np.diag([1.0, 3.0, 2.0]), 2).eigenvalues
    array([3., 2.])
    """
    g = as_float_array(gram, "gram", ndim=2)
    k = check_positive_int(num_outputs, "num_outputs")
    side = g.shape[0]
    if g.shape != (side, side) or side % k or side == 0:
        raise ValueError(f"gram must be square with a side divisible by K = {k}, got {g.shape}")
    m = check_positive_int(m, "m")
    if m > side:
        raise ValueError(f"m must be at most nK = {side}, got {m}")
    g = 0.5 * (g + g.T)
    vals, vecs = np.linalg.eigh(g)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    n = side // k
    idx = np.arange(side).reshape(n, k)
    blocks = g[idx[:, :, None], idx[:, None, :]]
    nxt = float(max(vals[m], 0.0)) if m < side else 0.0
    return GramSpectrum(
        np.clip(vals[:m], 0.0, None), vecs[:, :m], blocks, nxt, reduction=reduction
    )
