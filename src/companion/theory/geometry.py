r"""Geometry of the training data: Ma & Ying's Definitions 2-4.

The bounds of :cite:p:`ma2021linear` §4-§5 move from the training points to their
neighbourhood :math:`\mathcal X_\delta = \bigcup_i B(x_i, \delta)`. This module measures that
geometry: :func:`nearest_distances`, :func:`uncovered_fraction`, :func:`covering_radius`,
:func:`covered_condition`, :func:`scattering` and :func:`sample_union_of_balls` (uniform
points of :math:`\mathcal X_\delta`). Plain numpy/scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import gammaln

from ..validation import (
    as_float_array,
    as_points,
    check_fraction,
    check_positive,
    check_positive_int,
)

__all__ = [
    "CoveredCondition",
    "Scattering",
    "UnionSample",
    "covered_condition",
    "covering_radius",
    "nearest_distances",
    "sample_union_of_balls",
    "scattering",
    "uncovered_fraction",
]

#: Rows of a distance block computed at once (memory ~ rows * m * 8 bytes per block).
_DISTANCE_BLOCK_ENTRIES = 4_000_000


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
    ref = as_points(reference, "reference")
    leave_one_out = queries is None
    if leave_one_out:
        if ref.shape[0] < 2:
            raise ValueError("reference needs at least two points for leave-one-out distances")
        qry = ref
    else:
        qry = as_points(queries, "queries")
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
    delta = check_positive(delta, "delta", allow_zero=True)
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
    epsilon = check_fraction(epsilon, "epsilon")
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
        eps = check_fraction(epsilon2, "epsilon2")
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
    data = as_points(pool, "pool")
    total = data.shape[0]
    n = check_positive_int(n, "n")
    if n >= total:
        raise ValueError(f"n must be smaller than the pool size {total}, got {n}")
    delta = check_positive(delta, "delta")
    epsilon2 = check_fraction(epsilon2, "epsilon2")
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
    c = as_points(centres, "centres")
    delta = check_positive(delta, "delta")
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
    pts = as_points(points, "points")
    delta = check_positive(delta, "delta")
    sample = sample_union_of_balls(pts, delta, n_samples, seed)
    lower = max(int(_neighbour_counts(pts, delta).max()), int(sample.kappa.max()))
    return Scattering(
        delta=delta,
        lower=lower,
        upper=_scattering_upper(pts, delta),
        mean_kappa=sample.mean_kappa,
        log_volume=sample.log_volume,
    )

