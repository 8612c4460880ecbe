r"""Linearised SGD near a minimum: simulation, exact moments, and the regime beyond interpolation.

Near a minimum :math:`\theta^*` with per-sample Hessians :math:`H_i` (symmetric PSD) and
per-sample gradients :math:`g_i` (:math:`\sum_i g_i = 0`; all zero at an interpolating
minimum), SGD with learning rate :math:`\eta` and batch size :math:`B` is, for
:math:`x = \theta - \theta^*`,

.. math::

    x_{t+1} = x_t - \eta(\hat H_t x_t + \hat g_t), \quad
    \hat H_t = \frac1B\sum_{j\in\mathcal B_t} H_j,\quad
    \hat g_t = \frac1B\sum_{j\in\mathcal B_t} g_j,

with a fresh batch :math:`\mathcal B_t` every step (:cite:p:`ma2021linear` eq. (12),
:cite:p:`mulayoff2024exact` §3.2). This module simulates it (vectorised over trajectories),
propagates its exact first and second moments, and evaluates the limits of Mulayoff and
Michaeli's Theorems 4--5 and Corollary 1.

Moments of a batch mean. For per-sample vectors :math:`u_i, v_i` with batch means
:math:`\hat u, \hat v`, :math:`\mathbb E[\hat u\hat v^\top] = \bar u\bar v^\top + p\,\frac1n
\sum_i (u_i - \bar u)(v_i - \bar v)^\top` with the batch-noise factor :math:`p`
(``sampling.batch_noise_factor``), for both sampling schemes. Everything exact below follows
from this identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..validation import (
    as_float_array,
    as_hessians,
    check_batch_size,
    check_dense_size,
    check_lr,
    check_positive_int,
    check_replacement,
    check_symmetric_psd,
)
from .curvature import range_mask
from .operators import kron_operators, second_moment_map, second_moment_operator
from .sampling import batch_noise_factor, sample_batches

#: Entries (float64) one block of per-trajectory products may hold during simulation.
_GATHER_ENTRIES = 2**22


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_gradients(gradients, n: int, d: int) -> np.ndarray | None:
    """Per-sample gradients at a minimum: shape (n, d), summing to zero."""
    if gradients is None:
        return None
    g = as_float_array(gradients, "gradients", ndim=2)
    if g.shape != (n, d):
        raise ValueError(f"gradients must have shape (n, d) = {(n, d)}, got {g.shape}")
    scale = float(np.max(np.abs(g))) if g.size else 0.0
    # at a minimum sum_i g_i = 0; a mean computed in float64 is off by at most ~n eps max|g|,
    # so 1e-8 relative separates rounding from a point that is not a minimum
    worst = float(np.max(np.abs(g.mean(axis=0))))
    if worst > 1e-8 * max(scale, 1e-300):
        raise ValueError(
            "gradients must average to zero (theta* is a minimum of the loss): largest entry "
            f"of gradients.mean(axis=0) is {worst:.3g}; subtract the mean first"
        )
    return g


def _setup(hessians, lr, batch_size, replacement):
    hs = as_hessians(hessians)
    lr = check_lr(lr)
    replacement = check_replacement(replacement)
    b = check_batch_size(batch_size, hs.shape[0], replacement)
    return hs, lr, b, replacement


def _range_basis(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal eigenvectors (columns) of the PSD ``h`` spanning its range, and eigenvalues.

    Uses the package's rank rule :func:`companion.stability.curvature.range_mask`, so that
    "below the threshold" means the same here as in ``ms_threshold``.
    """
    evals, evecs = np.linalg.eigh(h)
    keep = range_mask(evals)
    return evecs[:, keep], evals[keep]


