r"""Random-feature models, the ReLU (arc-cosine) kernel and two-layer ReLU networks (Part I).

Random-feature model with :math:`m` fixed inner weights :math:`w_j` drawn from
:math:`\pi_0` and :math:`\sigma(z) = \max(z, 0)`:

.. math::

    f_m(x; a) = \sum_{j=1}^m a_j\,\sigma(w_j^\top x),
    \qquad \Psi_{kj} = \sigma(w_j^\top x_k),
    \qquad G = \tfrac1n \Psi^\top\Psi,

trained by GD on :math:`\frac1{2n}\|\Psi a - y\|^2` from :math:`a = 0`, whose limit is the
minimum-norm solution :math:`\Psi^{+}y` (:cite:p:`wu2020slides`).

ReLU kernel (the degree-one arc-cosine kernel of Cho and Saul), with
:math:`\theta = \angle(b, b')`:

.. math::

    k(b, b') = \mathbb E_x[\sigma(b^\top x)\sigma(b'^\top x)]
    = c\,\|b\|\|b'\|\,(\sin\theta + (\pi - \theta)\cos\theta),

with :math:`c = 1/(2\pi)` for :math:`x\sim N(0, I_d)` and :math:`c = r^2/(2\pi d)` for
:math:`x` uniform on the sphere of radius :math:`r` in :math:`\mathbb R^d` (so the sphere of
radius :math:`\sqrt d` gives the Gaussian constant). The slides (:cite:p:`wu2020slides`, eq. 15)
state the formula for the unit sphere without the constant.

Two-layer networks :math:`f(x) = s_m\sum_j a_j\sigma(b_j^\top x)` with conventional scaling
:math:`s_m = 1` or mean-field scaling :math:`s_m = 1/m`, trained by GD on the square loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..validation import as_float_array, check_dense_size, check_lr, check_positive_int
from .least_squares import min_norm_solution

_LAWS = ("gaussian", "sphere")


def relu(z):
    r"""The ReLU :math:`\sigma(z) = \max(z, 0)`, elementwise."""
    return np.maximum(z, 0.0)


def _check_law(law: str, radius) -> float | None:
    if law not in _LAWS:
        raise ValueError(f"law must be one of {_LAWS}, got {law!r}")
    if law == "gaussian":
        if radius is not None:
            raise ValueError("radius applies only to law='sphere'")
        return None
    r = 1.0 if radius is None else float(as_float_array(radius, "radius", ndim=0))
    if r <= 0:
        raise ValueError(f"radius must be > 0, got {r}")
    return r


def _rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def sample_inputs(
    rng: np.random.Generator, n: int, d: int, law: str = "gaussian", radius: float | None = None
) -> np.ndarray:
    r"""Draw ``n`` inputs in :math:`\mathbb R^d`: :math:`N(0, I_d)` or uniform on a sphere.

    Parameters
    ----------
    law : {"gaussian", "sphere"}
        Standard Gaussian, or uniform on the sphere of radius ``radius`` (default 1).
    """
    rng = _rng(rng)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    r = _check_law(law, radius)
    check_dense_size(n * d, "the input sample", "a smaller n")
    g = rng.standard_normal((n, d))
    if law == "gaussian":
        return g
    return r * g / np.linalg.norm(g, axis=1, keepdims=True)


def relu_kernel_constant(d: int, law: str = "gaussian", radius: float | None = None) -> float:
    r"""The constant :math:`c` of the ReLU kernel for a given law of the inputs.

    :math:`k(b,b') = c\|b\|\|b'\|(\sin\theta + (\pi-\theta)\cos\theta)`.

    For :math:`x\sim N(0, I_d)`, :math:`(b^\top x, b'^\top x)` is a centred Gaussian pair and
    the Cho--Saul integral gives :math:`c = 1/(2\pi)`. For :math:`x = r\,g/\|g\|` uniform on
    the sphere of radius :math:`r`, positive homogeneity of :math:`\sigma` and the
    independence of :math:`\|g\|` and :math:`g/\|g\|` give
    :math:`\mathbb E_g[\sigma\sigma] = \mathbb E\|g\|^2\,\mathbb E_u[\sigma\sigma]
    = d\,\mathbb E_u[\sigma\sigma]`, hence :math:`c = r^2/(2\pi d)`.
    """
    d = check_positive_int(d, "d")
    r = _check_law(law, radius)
    if law == "gaussian":
        return 1.0 / (2 * np.pi)
    return r**2 / (2 * np.pi * d)


def _weights(weights, name: str) -> np.ndarray:
    w = as_float_array(weights, name, ndim=(1, 2))
    return w[None, :] if w.ndim == 1 else w


def relu_kernel(
    weights_a, weights_b, law: str = "gaussian", radius: float | None = None
) -> np.ndarray:
    r"""Closed-form ReLU kernel :math:`k(b, b') = \mathbb E_x[\sigma(b^\top x)\sigma(b'^\top x)]`.

    Parameters
    ----------
    weights_a, weights_b : array_like, shape (d,) or (m, d)
        Inner weights :math:`b` (rows).
    law, radius
        Law of :math:`x`, as in :func:`sample_inputs`.

    Returns
    -------
    ndarray, shape (m_a, m_b)
        :math:`c\|b\|\|b'\|(\sin\theta + (\pi-\theta)\cos\theta)` with the constant of
        :func:`relu_kernel_constant`; zero when either weight vector is zero.
    """
    wa = _weights(weights_a, "weights_a")
    wb = _weights(weights_b, "weights_b")
    if wa.shape[1] != wb.shape[1]:
        raise ValueError(
            f"weights_a and weights_b must have the same dimension, got {wa.shape[1]} "
            f"and {wb.shape[1]}"
        )
    const = relu_kernel_constant(wa.shape[1], law, radius)
    na = np.linalg.norm(wa, axis=1)
    nb = np.linalg.norm(wb, axis=1)
    norms = np.outer(na, nb)
    safe = np.where(norms > 0, norms, 1.0)
    cos = np.clip((wa @ wb.T) / safe, -1.0, 1.0)
    theta = np.arccos(cos)
    # sin(arccos c) = sqrt(1 - c^2), exact also at c = +-1
    value = np.sqrt(1.0 - cos**2) + (np.pi - theta) * cos
    return np.where(norms > 0, const * norms * value, 0.0)


def relu_kernel_monte_carlo(
    rng: np.random.Generator,
    weights_a,
    weights_b,
    samples: int,
    law: str = "gaussian",
    radius: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Monte Carlo estimate of :math:`\mathbb E_x[\sigma(b^\top x)\sigma(b'^\top x)]`.

    Returns
    -------
    mean, standard_error : ndarray, shape (m_a, m_b)
        Sample mean over ``samples`` inputs and its standard error
        (sample standard deviation divided by :math:`\sqrt{\text{samples}}`).
    """
    wa = _weights(weights_a, "weights_a")
    wb = _weights(weights_b, "weights_b")
    if wa.shape[1] != wb.shape[1]:
        raise ValueError("weights_a and weights_b must have the same dimension")
    samples = check_positive_int(samples, "samples", minimum=2)
    check_dense_size(samples * (wa.shape[0] + wb.shape[0]), "the Monte Carlo features",
                     "fewer samples")
    x = sample_inputs(rng, samples, wa.shape[1], law, radius)
    fa = relu(x @ wa.T)
    fb = relu(x @ wb.T)
    mean = fa.T @ fb / samples
    second = (fa**2).T @ (fb**2) / samples
    var = np.maximum(second - mean**2, 0.0) * samples / (samples - 1)
    return mean, np.sqrt(var / samples)


