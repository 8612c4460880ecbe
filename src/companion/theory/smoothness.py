r"""From flat minima to smooth functions: the bounds of Ma & Ying §4-§5.

Ma & Ying (:cite:p:`ma2021linear`) write a network as :math:`f(x, W) = \tilde f(W_1x, W_2)`
and turn bounds on the parameter gradients :math:`a_i = \nabla_W f(x_i, W^*)` at a
linearly stable minimum into bounds on the input gradients :math:`\nabla_x f`, first at
the training data (Thm 3), then on the neighbourhood
:math:`\mathcal X_\delta = \bigcup_i B(x_i, \delta)` (Thms 4-5), and finally on the
population error (Thm 6) and on adversarial perturbations (Thm 7).

* the constants of the bounds: :func:`stability_factor`,
  :func:`required_parameter_radius`, :func:`first_layer_shift` (the construction in the
  proof of Prop. 3);
* the bounds themselves, as :class:`companion.stability.bounds.Bound` objects or
  :class:`GeneralizationBound`: :func:`theorem3_bound`, :func:`proposition3_bound`,
  :func:`theorem4_bound`, :func:`theorem5_bound`, :func:`generalization_bound` (26),
  :func:`robustness_bound` (27).

The data geometry they need is in :mod:`companion.theory.geometry`; the measurements on a
torch model (local smoothness, worst-case inputs, Sobolev seminorms) in
:mod:`companion.nets.probes`. Norms: for a model with ``K > 1`` outputs, a "gradient" norm
is the entrywise norm of the ``K x w`` (or ``K x d``) Jacobian; the paper has ``K = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..stability.bounds import BOUND_RTOL, Bound
from ..validation import (
    as_float_array,
    check_fraction,
    check_lr,
    check_positive,
    check_positive_int,
)

__all__ = [
    "GeneralizationBound",
    "first_layer_shift",
    "generalization_bound",
    "proposition3_bound",
    "required_parameter_radius",
    "robustness_bound",
    "stability_factor",
    "theorem3_bound",
    "theorem4_bound",
    "theorem5_bound",
]


# ----------------------------------------------------------------------------------------
# constants of the bounds
# ----------------------------------------------------------------------------------------
def stability_factor(
    n_params: int, lr: float, batch_size: int, k: int, n_samples: int | None = None
) -> float:
    r"""The factor that :math:`k`-th order linear stability puts on the parameter gradients.

    Theorem 2 of :cite:p:`ma2021linear` summed over the :math:`w` parameters gives
    :math:`\frac1n\sum_i\|a_i\|_{2k}^{2k} \le 2w(2B)^{k-1}/\eta^k`, hence

    * ``n_samples=None``: :math:`(w/B)^{1/2k}\sqrt{2B/\eta}`, the bound on
      :math:`(\frac1n\sum_i\|a_i\|_{2k}^{2k})^{1/2k}` used in Cor. 1 and Thm 3–4;
    * ``n_samples=n``: :math:`(2nw/B)^{1/2k}\sqrt{2B/\eta}`, the bound on
      :math:`\max_i\|a_i\|_{2k}` used in Thms 5–7 (the paper's constant; the sum alone gives
      the smaller :math:`(nw/B)^{1/2k}\sqrt{2B/\eta}`).
    """
    w = check_positive_int(n_params, "n_params")
    lr = check_lr(lr)
    b = check_positive_int(batch_size, "batch_size")
    k = check_positive_int(k, "k")
    base = w / b if n_samples is None else 2.0 * check_positive_int(n_samples, "n_samples") * w / b
    return float(base ** (1.0 / (2 * k)) * math.sqrt(2.0 * b / lr))


def required_parameter_radius(
    delta: float, first_layer_norm: float, min_input_norm: float
) -> float:
    r"""Parameter radius :math:`\delta_{\rm approx}` covering inputs within ``delta`` of the data.

    Prop. 3 and Thms 4–7 of :cite:p:`ma2021linear` need
    :math:`\delta \le \delta_{\rm approx}\min_i\|x_i\|_2/\|W_1\|_2`, i.e.
    :math:`\delta_{\rm approx} \ge \delta\|W_1\|_2/\min_i\|x_i\|_2` (returned): moving the input
    by :math:`\delta` is the same as moving :math:`W_1` by at most this much
    (:func:`first_layer_shift`).
    """
    return (
        check_positive(delta, "delta", allow_zero=True)
        * check_positive(first_layer_norm, "first_layer_norm", allow_zero=True)
        / check_positive(min_input_norm, "min_input_norm")
    )


def first_layer_shift(first_layer, x, x_star) -> np.ndarray:
    r"""The smallest :math:`\Delta W_1` with :math:`(W_1 + \Delta W_1)x_* = W_1x` (Prop. 3).

    :math:`\Delta W_1 = W_1(x - x_*)x_*^\top/\|x_*\|_2^2`: the minimum-Frobenius-norm solution
    of the under-determined system :math:`\Delta W_1 x_* = W_1(x - x_*)`. It is rank one,
    so its spectral and Frobenius norms agree and equal
    :math:`\|W_1(x - x_*)\|_2/\|x_*\|_2 \le \|W_1\|_2\|x - x_*\|_2/\|x_*\|_2`. Moving the input
    from :math:`x_*` to :math:`x` is the same as moving the parameters from :math:`W` to
    :math:`W' = (W_1 + \Delta W_1, W_2)` at the fixed input :math:`x_*`
    (:cite:p:`ma2021linear`, Appendix B.2; reconstructed, the paper's formulas are lost).

    Parameters
    ----------
    first_layer : array_like, shape (m, p)
        :math:`W_1`.
    x, x_star : array_like, shape (p,)
        The moved input and the data point; ``x_star != 0``.
    """
    w1 = as_float_array(first_layer, "first_layer", ndim=2)
    xv = as_float_array(x, "x").reshape(-1)
    xs = as_float_array(x_star, "x_star").reshape(-1)
    if xv.shape[0] != w1.shape[1] or xs.shape[0] != w1.shape[1]:
        raise ValueError(
            f"x and x_star must have {w1.shape[1]} entries (columns of first_layer), got "
            f"{xv.shape[0]} and {xs.shape[0]}"
        )
    norm2 = float(xs @ xs)
    if norm2 == 0:
        raise ValueError("x_star must be nonzero")
    return np.outer(w1 @ (xv - xs), xs) / norm2


def _input_gradient_rhs(
    constant: float, w1t_norm: float, input_norm, gradient_norm
) -> float | np.ndarray:
    r""":math:`C\|W_1^\top\|_{2k}(g + 1)/\|x\|_{2k}`, the right side of Prop. 3."""
    return constant * w1t_norm * (np.asarray(gradient_norm) + 1.0) / np.asarray(input_norm)


def theorem3_bound(
    seminorm: float,
    *,
    w1t_norm: float,
    min_input_norm: float,
    n_params: int,
    lr: float,
    batch_size: int,
    k: int,
) -> Bound:
    r"""Ma & Ying Theorem 3: the Sobolev seminorm at the training data of a stable minimum.

    .. math::

        |f(\cdot, W^*)|_{1,2k,\{x_i\}} \le
        \frac{\|(W_1^*)^\top\|_{2k}}{\min_i\|x_i\|_{2k}}
        \Big(\frac wB\Big)^{1/2k}\sqrt{\frac{2B}{\eta}}

    at an interpolating minimum that is :math:`k`-th order linearly stable for SGD with
    learning rate :math:`\eta` and batch size :math:`B` (:cite:p:`ma2021linear`, eq. (22));
    :math:`|f|_{1,2k,\{x_i\}} = (\frac1n\sum_i\|\nabla_xf(x_i)\|_{2k}^{2k})^{1/2k}`
    (``FirstLayerGradients.g_x`` of :mod:`companion.nets.jacobians`). ``w1t_norm`` must be an
    upper bound on the induced norm :math:`\|W_1^\top\|_{2k}`.
    """
    seminorm = check_positive(seminorm, "seminorm", allow_zero=True)
    scale = check_positive(w1t_norm, "w1t_norm", allow_zero=True) / check_positive(
        min_input_norm, "min_input_norm"
    )
    rhs = scale * stability_factor(n_params, lr, batch_size, k)
    return Bound(lhs=seminorm, rhs=float(rhs), description=f"MY Thm 3 (22), k={k}")


def proposition3_bound(
    input_gradient_norms,
    *,
    constant: float,
    w1t_norm: float,
    centre_norm: float,
    centre_gradient_norm: float,
    k: int = 1,
) -> Bound:
    r"""Ma & Ying Proposition 3: local smoothness in :math:`W` gives smoothness in :math:`x`.

    If :math:`f` is :math:`(C,\delta_{\rm approx},k)`-locally smooth at :math:`W^*` and
    :math:`x_*`, then for :math:`\|x - x_*\|_2 \le \delta_{\rm approx}\|x_*\|_2/\|W_1^*\|_2`
    (:cite:p:`ma2021linear`, eq. (23))

    .. math::

        \|\nabla_x f(x, W^*)\|_{2k} \le
        \frac{C\|(W_1^*)^\top\|_{2k}}{\|x_*\|_{2k}}\big(\|\nabla_W f(x_*, W^*)\|_{2k} + 1\big).

    Parameters
    ----------
    input_gradient_norms : array_like
        :math:`\|\nabla_xf(x)\|_{2k}` at the perturbed inputs (left sides).
    constant : float
        :math:`C` of Def. 1 (e.g. ``LocalSmoothness.constant`` of
        :func:`~companion.nets.probes.local_smoothness`).
    w1t_norm : float
        Upper bound on :math:`\|W_1^\top\|_{2k}`.
    centre_norm, centre_gradient_norm : float
        :math:`\|x_*\|_{2k}` and :math:`\|\nabla_Wf(x_*, W^*)\|_{2k}`.
    """
    lhs = as_float_array(input_gradient_norms, "input_gradient_norms")
    rhs = _input_gradient_rhs(
        check_positive(constant, "constant", allow_zero=True),
        check_positive(w1t_norm, "w1t_norm", allow_zero=True),
        check_positive(centre_norm, "centre_norm"),
        check_positive(centre_gradient_norm, "centre_gradient_norm", allow_zero=True),
    )
    k = check_positive_int(k, "k")
    return Bound(lhs=lhs, rhs=float(rhs), description=f"MY Prop 3 (23), k={k}")


def theorem4_bound(
    normalized_seminorm: float,
    *,
    scattering_constant: float,
    constant: float,
    w1t_norm: float,
    min_input_norm: float,
    n_params: int,
    lr: float,
    batch_size: int,
    k: int,
) -> Bound:
    r"""Ma & Ying Theorem 4 divided by :math:`V_{\mathcal X_\delta}^{1/2k}` on both sides.

    The theorem (:cite:p:`ma2021linear`, eq. (24)) bounds
    :math:`|f|_{1,2k,\mathcal X_\delta} = (\int_{\mathcal X_\delta}\|\nabla_xf\|_{2k}^{2k})^{1/2k}`
    by :math:`(KV_{\mathcal X_\delta})^{1/2k}\,2C\|(W_1^*)^\top\|_{2k}/\min_i\|x_i\|_{2k}\,
    ((w/B)^{1/2k}\sqrt{2B/\eta} + 1)`. Volumes in input dimension 64 are far outside
    floating-point range at the radii of real data, so both sides are divided by
    :math:`V^{1/2k}`: the left side becomes the :math:`2k`-th root of the *average* of
    :math:`\|\nabla_xf\|_{2k}^{2k}` over :math:`\mathcal X_\delta`
    (:func:`~companion.nets.probes.union_seminorm`), the right side loses its volume. The proof
    only needs :math:`nV_B \le KV_{\mathcal X_\delta}`, so the integral constant of Remark 2
    (``Scattering.mean_kappa`` of :func:`~companion.theory.geometry.scattering`) is a valid
    ``scattering_constant``.
    """
    lhs = check_positive(normalized_seminorm, "normalized_seminorm", allow_zero=True)
    k = check_positive_int(k, "k")
    kk = check_positive(scattering_constant, "scattering_constant")
    rhs = (
        kk ** (1.0 / (2 * k))
        * 2.0
        * _input_gradient_rhs(
            check_positive(constant, "constant", allow_zero=True),
            check_positive(w1t_norm, "w1t_norm", allow_zero=True),
            check_positive(min_input_norm, "min_input_norm"),
            stability_factor(n_params, lr, batch_size, k),
        )
    )
    return Bound(lhs=lhs, rhs=float(rhs), description=f"MY Thm 4 (24) / V^(1/2k), k={k}")


def theorem5_bound(
    max_input_gradient: float,
    *,
    constant: float,
    w1t_norm: float,
    min_input_norm: float,
    n_samples: int,
    n_params: int,
    lr: float,
    batch_size: int,
    k: int,
) -> Bound:
    r"""Ma & Ying Theorem 5: the largest input gradient on :math:`\mathcal X_\delta`.

    .. math::

        \sup_{x\in\mathcal X_\delta}\|\nabla_xf(x, W^*)\|_{2k} \le
        \frac{C\|(W_1^*)^\top\|_{2k}}{\min_i\|x_i\|_{2k}}
        \Big(\Big(\frac{2nw}{B}\Big)^{1/2k}\sqrt{\frac{2B}{\eta}} + 1\Big)

    (:cite:p:`ma2021linear`, eq. (25)): Prop. 3 in the ball of the nearest centre, with
    :math:`\|a_i\|_{2k}` bounded through Theorem 2 summed over all samples.
    """
    lhs = check_positive(max_input_gradient, "max_input_gradient", allow_zero=True)
    k = check_positive_int(k, "k")
    rhs = _input_gradient_rhs(
        check_positive(constant, "constant", allow_zero=True),
        check_positive(w1t_norm, "w1t_norm", allow_zero=True),
        check_positive(min_input_norm, "min_input_norm"),
        stability_factor(n_params, lr, batch_size, k, n_samples=n_samples),
    )
    return Bound(lhs=lhs, rhs=float(rhs), description=f"MY Thm 5 (25), k={k}")


def _dimension_factor(input_dim: int, k: int, sharp: bool) -> float:
    r"""The :math:`c` in :math:`\|v\|_2 \le c\|v\|_{2k}` on :math:`\R^d`.

    :math:`c = \sqrt d` as in the paper, or the sharp :math:`d^{1/2-1/2k}` (Hölder).
    """
    d = check_positive_int(input_dim, "input_dim")
    k = check_positive_int(k, "k")
    return d ** (0.5 - 0.5 / k) if sharp else math.sqrt(d)


@dataclass(frozen=True)
class GeneralizationBound:
    r"""Both sides of Ma & Ying's generalization bound (26), term by term.

    Attributes
    ----------
    lhs : float
        Population error :math:`\mathbb E_{x\sim\mu}\|f(x, W^*) - f^*(x)\|_2^2` (estimated on
        held-out data).
    terms : dict
        ``"gradient"`` :math:`2c^2G^2\delta^2`, ``"target"`` :math:`2M_2^2\delta^2` and
        ``"uncovered"`` :math:`4M_1^2\varepsilon_2`.
    trivial : float
        :math:`4M_1^2`, which bounds the error anyway (both functions are bounded by
        :math:`M_1`).
    """

    lhs: float
    terms: dict = field(default_factory=dict)
    trivial: float = math.inf

    @property
    def rhs(self) -> float:
        return float(sum(self.terms.values()))

    @property
    def holds(self) -> bool:
        return bool(self.lhs <= self.rhs * (1 + BOUND_RTOL))

    @property
    def vacuous(self) -> bool:
        """Whether the bound says nothing beyond the trivial :math:`4M_1^2`."""
        return bool(self.rhs >= self.trivial)

    @property
    def dominant(self) -> str:
        """Name of the largest term."""
        return max(self.terms, key=self.terms.get)


def generalization_bound(
    test_error: float,
    *,
    gradient_bound: float,
    delta: float,
    epsilon2: float,
    bound_f: float,
    lipschitz_target: float,
    input_dim: int,
    k: int = 1,
    sharp_dimension_factor: bool = False,
) -> GeneralizationBound:
    r"""Ma & Ying Theorem 6, eq. (26): population error of an interpolating, stable minimum.

    .. math::

        \mathbb E_{x\sim\mu}\|f(x, W^*) - f^*(x)\|_2^2 \le
        2dG^2\delta^2 + 2M_2^2\delta^2 + 4M_1^2\varepsilon_2,

    where :math:`G` bounds :math:`\|\nabla_xf\|_{2k}` on :math:`\mathcal X_\delta` (the right
    side of Thm 5 in the paper; pass :func:`theorem5_bound`'s ``rhs``, or a measured
    supremum to see the rest of the chain), :math:`M_1` bounds :math:`|f|` and :math:`|f^*|`,
    :math:`M_2` bounds :math:`\|\nabla f^*\|_2`, and the training set
    :math:`(\delta,\varepsilon_2)`-covers :math:`\mu` (:cite:p:`ma2021linear`). The proof
    (reconstructed): on covered :math:`x` with nearest :math:`x_i`,
    :math:`f(x) - f^*(x) = [f(x) - f(x_i)] - [f^*(x) - f^*(x_i)]` (interpolation), the mean
    value theorem on the segment (inside :math:`B(x_i,\delta)`) bounds the two brackets by
    :math:`\sqrt dG\delta` and :math:`M_2\delta`, and :math:`(a+b)^2 \le 2a^2 + 2b^2`; the
    uncovered mass contributes at most :math:`(2M_1)^2\varepsilon_2`.

    ``sharp_dimension_factor=True`` replaces :math:`d` by :math:`d^{1-1/k}`
    (:math:`\|v\|_2 \le d^{1/2-1/2k}\|v\|_{2k}`, Hölder), which is 1 for :math:`k = 1`.
    """
    lhs = check_positive(test_error, "test_error", allow_zero=True)
    g = check_positive(gradient_bound, "gradient_bound", allow_zero=True)
    delta = check_positive(delta, "delta", allow_zero=True)
    eps = check_fraction(epsilon2, "epsilon2")
    m1 = check_positive(bound_f, "bound_f", allow_zero=True)
    m2 = check_positive(lipschitz_target, "lipschitz_target", allow_zero=True)
    c = _dimension_factor(input_dim, k, sharp_dimension_factor)
    terms = {
        "gradient": 2.0 * (c * g * delta) ** 2,
        "target": 2.0 * (m2 * delta) ** 2,
        "uncovered": 4.0 * m1**2 * eps,
    }
    return GeneralizationBound(lhs=lhs, terms=terms, trivial=4.0 * m1**2)


def robustness_bound(
    output_change,
    *,
    gradient_bound: float,
    delta: float,
    input_dim: int,
    k: int = 1,
    sharp_dimension_factor: bool = False,
) -> Bound:
    r"""Ma & Ying Theorem 7, eq. (27): how far the output can move within ``delta`` of a datum.

    .. math::

        |f(x, W^*) - f(x_i, W^*)| \le \sqrt d\,G\,\delta
        \quad\text{for } \|x - x_i\|_2 \le \delta,

    with :math:`G` the Thm 5 bound on :math:`\|\nabla_xf\|_{2k}` over the ball
    (:cite:p:`ma2021linear`; the paper prints :math:`f^*(x_i, W^*)`, a typo for the model's
    value :math:`f(x_i, W^*) = y_i`). The mean value theorem along the segment gives it;
    :math:`\sqrt d` converts the :math:`2k`-norm to the 2-norm (``sharp_dimension_factor``
    uses :math:`d^{1/2-1/2k}`).

    Parameters
    ----------
    output_change : array_like
        Measured :math:`|f(x) - f(x_i)|` (e.g. the ``values`` of :class:`WorstCaseInputs`).
    """
    lhs = as_float_array(output_change, "output_change")
    if np.any(lhs < 0):
        raise ValueError("output_change must be >= 0 (an absolute change)")
    g = check_positive(gradient_bound, "gradient_bound", allow_zero=True)
    delta = check_positive(delta, "delta", allow_zero=True)
    rhs = _dimension_factor(input_dim, k, sharp_dimension_factor) * g * delta
    return Bound(lhs=lhs, rhs=float(rhs), description=f"MY Thm 7 (27), k={k}")

