r"""The two-minima example of Wu, Ma and E: equally sharp minima, only one stable for SGD.

.. math::

    f(x) = \tfrac12\big(f_1(x) + f_2(x)\big),\qquad
    f_1(x) = \min\{x^2,\ 0.1(x-1)^2\},\qquad
    f_2(x) = \min\{x^2,\ 1.9(x-1)^2\}.

Both :math:`x = 0` and :math:`x = 1` are global minima (:math:`f = 0`) with the same
curvature :math:`f'' = 2`, so GD with :math:`\eta < 1` is stable at both. SGD with one
sample per step (:math:`B = 1` of :math:`n = 2`) multiplies :math:`x - 1` by
:math:`1 - 0.2\eta` or :math:`1 - 3.8\eta`; at :math:`\eta = 0.7` the second factor is
:math:`-1.66` and :math:`x = 1` is unstable, while at :math:`x = 0` both factors are
:math:`1 - 2\eta = -0.4` (:cite:p:`wu2018sgd`, :cite:p:`wu2020slides`).

The slides quote :math:`f'' = 1`, :math:`f_1''(1) = 0.1` and :math:`f_2''(1) = 1.9`: those are
the coefficients, half the second derivatives; the conclusions are unchanged.
"""

from __future__ import annotations

import numpy as np

from ..validation import as_float_array, check_lr, check_positive_int

#: Coefficients c_i of the branch c_i (x - 1)^2 of f_1 and f_2.
TWO_MINIMA_COEFFICIENTS = (0.1, 1.9)


def _coefficient(which) -> float:
    if isinstance(which, bool) or which not in (0, 1):
        raise ValueError(f"which must be 0 (f_1) or 1 (f_2), got {which!r}")
    return TWO_MINIMA_COEFFICIENTS[int(which)]


def two_minima_component(x, which: int) -> np.ndarray:
    r"""The per-sample loss :math:`f_i(x) = \min\{x^2, c_i(x-1)^2\}`, ``which`` in {0, 1}."""
    c = _coefficient(which)
    z = as_float_array(x, "x")
    return np.minimum(z**2, c * (z - 1.0) ** 2)


def two_minima_component_grad(x, which) -> np.ndarray:
    r"""Derivative of :math:`f_i` (the branch that attains the minimum; at a tie, :math:`x^2`).

    ``which`` may be an int or an integer array broadcastable against ``x`` (one component
    per entry, as SGD draws them).
    """
    z = as_float_array(x, "x")
    idx = np.asarray(which)
    if not np.issubdtype(idx.dtype, np.integer) or np.any((idx < 0) | (idx > 1)):
        raise ValueError("which must be 0 or 1 (or an integer array of them)")
    c = np.asarray(TWO_MINIMA_COEFFICIENTS)[idx]
    quad = z**2
    shifted = c * (z - 1.0) ** 2
    return np.where(quad <= shifted, 2.0 * z, 2.0 * c * (z - 1.0))


def two_minima_loss(x) -> np.ndarray:
    r"""The training loss :math:`f = \frac12(f_1 + f_2)`."""
    return 0.5 * (two_minima_component(x, 0) + two_minima_component(x, 1))


def two_minima_grad(x) -> np.ndarray:
    r"""The full-batch gradient :math:`f' = \frac12(f_1' + f_2')`."""
    return 0.5 * (two_minima_component_grad(x, 0) + two_minima_component_grad(x, 1))


def two_minima_hessians(minimum: float) -> np.ndarray:
    r"""Per-sample curvatures :math:`f_i''` at a minimum, as ``(2, 1, 1)`` Hessians.

    At :math:`x = 0` both are 2; at :math:`x = 1` they are :math:`2c_i = 0.2` and 3.8. Feed
    them to :func:`companion.stability.curvature.sharpness` and
    :func:`companion.stability.curvature.non_uniformity`.
    """
    if minimum not in (0, 1):
        raise ValueError(f"minimum must be 0 or 1 (the two global minima), got {minimum!r}")
    if minimum == 0:
        return np.full((2, 1, 1), 2.0)
    return 2.0 * np.asarray(TWO_MINIMA_COEFFICIENTS, dtype=float).reshape(2, 1, 1)


def simulate_two_minima(
    init: float,
    lr: float,
    steps: int,
    runs: int = 1,
    stochastic: bool = True,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    r"""GD or SGD (one of :math:`f_1, f_2` drawn uniformly per step) on the two-minima loss.

    SGD: :math:`x_{t+1} = x_t - \eta f_{\xi_t}'(x_t)`, :math:`\xi_t` uniform on {1, 2}
    (batch size 1 of :math:`n = 2`); GD: :math:`x_{t+1} = x_t - \eta f'(x_t)`.

    Parameters
    ----------
    init : float
        Starting point, e.g. :math:`1 - 10^{-5}`.
    runs : int
        Independent trajectories simulated together (all identical for GD).
    stochastic : bool
        SGD if True (``rng`` required), GD otherwise.

    Returns
    -------
    ndarray, shape (runs, steps + 1)
    """
    x0 = float(as_float_array(init, "init", ndim=0))
    lr = check_lr(lr)
    steps = check_positive_int(steps, "steps", minimum=0)
    runs = check_positive_int(runs, "runs")
    if stochastic and not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy Generator when stochastic=True")
    path = np.empty((runs, steps + 1))
    x = np.full(runs, x0)
    path[:, 0] = x
    for t in range(steps):
        if stochastic:
            grad = two_minima_component_grad(x, rng.integers(0, 2, size=runs))
        else:
            grad = two_minima_grad(x)
        x = x - lr * grad
        path[:, t + 1] = x
    return path