# ----------------------------------------------------------------------------------------
# random-feature models
# ----------------------------------------------------------------------------------------


def relu_features(inputs, weights) -> np.ndarray:
    r"""Feature matrix :math:`\Psi_{kj} = \sigma(w_j^\top x_k)`, shape ``(n, m)``."""
    x = as_float_array(inputs, "inputs", ndim=2)
    w = as_float_array(weights, "weights", ndim=2)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"inputs have dimension {x.shape[1]} but weights have dimension {w.shape[1]}"
        )
    check_dense_size(x.shape[0] * w.shape[0], "the feature matrix", "fewer samples or features")
    return relu(x @ w.T)


def feature_gram(features) -> np.ndarray:
    r"""Gram matrix :math:`G = \frac1n\Psi^\top\Psi` of a feature matrix, shape ``(m, m)``.

    :math:`G` is the Hessian of :math:`\frac1{2n}\|\Psi a - y\|^2` in :math:`a`; as
    :math:`n\to\infty` its entries tend to the kernel :math:`k(w_i, w_j)`.
    """
    psi = as_float_array(features, "features", ndim=2)
    return psi.T @ psi / psi.shape[0]


@dataclass(frozen=True)
class RandomFeatureCurve:
    r"""Minimum-norm random-feature fits of increasing width (see :func:`random_feature_curve`).

    Attributes
    ----------
    widths : ndarray of int, shape (w,)
    test_error, train_error : ndarray, shape (w,)
        Mean squared errors :math:`\frac1N\sum(f_m(x) - y)^2` on the test and training sets.
    smallest_singular_value : ndarray, shape (w,)
        :math:`\sigma_{\min(n, m)}(\Psi)` of the training feature matrix; it governs how
        much label noise (or approximation error) the fit amplifies (see Chapter 1).
    coefficient_norm : ndarray, shape (w,)
        :math:`\|\Psi^+ y\|`.
    """

    widths: np.ndarray
    test_error: np.ndarray
    train_error: np.ndarray
    smallest_singular_value: np.ndarray
    coefficient_norm: np.ndarray


