r"""Gradient descent on linear least squares and logistic regression (Part I).

Least squares with :math:`n` samples, features :math:`X\in\mathbb R^{n\times d}`, targets
:math:`y\in\mathbb R^n` and the risk

.. math::

    \hat R(\beta) = \frac{1}{2n}\|X\beta - y\|^2,
    \qquad
    \beta_{k+1} = \beta_k - \frac{\eta}{n} X^\top (X\beta_k - y).

In the SVD :math:`X = \sum_j \sigma_j u_j v_j^\top` every coordinate
:math:`a_j = v_j^\top\beta` evolves on its own,

.. math::

    a_j(k) = a_j(0)\, r_j^k + \frac{u_j^\top y}{\sigma_j}\,(1 - r_j^k),
    \qquad r_j = 1 - \frac{\eta\sigma_j^2}{n},

while the component of :math:`\beta` orthogonal to the row space of :math:`X` never moves.
From :math:`\beta_0 = 0` the limit is the minimum-norm interpolant :math:`X^{+}y`
(:cite:p:`wu2020slides`). The continuous-time flow of the slides is the limit
:math:`\eta\to0` with :math:`t = \eta k`, where :math:`r_j^k \to e^{-\sigma_j^2 t/n}`.

The logistic part serves the norm bound for convex risks: for a convex, :math:`L`-smooth
risk and :math:`\eta \le 2/L`, GD never moves away from any minimiser :math:`\bar\theta`, so
:math:`\|\theta_k\| \le \|\theta_0\| + 2\|\bar\theta\|` (:cite:p:`wu2020slides`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import linprog
from scipy.special import expit, log_expit

from ..validation import as_float_array, check_dense_size, check_lr, check_positive_int

# ----------------------------------------------------------------------------------------
# input checks local to this module
# ----------------------------------------------------------------------------------------


def _features_and_targets(features, targets) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array(features, "features", ndim=2)
    y = as_float_array(targets, "targets", ndim=1)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"features must be a non-empty (n, d) array, got shape {x.shape}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"targets must have one entry per row of features ({x.shape[0]}), "
            f"got {y.shape[0]}"
        )
    return x, y


def _params(value, d: int, name: str) -> np.ndarray:
    if value is None:
        return np.zeros(d)
    p = as_float_array(value, name, ndim=1)
    if p.shape[0] != d:
        raise ValueError(f"{name} must have length d = {d}, got {p.shape[0]}")
    return p


def _steps_array(steps) -> np.ndarray:
    """Non-negative integer step counts, as an int64 array of any shape (scalars allowed)."""
    arr = np.asarray(steps)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"steps must be integers, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError("steps must be >= 0")
    return arr.astype(np.int64)


def _check_noise_std(noise_std) -> float:
    value = float(as_float_array(noise_std, "noise_std", ndim=0))
    if value < 0:
        raise ValueError(f"noise_std must be >= 0, got {value}")
    return value


def _thin_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD restricted to the numerically non-zero singular values.

    The cut-off ``max(n, d) * eps * sigma_max`` is the one ``numpy.linalg.pinv`` and
    ``lstsq`` use: singular values below it are rounding noise of a rank-deficient matrix.
    """
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return u[:, :0], s[:0], vt[:0]
    keep = s > max(x.shape) * np.finfo(float).eps * s[0]
    return u[:, keep], s[keep], vt[keep]


# ----------------------------------------------------------------------------------------
# least squares
# ----------------------------------------------------------------------------------------


def least_squares_risk(params, features, targets) -> float:
    r"""Empirical risk :math:`\hat R(\beta) = \frac{1}{2n}\|X\beta - y\|^2`."""
    x, y = _features_and_targets(features, targets)
    beta = _params(params, x.shape[1], "params")
    residual = x @ beta - y
    return float(residual @ residual) / (2 * x.shape[0])


def least_squares_smoothness(features) -> float:
    r"""Smoothness constant :math:`L = \lambda_{\max}(X^\top X/n) = \sigma_1^2/n` of the risk."""
    x = as_float_array(features, "features", ndim=2)
    if x.size == 0:
        raise ValueError(f"features must be a non-empty (n, d) array, got shape {x.shape}")
    return float(np.linalg.norm(x, 2) ** 2) / x.shape[0]


def min_norm_solution(features, targets) -> np.ndarray:
    r"""The minimum-norm least-squares solution :math:`X^{+}y`.

    When :math:`X` has full row rank (over-parameterised, :math:`d\ge n`) this is the
    interpolant :math:`X\beta = y` of smallest Euclidean norm (:cite:p:`wu2020slides`).
    """
    x, y = _features_and_targets(features, targets)
    return np.linalg.lstsq(x, y, rcond=None)[0]


