r"""Exact moment operators of linearised SGD.

Linearised at an interpolating minimum, SGD is the random linear recursion
:math:`x_{t+1} = (I - \eta\hat H_t)x_t` with :math:`\hat H_t = \frac1B\sum_{j\in\text{batch}}H_j`.
Its :math:`k`-th moment tensor :math:`\mathbb E[x_t^{\otimes k}]` evolves by the linear operator

.. math::

    T_k = \mathbb E\big[(I - \eta\hat H)^{\otimes k}\big]

(:cite:p:`ma2021linear` §3). For :math:`k = 2` it acts on the second-moment matrix
:math:`S = \mathbb E[xx^\top]` as :math:`Q = I - 2\eta C + \eta^2 D` (:cite:p:`mulayoff2024exact`).

Vectorisation convention (used by every function here): **row-major**. A matrix
:math:`S\in\mathbb R^{d\times d}` is ``vec(S) = S.reshape(-1)``, so entry :math:`(a, b)` sits at
position :math:`ad + b` and :math:`(A\otimes B)\,\mathrm{vec}(S) = \mathrm{vec}(ASB^\top)` with
``np.kron(A, B)``. A tensor with indices :math:`(i_1, \dots, i_k)` sits at position
:math:`\sum_j i_j d^{k-j}`; a :math:`d^k\times d^k` operator has rows :math:`(i_1..i_k)` and
columns :math:`(j_1..j_k)`, i.e. it is the ``(d,)*2k`` array with axes
``(i_1, ..., i_k, j_1, ..., j_k)`` reshaped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from ..validation import (
    as_float_array,
    as_hessians,
    check_dense_size,
    check_lr,
    check_positive_int,
    check_replacement,
)
from .sampling import batch_noise_factor, enumerate_batches, number_of_batches

__all__ = [
    "kron_operators",
    "moment_operator",
    "moment_operator_coefficients",
    "second_moment_map",
    "second_moment_operator",
    "symmetric_tensor_basis",
]

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MOMENT_METHODS = ("auto", "moments", "enumerate")
#: Largest number of batches that method="enumerate" will loop over.
_MAX_ENUMERATED_BATCHES = 1_000_000
_MATRIX_FREE_HINT = (
    "the matrix-free routes (second_moment_map for k = 2, "
    "Curvature(...).ms_threshold(method='lanczos'), e.g. from Jacobians or a Gram matrix)"
)


# --------------------------------------------------------------------------------------
# second moment: closed forms
# --------------------------------------------------------------------------------------
def second_moment_map(hessians, lr: float, batch_size: int, S, replacement: bool = False):
    r"""One exact step of the second-moment recursion of linearised SGD.

    .. math::

        S \mapsto (I - \eta H)S(I - \eta H)
        + \eta^2 p\Big[\frac1n\sum_i H_i S H_i - H S H\Big]
        = \mathbb E\big[(I - \eta\hat H)S(I - \eta\hat H)\big],

    with :math:`p` the batch-noise factor (``sampling.batch_noise_factor``). Applied to
    :math:`S_t = \mathbb E[x_tx_t^\top]` it gives :math:`S_{t+1}` exactly
    (:cite:p:`ma2021linear` Cor. 3, :cite:p:`mulayoff2024exact`). Never forms a
    :math:`d^2\times d^2` matrix: :math:`O(nd^3)` per matrix.

    Parameters
    ----------
    hessians : array_like, shape (n, d, d)
        Per-sample Hessians :math:`H_i` (symmetric PSD).
    lr : float
        Learning rate :math:`\eta > 0`.
    batch_size : int
        Batch size :math:`B`.
    S : array_like, shape (..., d, d)
        One matrix or a stack of matrices (need not be symmetric: the map is linear).
    replacement : bool
        Sampling scheme (see ``batch_noise_factor``).

    Returns
    -------
    numpy.ndarray, shape (..., d, d)
    """
    hs = as_hessians(hessians)
    lr = check_lr(lr)
    n, d, _ = hs.shape
    p = batch_noise_factor(n, batch_size, replacement)
    s = as_float_array(S, "S")
    if s.ndim < 2 or s.shape[-2:] != (d, d):
        raise ValueError(f"S must have shape (..., {d}, {d}) to match hessians, got {s.shape}")
    h = hs.mean(axis=0)
    step = np.eye(d) - lr * h
    out = step @ s @ step
    if p > 0:
        # (1/n) sum_i H_i S H_i - H S H, batched over the stack of S.
        per_sample = np.einsum("iab,...bc,icd->...ad", hs, s, hs, optimize=True) / n
        out = out + lr**2 * p * (per_sample - h @ s @ h)
    return out


def kron_operators(hessians, batch_size: int, replacement: bool = False):
    r"""Dense :math:`d^2\times d^2` operators :math:`C` and :math:`D` of the second moment.

    .. math::

        C = \tfrac12(H\otimes I + I\otimes H), \qquad
        D = (1 - p)\,H\otimes H + p\,\frac1n\sum_i H_i\otimes H_i,

    so that :math:`Q = I - 2\eta C + \eta^2 D` (:cite:p:`mulayoff2024exact`). Row-major
    vectorisation (module docstring): :math:`C\,\mathrm{vec}(S) = \mathrm{vec}((HS + SH)/2)`.

    Returns
    -------
    (C, D) : tuple of numpy.ndarray, each shape (d*d, d*d)

    Raises
    ------
    ValueError
        If the two matrices would not fit in memory (use the matrix-free "lanczos"
        strategy of :class:`~companion.stability.curvature.Curvature` instead).
    """
    hs = as_hessians(hessians)
    n, d, _ = hs.shape
    p = batch_noise_factor(n, batch_size, replacement)
    check_dense_size(
        3 * d**4,
        f"C and D for d = {d} (two {d * d} x {d * d} matrices)",
        "ms_threshold(method='lanczos') of a Curvature (from Jacobians or a Gram matrix)",
    )
    h = hs.mean(axis=0)
    eye = np.eye(d)
    c = 0.5 * (np.kron(h, eye) + np.kron(eye, h))
    # (1/n) sum_i H_i (x) H_i as one GEMM: rows (a, c), columns (b, d) of H_i[a, b] H_i[c, d].
    flat = hs.reshape(n, d * d)
    kron_mean = (flat.T @ flat / n).reshape(d, d, d, d).transpose(0, 2, 1, 3).reshape(d * d, d * d)
    dd = (1.0 - p) * np.kron(h, h) + p * kron_mean
    return c, 0.5 * (dd + dd.T)


def second_moment_operator(hessians, lr: float, batch_size: int, replacement: bool = False):
    r"""Dense second-moment operator :math:`Q = I - 2\eta C + \eta^2 D` (:math:`d^2\times d^2`).

    :math:`Q\,\mathrm{vec}(S) = \mathrm{vec}(\text{second\_moment\_map}(S))` in the row-major
    convention; :math:`Q = T_2` (:cite:p:`ma2021linear` Cor. 3, :cite:p:`mulayoff2024exact`).
    Mean-square stability holds iff :math:`\rho(Q) \le 1` on :math:`\mathrm{range}(H)`.
    """
    lr = check_lr(lr)
    c, dd = kron_operators(hessians, batch_size, replacement)
    return np.eye(c.shape[0]) - 2.0 * lr * c + lr**2 * dd


# --------------------------------------------------------------------------------------
# symmetric tensors
# --------------------------------------------------------------------------------------
def _symmetric_orbits(d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Orbit id of every flat index of (R^d)^{(x)k} under index permutations, and orbit sizes.

    Orbits are numbered in the order of ``itertools.combinations_with_replacement``.
    """
    idx = np.indices((d,) * k).reshape(k, -1)
    key = np.sort(idx, axis=0)
    flat_key = np.ravel_multi_index(tuple(key), (d,) * k)
    _, orbit, sizes = np.unique(flat_key, return_inverse=True, return_counts=True)
    return orbit.reshape(-1), sizes