def random_feature_weights(rng: np.random.Generator, width: int, d: int) -> np.ndarray:
    r"""Inner weights :math:`w_j \sim \pi_0 = N(0, I_d/d)`, shape ``(width, d)``."""
    rng = _rng(rng)
    width = check_positive_int(width, "width")
    d = check_positive_int(d, "d")
    check_dense_size(width * d, "the random-feature weights", "a smaller width")
    return rng.standard_normal((width, d)) / np.sqrt(d)


def random_feature_curve(
    weights, widths, train_inputs, train_targets, test_inputs, test_targets
) -> RandomFeatureCurve:
    r"""Fit random-feature models of each width by the GD limit and measure them.

    For each width :math:`m` the model uses the first :math:`m` rows of ``weights`` (so the
    models are nested) and the coefficients :math:`a = \Psi^{+} y`, the limit of GD on
    :math:`\frac1{2n}\|\Psi a - y\|^2` from :math:`a = 0`
    (:func:`companion.theory.least_squares.min_norm_solution`; :cite:p:`wu2020slides`).

    Parameters
    ----------
    weights : array_like, shape (m_max, d)
        Inner weights, e.g. from :func:`random_feature_weights`.
    widths : sequence of int
        Widths :math:`m`, each in ``1..m_max``.
    """
    w = as_float_array(weights, "weights", ndim=2)
    x_train = as_float_array(train_inputs, "train_inputs", ndim=2)
    y_train = as_float_array(train_targets, "train_targets", ndim=1)
    x_test = as_float_array(test_inputs, "test_inputs", ndim=2)
    y_test = as_float_array(test_targets, "test_targets", ndim=1)
    if x_train.shape[0] != y_train.shape[0] or x_test.shape[0] != y_test.shape[0]:
        raise ValueError("inputs and targets must have the same number of rows")
    if not x_train.shape[1] == x_test.shape[1] == w.shape[1]:
        raise ValueError("train_inputs, test_inputs and weights must have the same dimension d")
    ws = np.asarray(widths)
    if (
        ws.ndim != 1
        or ws.size == 0
        or not np.issubdtype(ws.dtype, np.integer)
        or ws.min() < 1
        or ws.max() > w.shape[0]
    ):
        raise ValueError(f"widths must be a non-empty 1-D sequence of integers in 1..{w.shape[0]}")
    psi_train = relu_features(x_train, w)
    psi_test = relu_features(x_test, w)
    n = x_train.shape[0]
    out = {k: np.empty(ws.size) for k in ("test", "train", "smin", "norm")}
    for i, m in enumerate(ws):
        coef = min_norm_solution(psi_train[:, :m], y_train)
        out["test"][i] = np.mean((psi_test[:, :m] @ coef - y_test) ** 2)
        out["train"][i] = np.mean((psi_train[:, :m] @ coef - y_train) ** 2)
        out["smin"][i] = np.linalg.svd(psi_train[:, :m], compute_uv=False)[min(n, m) - 1]
        out["norm"][i] = np.linalg.norm(coef)
    return RandomFeatureCurve(
        widths=ws.astype(np.int64),
        test_error=out["test"],
        train_error=out["train"],
        smallest_singular_value=out["smin"],
        coefficient_norm=out["norm"],
    )


# ----------------------------------------------------------------------------------------
# two-layer ReLU networks
# ----------------------------------------------------------------------------------------

_SCALINGS = ("conventional", "mean_field")