def gradient_descent(
    gradient: Callable[[np.ndarray], np.ndarray], init, lr: float, steps: int
) -> np.ndarray:
    r"""Plain gradient descent :math:`\theta_{k+1} = \theta_k - \eta\nabla\hat R(\theta_k)`.

    Parameters
    ----------
    gradient : callable
        Maps a parameter vector of shape ``(d,)`` to the gradient, same shape.
    init : array_like, shape (d,)
        Starting point :math:`\theta_0`.
    lr : float
        Learning rate :math:`\eta > 0`.
    steps : int
        Number of steps ``k``.

    Returns
    -------
    ndarray, shape (steps + 1, d)
        The whole trajectory :math:`\theta_0, \dots, \theta_k`.
    """
    theta = as_float_array(init, "init", ndim=1).copy()
    lr = check_lr(lr)
    steps = check_positive_int(steps, "steps", minimum=0)
    check_dense_size((steps + 1) * theta.size, "the GD trajectory", "fewer steps")
    path = np.empty((steps + 1, theta.size))
    path[0] = theta
    for k in range(steps):
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
            g = np.asarray(gradient(theta), dtype=float)
            if g.shape != theta.shape:
                raise ValueError(f"gradient returned shape {g.shape}, expected {theta.shape}")
            theta = theta - lr * g
        if not np.all(np.isfinite(theta)):
            raise FloatingPointError(
                f"gradient descent diverged at step {k + 1} (lr = {lr}); use a smaller lr"
            )
        path[k + 1] = theta
    return path


def gd_least_squares(features, targets, lr: float, steps: int, init=None) -> np.ndarray:
    r"""Run GD on :math:`\frac1{2n}\|X\beta-y\|^2` step by step.

    Returns the trajectory, shape ``(steps + 1, d)``; ``init`` defaults to
    :math:`\beta_0 = 0`. Converges for :math:`\eta < 2n/\sigma_1^2`.
    """
    x, y = _features_and_targets(features, targets)
    beta0 = _params(init, x.shape[1], "init")
    n = x.shape[0]
    return gradient_descent(lambda b: x.T @ (x @ b - y) / n, beta0, lr, steps)


def gd_least_squares_closed_form(features, targets, lr: float, steps, init=None) -> np.ndarray:
    r"""GD iterates of least squares from the SVD formula, without iterating.

    :math:`\beta_k = P_\perp\beta_0 + \sum_j v_j\big(a_j(0) r_j^k
    + \tfrac{u_j^\top y}{\sigma_j}(1 - r_j^k)\big)`, :math:`r_j = 1 - \eta\sigma_j^2/n`,
    :math:`P_\perp` the projector on the null space of :math:`X` (:cite:p:`wu2020slides`).

    Parameters
    ----------
    steps : int or array_like of int
        Step counts ``k`` at which to evaluate (any order, repeats allowed).

    Returns
    -------
    ndarray
        Shape ``(d,)`` for a scalar ``steps``, else ``(len(steps), d)``.
    """
    x, y = _features_and_targets(features, targets)
    beta0 = _params(init, x.shape[1], "init")
    lr = check_lr(lr)
    k = _steps_array(steps)
    u, s, vt = _thin_svd(x)
    n = x.shape[0]
    ratio = 1.0 - lr * s**2 / n
    a0 = vt @ beta0
    target = (u.T @ y) / s
    decay = ratio[None, :] ** k.reshape(-1, 1)  # (len(k), rank)
    coords = a0 * decay + target * (1.0 - decay)
    outside = beta0 - vt.T @ a0
    out = outside + coords @ vt
    return out[0] if k.ndim == 0 else out


def expected_gd_error(
    features, true_params, noise_std: float, lr: float, steps, init=None
) -> np.ndarray:
    r"""Exact expected parameter error of GD on noisy least-squares labels.

    Labels :math:`y = X\beta^* + \xi` with :math:`\mathbb E\xi = 0`,
    :math:`\mathbb E\xi\xi^\top = \varepsilon^2 I_n`. With :math:`a^*_j = v_j^\top\beta^*`
    and :math:`r_j = 1 - \eta\sigma_j^2/n`,

    .. math::

        \mathbb E\, e(k) = \mathbb E\|\beta_k - \beta^*\|^2
        = \|P_\perp(\beta_0 - \beta^*)\|^2
        + \sum_j (a_j(0) - a_j^*)^2 r_j^{2k}
        + \sum_j \frac{\varepsilon^2}{\sigma_j^2}(1 - r_j^k)^2 .

    The first sum is learning the signal, the second fitting the noise
    (:cite:p:`wu2020slides`). No Gaussianity is needed: the cross terms vanish because
    :math:`\mathbb E\xi = 0`.

    Returns
    -------
    ndarray
        Same shape as ``steps``.
    """
    x = as_float_array(features, "features", ndim=2)
    beta_star = _params(true_params, x.shape[1], "true_params")
    beta0 = _params(init, x.shape[1], "init")
    eps = _check_noise_std(noise_std)
    lr = check_lr(lr)
    k = _steps_array(steps)
    _, s, vt = _thin_svd(x)
    n = x.shape[0]
    ratio = 1.0 - lr * s**2 / n
    gap = vt @ (beta0 - beta_star)
    outside = (beta0 - beta_star) - vt.T @ gap
    decay = ratio ** k[..., None]
    signal = np.sum(gap**2 * decay**2, axis=-1)
    noise = np.sum(eps**2 / s**2 * (1.0 - decay) ** 2, axis=-1)
    return float(outside @ outside) + signal + noise


