r"""From flat minima to smooth functions: the numerical side of Ma & Ying §4–§5.

Ma & Ying (:cite:p:`ma2021linear`) write a network as :math:`f(x, W) = \tilde f(W_1x, W_2)`
and turn bounds on the parameter gradients :math:`a_i = \nabla_W f(x_i, W^*)` at a
linearly stable minimum into bounds on the input gradients :math:`\nabla_x f`, first at
the training data (Thm 3), then on the neighbourhood
:math:`\mathcal X_\delta = \bigcup_i B(x_i, \delta)` (Thms 4–5), and finally on the
population error (Thm 6) and on adversarial perturbations (Thm 7). This module measures
every quantity those statements involve and evaluates both sides:

* data geometry (Defs 2–4): :func:`nearest_distances`, :func:`uncovered_fraction`,
  :func:`covering_radius`, :func:`covered_condition`, :func:`scattering`,
  :func:`sample_union_of_balls` (uniform points of :math:`\mathcal X_\delta`);
* the constants of the bounds: :func:`stability_factor`,
  :func:`required_parameter_radius`, :func:`first_layer_shift` (the construction in the
  proof of Prop. 3);
* the bounds themselves, as :class:`companion.bounds.Bound` objects or
  :class:`GeneralizationBound`: :func:`theorem3_bound`, :func:`proposition3_bound`,
  :func:`theorem4_bound`, :func:`theorem5_bound`, :func:`generalization_bound` (26),
  :func:`robustness_bound` (27);
* measurements on a torch model (torch is imported inside these functions only):
  :func:`local_smoothness` (Def 1, sampling and projected ascent in a parameter ball),
  :func:`worst_case_inputs` (FGSM/PGD-like ascent in input balls),
  :func:`union_seminorm` (Monte Carlo Sobolev seminorm on :math:`\mathcal X_\delta`),
  :func:`shifted_model`.

Norms: for a model with ``K > 1`` outputs, a "gradient" norm is the entrywise norm of the
``K x w`` (or ``K x d``) Jacobian, as in :mod:`companion.jacobians`; the paper has
``K = 1``. All estimates of a supremum (of a gradient norm over a ball, of the constant
:math:`C` of Def. 1) found by sampling or ascent are *lower* estimates of that supremum.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import gammaln

from ._validation import as_float_array, check_lr, check_positive_int
from .bounds import BOUND_RTOL, Bound

__all__ = [
    "CoveredCondition",
    "GeneralizationBound",
    "LocalSmoothness",
    "Scattering",
    "UnionSample",
    "UnionSeminorm",
    "WorstCaseInputs",
    "covered_condition",
    "covering_radius",
    "first_layer_shift",
    "generalization_bound",
    "local_smoothness",
    "nearest_distances",
    "proposition3_bound",
    "required_parameter_radius",
    "robustness_bound",
    "sample_union_of_balls",
    "scattering",
    "shifted_model",
    "stability_factor",
    "theorem3_bound",
    "theorem4_bound",
    "theorem5_bound",
    "uncovered_fraction",
    "union_seminorm",
    "worst_case_inputs",
]

#: Rows of a distance block computed at once (memory ~ rows * m * 8 bytes per block).
_DISTANCE_BLOCK_ENTRIES = 4_000_000


# ----------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------
def _points(x, name: str) -> np.ndarray:
    """Points as a finite float64 ``(n, d)`` array (images are flattened)."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    arr = as_float_array(arr, name)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (n, features...), got {arr.shape}")
    if arr.shape[0] < 1 or math.prod(arr.shape[1:]) < 1:
        raise ValueError(f"{name} must hold at least one point, got shape {arr.shape}")
    return arr.reshape(arr.shape[0], -1)