@dataclass(frozen=True)
class TwoLayerRun:
    """Record of a two-layer network trained by GD.

    Attributes
    ----------
    steps : ndarray, shape (r,)
        Step numbers at which the state was recorded.
    train_loss, test_loss : ndarray, shape (r,)
        :math:`\\frac1{2n}\\sum(f - y)^2` on the training and test sets (``test_loss`` is
        NaN-free and empty when no test set was given).
    neuron_magnitude : ndarray, shape (r, m)
        Contribution size :math:`s_m|a_j|\\,\\|b_j\\|` of each neuron.
    outer, inner : ndarray
        Final weights :math:`a` (m,) and :math:`B` (m, d).
    scaling : str
    """

    steps: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    neuron_magnitude: np.ndarray
    outer: np.ndarray
    inner: np.ndarray
    scaling: str


def two_layer_output(inputs, outer, inner, scaling: str = "conventional") -> np.ndarray:
    r"""Network output :math:`f(x) = s_m\sum_j a_j\sigma(b_j^\top x)` for each input row."""
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be one of {_SCALINGS}, got {scaling!r}")
    x = as_float_array(inputs, "inputs", ndim=2)
    a = as_float_array(outer, "outer", ndim=1)
    b = as_float_array(inner, "inner", ndim=2)
    if b.shape != (a.size, x.shape[1]):
        raise ValueError(f"inner must have shape (m, d) = ({a.size}, {x.shape[1]}), got {b.shape}")
    scale = 1.0 if scaling == "conventional" else 1.0 / a.size
    return scale * (relu(x @ b.T) @ a)