def slow_deterioration_bound(time, top_singular_value: float, noise_std: float, n: int):
    r"""The bound :math:`e^{-2\sigma_1^2 t/n} + \varepsilon^2 t` of the slow-deterioration theorem.

    For :math:`\beta^* = v_1` (a unit vector along the top right singular vector),
    :math:`\beta_0 = 0` and gradient flow,
    :math:`\mathbb E\,e(t) \le e^{-2\sigma_1^2 t/n} + \varepsilon^2 t` (:cite:p:`wu2020slides`).
    The same holds for GD with :math:`t = \eta k` when :math:`\eta\sigma_1^2/n \le 1`, since
    then :math:`0 \le r_j \le e^{-\eta\sigma_j^2/n}` and
    :math:`1 - r_j^k \le \min(1, k\eta\sigma_j^2/n)`.
    """
    t = as_float_array(time, "time")
    if np.any(t < 0):
        raise ValueError("time must be >= 0")
    sigma1 = float(as_float_array(top_singular_value, "top_singular_value", ndim=0))
    if sigma1 <= 0:
        raise ValueError(f"top_singular_value must be > 0, got {sigma1}")
    eps = _check_noise_std(noise_std)
    n = check_positive_int(n, "n")
    return np.exp(-2 * sigma1**2 * t / n) + eps**2 * t


def early_stopping_time(top_singular_value: float, noise_std: float, n: int) -> float:
    r"""The early-stopping time :math:`T_0`, minimiser of the slow-deterioration bound.

    :math:`T_0 = \frac{n}{2\sigma_1^2}\log\frac{2\sigma_1^2}{n\varepsilon^2}`.

    Setting the derivative of :math:`e^{-2\sigma_1^2t/n} + \varepsilon^2 t` to zero gives
    :math:`T_0` (:cite:p:`wu2020slides`); the value of the bound there is
    :math:`\frac{n\varepsilon^2}{2\sigma_1^2}\big(1 + \log\frac{2\sigma_1^2}{n\varepsilon^2}\big)`.
    Returns 0 when :math:`2\sigma_1^2 \le n\varepsilon^2` (the bound then increases from
    the start).
    """
    sigma1 = float(as_float_array(top_singular_value, "top_singular_value", ndim=0))
    if sigma1 <= 0:
        raise ValueError(f"top_singular_value must be > 0, got {sigma1}")
    eps = _check_noise_std(noise_std)
    n = check_positive_int(n, "n")
    if eps == 0:
        return float("inf")
    ratio = 2 * sigma1**2 / (n * eps**2)
    return float(n / (2 * sigma1**2) * np.log(ratio)) if ratio > 1 else 0.0


# ----------------------------------------------------------------------------------------
# logistic regression (a convex risk with no closed form)
# ----------------------------------------------------------------------------------------


def _labels_pm1(targets) -> np.ndarray:
    y = as_float_array(targets, "targets", ndim=1)
    if not np.all(np.abs(y) == 1.0):
        raise ValueError("targets must be labels in {-1, +1} for logistic regression")
    return y


def logistic_risk(params, features, targets) -> float:
    r"""Logistic risk :math:`\frac1n\sum_i \log(1 + e^{-y_i x_i^\top\theta})`, :math:`y_i = \pm1`.
    """
    x, _ = _features_and_targets(features, targets)
    y = _labels_pm1(targets)
    theta = _params(params, x.shape[1], "params")
    return float(-np.mean(log_expit(y * (x @ theta))))


def logistic_gradient(params, features, targets) -> np.ndarray:
    r"""Gradient :math:`-\frac1n\sum_i y_i\,\mathrm{sigmoid}(-y_i x_i^\top\theta)\,x_i`."""
    x, _ = _features_and_targets(features, targets)
    y = _labels_pm1(targets)
    theta = _params(params, x.shape[1], "params")
    return -(x.T @ (y * expit(-y * (x @ theta)))) / x.shape[0]