# --------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SGDSimulation:
    """Recorded output of :func:`simulate_linearized_sgd`.

    Attributes
    ----------
    times : ndarray, shape (T,)
        Recorded step indices (``0, r, 2r, ...`` and always the last step).
    sq_norms : ndarray, shape (T, N)
        :math:`\\|x_t\\|^2` of each of the ``N`` trajectories at the recorded steps.
    final_states : ndarray, shape (N, d)
        :math:`x_t` at the last step.
    states : ndarray, shape (T, N, d), or None
        Full recorded states (only with ``record_states=True``).
    """

    times: np.ndarray
    sq_norms: np.ndarray
    final_states: np.ndarray
    states: np.ndarray | None = None

    def mean_sq_norm(self) -> np.ndarray:
        """Monte Carlo estimate of :math:`\\mathbb E\\|x_t\\|^2` at each recorded step."""
        return self.sq_norms.mean(axis=1)

    def sq_norm_standard_error(self) -> np.ndarray:
        """Standard error of :meth:`mean_sq_norm` (sample std / sqrt(N)); 0 for N = 1."""
        n_traj = self.sq_norms.shape[1]
        if n_traj < 2:
            return np.zeros(self.sq_norms.shape[0])
        return self.sq_norms.std(axis=1, ddof=1) / np.sqrt(n_traj)


def _hessian_factors(hs: np.ndarray) -> np.ndarray | None:
    """Factors ``J`` (n, r, d) with ``H_i = J_i^T J_i`` when every rank is at most d/2, else None.

    From the eigendecomposition of each :math:`H_i`; eigenvalues at or below
    ``d * eps * lambda_max(H_i)`` (rounding noise of a zero eigenvalue, and the tiny negative
    ones ``as_hessians`` tolerates) are dropped, so ``J_i^T J_i`` equals :math:`H_i` to
    rounding.
    """
    d = hs.shape[1]
    evals, evecs = np.linalg.eigh(hs)
    top = np.maximum(evals[:, -1:], np.finfo(float).tiny)
    keep = evals > d * np.finfo(float).eps * top
    rank = max(int(keep.sum(axis=1).max()), 1)
    if 2 * rank > d:
        return None
    roots = np.sqrt(np.where(keep, evals, 0.0))[:, -rank:]  # the largest ones, eigh ascending
    return (evecs[:, :, -rank:] * roots[:, None, :]).transpose(0, 2, 1).copy()