def two_layer_gradients(
    inputs, targets, outer, inner, scaling: str = "conventional"
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradients of :math:`\frac1{2n}\sum_i(f(x_i) - y_i)^2` in :math:`a` and :math:`B`.

    With residuals :math:`r_i = f(x_i) - y_i` (eqs. 6--7 and 18 of :cite:p:`wu2020slides`):
    :math:`\partial_{a_j} = \frac{s_m}{n}\sum_i r_i\sigma(b_j^\top x_i)`,
    :math:`\nabla_{b_j} = \frac{s_m}{n}\sum_i r_i a_j\sigma'(b_j^\top x_i)x_i`,
    with :math:`\sigma'(z) = 1[z > 0]`.
    """
    x = as_float_array(inputs, "inputs", ndim=2)
    y = as_float_array(targets, "targets", ndim=1)
    if y.shape[0] != x.shape[0]:
        raise ValueError("targets must have one entry per input row")
    a = as_float_array(outer, "outer", ndim=1)
    b = as_float_array(inner, "inner", ndim=2)
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be one of {_SCALINGS}, got {scaling!r}")
    if b.shape != (a.size, x.shape[1]):
        raise ValueError(f"inner must have shape (m, d) = ({a.size}, {x.shape[1]}), got {b.shape}")
    return _two_layer_step_parts(x, y, a, b, 1.0 if scaling == "conventional" else 1.0 / a.size)[1:]


def _two_layer_step_parts(x, y, a, b, scale):
    pre = x @ b.T
    act = relu(pre)
    residual = scale * (act @ a) - y
    n = x.shape[0]
    grad_a = scale * (act.T @ residual) / n
    grad_b = scale * (((pre > 0) * residual[:, None]) * a[None, :]).T @ x / n
    return residual, grad_a, grad_b


def train_two_layer(
    rng: np.random.Generator,
    train_inputs,
    train_targets,
    width: int,
    lr: float,
    steps: int,
    scaling: str = "conventional",
    outer_init_std: float = 0.0,
    train_inner: bool = True,
    record_every: int = 1,
    test_inputs=None,
    test_targets=None,
) -> TwoLayerRun:
    r"""Train :math:`f(x) = s_m\sum_j a_j\sigma(b_j^\top x)` by GD on the square loss.

    Initialisation as in the slides (:cite:p:`wu2020slides`, eq. 8):
    :math:`a_j(0)\sim N(0, \beta^2)` with :math:`\beta` = ``outer_init_std``,
    :math:`b_j(0)\sim N(0, I_d/d)`.

    Conventional scaling (:math:`s_m = 1`) takes steps of size ``lr``. Mean-field scaling
    (:math:`s_m = 1/m`) takes steps of size ``lr * m``, i.e. time is measured in units of
    :math:`m` as in the mean-field limit, so that a single neuron's parameters move at a
    rate independent of :math:`m`. With ``train_inner=False`` only :math:`a` is trained:
    the random-feature model with the same features.

    Returns
    -------
    TwoLayerRun
        Losses and neuron magnitudes every ``record_every`` steps (and at the last step).
    """
    rng = _rng(rng)
    x = as_float_array(train_inputs, "train_inputs", ndim=2)
    y = as_float_array(train_targets, "train_targets", ndim=1)
    if y.shape[0] != x.shape[0]:
        raise ValueError("train_targets must have one entry per row of train_inputs")
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be one of {_SCALINGS}, got {scaling!r}")
    m = check_positive_int(width, "width")
    lr = check_lr(lr)
    steps = check_positive_int(steps, "steps", minimum=0)
    record_every = check_positive_int(record_every, "record_every")
    beta = float(as_float_array(outer_init_std, "outer_init_std", ndim=0))
    if beta < 0:
        raise ValueError(f"outer_init_std must be >= 0, got {beta}")
    has_test = test_inputs is not None
    if has_test:
        xt = as_float_array(test_inputs, "test_inputs", ndim=2)
        yt = as_float_array(test_targets, "test_targets", ndim=1)
        if xt.shape[1] != x.shape[1] or yt.shape[0] != xt.shape[0]:
            raise ValueError("test_inputs/test_targets do not match the training shapes")
    d = x.shape[1]
    a = beta * rng.standard_normal(m)
    b = random_feature_weights(rng, m, d)
    scale = 1.0 if scaling == "conventional" else 1.0 / m
    step_size = lr if scaling == "conventional" else lr * m

    record_at = set(range(0, steps + 1, record_every)) | {steps}
    check_dense_size(len(record_at) * m, "the neuron record", "a larger record_every")
    rec_steps, rec_train, rec_test, rec_mag = [], [], [], []
    for k in range(steps + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
            residual, grad_a, grad_b = _two_layer_step_parts(x, y, a, b, scale)
            train_loss = 0.5 * float(residual @ residual) / x.shape[0]
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"GD diverged at step {k} (lr = {lr}); use a smaller lr")
        if k in record_at:
            rec_steps.append(k)
            rec_train.append(train_loss)
            if has_test:
                rt = scale * (relu(xt @ b.T) @ a) - yt
                rec_test.append(0.5 * float(rt @ rt) / xt.shape[0])
            rec_mag.append(scale * np.abs(a) * np.linalg.norm(b, axis=1))
        if k == steps:
            break
        with np.errstate(over="ignore", invalid="ignore"):
            a = a - step_size * grad_a
            if train_inner:
                b = b - step_size * grad_b
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise FloatingPointError(f"GD diverged at step {k + 1} (lr = {lr}); use a smaller lr")
    return TwoLayerRun(
        steps=np.asarray(rec_steps),
        train_loss=np.asarray(rec_train),
        test_loss=np.asarray(rec_test),
        neuron_magnitude=np.asarray(rec_mag),
        outer=a,
        inner=b,
        scaling=scaling,
    )


def single_neuron_target(direction=None) -> Callable[[np.ndarray], np.ndarray]:
    r"""The target :math:`f^*(x) = \sigma(e^\top x)` of one ReLU neuron (default :math:`e_1`)."""
    if direction is None:
        return lambda x: relu(np.asarray(x, dtype=float)[:, 0])
    e = as_float_array(direction, "direction", ndim=1)
    return lambda x: relu(np.asarray(x, dtype=float) @ e)


def top_neuron_share(magnitudes, top: int = 1) -> np.ndarray:
    r"""Share of the total neuron magnitude carried by the ``top`` largest neurons.

    Magnitudes are :math:`s_m|a_j|\|b_j\|` as recorded by :func:`train_two_layer`.

    Accepts one magnitude vector ``(m,)`` or a record ``(r, m)``; near 1 means a sparse
    network (a few neurons do all the work), near ``top/m`` an evenly spread one.
    """
    mags = as_float_array(magnitudes, "magnitudes", ndim=(1, 2))
    top = check_positive_int(top, "top")
    if top > mags.shape[-1]:
        raise ValueError(f"top must be <= the number of neurons {mags.shape[-1]}, got {top}")
    total = mags.sum(axis=-1)
    largest = -np.sort(-mags, axis=-1)[..., :top].sum(axis=-1)
    return np.where(total > 0, largest / np.where(total > 0, total, 1.0), 0.0)