def logistic_smoothness(features) -> float:
    r"""Smoothness constant :math:`L = \sigma_1^2/(4n)` of the logistic risk.

    The Hessian is :math:`\frac1n X^\top \mathrm{diag}(s_i(1-s_i)) X` with
    :math:`s_i(1-s_i)\le 1/4`.
    """
    return least_squares_smoothness(features) / 4.0


def gd_logistic(features, targets, lr: float, steps: int, init=None) -> np.ndarray:
    """Run GD on the logistic risk; returns the trajectory, shape ``(steps + 1, d)``."""
    x, _ = _features_and_targets(features, targets)
    y = _labels_pm1(targets)
    theta0 = _params(init, x.shape[1], "init")
    n = x.shape[0]
    return gradient_descent(lambda t: -(x.T @ (y * expit(-y * (x @ t)))) / n, theta0, lr, steps)


def is_linearly_separable(features, targets) -> bool:
    r"""Whether some :math:`\theta` has :math:`y_i x_i^\top\theta \ge 1` for every sample.

    Decided exactly by a linear feasibility problem (HiGHS). Separable data have no
    logistic minimiser: the risk decreases to 0 along :math:`t\theta` as :math:`t\to\infty`.
    """
    x, _ = _features_and_targets(features, targets)
    y = _labels_pm1(targets)
    result = linprog(
        np.zeros(x.shape[1]),
        A_ub=-(y[:, None] * x),
        b_ub=-np.ones(x.shape[0]),
        bounds=[(None, None)] * x.shape[1],
        method="highs",
    )
    return bool(result.status == 0)


def logistic_minimizer(features, targets, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    r"""The minimiser of the logistic risk, by damped Newton steps.

    Exists and is unique when the data are not linearly separable and :math:`X` has full
    column rank; otherwise a ``ValueError`` says why no minimiser was found.

    Parameters
    ----------
    tol : float
        Stop when the gradient norm is below ``tol`` (Newton converges quadratically, so
        this costs one or two extra steps over a looser tolerance).
    """
    x, _ = _features_and_targets(features, targets)
    y = _labels_pm1(targets)
    n, d = x.shape
    if np.linalg.matrix_rank(x) < d:
        raise ValueError("features must have full column rank for a unique logistic minimiser")
    if is_linearly_separable(x, y):
        raise ValueError(
            "the data are linearly separable: the logistic risk has no minimiser "
            "(it tends to 0 along a separating direction)"
        )
    theta = np.zeros(d)
    for _ in range(check_positive_int(max_iter, "max_iter")):
        margins = y * (x @ theta)
        grad = -(x.T @ (y * expit(-margins))) / n
        if np.linalg.norm(grad) < tol:
            return theta
        weights = expit(margins) * expit(-margins)
        hess = (x.T * weights) @ x / n
        step = np.linalg.solve(hess, grad)
        # backtracking on the risk keeps Newton globally convergent; near the minimiser
        # the decrease falls below the rounding of the risk (~eps * risk), and a full
        # step that does not raise the risk beyond that rounding is accepted
        risk = -np.mean(log_expit(margins))
        slack = 8 * np.finfo(float).eps * risk
        t = 1.0
        while True:
            candidate = theta - t * step
            new_risk = -np.mean(log_expit(y * (x @ candidate)))
            armijo = new_risk <= risk - 0.25 * t * (grad @ step)
            if armijo or (t == 1.0 and new_risk <= risk + slack):
                break
            t *= 0.5
            if t < 1e-12:
                break
        theta = candidate
    raise ValueError(f"Newton's method did not reach tol = {tol} in max_iter = {max_iter} steps")


def distance_to_reference(trajectory, reference) -> np.ndarray:
    r"""Distances :math:`\|\theta_k - \bar\theta\|` along a trajectory of shape ``(k, d)``."""
    path = as_float_array(trajectory, "trajectory", ndim=2)
    ref = _params(reference, path.shape[1], "reference")
    return np.linalg.norm(path - ref, axis=1)


def convex_norm_bound(init, reference) -> float:
    r"""The bound :math:`\|\theta_0\| + 2\|\bar\theta\|` on every GD iterate's norm.

    From :math:`\|\theta_k - \bar\theta\| \le \|\theta_0 - \bar\theta\|` and the triangle
    inequality twice (:cite:p:`wu2020slides`).
    """
    theta0 = as_float_array(init, "init", ndim=1)
    ref = _params(reference, theta0.shape[0], "reference")
    return float(np.linalg.norm(theta0) + 2 * np.linalg.norm(ref))
