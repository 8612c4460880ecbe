r"""Random instances for the book's chapters: per-sample Hessians, gradients, operators.

Every generator takes a seeded :class:`numpy.random.Generator` (or an integer seed, from
which one is made) as its first argument and draws from it in a fixed order, so that a
chapter passing the same generator gets the same numbers every time. A generator passed
in is advanced in place, exactly as if the chapter had drawn the numbers itself.

The instances are the ones the chapters of Part II use:

* :func:`rank_one_instance`, :func:`rank_one_hessians`: per-sample Hessians
  :math:`H_i = a_ia_i^\top` of a scalar-output model at an interpolating minimum, with
  log-normally spread gradient norms (chapters 4 to 7);
* :func:`exponential_rank_one_instance`: the same with exponentially distributed gradient
  norms (chapter 9);
* :func:`adaptive_sgd_samples`: the non-symmetric step matrices :math:`A_\xi = P_\xi\hat H_\xi`
  of SGD with random diagonal preconditioners, one per batch (chapter 4);
* :func:`kronecker_system`: a symmetric Kronecker system :math:`\sum_k A_k\otimes A_k` with
  indefinite symmetric :math:`A_k` (chapter 7);
* :func:`dominant_direction_hessians`, :func:`incoherent_hessians`: the two families on which
  the necessary conditions (15) and (16) of Mulayoff and Michaeli are tight (chapter 7);
* :func:`regular_minimum_instance`: noisy least squares with a rank-deficient Hessian and
  per-sample pulls along its null space, a regular minimum that does not interpolate
  (chapter 8).

Not part of the public API of ``companion``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ..stability.sampling import enumerate_batches
from ..validation import check_batch_size, check_positive, check_positive_int

__all__ = [
    "KroneckerSystem",
    "RankOneInstance",
    "RegularMinimum",
    "adaptive_sgd_samples",
    "dominant_direction_hessians",
    "exponential_rank_one_instance",
    "incoherent_hessians",
    "kronecker_system",
    "rank_one_hessians",
    "rank_one_instance",
    "regular_minimum_instance",
]


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """A :class:`numpy.random.Generator` from ``rng``: a generator (returned as is) or a seed.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        A generator, used and advanced in place, or a non-negative integer seed for
        :func:`numpy.random.default_rng`.

    Raises
    ------
    TypeError
        If ``rng`` is neither a generator nor an integer (``bool`` is refused).
    ValueError
        If ``rng`` is a negative integer.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral):
        raise TypeError(
            f"rng must be a numpy.random.Generator or an integer seed, got {type(rng).__name__}"
        )
    if int(rng) < 0:
        raise ValueError(f"rng must be a non-negative integer seed, got {int(rng)}")
    return np.random.default_rng(int(rng))


class RankOneInstance(NamedTuple):
    """Per-sample gradients and the rank-one per-sample Hessians they define.

    Attributes
    ----------
    gradients : numpy.ndarray
        ``(n, d)``: the per-sample output gradients :math:`a_i`.
    hessians : numpy.ndarray
        ``(n, d, d)``: :math:`H_i = a_ia_i^\\top`, symmetric PSD of rank (at most) one.
    """

    gradients: np.ndarray
    hessians: np.ndarray


def _outer_products(gradients: np.ndarray) -> np.ndarray:
    return np.einsum("ni,nj->nij", gradients, gradients)


def rank_one_instance(
    rng: np.random.Generator | int, n: int, d: int, spread: float = 0.5
) -> RankOneInstance:
    r"""Rank-one per-sample Hessians of a scalar-output model at an interpolating minimum.

    At an interpolating minimum of the square loss the Hessian of the ``i``-th loss is the
    Gauss–Newton matrix :math:`H_i = a_ia_i^\top`, :math:`a_i = \nabla_\theta f(x_i,
    \theta^*)`. The gradients are drawn as :math:`a_i = e^{\sigma g_i} z_i` with
    :math:`z_i \sim N(0, I_d)` and :math:`g_i \sim N(0, 1)` independent, so that the norms
    of the :math:`a_i` vary log-normally with spread :math:`\sigma` and samples differ in
    curvature, as real per-sample gradients do.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of randomness (advanced in place) or a seed. Draws, in this order, the
        ``(n, d)`` directions ``z`` and the ``(n, 1)`` log-scales ``g``.
    n : int
        Number of samples, ``>= 1``.
    d : int
        Number of parameters, ``>= 1``.
    spread : float
        :math:`\sigma \ge 0`, the standard deviation of :math:`\log\|a_i\|` around that of a
        Gaussian vector; ``0`` gives i.i.d. Gaussian gradients.

    Returns
    -------
    RankOneInstance
        ``(gradients, hessians)`` of shapes ``(n, d)`` and ``(n, d, d)``.

    Raises
    ------
    TypeError
        If ``rng`` is not a generator or seed, ``n`` or ``d`` not integers, or ``spread``
        not a real number.
    ValueError
        If ``n`` or ``d`` is below 1, or ``spread`` negative or not finite.

    See Also
    --------
    rank_one_hessians : the Hessians alone.
    exponential_rank_one_instance : exponentially distributed gradient norms.
    """
    rng = as_generator(rng)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    spread = check_positive(spread, "spread", allow_zero=True)
    grads = rng.standard_normal((n, d)) * np.exp(spread * rng.standard_normal((n, 1)))
    return RankOneInstance(grads, _outer_products(grads))