def _symmetric_basis_sparse(d: int, k: int) -> sp.csr_matrix:
    orbit, sizes = _symmetric_orbits(d, k)
    values = 1.0 / np.sqrt(sizes[orbit])
    rows = np.arange(d**k)
    return sp.csr_matrix((values, (rows, orbit)), shape=(d**k, sizes.size))


def symmetric_tensor_basis(d: int, k: int) -> np.ndarray:
    r"""Orthonormal basis of the symmetric tensors :math:`\mathrm{Sym}^k(\mathbb R^d)`.

    Column :math:`\alpha` (one per multiset :math:`\alpha` of :math:`k` indices from
    :math:`0..d-1`, in the order of ``itertools.combinations_with_replacement``) is
    :math:`|\alpha|^{-1/2}\sum_{(i_1..i_k)\in\alpha} e_{i_1}\otimes\dots\otimes e_{i_k}`, the sum
    over the :math:`|\alpha|` distinct orderings, flattened row-major. There are
    :math:`\binom{d+k-1}{k}` columns.

    Returns
    -------
    numpy.ndarray, shape (d**k, comb(d + k - 1, k))
        Columns orthonormal; ``P @ P.T`` is the orthogonal projector onto symmetric tensors.
    """
    d = check_positive_int(d, "d")
    k = check_positive_int(k, "k")
    check_dense_size(
        d**k * math.comb(d + k - 1, k),
        f"the dense basis of Sym^{k}(R^{d})",
        "a smaller d or k",
    )
    return _symmetric_basis_sparse(d, k).toarray()


