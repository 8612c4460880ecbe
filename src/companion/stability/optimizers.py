"""Linear stability of a general stochastic optimizer and of preconditioned gradient descent.

Wu, Ma and E (:cite:p:`wu2018sgd`, presented in :cite:p:`wu2020slides`) linearise any iteration
:math:`x_{t+1} = x_t - \\eta\\, G(x_t; \\xi_t)` with :math:`\\xi_t` independent of :math:`x_t`
at a fixed point :math:`x^*` that every realisation shares (:math:`G(x^*; \\xi) = 0`, the
over-parameterised case). With :math:`A_\\xi = \\nabla_x G(x^*; \\xi)` and
:math:`B_\\xi = I - \\eta A_\\xi` the linear dynamics is :math:`x_{t+1} = B_{\\xi_t} x_t`.
SGD is the case :math:`A_\\xi = \\hat H`; a quasi-Newton method is :math:`A = D^{-1}H`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..validation import as_float_array, check_dense_size, check_lr, check_symmetric_psd

#: Slack allowed when a spectral radius is compared with 1. Eigenvalues of a dense
#: d x d (or d^2 x d^2) matrix carry a backward error of order eps times its norm
#: (about 1e-15 here); 1e-10 leaves room for that while still separating any
#: learning rate more than ~1e-10 (relative) away from a threshold.
RADIUS_TOL = 1e-10
#: At a spectral radius within RADIUS_TOL of 1, the powers M^t are bounded iff every
#: eigenvalue of modulus 1 is semi-simple (no Jordan block). Deciding that from eigenvalues is
#: ill-posed (a block of size k splits its eigenvalue by ~eps^(1/k)), so it is read off the
#: growth of ||M^t|| between t = 2^20 and 2^30 by repeated squaring: a Jordan block of size
#: k >= 2 grows like t^(k-1), a factor >= 2^10 = 1024; semi-simple unit eigenvalues keep
#: ||M^t|| bounded, and a radius 1 + 1e-10 moves it by at most e^0.11 over that range.
_POLYNOMIAL_GROWTH = 100.0


@dataclass(frozen=True)
class GeneralOptimizerStability:
    """Stability quantities of the linearised iteration :math:`x_{t+1} = B_\\xi x_t`.

    Attributes
    ----------
    mean_radius : float
        :math:`\\rho(I - \\eta\\,\\mathbb E A_\\xi)`: the mean :math:`\\mathbb E x_t` is bounded
        for every start iff this is < 1, or = 1 without nontrivial Jordan blocks.
    wme_sufficient_value : float
        :math:`\\lambda_{\\max}(\\mathbb E[B_\\xi^\\top B_\\xi])`. If it is ``<= 1``,
        :math:`\\mathbb E\\|x_t\\|^2` never increases (the condition of the Wu--Ma--E theorem).
    ms_radius : float
        :math:`\\rho(\\mathbb E[B_\\xi \\otimes B_\\xi])`, the exact growth rate per step of
        :math:`\\mathbb E[x_t x_t^\\top]`.
    mean_stable, wme_sufficient, ms_stable : bool
        The three conditions, each compared with 1 up to :data:`RADIUS_TOL`. At a radius of 1,
        ``mean_stable`` and ``ms_stable`` also require that the powers stay bounded (no
        Jordan block on the unit circle: :math:`A_\\xi` need not be symmetric, and then
        :math:`\\mathbb E x_t` or :math:`\\mathbb E[x_tx_t^\\top]` can grow polynomially at
        :math:`\\rho = 1`).
    """

    mean_radius: float
    wme_sufficient_value: float
    ms_radius: float
    mean_stable: bool
    wme_sufficient: bool
    ms_stable: bool


def _as_probabilities(probs, m: int) -> np.ndarray:
    if probs is None:
        return np.full(m, 1.0 / m)
    w = as_float_array(probs, "probs", ndim=1)
    if w.shape[0] != m:
        raise ValueError(f"probs must have one entry per Jacobian sample ({m}), got {w.shape[0]}")
    if np.any(w < 0):
        raise ValueError("probs must be non-negative")
    total = float(w.sum())
    # probabilities typed in by hand or computed in float64 sum to 1 within ~m * eps
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"probs must sum to 1, got {total!r}")
    return w / total


def _powers_bounded(mat: np.ndarray, radius: float) -> bool:
    r"""Whether :math:`\sup_t\|M^t\| < \infty`, given :math:`\rho(M)` (see _POLYNOMIAL_GROWTH)."""
    if radius < 1 - RADIUS_TOL:
        return True
    if radius > 1 + RADIUS_TOL:
        return False
    power, norms = mat / max(radius, 1e-300), {}
    for k in range(1, 31):
        power = power @ power  # M^(2^k), scaled by rho^(2^k)
        if k in (20, 30):
            norms[k] = float(np.linalg.norm(power, 2))
    return norms[30] <= _POLYNOMIAL_GROWTH * max(norms[20], 1e-300)


def general_optimizer_stability(
    jacobian_samples, lr: float, probs=None
) -> GeneralOptimizerStability:
    r"""Linear stability of :math:`x \leftarrow x - \eta\,G(x;\xi)` at a shared fixed point.

    The random matrix :math:`A_\xi = \nabla_x G(x^*;\xi)` takes the value ``jacobian_samples[k]``
    with probability ``probs[k]``. Wu, Ma and E (:cite:p:`wu2018sgd`; theorem in
    :cite:p:`wu2020slides`) call :math:`x^*` linearly stable when

    .. math::

        \rho(I - \eta\,\mathbb E A_\xi) \le 1 \quad\text{and}\quad
        \lambda_{\max}\big(\mathbb E[(I - \eta A_\xi)^\top (I - \eta A_\xi)]\big) \le 1 .

    The second condition makes :math:`\mathbb E\|x_t\|^2` non-increasing; it is sufficient
    for mean-square stability but not necessary (one step of the norm may grow while the
    second moment still decays). The exact mean-square condition is
    :math:`\rho(\mathbb E[B_\xi\otimes B_\xi]) \le 1`, because
    :math:`\operatorname{vec}\mathbb E[x_{t+1}x_{t+1}^\top] =
    \mathbb E[B_\xi\otimes B_\xi]\operatorname{vec}\mathbb E[x_t x_t^\top]`; it is returned too.

    Parameters
    ----------
    jacobian_samples : array_like, shape (m, d, d)
        The values of :math:`A_\xi` (need not be symmetric).
    lr : float
        Learning rate :math:`\eta > 0`.
    probs : array_like, shape (m,), optional
        Their probabilities (default uniform).

    Returns
    -------
    GeneralOptimizerStability
    """
    a = as_float_array(jacobian_samples, "jacobian_samples", ndim=3)
    m, d, d2 = a.shape
    if d != d2 or m < 1 or d < 1:
        raise ValueError(
            f"jacobian_samples must have shape (m, d, d) with m, d >= 1, got {a.shape}"
        )
    lr = check_lr(lr)
    w = _as_probabilities(probs, m)
    check_dense_size(
        d**4, "E[B (x) B]", "a smaller problem (the exact second-moment radius is dense)"
    )
    steps = np.eye(d) - lr * a  # B_xi
    mean = np.einsum("k,kij->ij", w, steps)
    mean_radius = float(np.max(np.abs(np.linalg.eigvals(mean))))
    gram = np.einsum("k,kji,kjl->il", w, steps, steps)
    wme_value = float(np.linalg.eigvalsh(0.5 * (gram + gram.T))[-1])
    second = np.einsum("k,kij,kab->iajb", w, steps, steps).reshape(d * d, d * d)
    ms_radius = float(np.max(np.abs(np.linalg.eigvals(second))))
    return GeneralOptimizerStability(
        mean_radius=mean_radius,
        wme_sufficient_value=wme_value,
        ms_radius=ms_radius,
        mean_stable=_powers_bounded(mean, mean_radius),
        wme_sufficient=wme_value <= 1 + RADIUS_TOL,
        ms_stable=_powers_bounded(second, ms_radius),
    )


def preconditioned_threshold(hessian, preconditioner) -> float:
    r"""Largest stable learning rate of :math:`x_{t+1} = x_t - \eta D^{-1}\nabla f(x_t)`.

    Linearised at a minimum with Hessian :math:`H`, the iteration is
    :math:`x_{t+1} = (I - \eta D^{-1}H)x_t`. For symmetric positive definite :math:`D`,
    :math:`D^{-1}H` is similar to :math:`D^{-1/2}HD^{-1/2}` (real spectrum, non-negative
    for PSD :math:`H`), so the iteration is stable iff
    :math:`\eta \le 2/\lambda_{\max}(D^{-1}H)` (:cite:p:`wu2020slides`, quasi-Newton
    extension of :cite:p:`wu2018sgd`). For :math:`D \approx H` every minimum is stable up to
    :math:`\eta \approx 2`.

    Parameters
    ----------
    hessian : array_like, shape (d, d)
        Symmetric PSD Hessian :math:`H`.
    preconditioner : array_like, shape (d, d)
        Symmetric positive definite :math:`D`.

    Returns
    -------
    float
        :math:`2/\lambda_{\max}(D^{-1}H)`, or ``inf`` when :math:`H = 0`.
    """
    h = as_float_array(hessian, "hessian", ndim=2)
    dmat = as_float_array(preconditioner, "preconditioner", ndim=2)
    h = check_symmetric_psd(h, "hessian")
    dmat = check_symmetric_psd(dmat, "preconditioner")
    if h.shape != dmat.shape:
        raise ValueError(
            f"hessian and preconditioner must have the same shape, got {h.shape} and {dmat.shape}"
        )
    try:
        np.linalg.cholesky(dmat)
    except np.linalg.LinAlgError as exc:
        raise ValueError("preconditioner must be positive definite (Cholesky failed)") from exc
    top = float(scipy.linalg.eigh(h, dmat, eigvals_only=True)[-1])
    return float("inf") if top <= 0 else 2.0 / top