def rank_one_hessians(
    rng: np.random.Generator | int, n: int, d: int, spread: float = 0.5
) -> np.ndarray:
    r"""The per-sample Hessians :math:`a_ia_i^\top` of :func:`rank_one_instance`, ``(n, d, d)``.

    Draws exactly what :func:`rank_one_instance` draws (with the same arguments) and returns
    its ``hessians``; see there for the parameters and the errors raised.
    """
    return rank_one_instance(rng, n, d, spread).hessians


def exponential_rank_one_instance(
    rng: np.random.Generator | int, n: int, d: int
) -> RankOneInstance:
    r"""Rank-one per-sample Hessians with exponentially distributed gradient scales.

    The gradients are :math:`a_i = c_i z_i` with :math:`z_i \sim N(0, I_d)` and
    :math:`c_i \sim \mathrm{Exp}(1)` independent: some samples are nearly flat, a few are
    much sharper than the rest. :math:`H_i = a_ia_i^\top`.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of randomness (advanced in place) or a seed. Draws, in this order, the
        ``(n, d)`` directions ``z`` and the ``(n, 1)`` scales ``c``.
    n : int
        Number of samples, ``>= 1``.
    d : int
        Number of parameters, ``>= 1``.

    Returns
    -------
    RankOneInstance
        ``(gradients, hessians)`` of shapes ``(n, d)`` and ``(n, d, d)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`rank_one_instance`.
    """
    rng = as_generator(rng)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    grads = rng.standard_normal((n, d)) * rng.exponential(1.0, (n, 1))
    return RankOneInstance(grads, _outer_products(grads))


def adaptive_sgd_samples(
    rng: np.random.Generator | int, n: int, d: int, batch_size: int
) -> np.ndarray:
    r"""Step matrices :math:`A_\xi = P_\xi\hat H_\xi` of SGD with random diagonal preconditioners.

    Draws per-sample Hessians with :func:`rank_one_hessians` (spread 0.5), enumerates every
    batch of size ``batch_size`` drawn without replacement (in the order of
    :func:`companion.stability.sampling.enumerate_batches`), and multiplies each batch-mean
    Hessian :math:`\hat H_\xi` on the left by its own diagonal preconditioner
    :math:`P_\xi = \mathrm{diag}(e^{0.5 g_\xi})`, :math:`g_\xi \sim N(0, I_d)`. The
    :math:`A_\xi` are not symmetric; a uniformly drawn :math:`\xi` gives the random linear
    map of adaptive SGD, :math:`x_{t+1} = (I - \eta A_\xi)x_t`, at an interpolating minimum.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of randomness (advanced in place) or a seed. Draws the Hessians first, then
        the ``(number of batches, d)`` log-preconditioners.
    n : int
        Number of samples, ``>= 1``.
    d : int
        Number of parameters, ``>= 1``.
    batch_size : int
        Batch size, in ``1..n``.

    Returns
    -------
    numpy.ndarray
        ``(m, d, d)`` with ``m`` the number of batches, :math:`\binom{n}{B}`.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n`` or ``d`` is below 1 or ``batch_size`` is not in ``1..n``.
    """
    rng = as_generator(rng)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    batch_size = check_batch_size(batch_size, n)
    hessians = rank_one_hessians(rng, n, d)
    batches = list(enumerate_batches(n, batch_size))
    precond = np.exp(0.5 * rng.standard_normal((len(batches), d)))
    return np.array(
        [p[:, None] * hessians[list(b)].mean(axis=0) for p, b in zip(precond, batches, strict=True)]
    )