# --------------------------------------------------------------------------------------
# higher moments of the batch mean
# --------------------------------------------------------------------------------------
def _set_partitions(items: Sequence) -> Iterator[list[list]]:
    """Every partition of ``items`` into non-empty blocks (Bell(len(items)) of them)."""
    items = list(items)
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _set_partitions(rest):
        yield [[first], *partition]
        for j in range(len(partition)):
            yield [*partition[:j], [first, *partition[j]], *partition[j + 1 :]]


def _falling(x: int, m: int) -> float:
    """Falling factorial x (x - 1) ... (x - m + 1) (zero when m > x >= 0)."""
    out = 1.0
    for j in range(m):
        out *= x - j
    return out


def _partition_coefficients(
    m: int, n: int, batch_size: int, replacement: bool
) -> dict[tuple[tuple[int, ...], ...], float]:
    r"""Coefficients :math:`c_\tau` of the batch-mean moment :math:`\mathbb E[\hat H^{\otimes m}]`.

    :math:`\mathbb E[\hat H^{\otimes m}] = \sum_\tau c_\tau\bigotimes_{\gamma\in\tau}P_\gamma`
    over set partitions :math:`\tau` of the positions, with
    :math:`P_\gamma = \sum_i H_i^{\otimes|\gamma|}` placed at the positions :math:`\gamma`.
    Expanding :math:`\hat H^{\otimes m} = B^{-m}\sum_{s_1..s_m}
    H_{\xi_{s_1}}\otimes\dots\otimes H_{\xi_{s_m}}` over batch slots and grouping the slot
    tuples by their equality pattern :math:`\pi` (a set partition of the positions) gives
    :math:`B(B-1)\cdots(B-|\pi|+1)` tuples per pattern. With replacement distinct slots are
    independent: the expectation is :math:`\bigotimes_{\beta\in\pi} P_\beta / n`. Without,
    distinct slots hold a uniformly random ordered tuple of distinct samples; the sum over
    distinct tuples is, by Möbius inversion on set partitions :math:`\sigma` of the blocks of
    :math:`\pi`, :math:`\sum_\sigma\mu(\sigma)\prod_{s\in\sigma}P_{\cup s}` with
    :math:`\mu(\sigma) = \prod_s(-1)^{|s|-1}(|s|-1)!`, divided by
    :math:`n(n-1)\cdots(n-|\pi|+1)`.
    """
    coefficients: dict[tuple[tuple[int, ...], ...], float] = {}
    for pi in _set_partitions(range(m)):
        slots = _falling(batch_size, len(pi)) / float(batch_size) ** m
        if slots == 0.0:
            continue
        if replacement:
            key = tuple(sorted(tuple(sorted(block)) for block in pi))
            coefficients[key] = coefficients.get(key, 0.0) + slots / float(n) ** len(pi)
            continue
        denominator = _falling(n, len(pi))
        for sigma in _set_partitions(range(len(pi))):
            mu = 1.0
            for s in sigma:
                mu *= (-1.0) ** (len(s) - 1) * math.factorial(len(s) - 1)
            merged = tuple(sorted(tuple(sorted(q for b in s for q in pi[b])) for s in sigma))
            coefficients[merged] = coefficients.get(merged, 0.0) + slots * mu / denominator
    return coefficients