def _flat_vector(x, name: str) -> np.ndarray:
    """One point (any shape, numpy or torch) as a flat float64 vector."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    return as_float_array(arr, name).reshape(-1)


def _positive(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (np.isfinite(value) and ok):
        want = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {want}, got {value}")
    return value


def _fraction(value, name: str) -> float:
    value = _positive(value, name, allow_zero=True)
    if value > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


# ----------------------------------------------------------------------------------------
# data geometry: Definitions 2-4
# ----------------------------------------------------------------------------------------
def nearest_distances(reference, queries=None) -> np.ndarray:
    r"""Euclidean distance from each query to its nearest reference point.

    :math:`\min_i\|q - x_i\|_2` for every query :math:`q`. With ``queries=None`` the
    queries are the reference points themselves and each point's own zero distance is
    left out (leave-one-out nearest-neighbour distances). Distances are computed exactly
    (``scipy.spatial.distance.cdist`` on differences, not the expanded
    :math:`\|q\|^2 + \|x\|^2 - 2q\cdot x`, which loses small distances to cancellation), in
    blocks of queries.

    Parameters
    ----------
    reference : array_like, shape (n, ...)
        The points :math:`x_i` (flattened).
    queries : array_like, shape (m, ...), optional
        Query points with the same number of features.

    Returns
    -------
    numpy.ndarray, shape (m,)
    """
    ref = _points(reference, "reference")
    leave_one_out = queries is None
    if leave_one_out:
        if ref.shape[0] < 2:
            raise ValueError("reference needs at least two points for leave-one-out distances")
        qry = ref
    else:
        qry = _points(queries, "queries")
        if qry.shape[1] != ref.shape[1]:
            raise ValueError(
                f"queries must have {ref.shape[1]} features like reference, got {qry.shape[1]}"
            )
    rows = max(1, _DISTANCE_BLOCK_ENTRIES // ref.shape[0])
    out = np.empty(qry.shape[0])
    for start in range(0, qry.shape[0], rows):
        block = cdist(qry[start : start + rows], ref)
        if leave_one_out:
            idx = np.arange(start, start + block.shape[0])
            block[idx - start, idx] = np.inf
        out[start : start + block.shape[0]] = block.min(axis=1)
    return out


def uncovered_fraction(train, queries, delta: float) -> float:
    r"""Empirical probability that a query is farther than ``delta`` from every training point.

    Estimates the left side of Ma & Ying's Definition 2,
    :math:`\mathbb P_{x\sim\mu}(\min_i\|x - x_i\|_2 > \delta)`, with the queries as a sample
    of :math:`\mu`: the training set :math:`(\delta, \varepsilon)`-covers :math:`\mu` when
    this is below :math:`\varepsilon` (:cite:p:`ma2021linear`).
    """
    delta = _positive(delta, "delta", allow_zero=True)
    return float(np.mean(nearest_distances(train, queries) > delta))


def _radius_from_distances(distances: np.ndarray, epsilon: float) -> float:
    """Smallest delta with mean(distances > delta) < epsilon."""
    m = distances.shape[0]
    # at most j = ceil(eps m) - 1 distances may exceed delta; floating eps*m is rounded
    # first so that eps = j/m exactly gives j - 1
    allowed = math.ceil(round(epsilon * m, 9)) - 1
    if allowed < 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    allowed = min(allowed, m - 1)
    return float(np.sort(distances)[m - 1 - allowed])


def covering_radius(train, queries, epsilon: float) -> float:
    r"""Smallest :math:`\delta` at which the training set :math:`(\delta,\varepsilon)`-covers.

    The smallest :math:`\delta` with
    ``uncovered_fraction(train, queries, delta) < epsilon`` (Def. 2 of
    :cite:p:`ma2021linear`, strict inequality): an order statistic of the nearest-neighbour
    distances of the queries.

    Parameters
    ----------
    train, queries : array_like
        Training points and a sample of the distribution.
    epsilon : float
        In ``(0, 1]``.
    """
    epsilon = _fraction(epsilon, "epsilon")
    if epsilon == 0:
        raise ValueError("epsilon must be > 0: P(distance > delta) < 0 is impossible")
    return _radius_from_distances(nearest_distances(train, queries), epsilon)


@dataclass(frozen=True)
class CoveredCondition:
    r"""Monte Carlo estimate of Ma & Ying's covered condition (Def. 4).

    Attributes
    ----------
    n, delta, epsilon2 : int, float, float
        The training-set size and the constants of Def. 4.
    distances : numpy.ndarray, shape (n_draws, n_queries)
        Nearest-training-point distances of the held-out queries, one row per draw.
    uncovered : numpy.ndarray, shape (n_draws,)
        Fraction of queries farther than ``delta`` (left side of (10)) per draw.
    scattering_upper : numpy.ndarray, shape (n_draws,)
        Upper bound on the :math:`(\delta, K)`-scattering constant of each drawn training
        set (see :func:`scattering`).
    """

    n: int
    delta: float
    epsilon2: float
    distances: np.ndarray
    uncovered: np.ndarray
    scattering_upper: np.ndarray

    @property
    def epsilon1(self) -> float:
        r"""Fraction of draws whose training set fails (10): estimates :math:`\varepsilon_1`."""
        return float(np.mean(self.uncovered >= self.epsilon2))

    def radius(self, epsilon2: float) -> np.ndarray:
        """Per draw, the covering radius at level ``epsilon2`` (see :func:`covering_radius`)."""
        eps = _fraction(epsilon2, "epsilon2")
        return np.array([_radius_from_distances(row, eps) for row in self.distances])


def covered_condition(
    pool,
    n: int,
    delta: float,
    epsilon2: float,
    n_draws: int = 20,
    n_queries: int | None = None,
    seed: int = 0,
) -> CoveredCondition:
    r"""Estimate Ma & Ying's covered condition (Def. 4) by resampling a finite data set.

    The pool stands in for :math:`\mu`. Each draw splits a random permutation of the pool
    into ``n`` training points and ``n_queries`` held-out queries (default: all the rest),
    and records the queries' distances to the nearest training point. The condition
    holds with :math:`\varepsilon_1` the fraction of draws for which more than a fraction
    ``epsilon2`` of the queries is uncovered (:attr:`CoveredCondition.epsilon1`). The
    scattering bound of each drawn set is recorded as well (the
    :math:`(n, \delta, \varepsilon_1, K)`-scattered condition).
    Sampling without replacement from a finite pool is close to i.i.d. sampling from
    :math:`\mu` only while ``n`` is a small part of the pool.

    Parameters
    ----------
    pool : array_like, shape (N, ...)
        Samples of the distribution.
    n : int
        Training-set size, ``1 <= n < N``.
    delta, epsilon2 : float
        Radius and tolerated uncovered mass.
    n_draws : int
        Number of random training sets.
    n_queries : int, optional
        Held-out queries per draw (at most ``N - n``).
    seed : int
        Seed of the permutations.
    """
    data = _points(pool, "pool")
    total = data.shape[0]
    n = check_positive_int(n, "n")
    if n >= total:
        raise ValueError(f"n must be smaller than the pool size {total}, got {n}")
    delta = _positive(delta, "delta")
    epsilon2 = _fraction(epsilon2, "epsilon2")
    n_draws = check_positive_int(n_draws, "n_draws")
    n_queries = total - n if n_queries is None else check_positive_int(n_queries, "n_queries")
    if n_queries > total - n:
        raise ValueError(f"n_queries must be at most N - n = {total - n}, got {n_queries}")
    seed = check_positive_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    dist, upper = [], []
    for _ in range(n_draws):
        perm = rng.permutation(total)
        train = data[perm[:n]]
        dist.append(nearest_distances(train, data[perm[n : n + n_queries]]))
        upper.append(_scattering_upper(train, delta))
    dist_arr = np.array(dist)
    return CoveredCondition(
        n=n,
        delta=delta,
        epsilon2=epsilon2,
        distances=dist_arr,
        uncovered=np.mean(dist_arr > delta, axis=1),
        scattering_upper=np.array(upper),
    )


def _neighbour_counts(points: np.ndarray, radius: float) -> np.ndarray:
    """For each point, how many points (itself included) lie within ``radius``."""
    rows = max(1, _DISTANCE_BLOCK_ENTRIES // points.shape[0])
    counts = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], rows):
        counts[start : start + rows] = np.sum(
            cdist(points[start : start + rows], points) <= radius, axis=1
        )
    return counts


def _scattering_upper(points: np.ndarray, delta: float) -> int:
    return int(_neighbour_counts(points, 2.0 * delta).max())


def _log_ball_volume(dim: int, radius: float) -> float:
    """log of the Lebesgue volume of a ball of ``radius`` in ``R^dim``."""
    return 0.5 * dim * math.log(math.pi) - float(gammaln(0.5 * dim + 1)) + dim * math.log(radius)


@dataclass(frozen=True)
class UnionSample:
    r"""Points drawn from the union :math:`\mathcal X_\delta = \bigcup_i B(x_i, \delta)`.

    ``points`` are drawn from the equal-weight mixture of the balls, whose density on
    :math:`\mathcal X_\delta` is :math:`\kappa(x)/(nV_B)`; the weights
    :math:`1/\kappa(x)` turn averages into averages under the uniform law on
    :math:`\mathcal X_\delta`: :math:`\mathbb E_U g = \sum_s g(x_s)/\kappa_s \big/
    \sum_s 1/\kappa_s`.

    Attributes
    ----------
    points : numpy.ndarray, shape (N, p)
    ball : numpy.ndarray, shape (N,)
        Index of the ball each point was drawn in.
    kappa : numpy.ndarray, shape (N,)
        :math:`\kappa(x) = \#\{i : \|x - x_i\|_2 \le \delta\}` (Def. 3), always ``>= 1``.
    log_ball_volume : float
        :math:`\log V_B`, the log-volume of one ball.
    n_balls : int
    """

    points: np.ndarray
    ball: np.ndarray
    kappa: np.ndarray
    log_ball_volume: float
    n_balls: int

    @property
    def weights(self) -> np.ndarray:
        """Self-normalised importance weights of the uniform law on the union (sum 1)."""
        w = 1.0 / self.kappa
        return w / w.sum()

    @property
    def mean_kappa(self) -> float:
        r"""Average of :math:`\kappa` over the union, :math:`\frac1{V}\int\kappa = nV_B/V`.

        Under the mixture :math:`\mathbb E[1/\kappa] = V/(nV_B)`, so the estimate is
        ``1 / mean(1/kappa)``. This is the integral scattering constant of Remark 2.
        """
        return float(1.0 / np.mean(1.0 / self.kappa))

    @property
    def log_volume(self) -> float:
        r""":math:`\log V_{\mathcal X_\delta} = \log n + \log V_B - \log\bar\kappa` (estimate)."""
        return math.log(self.n_balls) + self.log_ball_volume - math.log(self.mean_kappa)

    def uniform_mean(self, values) -> tuple[float, float]:
        """Uniform-law mean of ``values`` (one per point) and its standard error.

        The self-normalised ratio estimator; its standard error by the delta method,
        :math:`\\sqrt{\\sum_s w_s^2 (g_s - \\hat g)^2}` with the normalised weights.
        """
        g = as_float_array(values, "values", ndim=1)
        if g.shape[0] != self.points.shape[0]:
            raise ValueError(f"values must have one entry per point ({self.points.shape[0]})")
        w = self.weights
        mean = float(np.sum(w * g))
        stderr = float(np.sqrt(np.sum(w**2 * (g - mean) ** 2)))
        return mean, stderr


def sample_union_of_balls(centres, delta: float, n_samples: int, seed: int = 0) -> UnionSample:
    r"""Draw points of :math:`\mathcal X_\delta = \bigcup_i B(x_i,\delta)` with overlap counts.

    Each point picks a ball uniformly at random and a uniform point in it (Gaussian
    direction, radius :math:`\delta U^{1/p}`). Its count :math:`\kappa` is one (its own
    ball, counted without recomputing a distance that rounding could put just above
    :math:`\delta`) plus the other centres within :math:`\delta`. See :class:`UnionSample`
    for the reweighting to the uniform law (Ma & Ying's Theorem 4 integrates over
    :math:`\mathcal X_\delta` with Lebesgue measure).
    """
    c = _points(centres, "centres")
    delta = _positive(delta, "delta")
    n_samples = check_positive_int(n_samples, "n_samples")
    seed = check_positive_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    n, p = c.shape
    ball = rng.integers(0, n, size=n_samples)
    direction = rng.standard_normal((n_samples, p))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = delta * rng.random(n_samples) ** (1.0 / p)
    pts = c[ball] + radius[:, None] * direction
    rows = max(1, _DISTANCE_BLOCK_ENTRIES // n)
    kappa = np.empty(n_samples, dtype=np.int64)
    for start in range(0, n_samples, rows):
        block = cdist(pts[start : start + rows], c) <= delta
        own = ball[start : start + rows]
        block[np.arange(block.shape[0]), own] = False
        kappa[start : start + rows] = 1 + block.sum(axis=1)
    return UnionSample(
        points=pts,
        ball=ball,
        kappa=kappa.astype(np.float64),
        log_ball_volume=_log_ball_volume(p, delta),
        n_balls=n,
    )


@dataclass(frozen=True)
class Scattering:
    r"""Bounds on the scattering constant :math:`K = \sup_x\kappa(x)` of Def. 3.

    Attributes
    ----------
    delta : float
    lower : int
        Largest :math:`\kappa` seen at the data points and at the sampled points of the
        union: a lower bound on :math:`K`.
    upper : int
        :math:`\max_i\#\{j : \|x_i - x_j\| \le 2\delta\}`: an upper bound on :math:`K` (a
        point in :math:`m` balls is within :math:`\delta` of :math:`m` centres, which are then
        all within :math:`2\delta` of any one of them).
    mean_kappa : float
        Integral constant :math:`\frac1{V}\int_{\mathcal X_\delta}\kappa` of Remark 2
        (Monte Carlo).
    log_volume : float
        Estimate of :math:`\log V_{\mathcal X_\delta}`.
    """

    delta: float
    lower: int
    upper: int
    mean_kappa: float
    log_volume: float


def scattering(points, delta: float, n_samples: int = 2000, seed: int = 0) -> Scattering:
    r"""Estimate how often the balls :math:`B(x_i, \delta)` overlap (Ma & Ying Def. 3, Remark 2).

    The set is :math:`(\delta, K)`-scattered when :math:`\kappa(x) = \sum_i
    \mathbf 1_{B(x_i,\delta)}(x) \le K` everywhere (:cite:p:`ma2021linear`). The supremum is
    bracketed (``lower`` from evaluations, ``upper`` from the :math:`2\delta`-neighbour
    counts); the average over the union, which Remark 2 allows instead, and the union's
    log-volume come from :func:`sample_union_of_balls` with ``n_samples`` points.
    """
    pts = _points(points, "points")
    delta = _positive(delta, "delta")
    sample = sample_union_of_balls(pts, delta, n_samples, seed)
    lower = max(int(_neighbour_counts(pts, delta).max()), int(sample.kappa.max()))
    return Scattering(
        delta=delta,
        lower=lower,
        upper=_scattering_upper(pts, delta),
        mean_kappa=sample.mean_kappa,
        log_volume=sample.log_volume,
    )


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
        _positive(delta, "delta", allow_zero=True)
        * _positive(first_layer_norm, "first_layer_norm", allow_zero=True)
        / _positive(min_input_norm, "min_input_norm")
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
    (``FirstLayerGradients.g_x`` of :mod:`companion.jacobians`). ``w1t_norm`` must be an
    upper bound on the induced norm :math:`\|W_1^\top\|_{2k}`.
    """
    seminorm = _positive(seminorm, "seminorm", allow_zero=True)
    scale = _positive(w1t_norm, "w1t_norm", allow_zero=True) / _positive(
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
        :math:`C` of Def. 1 (e.g. :attr:`LocalSmoothness.constant`).
    w1t_norm : float
        Upper bound on :math:`\|W_1^\top\|_{2k}`.
    centre_norm, centre_gradient_norm : float
        :math:`\|x_*\|_{2k}` and :math:`\|\nabla_Wf(x_*, W^*)\|_{2k}`.
    """
    lhs = as_float_array(input_gradient_norms, "input_gradient_norms")
    rhs = _input_gradient_rhs(
        _positive(constant, "constant", allow_zero=True),
        _positive(w1t_norm, "w1t_norm", allow_zero=True),
        _positive(centre_norm, "centre_norm"),
        _positive(centre_gradient_norm, "centre_gradient_norm", allow_zero=True),
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
    :math:`\|\nabla_xf\|_{2k}^{2k}` over :math:`\mathcal X_\delta` (:func:`union_seminorm`),
    the right side loses its volume. The proof only needs :math:`nV_B \le KV_{\mathcal X_\delta}`,
    so the integral constant of Remark 2 (:attr:`Scattering.mean_kappa`) is a valid
    ``scattering_constant``.
    """
    lhs = _positive(normalized_seminorm, "normalized_seminorm", allow_zero=True)
    k = check_positive_int(k, "k")
    kk = _positive(scattering_constant, "scattering_constant")
    rhs = (
        kk ** (1.0 / (2 * k))
        * 2.0
        * _input_gradient_rhs(
            _positive(constant, "constant", allow_zero=True),
            _positive(w1t_norm, "w1t_norm", allow_zero=True),
            _positive(min_input_norm, "min_input_norm"),
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
    lhs = _positive(max_input_gradient, "max_input_gradient", allow_zero=True)
    k = check_positive_int(k, "k")
    rhs = _input_gradient_rhs(
        _positive(constant, "constant", allow_zero=True),
        _positive(w1t_norm, "w1t_norm", allow_zero=True),
        _positive(min_input_norm, "min_input_norm"),
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
    lhs = _positive(test_error, "test_error", allow_zero=True)
    g = _positive(gradient_bound, "gradient_bound", allow_zero=True)
    delta = _positive(delta, "delta", allow_zero=True)
    eps = _fraction(epsilon2, "epsilon2")
    m1 = _positive(bound_f, "bound_f", allow_zero=True)
    m2 = _positive(lipschitz_target, "lipschitz_target", allow_zero=True)
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
    g = _positive(gradient_bound, "gradient_bound", allow_zero=True)
    delta = _positive(delta, "delta", allow_zero=True)
    rhs = _dimension_factor(input_dim, k, sharp_dimension_factor) * g * delta
    return Bound(lhs=lhs, rhs=float(rhs), description=f"MY Thm 7 (27), k={k}")


# ----------------------------------------------------------------------------------------
# measurements on a torch model (torch imported lazily)
# ----------------------------------------------------------------------------------------
class _FlatModel:
    """``f(theta, x) -> (K,)`` on the flat parameter vector of a model (float64)."""

    def __init__(self, model, X):
        import torch

        from .jacobians import _Functional

        self.fn = _Functional(model, X)
        self.shapes = [self.fn.params[name].shape for name in self.fn.names]
        self.theta = torch.cat([self.fn.params[name].reshape(-1) for name in self.fn.names])

    def __call__(self, theta, x):
        params, start = {}, 0
        for name, shape, size in zip(self.fn.names, self.shapes, self.fn.sizes, strict=True):
            params[name] = theta[start : start + size].reshape(shape)
            start += size
        return self.fn(params, x)


def _step_lengths(radius: float, steps: int) -> np.ndarray:
    """Ascent step lengths from ``radius / 2`` down to ``1e-3 * radius`` (geometric).

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
        Maps ``(n, ...)`` to ``(n, K)``; used in float64.
    X : array_like or torch.Tensor
        Inputs ``(n, ...)``.
    radius : float
        :math:`\delta > 0`.
    k : int
        Moment order.
    n_samples : int
        Random points of the ball (``>= 0``).
    ascent_steps : int
        Steps of projected gradient ascent per input (``>= 0``).
    seed : int
        Seed of the random points.
    """
    import torch
    from torch.func import grad, jacrev, vmap

    radius = _positive(radius, "radius")
    k = check_positive_int(k, "k")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=0)
    ascent_steps = check_positive_int(ascent_steps, "ascent_steps", minimum=0)
    seed = check_positive_int(seed, "seed", minimum=0)
    flat = _FlatModel(model, X)
    x_all, theta0 = flat.fn.X, flat.theta
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
        u = torch.randn(w, generator=gen, dtype=torch.float64)
        r = radius * float(torch.rand(1, generator=gen, dtype=torch.float64)) ** (1.0 / w)
        theta = theta0 + r * u / torch.linalg.vector_norm(u)
        values = norms_at(theta, x_all)
        better = values > best
        best = torch.where(better, values, best)
        best_theta[better] = theta
    if ascent_steps:
        ascend = vmap(grad(norm_power), in_dims=(0, 0))
        per_sample = vmap(norm_power, in_dims=(0, 0))
        theta = best_theta.clone()
        for step in _step_lengths(radius, ascent_steps):
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
        base_norms=(base ** (1.0 / p)).numpy(),
        max_norms=(best ** (1.0 / p)).numpy(),
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
    """
    import torch
    from torch.func import grad, jacrev, vmap

    if objective not in _OBJECTIVES:
        raise ValueError(f"objective must be one of {_OBJECTIVES}, got {objective!r}")
    radius = _positive(radius, "radius")
    k = check_positive_int(k, "k")
    steps = check_positive_int(steps, "steps", minimum=0)
    restarts = check_positive_int(restarts, "restarts", minimum=0)
    seed = check_positive_int(seed, "seed", minimum=0)
    flat = _FlatModel(model, centres)
    theta, c = flat.theta, flat.fn.X
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

    def pgd(x, best_x, best_v):
        for step in _step_lengths(radius, steps):
            g = ascend(x, f_centre).reshape(flat_shape)
            g = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-300)
            x = project(x + step * g.reshape(c.shape))
            v = evaluate(x, f_centre)
            better = v > best_v
            best_v = torch.where(better, v, best_v)
            best_x[better] = x[better]
        return best_x, best_v

    centre_power = evaluate(c, f_centre)
    best_x, best_v = c.clone(), centre_power.clone()
    if objective == "output_change":
        jac = vmap(jacrev(f))(c).reshape(n, -1, math.prod(c.shape[1:]))
        v_top = torch.linalg.svd(jac, full_matrices=False).Vh[:, 0, :].reshape(c.shape)
        for sign in (1.0, -1.0):
            x = c + sign * radius * v_top
            v = evaluate(x, f_centre)
            better = v > best_v
            best_v = torch.where(better, v, best_v)
            best_x[better] = x[better]
        best_x, best_v = pgd(best_x.clone(), best_x, best_v)
    else:
        best_x, best_v = pgd(c.clone(), best_x, best_v)
    if starts is not None:
        x = torch.as_tensor(_points(starts, "starts"), dtype=c.dtype)
        if x.shape != (n, math.prod(c.shape[1:])):
            raise ValueError(
                f"starts must hold one point per centre, shape {tuple(c.shape)}, got "
                f"{tuple(np.shape(starts))}"
            )
        x = project(x.reshape(c.shape))
        v = evaluate(x, f_centre)
        better = v > best_v
        best_v = torch.where(better, v, best_v)
        best_x[better] = x[better]
        best_x, best_v = pgd(x, best_x, best_v)
    gen = torch.Generator().manual_seed(seed)
    dim = math.prod(c.shape[1:])
    for _ in range(restarts):
        u = torch.randn(n, dim, generator=gen, dtype=torch.float64)
        r = radius * torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1.0 / dim)
        x = c + (r * u / torch.linalg.vector_norm(u, dim=1, keepdim=True)).reshape(c.shape)
        v = evaluate(x, f_centre)
        better = v > best_v
        best_v = torch.where(better, v, best_v)
        best_x[better] = x[better]
        best_x, best_v = pgd(x, best_x, best_v)
    return WorstCaseInputs(
        objective=objective,
        radius=radius,
        points=best_x.reshape(flat_shape).numpy(),
        values=to_value(best_v).numpy(),
        centre_values=to_value(centre_power).numpy(),
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
    model, centres, delta: float, k: int = 1, n_samples: int = 2000, seed: int = 0
) -> UnionSeminorm:
    r"""Sobolev seminorm :math:`|f|_{1,2k,\mathcal X_\delta}` of a model, by Monte Carlo.

    :math:`|f|_{1,2k,\Omega}^{2k} = \int_\Omega\|\nabla_xf\|_{2k}^{2k}\,dx` (Ma & Ying §2 with
    :math:`q = 1`, :math:`p = 2k`: the sum over first-order multi-indices is the :math:`2k`-th
    power of the :math:`2k`-norm of the gradient), :math:`\Omega = \mathcal X_\delta =
    \bigcup_iB(x_i,\delta)`. Points come from :func:`sample_union_of_balls`; the input
    gradients from :func:`companion.jacobians.input_gradients`.
    """
    from .jacobians import input_gradients

    k = check_positive_int(k, "k")
    c = _points(centres, "centres")
    sample = sample_union_of_balls(c, delta, n_samples, seed)
    shape = tuple(centres.shape[1:]) if hasattr(centres, "shape") else (c.shape[1],)
    pts = sample.points.reshape(-1, *shape)
    grads = input_gradients(model, pts).reshape(sample.points.shape[0], -1)
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


def shifted_model(model, x, x_star):
    r"""A copy of ``model`` whose first layer :math:`W_1` is moved by :func:`first_layer_shift`.

    The copy evaluated at ``x_star`` equals ``model`` at ``x``:
    :math:`\tilde f((W_1+\Delta W_1)x_*, W_2) = \tilde f(W_1x, W_2)` — the multiplicative
    structure behind Prop. 3 of :cite:p:`ma2021linear`. Only for an ``nn.Linear`` first layer
    (a shifted convolution is no longer a convolution).
    """
    import copy

    import torch

    from .models import as_float64, first_layer

    layer = first_layer(model)
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(
            "shifted_model needs an nn.Linear first layer: the shift W1 (x - x*) x*^T / |x*|^2 "
            f"is a dense matrix, got {type(layer).__name__}"
        )
    out = copy.deepcopy(as_float64(model))
    weight = first_layer(out).weight
    shift = first_layer_shift(
        weight.detach().numpy(), _flat_vector(x, "x"), _flat_vector(x_star, "x_star")
    )
    with torch.no_grad():
        weight.add_(torch.as_tensor(shift, dtype=weight.dtype))
    return out
