"""Mini-batch sampling: the batch-noise factor ``p`` and exact batch enumeration."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from ..validation import check_batch_size, check_positive_int, check_replacement


def batch_noise_factor(n: int, batch_size: int, replacement: bool = False) -> float:
    r"""Batch-noise factor :math:`p` of mini-batch sampling.

    With :math:`\hat H = \frac1B\sum_{j\in\text{batch}} H_j`,
    :math:`\mathbb E[\hat H\otimes\hat H] = H\otimes H + p\,C_{\text{noise}}` where
    :math:`C_{\text{noise}} = \frac1n\sum_i H_i\otimes H_i - H\otimes H`. Then

    .. math::

        p = \frac{n - B}{B(n - 1)} \quad\text{(uniform subsets of size } B\text{)},
        \qquad p = \frac1B \quad\text{(B i.i.d. indices)}.

    ``p = 0`` is full-batch gradient descent (:cite:p:`mulayoff2024exact`, :cite:p:`wu2018sgd`).

    Parameters
    ----------
    n : int
        Number of training samples.
    batch_size : int
        Batch size ``B``: ``1..n`` without replacement, any ``B >= 1`` with replacement.
    replacement : bool
        Whether the ``B`` indices are drawn i.i.d. (True) or as a uniform subset (False).

    Returns
    -------
    float
        The factor ``p``.
    """
    n = check_positive_int(n, "n")
    replacement = check_replacement(replacement)
    b = check_batch_size(batch_size, n, replacement)
    if replacement:
        return 1.0 / b
    if n == 1:
        return 0.0
    return (n - b) / (b * (n - 1))


def number_of_batches(n: int, batch_size: int, replacement: bool = False) -> int:
    """How many equally likely batches there are: ``C(n, B)`` or ``n**B`` ordered draws."""
    n = check_positive_int(n, "n")
    replacement = check_replacement(replacement)
    b = check_batch_size(batch_size, n, replacement)
    return n**b if replacement else math.comb(n, b)


def enumerate_batches(n: int, batch_size: int, replacement: bool = False) -> Iterator[tuple]:
    """Every equally likely batch, as a tuple of indices.

    Without replacement: the ``C(n, B)`` subsets. With replacement: the ``n**B`` ordered
    tuples of i.i.d. indices (each has probability ``n**-B``).
    """
    n = check_positive_int(n, "n")
    replacement = check_replacement(replacement)
    b = check_batch_size(batch_size, n, replacement)
    if replacement:
        return itertools.product(range(n), repeat=b)
    return itertools.combinations(range(n), b)


def sample_batches(
    rng: np.random.Generator, n: int, batch_size: int, size: int, replacement: bool = False
) -> np.ndarray:
    """Draw ``size`` independent batches, shape ``(size, B)`` of indices.

    With replacement each row holds ``B`` i.i.d. uniform indices. Without replacement each
    row is a uniform subset of size ``B``, drawn by Floyd's algorithm vectorised over the rows
    when ``B**2 <= 4 n`` (``B`` draws of ``size`` integers and ``O(size B**2)`` comparisons):
    for ``j = n - B, ..., n - 1`` draw ``t`` uniform in ``{0, ..., j}`` and keep ``t``, or ``j``
    if ``t`` was already chosen. Every subset then has probability ``1 / C(n, B)``; the order
    of indices inside a row is not uniform, which a batch mean does not see. Larger batches
    take the first ``B`` entries of a uniform random permutation (``argpartition`` of uniform
    keys, ``O(size n)``).

    Examples
    --------
    >>> import numpy as np
    >>> batches = sample_batches(np.random.default_rng(0), n=10, batch_size=3, size=4)
    >>> batches.shape
    (4, 3)
    >>> all(len(set(row)) == 3 for row in batches.tolist())
    True
    """
    n = check_positive_int(n, "n")
    replacement = check_replacement(replacement)
    b = check_batch_size(batch_size, n, replacement)
    size = check_positive_int(size, "size")
    if replacement:
        return rng.integers(0, n, size=(size, b))
    if b == n:
        return np.broadcast_to(np.arange(n), (size, n)).copy()
    if b * b <= 4 * n:
        out = np.empty((size, b), dtype=np.intp)
        for k, j in enumerate(range(n - b, n)):
            t = rng.integers(0, j + 1, size=size)
            if k:
                taken = (out[:, :k] == t[:, None]).any(axis=1)
                t = np.where(taken, j, t)
            out[:, k] = t
        return out
    keys = rng.random((size, n))
    return np.argpartition(keys, b - 1, axis=1)[:, :b]