def _power_sums(stack: np.ndarray, order: int, weights: np.ndarray | None = None) -> list:
    r"""``out[j] = sum_s w_s X_s^{(x) j}`` for j = 1..order, as interleaved ``(d,)*2j`` arrays.

    Axes are ``(r_1, c_1, r_2, c_2, ...)``. Each sum is one GEMM between the flattened
    ``ceil(j/2)``-th and ``floor(j/2)``-th tensor powers of the stack.
    """
    count, d, _ = stack.shape
    w = np.ones(count) if weights is None else weights
    flat_powers = [np.ones((count, 1)), stack.reshape(count, d * d)]
    for j in range(2, (order + 1) // 2 + 1):
        prev = flat_powers[j - 1]
        flat_powers.append((prev[:, :, None] * flat_powers[1][:, None, :]).reshape(count, -1))
    out = []
    for j in range(1, order + 1):
        left, right = flat_powers[(j + 1) // 2], flat_powers[j // 2]
        out.append(((left * w[:, None]).T @ right).reshape((d,) * (2 * j)))
    return out


def _batch_moments_exact(hs: np.ndarray, batch_size: int, order: int, replacement: bool) -> list:
    """Interleaved E[Hhat^{(x) m}] for m = 1..order from the partition formula."""
    n = hs.shape[0]
    sums = _power_sums(hs, order)
    moments = []
    for m in range(1, order + 1):
        total = np.zeros_like(sums[m - 1])
        for blocks, coefficient in _partition_coefficients(m, n, batch_size, replacement).items():
            operands: list = []
            for block in blocks:
                operands.append(sums[len(block) - 1])
                operands.append([ax for q in block for ax in (2 * q, 2 * q + 1)])
            term = np.einsum(*operands, list(range(2 * m)), optimize=True)
            total += coefficient * term
        moments.append(total)
    return moments


def _batch_moments_enumerated(
    hs: np.ndarray, batch_size: int, order: int, replacement: bool
) -> list:
    """Interleaved E[Hhat^{(x) m}] for m = 1..order, averaging over every batch."""
    n, d, _ = hs.shape
    total_batches = number_of_batches(n, batch_size, replacement)
    if total_batches > _MAX_ENUMERATED_BATCHES:
        raise ValueError(
            f"method='enumerate' would loop over {total_batches} batches "
            f"(limit {_MAX_ENUMERATED_BATCHES}); use method='moments' instead"
        )
    batches = enumerate_batches(n, batch_size, replacement)
    moments = [np.zeros((d,) * (2 * m)) for m in range(1, order + 1)]
    chunk = max(1, 2**16 // max(d**2, 1))
    while True:
        block = np.array(list(itertools.islice(batches, chunk)), dtype=np.intp)
        if block.size == 0:
            break
        batch_means = hs[block].mean(axis=1)
        for m, part in enumerate(_power_sums(batch_means, order)):
            moments[m] += part
    return [mom / total_batches for mom in moments]


def _interleaved_to_operator(tensor: np.ndarray, k: int) -> np.ndarray:
    """(r_1, c_1, ..., r_k, c_k) axes -> (r_1..r_k, c_1..c_k) -> d^k x d^k matrix."""
    d = tensor.shape[0]
    perm = [2 * q for q in range(k)] + [2 * q + 1 for q in range(k)]
    return tensor.transpose(perm).reshape(d**k, d**k)


def moment_operator_coefficients(
    hs: np.ndarray,
    batch_size: int,
    order: int,
    replacement: bool,
    method: str,
    symmetric: bool,
) -> list[np.ndarray]:
    r"""Matrices :math:`M_0..M_k` with :math:`T_k = \sum_m (-\eta)^m M_m`.

    :math:`M_m = \sum_{|S| = m}\mathbb E[\hat H^{\otimes S}]\otimes I^{\otimes([k]\setminus S)}`.
    With ``symmetric`` the matrices are :math:`P^\top M_m P` in the basis of
    ``symmetric_tensor_basis``. :math:`T_k` is a polynomial of degree :math:`k` in
    :math:`\eta`, so a scan over learning rates builds these once (``kth_order_threshold``).

    Parameters
    ----------
    hs : numpy.ndarray, shape (n, d, d)
        Per-sample Hessians (validated by the caller).
    batch_size, order, replacement, method, symmetric
        As in :func:`moment_operator`.
    """
    hs = as_hessians(hs, "hs")
    n, d, _ = hs.shape
    if method not in _MOMENT_METHODS:
        raise ValueError(f"method must be one of {_MOMENT_METHODS}, got {method!r}")
    check_dense_size(
        2 * d ** (2 * order),
        f"T_{order} for d = {d} (a {d**order} x {d**order} matrix)",
        _MATRIX_FREE_HINT,
    )
    if method == "auto":
        # Both routes are exact; enumeration costs about (#batches) d^(2k), the closed form
        # about n d^(2k), and for k <= 2 the closed form is the textbook one.
        few_batches = number_of_batches(n, batch_size, replacement) <= n
        method = "enumerate" if order > 2 and few_batches else "moments"
    if method == "enumerate":
        moments = _batch_moments_enumerated(hs, batch_size, order, replacement)
    else:
        moments = _batch_moments_exact(hs, batch_size, order, replacement)
    eye = np.eye(d)
    basis = _symmetric_basis_sparse(d, order) if symmetric else None
    out = []
    for m in range(order + 1):
        acc = np.zeros((d,) * (2 * order))
        for subset in itertools.combinations(range(order), m):
            operands: list = []
            if m:
                operands += [moments[m - 1], [ax for q in subset for ax in (q, order + q)]]
            for q in range(order):
                if q not in subset:
                    operands += [eye, [q, order + q]]
            acc += np.einsum(*operands, list(range(2 * order)), optimize=True)
        mat = acc.reshape(d**order, d**order)
        if basis is not None:
            mat = np.asarray(basis.T @ (basis.T @ mat.T).T)
        out.append(mat)
    return out


def moment_operator(
    hessians,
    lr: float,
    batch_size: int,
    order: int = 2,
    replacement: bool = False,
    symmetric: bool = False,
    method: str = "auto",
) -> np.ndarray:
    r"""The :math:`k`-th moment operator :math:`T_k = \mathbb E[(I - \eta\hat H)^{\otimes k}]`.

    :math:`\mathbb E[x_{t+1}^{\otimes k}] = T_k\,\mathbb E[x_t^{\otimes k}]` for linearised SGD
    (:cite:p:`ma2021linear` §3, Def. 5 and Thm 1). Expanding the tensor power,

    .. math::

        T_k = \sum_{S\subseteq[k]}(-\eta)^{|S|}\,
        \mathbb E\big[\hat H^{\otimes S}\big]\otimes I^{\otimes([k]\setminus S)},

    where :math:`\mathbb E[\hat H^{\otimes m}]` is computed exactly, either from a closed form
    in the per-sample tensor powers :math:`\sum_i H_i^{\otimes j}` (``method="moments"``; see
    ``_partition_coefficients``) or by averaging over every equally likely batch
    (``method="enumerate"``). ``"auto"`` enumerates when there are at most ``n`` batches.
    :math:`T_1 = I - \eta H` and :math:`T_2 = Q` (``second_moment_operator``).

    Parameters
    ----------
    hessians : array_like, shape (n, d, d)
        Per-sample Hessians (symmetric PSD).
    lr : float
        Learning rate :math:`\eta`.
    batch_size : int
        Batch size :math:`B`.
    order : int
        :math:`k \ge 1` (the book uses 1..4).
    replacement : bool
        Sampling scheme (see ``batch_noise_factor``).
    symmetric : bool
        If True return :math:`P^\top T_k P` with :math:`P` = ``symmetric_tensor_basis(d, k)``:
        :math:`T_k` commutes with permutations of the tensor positions, so the symmetric
        tensors are invariant and this is the restriction of :math:`T_k` to them.
    method : {"auto", "moments", "enumerate"}

    Returns
    -------
    numpy.ndarray
        Shape ``(d**k, d**k)``, row-major vectorisation (module docstring), or
        ``(dim Sym^k, dim Sym^k)`` with ``symmetric=True``.

    Raises
    ------
    ValueError
        For sizes that would not fit in memory (the message names the matrix-free routes),
        an unknown method, or too many batches to enumerate.
    """
    hs = as_hessians(hessians)
    lr = check_lr(lr)
    order = check_positive_int(order, "order")
    replacement = check_replacement(replacement)
    batch_noise_factor(hs.shape[0], batch_size, replacement)  # validates batch_size
    if not isinstance(symmetric, bool | np.bool_):
        raise TypeError(f"symmetric must be True or False, got {type(symmetric).__name__}")
    coefficients = moment_operator_coefficients(
        hs, batch_size, order, replacement, method, bool(symmetric)
    )
    out = coefficients[0].copy()
    for m in range(1, order + 1):
        out += (-lr) ** m * coefficients[m]
    return out