class KroneckerSystem(NamedTuple):
    r"""A symmetric Kronecker system :math:`Q = \sum_k A_k\otimes A_k`.

    Attributes
    ----------
    matrices : numpy.ndarray
        ``(m, d, d)``: the symmetric (indefinite) :math:`A_k`.
    operator : numpy.ndarray
        ``(d**2, d**2)``: :math:`Q`, symmetric.
    """

    matrices: np.ndarray
    operator: np.ndarray


def kronecker_system(rng: np.random.Generator | int, d: int, m: int) -> KroneckerSystem:
    r"""A random symmetric Kronecker system :math:`\sum_{k=1}^m A_k\otimes A_k`.

    Each :math:`A_k = Z_k + Z_k^\top` with :math:`Z_k` a ``d x d`` standard Gaussian matrix:
    symmetric and, in general, indefinite (Theorem 6 of Mulayoff and Michaeli does not need
    PSD matrices).

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of randomness (advanced in place) or a seed; draws one ``(m, d, d)`` array.
    d : int
        Size of the :math:`A_k`, ``>= 1``.
    m : int
        Number of terms, ``>= 1``.

    Returns
    -------
    KroneckerSystem
        ``(matrices, operator)`` of shapes ``(m, d, d)`` and ``(d**2, d**2)``.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``d`` or ``m`` is below 1.
    """
    rng = as_generator(rng)
    d = check_positive_int(d, "d")
    m = check_positive_int(m, "m")
    mats = rng.standard_normal((m, d, d))
    mats = mats + mats.transpose(0, 2, 1)
    return KroneckerSystem(mats, sum(np.kron(a, a) for a in mats))


def dominant_direction_hessians(rng: np.random.Generator | int, n: int, d: int) -> np.ndarray:
    r"""Per-sample Hessians that curve most along one common direction.

    :math:`H_i = c_i^2\,vv^\top + G` with a uniformly random unit :math:`v`,
    :math:`c_i \sim \mathrm{Exp}(1)`, and a PSD :math:`G` with :math:`Gv = 0` shared by all
    samples, scaled so that :math:`\lambda_{\max}(G) = \frac12\,\overline{c^2}`, half the mean
    curvature along :math:`v`. The top eigenvector of :math:`H` is then :math:`v`, and the
    necessary condition (15) of Mulayoff and Michaeli is exact on these instances.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of randomness (advanced in place) or a seed. Draws, in this order, ``v``
        (``d``), the ``c_i`` (``n``) and a ``d x d`` Gaussian matrix for ``G``.
    n : int
        Number of samples, ``>= 1``.
    d : int
        Number of parameters, ``>= 2`` (``G`` lives on the complement of ``v``).

    Returns
    -------
    numpy.ndarray
        ``(n, d, d)``, symmetric PSD.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n`` is below 1 or ``d`` below 2.
    """
    rng = as_generator(rng)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d", minimum=2)
    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    c2 = rng.exponential(1.0, n) ** 2
    A = rng.standard_normal((d, d))
    P = np.eye(d) - np.outer(v, v)
    G = P @ (A @ A.T) @ P
    G *= 0.5 * c2.mean() / np.linalg.eigvalsh(G)[-1]  # shared curvature below that along v
    return c2[:, None, None] * np.outer(v, v) + G


def incoherent_hessians(rng: np.random.Generator | int, n: int, d: int) -> np.ndarray:
    r"""Per-sample Hessians with one spectrum in independent random bases.

    :math:`H_i = U_i\Lambda U_i^\top` with :math:`\Lambda = \mathrm{diag}(\lambda)`,
    :math:`\lambda_j \sim \mathrm{Exp}(1)` shared by all samples, and :math:`U_i` the
    orthogonal factor of the QR decomposition of a Gaussian matrix. The samples are
    *incoherent*: the necessary condition (16) of Mulayoff and Michaeli comes close on them.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of randomness (advanced in place) or a seed. Draws the spectrum (``d``), then
        the ``(n, d, d)`` Gaussian matrices.
    n : int
        Number of samples, ``>= 1``.
    d : int
        Number of parameters, ``>= 1``.

    Returns
    -------
    numpy.ndarray
        ``(n, d, d)``, symmetric PSD, every one with eigenvalues ``lambda``.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n`` or ``d`` is below 1.
    """
    rng = as_generator(rng)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    spectrum = rng.exponential(1.0, d)
    rotations = np.linalg.qr(rng.standard_normal((n, d, d)))[0]
    return np.einsum("nab,b,ncb->nac", rotations, spectrum, rotations)


