"""Input checks shared by every public function of the package.

Every check raises ``ValueError`` or ``TypeError`` naming the argument and what was
expected; nothing downstream ever sees a NaN or a silently wrong shape. The checks are public
so that code built on the package (and the book's chapters) can validate its own inputs the
same way, e.g. ``check_lr(lr)`` or ``as_hessians(hessians)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "DENSE_MEMORY_LIMIT",
    "as_flat_vector",
    "as_float_array",
    "as_hessians",
    "as_jacobians",
    "as_points",
    "check_batch_size",
    "check_dense_size",
    "check_fraction",
    "check_lr",
    "check_positive",
    "check_positive_int",
    "check_replacement",
    "check_symmetric_psd",
]

#: Largest dense operator (in bytes) a function may build unless told otherwise.
DENSE_MEMORY_LIMIT = 2 * 1024**3


def as_float_array(x, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``x`` as a finite float64 array with the expected number of dimensions."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers, got {type(x).__name__}") from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return arr


def check_symmetric_psd(
    mats: np.ndarray, name: str, psd: bool = True, rtol: float = 1e-8
) -> np.ndarray:
    """Check a stack ``(..., d, d)`` of matrices for symmetry and, if ``psd``, for PSD.

    Tolerances are relative to the largest entry in absolute value: symmetry to ``rtol``,
    positive semi-definiteness to ``1e-8`` times the spectral scale (rounding in a
    product like ``J.T @ J`` leaves eigenvalues of order ``eps * ||J||^2``).
    Returns the exactly symmetrised stack.
    """
    if mats.shape[-1] != mats.shape[-2]:
        raise ValueError(f"{name} must be square in its last two axes, got shape {mats.shape}")
    scale = float(np.max(np.abs(mats))) if mats.size else 0.0
    asym = float(np.max(np.abs(mats - np.swapaxes(mats, -1, -2)))) if mats.size else 0.0
    if asym > rtol * max(scale, 1e-300):
        raise ValueError(
            f"{name} must be symmetric: largest |A - A^T| entry is {asym:.3g} "
            f"(relative {asym / max(scale, 1e-300):.3g})"
        )
    sym = 0.5 * (mats + np.swapaxes(mats, -1, -2))
    if psd and mats.size:
        lowest = np.linalg.eigvalsh(sym).min(axis=-1)
        worst = float(lowest.min())
        if worst < -1e-8 * max(scale * mats.shape[-1], 1e-300):
            idx = np.unravel_index(int(np.argmin(lowest)), lowest.shape) if lowest.ndim else ()
            where = f" (entry {tuple(int(i) for i in idx)})" if idx else ""
            raise ValueError(
                f"{name} must be positive semi-definite: smallest eigenvalue {worst:.3g}{where}"
            )
    return sym


def as_hessians(hessians, name: str = "hessians", psd: bool = True) -> np.ndarray:
    """Validate per-sample Hessians: shape ``(n, d, d)``, finite, symmetric, PSD."""
    arr = as_float_array(hessians, name, ndim=3)
    n, d, d2 = arr.shape
    if n < 1 or d < 1:
        raise ValueError(f"{name} must hold at least one {d}x{d2} matrix, got shape {arr.shape}")
    return check_symmetric_psd(arr, name, psd=psd)


def as_jacobians(jacobians, name: str = "jacobians") -> np.ndarray:
    """Validate per-sample Jacobians: ``(n, d)`` (scalar output) or ``(n, K, d)``.

    Returns an ``(n, K, d)`` float64 array.
    """
    arr = as_float_array(jacobians, name, ndim=(2, 3))
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if min(arr.shape) < 1:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    return arr


def check_lr(lr, name: str = "lr") -> float:
    """A learning rate: a finite real number > 0."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(lr).__name__}")
    lr = float(lr)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {lr}")
    return lr


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (numpy integers accepted, floats and bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_batch_size(batch_size, n: int, replacement: bool = False) -> int:
    """A batch size ``B`` in ``1..n`` (any ``B >= 1`` when sampling with replacement)."""
    b = check_positive_int(batch_size, "batch_size")
    if not replacement and b > n:
        raise ValueError(
            f"batch_size must be in 1..n = 1..{n} when sampling without replacement, got {b}"
        )
    return b


def check_replacement(replacement) -> bool:
    """The sampling scheme: ``True`` (with replacement) or ``False`` (without), as a bool."""
    if not isinstance(replacement, bool | np.bool_):
        raise TypeError(f"replacement must be True or False, got {type(replacement).__name__}")
    return bool(replacement)


def check_dense_size(n_entries: int, what: str, alternative: str, limit: int | None = None) -> None:
    """Refuse to build a dense float64 array of ``n_entries`` that would not fit in memory."""
    limit = DENSE_MEMORY_LIMIT if limit is None else limit
    nbytes = 8 * int(n_entries)
    if nbytes > limit:
        raise ValueError(
            f"{what} would need {nbytes / 1024**3:.1f} GiB as a dense float64 array "
            f"(limit {limit / 1024**3:.1f} GiB); use {alternative} instead"
        )


def as_points(x, name: str) -> np.ndarray:
    """Points as a finite float64 ``(n, d)`` array (images are flattened)."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    arr = as_float_array(arr, name)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (n, features...), got {arr.shape}")
    if arr.shape[0] < 1 or math.prod(arr.shape[1:]) < 1:
        raise ValueError(f"{name} must hold at least one point, got shape {arr.shape}")
    return arr.reshape(arr.shape[0], -1)


def as_flat_vector(x, name: str) -> np.ndarray:
    """One point (any shape, numpy or torch) as a flat float64 vector."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    return as_float_array(arr, name).reshape(-1)


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """A finite real number ``> 0`` (``>= 0`` with ``allow_zero``), as a float; bools refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (np.isfinite(value) and ok):
        want = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {want}, got {value}")
    return value


def check_fraction(value, name: str) -> float:
    """A real number in ``[0, 1]`` (a probability or a fraction of the samples), as a float."""
    value = check_positive(value, name, allow_zero=True)
    if value > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value

