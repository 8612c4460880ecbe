r"""Measurements of smoothness on a torch model (Ma & Ying §4-§5, Def. 1).

* :func:`local_smoothness` (Def 1, sampling and projected ascent in a parameter ball),
* :func:`worst_case_inputs` (FGSM/PGD-like ascent in input balls),
* :func:`union_seminorm` (Monte Carlo Sobolev seminorm on :math:`\mathcal X_\delta`),
* :func:`shifted_model` (the first-layer shift of Prop. 3 applied to a copy of the model),
* :func:`sgd_growth_rates` (typical and mean-square growth of linearised SGD at a trained
  model's curvature, :cite:p:`mulayoff2024exact`).

All estimates of a supremum (of a gradient norm over a ball, of the constant :math:`C` of
Def. 1) found by sampling or ascent are *lower* estimates of that supremum
(:cite:p:`ma2021linear`).

Everything is computed in float64 (a float32 model is copied to float64 first) **where the
model's parameters are** (or on ``device=``): inputs are moved there, random points are
drawn on the CPU (so every device sees the same points) and moved there, and results come
back to the CPU as NumPy float64 arrays (:func:`companion.nets.models.to_numpy`). A model
in training mode with BatchNorm or Dropout is refused (call ``model.eval()``;
:func:`companion.nets.models.check_deterministic_mode`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, jacrev, vmap

from ..theory.geometry import UnionSample, sample_union_of_balls
from ..theory.smoothness import first_layer_shift
from ..validation import as_flat_vector, as_points, check_positive, check_positive_int
from .jacobians import FunctionalModel, input_gradients
from .models import as_float64, check_deterministic_mode, first_layer, to_numpy

__all__ = [
    "GrowthRates",
    "LocalSmoothness",
    "UnionSeminorm",
    "WorstCaseInputs",
    "local_smoothness",
    "sgd_growth_rates",
    "shifted_model",
    "union_seminorm",
    "worst_case_inputs",
]


# ----------------------------------------------------------------------------------------
# measurements on a torch model
# ----------------------------------------------------------------------------------------
class _FlatModel:
    """``f(theta, x) -> (K,)`` on the flat parameter vector of a model (float64).

    Built on :class:`companion.nets.jacobians.FunctionalModel` (which refuses a model in
    training mode with BatchNorm/Dropout): :attr:`theta` and :attr:`X` (the inputs in
    float64) live on :attr:`device`, the model's device or ``device``.
    """

    def __init__(self, model, X, *, device=None):
        self.fn = FunctionalModel(model, X, device=device)
        self.device = self.fn.device
        self.X = self.fn.to_device(self.fn.X)
        self.shapes = [self.fn.params[name].shape for name in self.fn.names]
        self.theta = torch.cat([self.fn.params[name].reshape(-1) for name in self.fn.names])

    def __call__(self, theta, x):
        params, start = {}, 0
        for name, shape, size in zip(self.fn.names, self.shapes, self.fn.sizes, strict=True):
            params[name] = theta[start : start + size].reshape(shape)
            start += size
        return self.fn(params, x)


def _step_lengths(radius: float, steps: int) -> np.ndarray:
    """Ascent step lengths from ``radius / 2`` down to ``1e-3 * radius`` (geometric, float64).

    A constant normalised step oscillates around a maximum at the scale of the step;
    shrinking it lets the iterate settle (to about ``1e-3 * radius``; the best point seen
    is kept). Starting at half the radius keeps the first step from jumping across a
    non-concave landscape, while the steps still add up to about the diameter.
    """
    if steps == 0:
        return np.empty(0)
    return radius * np.geomspace(0.5, 1e-3, steps)


def _norm_power(t, k: int):
    """Sum of ``|t|^(2k)`` over all entries of ``t`` (one sample; vmapped by callers)."""
    return (t.abs() ** (2 * k)).sum()


@dataclass(frozen=True)
class LocalSmoothness:
    r"""Estimate of the constant of Ma & Ying's :math:`(C, \delta, k)`-local smoothness (Def. 1).

    Attributes
    ----------
    radius : float
        :math:`\delta`, the radius of the parameter ball.
    k : int
    base_norms : numpy.ndarray, shape (n,)
        :math:`\|\nabla_Wf(x_i, W)\|_{2k}` at the minimum.
    max_norms : numpy.ndarray, shape (n,)
        Largest :math:`\|\nabla_Wf(x_i, W')\|_{2k}` found over the ball.
    """

    radius: float
    k: int
    base_norms: np.ndarray
    max_norms: np.ndarray

    @property
    def ratios(self) -> np.ndarray:
        r"""Per sample, :math:`\max\|\nabla_Wf(x_i,W')\|_{2k}/(\|\nabla_Wf(x_i,W)\|_{2k} + 1)`."""
        return self.max_norms / (self.base_norms + 1.0)

    @property
    def constant(self) -> float:
        r"""Smallest :math:`C` consistent with everything found: :math:`\max_i` of :attr:`ratios`.

        A lower estimate of the true constant (a supremum over the ball).
        """
        return float(self.ratios.max())


def local_smoothness(
    model,
    X,
    radius: float,
    k: int = 1,
    n_samples: int = 16,
    ascent_steps: int = 0,
    seed: int = 0,
    *,
    device=None,
) -> LocalSmoothness:
    r"""Estimate :math:`C` in Def. 1 of :cite:p:`ma2021linear` by searching the parameter ball.

    The model satisfies :math:`(C,\delta,k)`-local smoothness at :math:`x` and :math:`W` when
    :math:`\|\nabla_Wf(x, W')\|_{2k} \le C(\|\nabla_Wf(x, W)\|_{2k} + 1)` for every
    :math:`\|W' - W\|_2 \le \delta` (all trainable parameters as one vector). For every input
    the search evaluates :math:`W` itself, ``n_samples`` points drawn uniformly from the
    ball (shared by all inputs) and then, if ``ascent_steps > 0``, runs projected gradient
    ascent on :math:`\|\nabla_Wf(x_i, W')\|_{2k}^{2k}` from the best point found, with
    normalised steps whose length decays geometrically from :math:`\delta/2` to
    :math:`10^{-3}\delta` (``_step_lengths``; second derivatives through
    ``torch.func``). Every point found gives a lower estimate of the supremum; the result
    is only as good as the search.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, ...)`` to ``(n, K)``; used in float64. Refused in training mode with
        BatchNorm/Dropout (``ValueError``: call ``model.eval()``).
    X : array_like or torch.Tensor
        Inputs ``(n, ...)``, on any device.
    radius : float
        :math:`\delta > 0`.
    k : int
        Moment order.
    n_samples : int
        Random points of the ball (``>= 0``).
    ascent_steps : int
        Steps of projected gradient ascent per input (``>= 0``).
    seed : int
        Seed of the random points (drawn on the CPU, then moved to the device).
    device : torch.device, str or None
        Where to compute (None: where the model is); the model is never modified.
    """
    radius = check_positive(radius, "radius")
    k = check_positive_int(k, "k")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=0)
    ascent_steps = check_positive_int(ascent_steps, "ascent_steps", minimum=0)
    seed = check_positive_int(seed, "seed", minimum=0)
    flat = _FlatModel(model, X, device=device)
    x_all, theta0 = flat.X, flat.theta
    w = theta0.shape[0]
    p = 2 * k

    def norm_power(theta, x):
        return _norm_power(jacrev(flat)(theta, x), k)

    norms_at = vmap(norm_power, in_dims=(None, 0))
    base = norms_at(theta0, x_all)
    best = base.clone()
    best_theta = theta0.expand(x_all.shape[0], w).clone()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n_samples):
        u = torch.randn(w, generator=gen, dtype=torch.float64).to(flat.device)
        r = radius * float(torch.rand(1, generator=gen, dtype=torch.float64)) ** (1.0 / w)
        theta = theta0 + r * u / torch.linalg.vector_norm(u)
        values = norms_at(theta, x_all)
        better = values > best
        best = torch.where(better, values, best)
        best_theta = torch.where(better[:, None], theta, best_theta)
    if ascent_steps:
        ascend = vmap(grad(norm_power), in_dims=(0, 0))
        per_sample = vmap(norm_power, in_dims=(0, 0))
        theta = best_theta.clone()
        for step in _step_lengths(radius, ascent_steps).tolist():
            g = ascend(theta, x_all)
            g_norm = torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-300)
            moved = theta + step * g / g_norm - theta0
            scale = (radius / torch.linalg.vector_norm(moved, dim=1, keepdim=True)).clamp(max=1.0)
            theta = theta0 + moved * scale
            values = per_sample(theta, x_all)
            best = torch.maximum(best, values)
    return LocalSmoothness(
        radius=radius,
        k=k,
        base_norms=to_numpy(base ** (1.0 / p)),
        max_norms=to_numpy(best ** (1.0 / p)),
    )


@dataclass(frozen=True)
class WorstCaseInputs:
    """Inputs found by ascent within ``radius`` of each centre, and the objective there.

    ``values[i]`` is the objective at ``points[i]`` (the best found for centre ``i``);
    ``centre_values[i]`` at the centre itself.
    """

    objective: str
    radius: float
    points: np.ndarray
    values: np.ndarray
    centre_values: np.ndarray


_OBJECTIVES = ("output_change", "input_gradient")


def worst_case_inputs(
    model,
    centres,
    radius: float,
    objective: str = "output_change",
    k: int = 1,
    steps: int = 20,
    restarts: int = 0,
    seed: int = 0,
    starts=None,
    *,
    device=None,
) -> WorstCaseInputs:
    r"""Gradient-based search for the worst input within ``radius`` (2-norm) of each centre.

    Objectives, for each centre :math:`x_i`:

    * ``"output_change"``: :math:`\|f(x) - f(x_i)\|_2`, the left side of Ma & Ying's
      robustness bound (27) (:cite:p:`ma2021linear`). The search starts from the FGSM-like
      points :math:`x_i \pm \delta v`, :math:`v` the top right singular vector of the input
      Jacobian at :math:`x_i` (the normalised gradient for one output), keeps the better one
      and runs ``steps`` steps of projected gradient ascent (PGD in the 2-norm: normalised
      steps of geometrically decaying length from :math:`\delta/2` to :math:`10^{-3}\delta`,
      projection onto the ball);
    * ``"input_gradient"``: :math:`\|\nabla_xf(x)\|_{2k}`, the left side of Thm 5; the
      ascent starts at :math:`x_i` (second derivatives through ``torch.func``).

    ``starts`` (one point per centre, e.g. the points of an ``"output_change"`` search)
    and ``restarts`` uniform points of the ball start further ascents. The best value per
    centre is kept, so the result is a lower estimate of the supremum over the ball.
    ``steps=0`` evaluates the starting points only (for ``"output_change"`` the FGSM-like
    one-step points).

    The search runs in float64 where the model is (or on ``device``; the model is never
    modified): ``centres`` and ``starts`` (array_like or tensors on any device) are moved
    there; the random points of the restarts are drawn on the CPU and moved there. A model
    in training mode with BatchNorm/Dropout is refused (``ValueError``). ``points``,
    ``values`` and ``centre_values`` come back as NumPy float64 arrays.
    """
    if objective not in _OBJECTIVES:
        raise ValueError(f"objective must be one of {_OBJECTIVES}, got {objective!r}")
    radius = check_positive(radius, "radius")
    k = check_positive_int(k, "k")
    steps = check_positive_int(steps, "steps", minimum=0)
    restarts = check_positive_int(restarts, "restarts", minimum=0)
    seed = check_positive_int(seed, "seed", minimum=0)
    flat = _FlatModel(model, centres, device=device)
    theta, c = flat.theta, flat.X
    n = c.shape[0]
    flat_shape = (n, -1)

    def f(x):
        return flat(theta, x)

    with torch.no_grad():
        f_centre = vmap(f)(c)

    if objective == "output_change":

        def value_power(x, fc):
            return ((f(x) - fc) ** 2).sum()

        def to_value(vp):
            return vp.sqrt()
    else:

        def value_power(x, fc):
            return _norm_power(jacrev(f)(x), k)

        def to_value(vp):
            return vp ** (1.0 / (2 * k))

    evaluate = vmap(value_power)
    ascend = vmap(grad(value_power))

    def project(x):
        moved = (x - c).reshape(flat_shape)
        scale = (
            radius / torch.linalg.vector_norm(moved, dim=1, keepdim=True).clamp_min(1e-300)
        ).clamp(max=1.0)
        return c + (moved * scale).reshape(c.shape)

    def keep_better(x, v, best_x, best_v):
        better = v > best_v
        mask = better.reshape(n, *(1,) * (c.ndim - 1))
        return torch.where(mask, x, best_x), torch.where(better, v, best_v)

    def pgd(x, best_x, best_v):
        for step in _step_lengths(radius, steps).tolist():
            g = ascend(x, f_centre).reshape(flat_shape)
            g = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-300)
            x = project(x + step * g.reshape(c.shape))
            best_x, best_v = keep_better(x, evaluate(x, f_centre), best_x, best_v)
        return best_x, best_v

    centre_power = evaluate(c, f_centre)
    best_x, best_v = c.clone(), centre_power.clone()
    if objective == "output_change":
        jac = vmap(jacrev(f))(c).reshape(n, -1, math.prod(c.shape[1:]))
        v_top = torch.linalg.svd(jac, full_matrices=False).Vh[:, 0, :].reshape(c.shape)
        for sign in (1.0, -1.0):
            x = c + sign * radius * v_top
            best_x, best_v = keep_better(x, evaluate(x, f_centre), best_x, best_v)
        best_x, best_v = pgd(best_x.clone(), best_x, best_v)
    else:
        best_x, best_v = pgd(c.clone(), best_x, best_v)
    if starts is not None:
        x = torch.as_tensor(as_points(starts, "starts"), dtype=c.dtype, device=c.device)
        if x.shape != (n, math.prod(c.shape[1:])):
            raise ValueError(
                f"starts must hold one point per centre, shape {tuple(c.shape)}, got "
                f"{tuple(np.shape(starts))}"
            )
        x = project(x.reshape(c.shape))
        best_x, best_v = keep_better(x, evaluate(x, f_centre), best_x, best_v)
        best_x, best_v = pgd(x, best_x, best_v)
    gen = torch.Generator().manual_seed(seed)
    dim = math.prod(c.shape[1:])
    for _ in range(restarts):
        u = torch.randn(n, dim, generator=gen, dtype=torch.float64).to(flat.device)
        r = radius * torch.rand(n, 1, generator=gen, dtype=torch.float64).to(flat.device) ** (
            1.0 / dim
        )
        x = c + (r * u / torch.linalg.vector_norm(u, dim=1, keepdim=True)).reshape(c.shape)
        best_x, best_v = keep_better(x, evaluate(x, f_centre), best_x, best_v)
        best_x, best_v = pgd(x, best_x, best_v)
    return WorstCaseInputs(
        objective=objective,
        radius=radius,
        points=to_numpy(best_x.reshape(flat_shape)),
        values=to_numpy(to_value(best_v)),
        centre_values=to_numpy(to_value(centre_power)),
    )


@dataclass(frozen=True)
class UnionSeminorm:
    r"""Monte Carlo estimate of the Sobolev seminorm on :math:`\mathcal X_\delta`, per unit volume.

    Attributes
    ----------
    k : int
    mean_power : float
        Uniform average of :math:`\|\nabla_xf\|_{2k}^{2k}` over :math:`\mathcal X_\delta`.
    stderr : float
        Its standard error.
    max_norm : float
        Largest :math:`\|\nabla_xf\|_{2k}` among the sampled points.
    sample : UnionSample
        The points, their overlap counts and the volume estimate.
    norms : numpy.ndarray
        :math:`\|\nabla_xf\|_{2k}` at every sampled point.
    """

    k: int
    mean_power: float
    stderr: float
    max_norm: float
    sample: UnionSample
    norms: np.ndarray

    @property
    def normalized(self) -> float:
        r""":math:`|f|_{1,2k,\mathcal X_\delta}/V^{1/2k}`, the 2k-th root of the mean power."""
        return float(self.mean_power ** (1.0 / (2 * self.k)))

    @property
    def log_seminorm(self) -> float:
        r""":math:`\log|f|_{1,2k,\mathcal X_\delta}` (the volume put back, in logs)."""
        return math.log(self.normalized) + self.sample.log_volume / (2 * self.k)


def union_seminorm(
    model,
    centres,
    delta: float,
    k: int = 1,
    n_samples: int = 2000,
    seed: int = 0,
    *,
    device=None,
) -> UnionSeminorm:
    r"""Sobolev seminorm :math:`|f|_{1,2k,\mathcal X_\delta}` of a model, by Monte Carlo.

    :math:`|f|_{1,2k,\Omega}^{2k} = \int_\Omega\|\nabla_xf\|_{2k}^{2k}\,dx` (Ma & Ying §2 with
    :math:`q = 1`, :math:`p = 2k`: the sum over first-order multi-indices is the :math:`2k`-th
    power of the :math:`2k`-norm of the gradient), :math:`\Omega = \mathcal X_\delta =
    \bigcup_iB(x_i,\delta)`. Points come from
    :func:`companion.theory.geometry.sample_union_of_balls` (NumPy, on the CPU); the input
    gradients from :func:`companion.nets.jacobians.input_gradients`, computed where the
    model is (or on ``device``). A model in training mode with BatchNorm/Dropout is refused
    (``ValueError``).
    """
    check_deterministic_mode(model)
    k = check_positive_int(k, "k")
    c = as_points(centres, "centres")
    sample = sample_union_of_balls(c, delta, n_samples, seed)
    shape = tuple(centres.shape[1:]) if hasattr(centres, "shape") else (c.shape[1],)
    pts = sample.points.reshape(-1, *shape)
    grads = input_gradients(model, pts, device=device).reshape(sample.points.shape[0], -1)
    norms = np.linalg.norm(grads, ord=2 * k, axis=1)
    mean, stderr = sample.uniform_mean(norms ** (2 * k))
    return UnionSeminorm(
        k=k,
        mean_power=mean,
        stderr=stderr,
        max_norm=float(norms.max()),
        sample=sample,
        norms=norms,
    )


def shifted_model(model, x, x_star, *, device=None):
    r"""A copy of ``model`` whose first layer :math:`W_1` is moved by the first-layer shift.

    The shift is :func:`companion.theory.smoothness.first_layer_shift`. The copy evaluated
    at ``x_star`` equals ``model`` at ``x``:
    :math:`\tilde f((W_1+\Delta W_1)x_*, W_2) = \tilde f(W_1x, W_2)` — the multiplicative
    structure behind Prop. 3 of :cite:p:`ma2021linear`. Only for an ``nn.Linear`` first layer
    (a shifted convolution is no longer a convolution).

    The copy is float64, on the model's device (or on ``device``); the model is never
    modified. A model in training mode with BatchNorm/Dropout is refused (``ValueError``:
    the identity above needs a deterministic function of one sample).
    """
    check_deterministic_mode(model)
    layer = first_layer(model)
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(
            "shifted_model needs an nn.Linear first layer: the shift W1 (x - x*) x*^T / |x*|^2 "
            f"is a dense matrix, got {type(layer).__name__}"
        )
    out = copy.deepcopy(as_float64(model, device=device))
    weight = first_layer(out).weight
    shift = first_layer_shift(
        to_numpy(weight), as_flat_vector(x, "x"), as_flat_vector(x_star, "x_star")
    )
    with torch.no_grad():
        weight.add_(torch.as_tensor(shift, dtype=weight.dtype, device=weight.device))
    return out


# ----------------------------------------------------------------------------------------
# typical versus mean-square growth of linearised SGD at a trained network
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GrowthRates:
    r"""Per-step growth rates of linearised SGD at one point, for one :math:`(\eta, B)`.

    Attributes
    ----------
    lr, batch_size : float, int
        The learning rate (in the units of the curvature's loss) and the batch size.
    lr_ratio : float
        :math:`\eta/\eta^*(B)`, with :math:`\eta^*(B)` the exact mean-square threshold.
    lyapunov : float
        Estimate of the top Lyapunov exponent :math:`\gamma` (typical growth per step of
        :math:`\log\|x_t\|`), from
        :func:`companion.stability.dynamics.lyapunov_exponent`.
    lyapunov_stderr : float
        Its standard error across the independent trajectories.
    ms_rate : float
        :math:`\frac12\log\rho(Q)`: the growth per step of
        :math:`\log\sqrt{\mathbb E\|x_t\|^2}` on :math:`\operatorname{range}(H)`.
        Jensen's inequality gives ``lyapunov <= ms_rate``; ``ms_rate`` is 0 exactly at
        :math:`\eta^*(B)`.
    """

    lr: float
    batch_size: int
    lr_ratio: float
    lyapunov: float
    lyapunov_stderr: float
    ms_rate: float


def _second_moment_radius(small: np.ndarray, lr: float, p: float) -> float:
    r""":math:`\rho(Q)` of :math:`Q(S) = (I-\eta H)S(I-\eta H) + \eta^2p(\frac1n\sum_i
    H_iSH_i - HSH)` on :math:`r\times r` matrices, by Lanczos (``eigsh``).

    :math:`Q` is self-adjoint for the Frobenius inner product (every :math:`H_i` is
    symmetric) and maps the PSD cone into itself, so its spectral radius is its largest
    eigenvalue (Krein-Rutman).
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    n, r, _ = small.shape
    h = small.mean(axis=0)
    a = np.eye(r) - lr * h
    flat = small.reshape(n * r, r)

    def apply(vec: np.ndarray) -> np.ndarray:
        s = vec.reshape(r, r)
        left = (flat @ s).reshape(n, r, r).transpose(1, 0, 2).reshape(r, n * r)
        noise = left @ flat / n - h @ s @ h
        return (a @ s @ a + lr**2 * p * noise).reshape(-1)

    if r * r <= 400:  # tiny: dense
        dense = np.column_stack([apply(e) for e in np.eye(r * r)])
        return float(np.max(np.linalg.eigvalsh(0.5 * (dense + dense.T))))
    op = LinearOperator((r * r, r * r), matvec=apply, dtype=np.float64)
    start = np.eye(r).reshape(-1)
    top = eigsh(op, k=1, which="LA", v0=start, tol=1e-8, return_eigenvectors=False)
    return float(top[0])


def sgd_growth_rates(
    curvature,
    lr: float,
    batch_size: int,
    *,
    steps: int = 2000,
    n_trajectories: int = 100,
    burn_in: int = 200,
    seed: int = 0,
    replacement: bool = False,
) -> GrowthRates:
    r"""Typical (Lyapunov) and mean-square growth rates of linearised SGD at a network.

    At a point with per-sample curvatures :math:`H_i` (the ``curvature`` of a trained
    model, :func:`companion.nets.curvature.model_curvature`), SGD linearises to
    :math:`x_{t+1} = (I - \eta\hat H_t)x_t` (:cite:p:`mulayoff2024exact`). A single
    trajectory grows like :math:`e^{\gamma t}` (top Lyapunov exponent :math:`\gamma`),
    the mean square like :math:`\rho(Q)^t` with

    .. math::

        Q(S) = (I-\eta H)S(I-\eta H) + \eta^2p\Big(\frac1n\sum_iH_iSH_i - HSH\Big),

    and :math:`2\gamma \le \log\rho(Q)` (Jensen); :math:`\rho(Q) = 1` exactly at
    :math:`\eta = \eta^*(B)`. Both are computed in the :math:`r`-dimensional range of
    :math:`H` (``curvature.reduced_hessians()``; the null space does not move), so the
    cost does not depend on the number of parameters: :math:`\gamma` by
    :func:`companion.stability.dynamics.lyapunov_exponent` (renormalised trajectories),
    :math:`\rho(Q)` by Lanczos on the :math:`r^2`-dimensional operator.

    Parameters
    ----------
    curvature : companion.stability.curvature.Curvature
        The per-sample curvatures at the point (any loss; ``lr`` is in its units).
    lr : float
        Learning rate :math:`\eta`.
    batch_size : int
        Batch size :math:`B`.
    steps, n_trajectories, burn_in, seed
        Of the Lyapunov estimate (steps averaged over, independent trajectories,
        discarded steps, seed of the batches and starts).
    replacement : bool
        Sampling scheme.

    Returns
    -------
    GrowthRates

    Examples
    --------
    >>> import numpy as np
    >>> from companion.stability.curvature import Curvature
    >>> from companion.nets.probes import sgd_growth_rates
    >>> rng = np.random.default_rng(0)
    >>> curv = Curvature.from_jacobians(rng.standard_normal((6, 1, 4)))
    >>> edge = sgd_growth_rates(curv, curv.ms_threshold(2), 2, steps=200)
    >>> abs(edge.ms_rate) < 1e-9, edge.lyapunov <= edge.ms_rate + 3 * edge.lyapunov_stderr
    (True, True)
    """
    from ..stability.curvature import Curvature
    from ..stability.dynamics import lyapunov_exponent
    from ..validation import check_batch_size, check_lr

    if not isinstance(curvature, Curvature):
        raise TypeError(
            "curvature must be a companion Curvature (e.g. model_curvature(model, data, "
            f"loss=...)), got {type(curvature).__name__}"
        )
    lr = check_lr(lr)
    batch_size = check_batch_size(batch_size, curvature.n, replacement)
    if curvature.rank == 0:
        raise ValueError("curvature: H = 0, nothing grows or decays")
    eta = lr * curvature.lr_scale(batch_size)  # a step in batch-mean units
    small = curvature.reduced_hessians()
    est = lyapunov_exponent(
        small,
        eta,
        batch_size,
        steps=steps,
        n_trajectories=n_trajectories,
        replacement=replacement,
        seed=seed,
        burn_in=burn_in,
        exact=False,
    )
    rho = _second_moment_radius(small, eta, curvature.noise_factor(batch_size, replacement))
    return GrowthRates(
        lr=lr,
        batch_size=int(batch_size),
        lr_ratio=lr / curvature.ms_threshold(batch_size, replacement),
        lyapunov=est.exponent,
        lyapunov_stderr=est.standard_error,
        ms_rate=0.5 * math.log(rho) if rho > 0 else -math.inf,
    )