def _batch_mean_products(
    hs: np.ndarray,
    factors: np.ndarray | None,
    idx: np.ndarray,
    x: np.ndarray,
    gradient_row: bool = False,
) -> np.ndarray:
    r"""Rows :math:`\hat H_k x_k` for batches ``idx`` (N, B) and states ``x`` (N, d).

    Index sums over each batch, vectorised over trajectories (no Python loop over them):
    with low-rank factors :math:`H_i = J_i^\top J_i` (``factors``, rank :math:`r`),
    :math:`\hat H_kx_k = \frac1B\sum_j J_{i_j}^\top(J_{i_j}x_k)` costs :math:`2NBrd`;
    otherwise the :math:`B` Hessians of every batch are gathered and applied,
    :math:`NBd^2`. Trajectories are processed in blocks to bound memory.

    With ``gradient_row`` the last row of every factor is the per-sample gradient
    :math:`g_i` (the table :math:`T_i = [J_i; g_i]`): its inner coefficient is set to 1, so
    the same two batched products return :math:`\hat H_kx_k + \hat g_k` (one gather per
    step instead of ``B`` more for the gradients).
    """
    d = hs.shape[1]
    n_traj, b = idx.shape
    out = np.empty_like(x)
    width = d if factors is None else factors.shape[1]
    block = max(1, _GATHER_ENTRIES // (b * width * d))
    for start in range(0, n_traj, block):
        sl = slice(start, min(start + block, n_traj))
        rows, xs = idx[sl], x[sl]
        if factors is not None:
            jac = factors[rows].reshape(rows.shape[0], b * width, d)
            inner = np.matmul(jac, xs[:, :, None])
            if gradient_row:
                inner.reshape(rows.shape[0], b, width)[:, :, -1] = 1.0
            out[sl] = np.matmul(jac.transpose(0, 2, 1), inner)[:, :, 0] / b
        else:
            acc = np.zeros_like(xs)
            for j in range(b):
                acc += np.matmul(hs[rows[:, j]], xs[:, :, None])[:, :, 0]
            out[sl] = acc / b
    return out


def _initial_states(x0, rng: np.random.Generator, n_traj: int, d: int) -> np.ndarray:
    if x0 is None:
        return rng.standard_normal((n_traj, d))
    x = as_float_array(x0, "x0", ndim=(1, 2))
    if x.ndim == 1:
        if x.shape[0] != d:
            raise ValueError(f"x0 must have shape (d,) or (n_trajectories, d) with d = {d}")
        return np.broadcast_to(x, (n_traj, d)).copy()
    if x.shape != (n_traj, d):
        raise ValueError(f"x0 must have shape (d,) or (n_trajectories, d) = {(n_traj, d)}")
    return x.copy()


def _sgd_step(hs, factors, g, lr, b, replacement, rng, x, table=None):
    """One vectorised step of linearised SGD for every row of ``x``.

    ``table``: the factors with the gradient appended as a last row (``[J_i; g_i]``), used
    instead of ``factors`` and ``g`` when given; the batches drawn are the same either way.
    """
    n = hs.shape[0]
    idx = sample_batches(rng, n, b, x.shape[0], replacement)
    if table is not None:
        return x - lr * _batch_mean_products(hs, table, idx, x, gradient_row=True)
    x_new = x - lr * _batch_mean_products(hs, factors, idx, x)
    if g is not None:
        for j in range(b):  # batch mean of the gradients: B contiguous gathers
            x_new -= (lr / b) * g[idx[:, j]]
    return x_new


def simulate_linearized_sgd(
    hessians,
    lr: float,
    batch_size: int,
    steps: int,
    n_trajectories: int,
    x0=None,
    gradients=None,
    replacement: bool = False,
    seed: int = 0,
    record_every: int = 1,
    record_states: bool = False,
) -> SGDSimulation:
    r"""Simulate linearised SGD :math:`x_{t+1} = x_t - \eta(\hat H_t x_t + \hat g_t)`.

    Every trajectory draws its own independent batch each step (``sampling.sample_batches``,
    all trajectories at once). With ``gradients=None`` this is the interpolating case
    (:cite:p:`ma2021linear` eq. (12)); with per-sample gradients :math:`g_i` summing to zero it
    is the regular-minimum dynamics of :cite:p:`mulayoff2024exact` §3.2.

    Monte Carlo caveat: the average of :math:`\|x_t\|^2` over trajectories estimates
    :math:`\mathbb E\|x_t\|^2` well only well below the mean-square threshold; near it the
    mean is carried by rare trajectories and sampling underestimates it (use
    :func:`second_moment_recursion` for exact values, :func:`lyapunov_exponent` for the
    typical trajectory).

    Parameters
    ----------
    hessians : array_like, shape (n, d, d)
        Per-sample Hessians :math:`H_i`, symmetric PSD.
    lr : float
        Learning rate :math:`\eta`.
    batch_size : int
        Batch size :math:`B`.
    steps : int
        Number of SGD steps (>= 1).
    n_trajectories : int
        Number of independent trajectories :math:`N`.
    x0 : array_like, shape (d,) or (N, d), optional
        Starting points. Default: independent standard normal draws (so
        :math:`\mathbb E[x_0x_0^\top] = I`, the default of :func:`second_moment_recursion`).
    gradients : array_like, shape (n, d), optional
        Per-sample gradients :math:`g_i` at the minimum (must sum to zero).
    replacement : bool
        Batches of ``B`` i.i.d. indices (True) or uniform subsets (False).
    seed : int
        Seed of ``numpy.random.default_rng``; equal seeds give identical results.
    record_every : int
        Record every ``record_every`` steps (the last step is always recorded).
    record_states : bool
        Also keep the states at the recorded steps (memory ``T * N * d``).

    Returns
    -------
    SGDSimulation

    Raises
    ------
    FloatingPointError
        If the iterates overflow (far above the threshold); shorten ``steps``.
    """
    hs, lr, b, replacement = _setup(hessians, lr, batch_size, replacement)
    n, d, _ = hs.shape
    steps = check_positive_int(steps, "steps")
    n_traj = check_positive_int(n_trajectories, "n_trajectories")
    record_every = check_positive_int(record_every, "record_every")
    if not isinstance(record_states, bool | np.bool_):
        raise TypeError(f"record_states must be True or False, got {type(record_states).__name__}")
    g = _check_gradients(gradients, n, d)
    factors = _hessian_factors(hs)
    table = None
    if factors is not None and g is not None:  # one gather per step: rows [J_i; g_i]
        table = np.concatenate([factors, g[:, None, :]], axis=1)
    rng = np.random.default_rng(seed)
    x = _initial_states(x0, rng, n_traj, d)

    times = list(range(0, steps + 1, record_every))
    if times[-1] != steps:
        times.append(steps)
    if record_states:
        check_dense_size(
            len(times) * n_traj * d, "the recorded states", "record_states=False or record_every"
        )
    check_dense_size(len(times) * n_traj, "the recorded squared norms", "a larger record_every")
    sq_norms = np.empty((len(times), n_traj))
    states = np.empty((len(times), n_traj, d)) if record_states else None

    slot = 0
    for t in range(steps + 1):
        if t > 0:
            x = _sgd_step(hs, factors, g, lr, b, replacement, rng, x, table)
        if t == times[slot]:
            with np.errstate(over="ignore", invalid="ignore"):
                sq = np.einsum("kd,kd->k", x, x)
            if not np.all(np.isfinite(sq)):
                raise FloatingPointError(
                    f"linearised SGD overflowed at step {t} (lr far above the threshold); "
                    "use fewer steps, or lyapunov_exponent, which renormalises"
                )
            sq_norms[slot] = sq
            if states is not None:
                states[slot] = x
            slot += 1
    return SGDSimulation(times=np.asarray(times), sq_norms=sq_norms, final_states=x, states=states)


# --------------------------------------------------------------------------------------
# exact moments
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MomentSequence:
    """Exact moments :math:`m_t = \\mathbb E x_t` and :math:`S_t = \\mathbb E[x_tx_t^\\top]`.

    Attributes
    ----------
    means : ndarray, shape (steps + 1, d)
    second_moments : ndarray, shape (steps + 1, d, d)
    """

    means: np.ndarray
    second_moments: np.ndarray

    @property
    def mean_sq_norms(self) -> np.ndarray:
        """:math:`\\mathbb E\\|x_t\\|^2 = \\operatorname{tr} S_t` for every step."""
        return np.trace(self.second_moments, axis1=1, axis2=2)

    @property
    def covariances(self) -> np.ndarray:
        """:math:`S_t - m_tm_t^\\top`."""
        return self.second_moments - np.einsum("ta,tb->tab", self.means, self.means)


def second_moment_recursion(
    hessians,
    lr: float,
    batch_size: int,
    steps: int,
    S0=None,
    gradients=None,
    replacement: bool = False,
    m0=None,
) -> MomentSequence:
    r"""Exact first and second moments of linearised SGD, step by step.

    The batch of step :math:`t` is independent of :math:`x_t`, :math:`\mathbb E\hat H = H`,
    :math:`\mathbb E\hat g = 0`, :math:`\mathbb E[\hat g\hat g^\top] = p\Sigma_g` with
    :math:`\Sigma_g = \frac1n\sum_i g_ig_i^\top`, and
    :math:`\mathbb E[\hat H m\hat g^\top] = p\,\frac1n\sum_i H_i m g_i^\top` (module
    docstring). Expanding :math:`x_{t+1}x_{t+1}^\top` and averaging over the batch gives

    .. math::

        m_{t+1} &= (I - \eta H)m_t, \\
        S_{t+1} &= (I-\eta H)S_t(I-\eta H) + \eta^2p\Big[\frac1n\sum_i H_iS_tH_i - HS_tH\Big]
        + \eta^2p\Big[\frac1n\sum_i\big(H_im_tg_i^\top + g_im_t^\top H_i\big) + \Sigma_g\Big].

    The first bracket is ``operators.second_moment_map`` (:cite:p:`ma2021linear` Cor. 3,
    :cite:p:`mulayoff2024exact`); the second is the gradient noise of a regular minimum
    (:cite:p:`mulayoff2024exact` §3.2, derived here). The cross term vanishes when
    :math:`m_t = 0`, e.g. when the start is centred.

    Parameters
    ----------
    hessians : array_like, shape (n, d, d)
        Per-sample Hessians.
    lr, batch_size : float, int
        :math:`\eta` and :math:`B`.
    steps : int
        Number of steps (>= 0); ``steps + 1`` moments are returned.
    S0 : array_like, shape (d, d), optional
        :math:`\mathbb E[x_0x_0^\top]`, symmetric. Default the identity.
    gradients : array_like, shape (n, d), optional
        Per-sample gradients :math:`g_i` (must sum to zero). Default zero (interpolation).
    replacement : bool
        Sampling scheme.
    m0 : array_like, shape (d,), optional
        :math:`\mathbb E x_0`. Default zero.

    Returns
    -------
    MomentSequence
    """
    hs, lr, b, replacement = _setup(hessians, lr, batch_size, replacement)
    n, d, _ = hs.shape
    steps = check_positive_int(steps, "steps", minimum=0)
    g = _check_gradients(gradients, n, d)
    if S0 is None:
        s = np.eye(d)
    else:
        s = as_float_array(S0, "S0", ndim=2)
        if s.shape != (d, d):
            raise ValueError(f"S0 must have shape {(d, d)}, got {s.shape}")
        s = check_symmetric_psd(s, "S0", psd=False)
    if m0 is None:
        m = np.zeros(d)
    else:
        m = as_float_array(m0, "m0", ndim=1)
        if m.shape != (d,):
            raise ValueError(f"m0 must have shape {(d,)}, got {m.shape}")
    check_dense_size((steps + 1) * d * d, "the sequence of second moments", "fewer steps")
    p = batch_noise_factor(n, b, replacement)
    step_matrix = np.eye(d) - lr * hs.mean(axis=0)
    sigma_g = g.T @ g / n if g is not None else None

    means = np.empty((steps + 1, d))
    seconds = np.empty((steps + 1, d, d))
    means[0], seconds[0] = m, s
    for t in range(steps):
        s_next = second_moment_map(hs, lr, b, s, replacement)
        if g is not None and p > 0:
            cross = np.einsum("iab,b,ic->ac", hs, m, g) / n
            s_next = s_next + lr**2 * p * (cross + cross.T + sigma_g)
        m = step_matrix @ m
        s = 0.5 * (s_next + s_next.T)
        means[t + 1], seconds[t + 1] = m, s
    return MomentSequence(means=means, second_moments=seconds)


def mixture_process_operator(
    hessians, lr: float, batch_size: int, replacement: bool = False
) -> np.ndarray:
    r"""Second-moment operator of the Mulayoff--Michaeli mixture process (Proposition 2).

    The mixture process takes, each step, a gradient step on one uniformly drawn sample
    with probability :math:`p` and a full-batch step with probability :math:`1 - p`, where
    :math:`p` is the batch-noise factor of SGD with batch size :math:`B`
    (:cite:p:`mulayoff2024exact` Prop. 2). Averaging over both branches,

    .. math::

        Q_{\text{mix}} = p\,\frac1n\sum_i (I - \eta H_i)\otimes(I - \eta H_i)
                         + (1 - p)\,(I - \eta H)\otimes(I - \eta H),

    built here from that definition (not from :math:`C` and :math:`D`). Expanding shows
    :math:`Q_{\text{mix}} = I - 2\eta C + \eta^2 D`, the SGD operator, so the two processes
    have the same mean-square threshold.

    Returns
    -------
    numpy.ndarray, shape (d*d, d*d)
        Row-major vectorisation, as in :mod:`companion.stability.operators`.
    """
    hs, lr, b, replacement = _setup(hessians, lr, batch_size, replacement)
    n, d, _ = hs.shape
    check_dense_size(3 * d**4, f"the {d * d} x {d * d} mixture operator", "a smaller d")
    p = batch_noise_factor(n, b, replacement)
    eye = np.eye(d)
    single = eye - lr * hs  # one sample: I - eta H_i
    full = eye - lr * hs.mean(axis=0)
    flat = single.reshape(n, d * d)
    single_part = (flat.T @ flat / n).reshape(d, d, d, d).transpose(0, 2, 1, 3)
    return p * single_part.reshape(d * d, d * d) + (1.0 - p) * np.kron(full, full)


# --------------------------------------------------------------------------------------
# beyond interpolation: covariance limit and stationary statistics
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CovarianceLimit:
    r"""Long-time second moments of linearised SGD at a regular minimum.

    With :math:`P` the projector on :math:`\operatorname{range}(H)` and
    :math:`P_\perp = I - P`, write :math:`x = x_\parallel + x_\perp`.

    Attributes
    ----------
    range_covariance : ndarray (d, d)
        :math:`\lim_t \mathbb E[x_\parallel x_\parallel^\top]` (Theorem 5).
    cross_covariance : ndarray (d, d)
        :math:`\lim_t \mathbb E[x_\parallel x_\perp^\top] = \eta p\,H^\dagger\Sigma_gP_\perp`.
    null_covariance_rate : ndarray (d, d)
        :math:`\eta^2 p\,P_\perp\Sigma_gP_\perp`: the exact increase of
        :math:`\mathbb E[x_\perp x_\perp^\top]` every step (Theorem 4: a driftless random walk).
    null_growth_rate : float
        Its trace, the per-step increase of :math:`\mathbb E\|x_\perp\|^2`.
    range_projector : ndarray (d, d)
        :math:`P`.
    """

    range_covariance: np.ndarray
    cross_covariance: np.ndarray
    null_covariance_rate: np.ndarray
    null_growth_rate: float
    range_projector: np.ndarray


def covariance_limit(
    hessians, gradients, lr: float, batch_size: int, replacement: bool = False
) -> CovarianceLimit:
    r"""Limit of the second moment of linearised SGD at a regular minimum (MM Theorems 4--5).

    Because :math:`H_i \succeq 0`, :math:`\operatorname{null}(H) \subseteq
    \operatorname{null}(H_i)`, so :math:`\hat H x_\perp = 0` and the dynamics split
    (:cite:p:`mulayoff2024exact` Thm 4):
    :math:`x_{\perp,t+1} = x_{\perp,t} - \eta P_\perp\hat g_t` is a random walk without drift,
    whose second moment grows by exactly :math:`\eta^2p\,P_\perp\Sigma_gP_\perp` per step,
    while on :math:`\operatorname{range}(H)` the recursion of
    :func:`second_moment_recursion` has, for :math:`0 < \eta < \eta^*`, the fixed point
    (:cite:p:`mulayoff2024exact` Thm 5)

    .. math::

        \operatorname{vec}(S_\infty) = \eta p\,(2C - \eta D)^\dagger
        \operatorname{vec}(P\Sigma_gP),

    from :math:`S = Q(S) + \eta^2pP\Sigma_gP` and :math:`I - Q = \eta(2C - \eta D)`
    (the mean :math:`m_t` decays since :math:`\eta < \eta^* \le 2/\lambda_{\max}(H)`).
    Here it is solved in an eigenbasis of :math:`\operatorname{range}(H)`, where
    :math:`2C - \eta D` is symmetric positive definite exactly when :math:`\eta < \eta^*`
    (its Cholesky factorisation doubles as the check). The cross moment solves
    :math:`\eta H X = \eta^2pP\Sigma_gP_\perp`.

    Parameters
    ----------
    hessians : array_like, shape (n, d, d)
        Per-sample Hessians (PSD: a regular minimum).
    gradients : array_like, shape (n, d)
        Per-sample gradients :math:`g_i`, summing to zero.
    lr, batch_size, replacement
        :math:`\eta`, :math:`B`, sampling scheme.

    Raises
    ------
    ValueError
        If ``lr`` is not below the mean-square threshold :math:`\eta^*` (no limit exists).
    """
    hs, lr, b, replacement = _setup(hessians, lr, batch_size, replacement)
    n, d, _ = hs.shape
    if gradients is None:
        raise TypeError("gradients is required (per-sample gradients of shape (n, d))")
    g = _check_gradients(gradients, n, d)
    p = batch_noise_factor(n, b, replacement)
    h = hs.mean(axis=0)
    u, lam = _range_basis(h)
    r = u.shape[1]
    sigma_g = g.T @ g / n
    proj = u @ u.T
    null_proj = np.eye(d) - proj
    null_rate = lr**2 * p * null_proj @ sigma_g @ null_proj
    null_rate = 0.5 * (null_rate + null_rate.T)
    if r == 0:  # H = 0: everything is null space
        zero = np.zeros((d, d))
        return CovarianceLimit(zero, zero.copy(), null_rate, float(np.trace(null_rate)), zero)

    hs_r = np.einsum("ai,nab,bj->nij", u, hs, u)
    c, dmat = kron_operators(hs_r, b, replacement)
    system = 2.0 * c - lr * dmat
    try:
        factor = scipy.linalg.cho_factor(0.5 * (system + system.T))
    except np.linalg.LinAlgError as exc:
        raise ValueError(
            f"lr = {lr} is not below the mean-square threshold eta* (2C - lr D is not "
            "positive definite on range(H)): the covariance has no limit"
        ) from exc
    sigma_r = u.T @ sigma_g @ u
    s_r = scipy.linalg.cho_solve(factor, lr * p * sigma_r.reshape(-1)).reshape(r, r)
    s_r = 0.5 * (s_r + s_r.T)
    range_cov = u @ s_r @ u.T
    # H^dagger Sigma_g P_perp, with H^dagger = U diag(1/lambda) U^T
    cross = lr * p * (u / lam) @ (u.T @ sigma_g @ null_proj)
    return CovarianceLimit(
        range_covariance=range_cov,
        cross_covariance=cross,
        null_covariance_rate=null_rate,
        null_growth_rate=float(np.trace(null_rate)),
        range_projector=proj,
    )


@dataclass(frozen=True)
class StationaryStatistics:
    r"""Long-time averages of MM Corollary 1 (on :math:`\operatorname{range}(H)`).

    Attributes
    ----------
    sq_distance : float
        :math:`\lim\mathbb E\|P(\theta_t - \theta^*)\|^2 = \operatorname{tr}S_\infty`.
    excess_loss : float
        :math:`\lim\mathbb E\tilde L(\theta_t) - L(\theta^*) = \frac12\operatorname{tr}(HS_\infty)`.
    sq_grad_norm : float
        :math:`\lim\mathbb E\|\nabla\tilde L(\theta_t)\|^2 = \operatorname{tr}(H^2S_\infty)`.
    null_growth_rate : float
        Per-step growth of :math:`\mathbb E\|P_\perp(\theta_t - \theta^*)\|^2`.
    """

    sq_distance: float
    excess_loss: float
    sq_grad_norm: float
    null_growth_rate: float


def stationary_statistics(
    hessians, gradients, lr: float, batch_size: int, replacement: bool = False
) -> StationaryStatistics:
    r"""Limits of distance, loss and gradient norm at a regular minimum (MM Corollary 1).

    :math:`\tilde L(\theta^* + x) = L(\theta^*) + \frac12x^\top Hx` is the quadratic model
    (its linear term vanishes at a minimum), so with :math:`S_\infty` from
    :func:`covariance_limit` (:cite:p:`mulayoff2024exact` Cor. 1):

    .. math::

        \mathbb E\|x_\parallel\|^2 \to \operatorname{tr}S_\infty,\quad
        \mathbb E\tilde L - L(\theta^*) \to \tfrac12\operatorname{tr}(HS_\infty),\quad
        \mathbb E\|\nabla\tilde L\|^2 \to \operatorname{tr}(H^2S_\infty).

    The null-space part and the cross moment drop out of the last two (:math:`HP_\perp = 0`).
    All three grow with :math:`\eta` on :math:`(0, \eta^*)`: by the Neumann series
    :math:`S_\infty = \frac{\eta p}{2}\sum_{k\ge0}(\frac\eta2C^{-1}D)^kC^{-1}(P\Sigma_gP)`,
    a sum of PSD matrices (:math:`C^{-1}` and :math:`D` preserve the PSD cone) with
    coefficients increasing in :math:`\eta`, so lowering the learning rate lowers the loss
    level, as the paper notes.
    """
    limit = covariance_limit(hessians, gradients, lr, batch_size, replacement)
    h = as_hessians(hessians).mean(axis=0)
    s = limit.range_covariance
    return StationaryStatistics(
        sq_distance=float(np.trace(s)),
        excess_loss=0.5 * float(np.sum(h * s)),
        sq_grad_norm=float(np.sum((h @ h) * s)),
        null_growth_rate=limit.null_growth_rate,
    )


# --------------------------------------------------------------------------------------
# typical versus mean-square growth
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LyapunovEstimate:
    r"""Typical and mean-square growth per step of linearised SGD on the range of H.

    Attributes
    ----------
    exponent : float
        Estimate of the top Lyapunov exponent
        :math:`\gamma = \lim_t \frac1t\,\mathbb E\log\|x_t\|` (per step): mean over
        trajectories of :math:`\frac1T\log(\|x_{T}\|/\|x_{0}\|)` after ``burn_in`` steps.
    standard_error : float
        Standard error of ``exponent`` across the independent trajectories.
    ms_exponent : float or None
        :math:`\frac12\log\rho(Q)` restricted to :math:`\operatorname{range}(H)`: the growth
        rate per step of :math:`\sqrt{\mathbb E\|x_t\|^2}`. Jensen's inequality gives
        :math:`\gamma \le` ``ms_exponent``. ``None`` when not computed.
    """

    exponent: float
    standard_error: float
    ms_exponent: float | None


def lyapunov_exponent(
    hessians,
    lr: float,
    batch_size: int,
    steps: int,
    n_trajectories: int,
    replacement: bool = False,
    seed: int = 0,
    burn_in: int = 0,
    exact: bool = True,
) -> LyapunovEstimate:
    r"""Typical growth rate of linearised SGD versus its mean-square growth rate.

    The mean-square threshold :math:`\eta^*` (:cite:p:`mulayoff2024exact`) concerns
    :math:`\mathbb E\|x_t\|^2 \sim \rho(Q)^t`. A single trajectory grows like
    :math:`e^{\gamma t}` with the top Lyapunov exponent
    :math:`\gamma = \lim_t \frac1t\log\|x_t\|` of the random matrix product, and
    :math:`2\gamma \le \log\rho(Q)` (Jensen). Between the :math:`\eta` where
    :math:`\gamma = 0` and :math:`\eta^*` the mean square diverges while almost every
    trajectory converges: growth carried by rare trajectories.

    The estimate renormalises every step (no overflow), starting from standard normal
    directions projected on :math:`\operatorname{range}(H)` (the null space of :math:`H` is
    invariant and does not move). Vectorised over trajectories.

    Parameters
    ----------
    hessians, lr, batch_size, replacement
        As in :func:`simulate_linearized_sgd`.
    steps : int
        Steps averaged over (after ``burn_in``).
    n_trajectories : int
        Independent trajectories (>= 2 for a standard error).
    seed : int
        Seed of ``numpy.random.default_rng``.
    burn_in : int
        Steps discarded first, so the direction forgets its start.
    exact : bool
        Also compute ``ms_exponent`` from the dense operator on :math:`\operatorname{range}(H)`
        (size :math:`r^4`, :math:`r = \operatorname{rank}H`).

    Returns
    -------
    LyapunovEstimate
        ``exponent = -inf`` if some trajectory hits 0 exactly (possible when some
        :math:`I - \eta\hat H` is singular).
    """
    hs, lr, b, replacement = _setup(hessians, lr, batch_size, replacement)
    steps = check_positive_int(steps, "steps")
    n_traj = check_positive_int(n_trajectories, "n_trajectories", minimum=2)
    burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
    if not isinstance(exact, bool | np.bool_):
        raise TypeError(f"exact must be True or False, got {type(exact).__name__}")
    u, _ = _range_basis(hs.mean(axis=0))
    if u.shape[1] == 0:
        raise ValueError("H = 0: every direction is in the null space, nothing to estimate")
    hs_r = np.einsum("ai,nab,bj->nij", u, hs, u)  # the dynamics restricted to range(H)
    factors = _hessian_factors(hs_r)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_traj, u.shape[1]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    log_growth = np.zeros(n_traj)
    for t in range(burn_in + steps):
        x = _sgd_step(hs_r, factors, None, lr, b, replacement, rng, x)
        norms = np.linalg.norm(x, axis=1)
        if t >= burn_in:
            with np.errstate(divide="ignore"):
                log_growth += np.log(norms)
        zero = norms == 0
        if np.any(zero):  # a trajectory hit exactly 0 and stays there
            norms = np.where(zero, 1.0, norms)
        x /= norms[:, None]
    per_traj = log_growth / steps
    if np.any(np.isneginf(per_traj)):
        exponent, std_err = float("-inf"), float("inf")
    else:
        exponent = float(per_traj.mean())
        std_err = float(per_traj.std(ddof=1) / np.sqrt(n_traj))
    ms = None
    if exact:
        q = second_moment_operator(hs_r, lr, b, replacement)
        rho = float(np.max(np.abs(np.linalg.eigvalsh(0.5 * (q + q.T)))))
        ms = 0.5 * float(np.log(rho)) if rho > 0 else float("-inf")
    return LyapunovEstimate(exponent=exponent, standard_error=std_err, ms_exponent=ms)