class RegularMinimum(NamedTuple):
    r"""A regular, non-interpolating minimum of noisy least squares (see
    :func:`regular_minimum_instance`).

    Attributes
    ----------
    features : numpy.ndarray
        ``(n, d)``: the :math:`a_i`, spanning ``range_basis``.
    labels : numpy.ndarray
        ``(n,)``: the noisy targets :math:`y_i`.
    theta_star : numpy.ndarray
        ``(d,)``: the minimum-norm least-squares solution.
    residuals : numpy.ndarray
        ``(n,)``: :math:`r_i = a_i^\top\theta^* - y_i`, not zero.
    hessians : numpy.ndarray
        ``(n, d, d)``: :math:`H_i = a_ia_i^\top`.
    gradients : numpy.ndarray
        ``(n, d)``: :math:`g_i = r_ia_i + c_i` at :math:`\theta^*`; they average to zero.
    range_basis : numpy.ndarray
        ``(d, rank)``: orthonormal basis of :math:`\mathrm{range}(H)`.
    null_basis : numpy.ndarray
        ``(d, d - rank)``: orthonormal basis of its null space.
    """

    features: np.ndarray
    labels: np.ndarray
    theta_star: np.ndarray
    residuals: np.ndarray
    hessians: np.ndarray
    gradients: np.ndarray
    range_basis: np.ndarray
    null_basis: np.ndarray


def regular_minimum_instance(
    rng: np.random.Generator | int,
    n: int,
    d: int,
    rank: int,
    *,
    noise_std: float = 0.5,
    pull: float = 0.3,
) -> RegularMinimum:
    r"""Noisy least squares whose Hessian has rank ``rank``, plus pulls along its null space.

    The loss of sample ``i`` is :math:`\frac12(a_i^\top\theta - y_i)^2 + c_i^\top\theta`.
    The features :math:`a_i` are Gaussian in a random ``rank``-dimensional subspace of
    :math:`\R^d`, the labels :math:`y_i = a_i^\top\beta + \sigma\epsilon_i` have Gaussian
    noise, and :math:`\theta^*` is the least-squares solution, so the residuals
    :math:`r_i` do not vanish. The linear terms :math:`c_i` (scaled by ``pull``) lie in the
    null space of :math:`H` and sum to zero: they leave the training loss unchanged but make
    every per-sample gradient :math:`g_i = r_ia_i + c_i` pull along a flat direction. At
    :math:`\theta^*` the mean gradient is zero (to rounding) and :math:`H_i = a_ia_i^\top`.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of randomness (advanced in place) or a seed. Draws, in this order: a
        ``d x d`` Gaussian matrix (its QR factor is the basis), the ``(n, rank)`` feature
        coordinates, :math:`\beta` (``d``), the label noise (``n``) and the ``(n, d - rank)``
        pull coordinates.
    n : int
        Number of samples, ``>= 1``.
    d : int
        Number of parameters, ``>= 1``.
    rank : int
        Rank of :math:`H`, in ``1..d``.
    noise_std : float
        :math:`\sigma \ge 0`, the standard deviation of the label noise.
    pull : float
        Scale ``>= 0`` of the null-space terms :math:`c_i`.

    Returns
    -------
    RegularMinimum

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n`` or ``d`` is below 1, ``rank`` not in ``1..d``, or ``noise_std`` or
        ``pull`` negative or not finite.
    """
    rng = as_generator(rng)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    rank = check_positive_int(rank, "rank")
    if rank > d:
        raise ValueError(f"rank must be in 1..d = 1..{d}, got {rank}")
    noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
    pull = check_positive(pull, "pull", allow_zero=True)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    range_basis, null_basis = basis[:, :rank], basis[:, rank:]
    features = rng.standard_normal((n, rank)) @ range_basis.T
    labels = features @ rng.standard_normal(d) + noise_std * rng.standard_normal(n)
    theta_star = np.linalg.lstsq(features, labels, rcond=None)[0]
    residuals = features @ theta_star - labels
    pulls = rng.standard_normal((n, d - rank)) @ null_basis.T
    pulls -= pulls.mean(axis=0)
    hessians = _outer_products(features)
    gradients = residuals[:, None] * features + pull * pulls
    return RegularMinimum(
        features, labels, theta_star, residuals, hessians, gradients, range_basis, null_basis
    )
