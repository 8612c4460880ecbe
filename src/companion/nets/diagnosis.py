r"""One call from a trained network to every linear-stability quantity of the book.

:func:`diagnose` evaluates a model at its current parameters on its training data and
reports, for a learning rate :math:`\eta` and batch size :math:`B`:

* the training loss and whether the point interpolates (the linear-stability theory of
  :cite:p:`wu2018sgd`, :cite:p:`ma2021linear` and :cite:p:`mulayoff2024exact` is about
  interpolating minima; a point that does not interpolate is flagged, never silently
  treated as one);
* sharpness :math:`a = \lambda_{\max}(H)` against :math:`2/\eta`, non-uniformity
  :math:`s = \sqrt{\lambda_{\max}(\Sigma)}`, the Wu–Ma–E sufficient condition;
* the exact generalized sharpness and :math:`\eta^*(B)` (:cite:p:`mulayoff2024exact` Thm 3)
  at :math:`B` and on a grid of batch sizes, the necessary bounds of MM Prop. 3 and the
  rank-one lower bound;
* Ma–Ying's moment bounds (Thm 2, Cor. 1), first-layer gradients :math:`g_W, g_x` and the
  Sobolev bound (Cor. 2, Thm 3) (:cite:p:`ma2021linear`);
* the alignment factor of the SGD noise (:cite:p:`wu2022alignment`, reconstructed);
* the verdict: stable or unstable in mean square for :math:`(\eta, B)`.

Everything curvature-related is computed in the Gram space of the per-sample Jacobians
(:math:`nK\times nK`, :math:`H_i = J_i^\top J_i`), never with :math:`d\times d` matrices;
:math:`H` here is the Gauss–Newton matrix, which equals the loss Hessian at an
interpolating minimum (the report also gives the loss Hessian's top eigenvalue by Lanczos,
so the two can be compared).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..validation import as_float_array, check_lr, check_positive_int, check_replacement
from .data import as_xy
from .jacobians import (
    DEFAULT_JACOBIAN_MEMORY,
    FirstLayerGradients,
    first_layer_gradients,
    gram_matrix,
    parameter_jacobian,
)
from .models import as_float64, num_parameters
from ..stability.sampling import batch_noise_factor

__all__ = [
    "GramCurvature",
    "StabilityReport",
    "alignment_factor_gram",
    "diagnose",
    "gram_curvature",
]

#: Gram eigenvalues at most this times the largest count as zero (as in
#: ``thresholds``: rounding leaves null eigenvalues near nK * eps * gamma_max).
_RANGE_RTOL = 1e-10
#: Relative margin within which eta and eta* are reported as "at the edge".
_EDGE_RTOL = 1e-2


# ----------------------------------------------------------------------------------------
# Gram-space curvature
# ----------------------------------------------------------------------------------------


def _as_gram(gram, num_outputs: int) -> tuple[np.ndarray, int, int]:
    g = as_float_array(gram, "gram", ndim=2)
    k = check_positive_int(num_outputs, "num_outputs")
    if g.shape[0] != g.shape[1] or g.shape[0] % k or g.shape[0] == 0:
        raise ValueError(f"gram must be square with a side divisible by {k}, got {g.shape}")
    scale = float(np.max(np.abs(g)))
    if float(np.max(np.abs(g - g.T))) > 1e-8 * max(scale, 1e-300):
        raise ValueError("gram must be symmetric")
    return 0.5 * (g + g.T), g.shape[0] // k, k


@dataclass(frozen=True)
class GramCurvature:
    r"""Curvature of Gauss–Newton per-sample Hessians :math:`H_i = J_i^\top J_i`.

    Restricted to :math:`\mathrm{range}(H)` (rank ``r``), in the orthonormal eigenbasis
    of :math:`H` obtained from the Gram matrix (outside it :math:`H = \Sigma = 0`).

    Attributes
    ----------
    eigenvalues : numpy.ndarray
        The ``r`` positive eigenvalues of :math:`H`, increasing (Gram eigenvalues / n).
    sigma : numpy.ndarray
        :math:`\Sigma = \frac1n\sum_iH_i^2 - H^2` on the range, ``(r, r)``.
    worst_alignment : float
        :math:`\mu_0`, the smallest alignment factor of the model linearised at the
        minimum (``bounds.worst_alignment_factor``, Gram route; nan if :math:`H = 0`).
    n, num_outputs : int
    """

    eigenvalues: np.ndarray
    sigma: np.ndarray
    worst_alignment: float
    n: int
    num_outputs: int

    @property
    def sharpness(self) -> float:
        r""":math:`a = \lambda_{\max}(H)`."""
        return float(self.eigenvalues[-1]) if self.eigenvalues.size else 0.0

    @property
    def non_uniformity(self) -> float:
        r""":math:`s = \sqrt{\lambda_{\max}(\Sigma)}` (:cite:p:`wu2018sgd`)."""
        if not self.eigenvalues.size:
            return 0.0
        return math.sqrt(max(float(np.linalg.eigvalsh(self.sigma)[-1]), 0.0))

    @property
    def trace(self) -> float:
        r""":math:`\mathrm{Tr}\,H` (the flatness of MY eq. (3) at interpolation)."""
        return float(self.eigenvalues.sum())

    def wu_condition(self, lr: float, batch_size: int, replacement: bool = False) -> float:
        r"""Largest eigenvalue of :math:`(I-\eta H)^2 + \eta^2p\Sigma` on :math:`\mathrm{range}(H)`.

        ``<= 1`` is sufficient for mean-square stability (:cite:p:`ma2021linear` Prop. 1,
        :cite:p:`wu2018sgd`); on :math:`\mathrm{null}(H)` the matrix is the identity.
        """
        lr = check_lr(lr)
        p = batch_noise_factor(self.n, batch_size, replacement)
        if not self.eigenvalues.size:
            return 1.0
        mat = np.diag((1.0 - lr * self.eigenvalues) ** 2) + lr**2 * p * self.sigma
        return float(np.linalg.eigvalsh(0.5 * (mat + mat.T))[-1])


def gram_curvature(gram, num_outputs: int = 1) -> GramCurvature:
    r"""Sharpness, non-uniformity and :math:`\Sigma` from the Gram matrix :math:`G = JJ^\top`.

    With :math:`G = V\Gamma V^\top` and :math:`A = V_r\Gamma_r^{1/2}` (rows :math:`A_i`
    of sample :math:`i`), :math:`U = J^\top V_r\Gamma_r^{-1/2}` is an orthonormal basis of
    :math:`\mathrm{range}(H)` in which :math:`H = \Gamma_r/n` and
    :math:`U^\top H_iU = A_i^\top A_i`. Since :math:`\mathrm{null}(H)\subseteq
    \mathrm{null}(H_i)`, :math:`U^\top H_i^2U = A_i^\top(A_iA_i^\top)A_i`, so

    .. math::

        U^\top\Sigma U = \frac1n\sum_i A_i^\top (A_iA_i^\top) A_i - \Gamma_r^2/n^2 .

    The worst alignment factor (:cite:p:`wu2022alignment`, reconstructed; see
    ``bounds.worst_alignment_factor``) is :math:`\lambda_{\min}` of
    :math:`\Lambda^{-1/2}M\Lambda^{-1/2}` over :math:`\|H\|_F^2`, with
    :math:`M = \frac1n\sum_iH_iHH_i - H^3`, here
    :math:`\frac1n\sum_iA_i^\top(A_i\Lambda A_i^\top)A_i - \Lambda^3` for
    :math:`\Lambda = \Gamma_r/n`.

    Cost :math:`O((nK)^3)` for the eigendecomposition, nothing of size :math:`d`.

    Parameters
    ----------
    gram : array_like, shape (nK, nK)
        :math:`JJ^\top`, rows sample-major (``i*K + k``), e.g. from
        :func:`companion.jacobians.gram_matrix`.
    num_outputs : int
        ``K``.
    """
    g, n, k = _as_gram(gram, num_outputs)
    gamma, vecs = np.linalg.eigh(g)
    if gamma.size and gamma[0] < -1e-8 * max(abs(gamma[-1]), 1e-300):
        raise ValueError(f"gram must be positive semi-definite: smallest eigenvalue {gamma[0]:.3g}")
    keep = gamma > _RANGE_RTOL * gamma[-1] if gamma[-1] > 0 else np.zeros(gamma.size, bool)
    gamma, vecs = gamma[keep], vecs[:, keep]
    r = gamma.size
    a = (vecs * np.sqrt(gamma)).reshape(n, k, r)
    blocks = np.einsum("nkr,nlr->nkl", a, a)  # A_i A_i^T, the diagonal blocks of G
    weighted = np.einsum("nkl,nlr->nkr", blocks, a).reshape(n * k, r)
    lam = gamma / n
    flat = a.reshape(n * k, r)
    sigma = flat.T @ weighted / n - np.diag(lam**2)
    worst = math.nan
    if r:
        inner = np.einsum("nkr,r,nlr->nkl", a, lam, a)  # A_i Lambda A_i^T
        m = flat.T @ np.einsum("nkl,nlr->nkr", inner, a).reshape(n * k, r) / n
        m -= np.diag(lam**3)
        scaled = m / np.sqrt(np.outer(lam, lam))
        low = float(np.linalg.eigvalsh(0.5 * (scaled + scaled.T))[0])
        # Tr(Sigma G) >= 0 exactly (both PSD): a negative value is rounding of a zero
        worst = max(low, 0.0) / float(np.sum(lam**2))
    return GramCurvature(
        eigenvalues=lam,
        sigma=0.5 * (sigma + sigma.T),
        worst_alignment=worst,
        n=n,
        num_outputs=k,
    )


def alignment_factor_gram(gram, residuals, num_outputs: int = 1) -> float:
    r"""The alignment factor :math:`\mu` of ``bounds.alignment_factor``, from the Gram matrix.

    With :math:`g_i = J_i^\top r_i`, :math:`G_H = \frac1n J^\top J` and the stacked residual
    :math:`R`: :math:`g_i^\top G_H g_i = \frac1n\|G_{:,i}r_i\|^2` (:math:`G_{:,i}` the
    columns of sample :math:`i`), :math:`\bar g = J^\top R/n`,
    :math:`\|G_H\|_F = \|G\|_F/n` and :math:`2L = \|R\|^2/n`, so

    .. math::

        \mu = \frac{\frac1{n^2}\sum_i\|G_{:,i}r_i\|^2 - \frac1{n^3}\|GR\|^2}
                   {\frac1n\|R\|^2\;\|G\|_F^2/n^2}

    (:cite:p:`wu2022alignment`, definition reconstructed). Undefined (``ValueError``) at
    zero loss.
    """
    g, n, k = _as_gram(gram, num_outputs)
    res = as_float_array(residuals, "residuals", ndim=(1, 2)).reshape(-1)
    if res.size != n * k:
        raise ValueError(f"residuals must have n*K = {n * k} entries, got {res.size}")
    loss2 = float(res @ res) / n
    if loss2 == 0:
        raise ValueError("residuals are all zero: the alignment factor is undefined at zero loss")
    fro2 = float(np.sum(g * g)) / n**2
    if fro2 == 0:
        raise ValueError("gram is zero: the alignment factor is undefined for G = 0")
    per_sample = np.einsum("aik,ik->ai", g.reshape(n * k, n, k), res.reshape(n, k))
    mean_term = float(np.sum(per_sample**2)) / n**2
    centre = float(np.sum((g @ res) ** 2)) / n**3
    return (mean_term - centre) / (loss2 * fro2)


# ----------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------


@dataclass
class StabilityReport:
    r"""Everything :func:`diagnose` found; ``summary()`` prints it, ``plot()`` draws it.

    Thresholds are learning rates; "sharpness" values are curvatures (``2/threshold``).
    Quantities that could not be computed are None, with the reason in ``notes``.
    """

    lr: float
    batch_size: int
    replacement: bool
    n: int
    num_outputs: int
    num_parameters: int
    noise_factor: float
    train_loss: float
    max_abs_residual: float
    interpolates: bool
    interpolation_tol: float
    sharpness: float
    hessian_sharpness: float | None
    non_uniformity: float
    trace: float
    wu_condition: float
    generalized_sharpness: float
    ms_threshold: float
    threshold_curve: dict[int, float]
    necessary_bounds: object | None
    rank_one_bound: float | None
    moment_bounds: dict[int, tuple] | None
    first_layer: dict[int, FirstLayerGradients] | None
    sobolev_bounds: dict[int, tuple[float, float]] | None
    alignment_factor: float | None
    worst_alignment_factor: float
    frobenius_bound: object | None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def gd_threshold(self) -> float:
        r""":math:`2/\lambda_{\max}(H)` (mean stability, MM Thm 1)."""
        return math.inf if self.sharpness <= 0 else 2.0 / self.sharpness

    @property
    def mean_stable(self) -> bool:
        r""":math:`\eta \le 2/\lambda_{\max}(H)`."""
        return self.lr <= self.gd_threshold

    @property
    def ms_stable(self) -> bool:
        r""":math:`\eta \le \eta^*(B)` (mean-square stability, MM Thm 3)."""
        return self.lr <= self.ms_threshold

    @property
    def verdict(self) -> str:
        """One line: stable or unstable in mean square, with the caveats that apply."""
        state = "stable" if self.ms_stable else "unstable"
        text = (
            f"{state} in mean square for lr = {self.lr:g}, B = {self.batch_size} "
            f"(lr / eta* = {self.lr / self.ms_threshold:.3g})"
        )
        if abs(self.lr / self.ms_threshold - 1) <= _EDGE_RTOL:
            text += " - at the edge of stability"
        if not self.interpolates:
            text += (
                f"; WARNING: not an interpolating minimum (train loss "
                f"{self.train_loss:.3g} > {self.interpolation_tol:g}), the linearisation "
                "behind this verdict does not apply"
            )
        return text

    def summary(self) -> str:
        """A readable multi-line report."""
        lines = [
            f"Stability report: n = {self.n}, K = {self.num_outputs}, "
            f"d = {self.num_parameters}, lr = {self.lr:g}, B = {self.batch_size} "
            f"({'with' if self.replacement else 'without'} replacement, p = "
            f"{self.noise_factor:.4g})",
            f"  train loss            {self.train_loss:.3e}  (max |residual| "
            f"{self.max_abs_residual:.2e}) -> "
            + ("interpolates" if self.interpolates else "DOES NOT INTERPOLATE"),
            f"  sharpness a           {self.sharpness:.6g}   vs 2/lr = {2 / self.lr:.6g}"
            f"   (GD threshold 2/a = {self.gd_threshold:.6g})",
        ]
        if self.hessian_sharpness is not None:
            lines.append(
                f"  loss-Hessian lambda_max {self.hessian_sharpness:.6g} (Lanczos; equals a "
                "at an interpolating minimum)"
            )
        p = self.noise_factor
        s_max = math.inf if p == 0 else 1 / (self.lr * math.sqrt(p))
        lines += [
            f"  non-uniformity s      {self.non_uniformity:.6g}   vs 1/(lr sqrt p) = {s_max:.6g}",
            f"  trace of H            {self.trace:.6g}",
            f"  WME/MY Prop 1 value   {self.wu_condition:.6g}   (<= 1 is sufficient)",
            f"  generalized sharpness {self.generalized_sharpness:.6g}   vs 2/lr = "
            f"{2 / self.lr:.6g}",
            f"  eta*(B={self.batch_size})          {self.ms_threshold:.6g}",
        ]
        if self.necessary_bounds is not None:
            nb = self.necessary_bounds
            lines.append(
                f"  MM Prop 3 upper bounds on eta*: (15) {nb.top_eigenvector:.6g}, "
                f"(16) {nb.trace:.6g}, GD {nb.gd:.6g}"
            )
        if self.rank_one_bound is not None:
            lines.append(
                f"  rank-one lower bound on gen. sharpness {self.rank_one_bound:.6g} "
                f"(eta* <= {2 / self.rank_one_bound:.6g})"
            )
        curve = ", ".join(f"{b}: {eta:.4g}" for b, eta in self.threshold_curve.items())
        lines.append(f"  eta*(B) on the grid   {curve}")
        if self.moment_bounds:
            for k, (thm2, cor1) in self.moment_bounds.items():
                lines.append(
                    f"  MY Thm 2 (k={k})       max_j mean a_ij^{2 * k} = "
                    f"{float(np.max(thm2.lhs)):.4g} <= {float(thm2.rhs):.4g}: {thm2.holds}"
                    f"   Cor 1: {float(cor1.lhs):.4g} <= {float(cor1.rhs):.4g}: {cor1.holds}"
                )
        if self.first_layer:
            for k, fl in self.first_layer.items():
                lines.append(
                    f"  first layer (k={k})    g_W = {fl.g_W:.4g}, g_W1 = {fl.g_W1:.4g}, "
                    f"g_x = {fl.g_x:.4g}, ||W1^T||_{2 * k} in [{fl.w1t_norm[0]:.4g}, "
                    f"{fl.w1t_norm[1]:.4g}]"
                )
        if self.sobolev_bounds:
            for k, (lhs, rhs) in self.sobolev_bounds.items():
                lines.append(f"  MY Thm 3 (k={k})       |f|_1,{2 * k} = {lhs:.4g} <= {rhs:.4g}")
        if self.alignment_factor is not None:
            lines.append(f"  alignment factor mu   {self.alignment_factor:.4g} (current residuals)")
        lines.append(
            f"  worst alignment mu0   {self.worst_alignment_factor:.4g} (model linearised "
            "at this point)"
        )
        if self.frobenius_bound is not None:
            fb = self.frobenius_bound
            lines.append(
                f"  WWS ||H||_F <= 1/(lr sqrt(p mu0)): {float(fb.lhs):.4g} <= "
                f"{float(fb.rhs):.4g}: {fb.holds} (reconstructed constant)"
            )
        lines.append(f"  verdict: {self.verdict}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def plot(self, fig=None):
        r"""Two panels: :math:`\eta^*(B)` with :math:`(B, \eta)` marked, and the
        sharpness/non-uniformity diagram in units of :math:`\eta`. Returns the figure.

        Right panel: :math:`(\eta a, \eta\sqrt p\,s)`, where the Wu-Ma-E region
        :math:`(1-\eta a)^2 + \eta^2ps^2 \le 1` is the unit half-disc centred at (1, 0)
        for every :math:`(\eta, B)` (the strip :math:`\eta a \le 2` for :math:`p = 0`).
        """
        import matplotlib.pyplot as plt

        from ..book.plotting import wme_boundary

        if fig is None:
            fig = plt.figure(figsize=(10, 3.8))
        ax1, ax2 = fig.subplots(1, 2)
        color = "tab:green" if self.ms_stable else "tab:red"
        bs = np.array(list(self.threshold_curve))
        etas = np.array(list(self.threshold_curve.values()))
        ax1.plot(bs, etas, "o-", label=r"$\eta^*(B)$ (exact)")
        ax1.axhline(self.gd_threshold, color="0.4", ls="--", lw=1, label=r"$2/\lambda_{\max}(H)$")
        ax1.plot([self.batch_size], [self.lr], "*", ms=14, color=color, label=r"$(B, \eta)$")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel("batch size $B$")
        ax1.set_ylabel("learning rate")
        ax1.set_title("stable below the curve", fontsize=9)
        ax1.legend(fontsize=8)

        p = self.noise_factor
        u = self.lr * self.sharpness
        if p > 0:
            a_b, s_b = wme_boundary(self.lr, self.batch_size, self.n, self.replacement)
            x_b, y_b = self.lr * a_b, self.lr * math.sqrt(p) * s_b
            v = self.lr * math.sqrt(p) * self.non_uniformity
            ax2.set_ylabel(r"$\eta\sqrt{p}\,s$ (non-uniformity)")
        else:
            v = self.lr * self.non_uniformity
            x_b, y_b = np.array([2.0, 2.0]), np.array([0.0, max(1.2, 1.1 * v)])
            ax2.set_ylabel(r"$\eta\,s$ (non-uniformity)")
        ax2.plot(x_b, y_b, color="tab:blue", label="Wu-Ma-E boundary")
        ax2.fill_between(x_b, 0.0, y_b, color="tab:blue", alpha=0.15, linewidth=0)
        ax2.plot([u], [v], "*", ms=14, color=color, label="this minimum")
        ax2.set_xlim(0, max(2.2, 1.1 * u))
        ax2.set_ylim(0, max(1.2, 1.1 * v))
        ax2.set_xlabel(r"$\eta\,a$ (sharpness)")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _batch_grid(n: int, batch_size: int) -> list[int]:
    """1, n, B and three log-spaced sizes between (each size costs one Lanczos run)."""
    grid = {1, n, int(batch_size)}
    grid.update(round(float(b)) for b in np.geomspace(1, n, 5)[1:-1])
    return sorted(grid)


def diagnose(
    model: torch.nn.Module,
    data,
    lr: float,
    batch_size: int,
    replacement: bool = False,
    *,
    batch_sizes="auto",
    moment_orders=(1, 2),
    interpolation_tol: float = 1e-8,
    jacobian_memory: int = 4 * DEFAULT_JACOBIAN_MEMORY,
    chunk_size: int = 1024,
    rank_one: bool = True,
    hessian_check: bool = True,
    seed: int = 0,
) -> StabilityReport:
    r"""Every linear-stability quantity of ``model`` on ``data`` for :math:`(\eta, B)`.

    Parameters
    ----------
    model : torch.nn.Module
        Trained model (evaluated in float64; a float32 model is copied).
    data : Dataset or (X, y)
        Its training data (the :math:`n` samples SGD draws from).
    lr, batch_size, replacement
        :math:`\eta`, :math:`B` and the sampling scheme of the SGD to assess.
    batch_sizes : "auto", None or sequence of int
        Batch sizes for the curve :math:`\eta^*(B)` (``batch_size`` is always included);
        "auto": 1, n, ``batch_size`` and three log-spaced sizes between; None: only
        ``batch_size``. Each size costs one Lanczos run in the Gram space.
    moment_orders : sequence of int
        Orders :math:`k` for MY Thm 2 / Cor 1 / Thm 3 and the first-layer gradients.
    interpolation_tol : float
        The point counts as interpolating if the training loss
        :math:`\frac1{2n}\sum_i\|f_i-y_i\|^2` is at most this.
    jacobian_memory : int
        Bytes allowed for the full Jacobian ``(n, K, d)``; above it the Gram matrix is
        accumulated in blocks and the quantities that need per-parameter gradients
        (MY Thm 2 / Cor 1 / Thm 3, rank-one bound) are skipped.
    chunk_size : int
        Samples per vectorised Jacobian chunk.
    rank_one : bool
        Compute the rank-one lower bound (gradient ascent with restarts).
    hessian_check : bool
        Also compute :math:`\lambda_{\max}` of the true loss Hessian by Lanczos.
    seed : int
        Seed of the Lanczos start vector and of the rank-one restarts.

    Returns
    -------
    StabilityReport
    """
    from ..stability import bounds, thresholds
    from .curvature_ops import loss_hessian_operator, top_eigenvalues

    timings: dict[str, float] = {}
    notes: list[str] = []
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    lr = check_lr(lr)
    replacement = check_replacement(replacement)
    model = as_float64(model)
    X, y = as_xy(data, torch.float64)
    n = int(X.shape[0])
    p = batch_noise_factor(n, batch_size, replacement)
    jacobian_memory = check_positive_int(jacobian_memory, "jacobian_memory")
    seed = check_positive_int(seed, "seed", minimum=0)
    orders = [check_positive_int(k, "moment_orders[i]") for k in moment_orders]
    if isinstance(interpolation_tol, bool) or not interpolation_tol >= 0:
        raise ValueError(f"interpolation_tol must be >= 0, got {interpolation_tol!r}")
    if isinstance(batch_sizes, str) and batch_sizes == "auto":
        grid = _batch_grid(n, batch_size)
    elif batch_sizes is None:
        grid = [int(batch_size)]
    else:
        grid = sorted({int(b) for b in batch_sizes} | {int(batch_size)})
        for b in grid:
            batch_noise_factor(n, b, replacement)

    with torch.no_grad():
        out = model(X)
    if out.shape != y.shape:
        raise ValueError(f"model outputs {tuple(out.shape)} but targets are {tuple(y.shape)}")
    residuals = (out - y).numpy()
    k_out = int(y.shape[1])
    d = num_parameters(model)
    train_loss = float(np.sum(residuals**2)) / (2 * n)
    interpolates = train_loss <= interpolation_tol
    if not interpolates:
        notes.append(
            f"the training loss {train_loss:.3g} exceeds interpolation_tol = "
            f"{interpolation_tol:g}: this is not an interpolating minimum, H below is the "
            "Gauss-Newton matrix (not the loss Hessian) and the stability verdict is only "
            "indicative"
        )
    lap("loss")

    jac = None
    if 8 * n * k_out * d <= jacobian_memory:
        jac = parameter_jacobian(model, X, chunk_size=chunk_size)
        flat = jac.reshape(n * k_out, d)
        gram = flat @ flat.T
        gram = 0.5 * (gram + gram.T)
    else:
        gram = gram_matrix(model, X, chunk_size=chunk_size, max_memory=jacobian_memory)
        notes.append(
            "the full Jacobian exceeds jacobian_memory: Gram matrix built in blocks; "
            "MY Thm 2 / Cor 1 / Thm 3 and the rank-one bound skipped"
        )
    lap("jacobian/gram")

    curv = gram_curvature(gram, k_out)
    lap("sharpness/non-uniformity")

    hessian_sharpness = None
    if hessian_check:
        op = loss_hessian_operator(model, (X, y))
        # a check against the Gauss-Newton value, 1e-6 relative is plenty
        hessian_sharpness = float(top_eigenvalues(op, 1, tol=1e-6, seed=seed)[0])
        lap("loss-Hessian Lanczos")

    etas = thresholds.ms_threshold_curve_gn(
        None, list(grid), replacement, gram=gram, num_outputs=k_out
    )
    curve = {int(b): float(e) for b, e in zip(grid, etas, strict=True)}
    eta_star = curve[int(batch_size)]
    gen_sharp = 0.0 if math.isinf(eta_star) else 2.0 / eta_star
    lap("eta*(B)")

    necessary = thresholds.ms_necessary_bounds_gn(
        None, batch_size, replacement, gram=gram, num_outputs=k_out
    )
    rank_one_value = None
    if rank_one and jac is not None:
        value, _ = thresholds.rank_one_bound_gn(jac, batch_size, replacement, seed=seed)
        rank_one_value = float(value)
    lap("MM bounds")

    moment = None
    if jac is not None and k_out == 1:
        grads = jac[:, 0, :]
        moment = {
            k: (
                bounds.gradient_moment_bound(grads, lr, batch_size, k),
                bounds.gradient_norm_bound(grads, lr, batch_size, k),
            )
            for k in orders
        }
    elif k_out > 1:
        notes.append("MY Thm 2 / Cor 1 / Thm 3 are stated for scalar outputs (K = 1): skipped")

    first = sobolev = None
    try:
        first = {k: first_layer_gradients(model, X, k, chunk_size=chunk_size) for k in orders}
    except TypeError as exc:
        notes.append(f"first-layer quantities skipped: {exc}")
    if first is not None and moment is not None:
        sobolev = {}
        for k, fl in first.items():
            prefactor = fl.w1t_norm[1] / float(fl.input_norms.min())
            sobolev[k] = (fl.g_x, prefactor * float(moment[k][1].rhs))
    if moment is not None:
        notes.append(
            "MY Thm 2 / Cor 1 / Thm 3 assume k-th order stability: k = 1 holds iff "
            f"lr <= 2/a ({'yes' if lr <= 2 / max(curv.sharpness, 1e-300) else 'no'}), "
            f"k = 2 iff lr <= eta* ({'yes' if lr <= eta_star else 'no'})"
        )
    lap("MY bounds")

    alignment = None
    if not interpolates and train_loss > 0:
        alignment = alignment_factor_gram(gram, residuals, k_out)
    else:
        notes.append(
            "alignment factor of the current residuals not reported at an interpolating "
            "point (they are rounding noise); see the worst alignment mu0 instead"
        )
    frob = None
    if curv.worst_alignment > 0:
        frob = bounds.frobenius_bound(
            np.diag(curv.eigenvalues), lr, batch_size, curv.worst_alignment, noise_factor=p
        )
    lap("alignment")

    return StabilityReport(
        lr=lr,
        batch_size=int(batch_size),
        replacement=replacement,
        n=n,
        num_outputs=k_out,
        num_parameters=d,
        noise_factor=p,
        train_loss=train_loss,
        max_abs_residual=float(np.max(np.abs(residuals))),
        interpolates=interpolates,
        interpolation_tol=float(interpolation_tol),
        sharpness=curv.sharpness,
        hessian_sharpness=hessian_sharpness,
        non_uniformity=curv.non_uniformity,
        trace=curv.trace,
        wu_condition=curv.wu_condition(lr, batch_size, replacement),
        generalized_sharpness=gen_sharp,
        ms_threshold=eta_star,
        threshold_curve=curve,
        necessary_bounds=necessary,
        rank_one_bound=rank_one_value,
        moment_bounds=moment,
        first_layer=first,
        sobolev_bounds=sobolev,
        alignment_factor=alignment,
        worst_alignment_factor=curv.worst_alignment,
        frobenius_bound=frob,
        notes=notes,
        timings=timings,
    )
