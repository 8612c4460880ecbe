"""Timing helper for the book's small timing figures (``benchmarks/`` does real timing)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from ..validation import check_lr, check_positive_int

__all__ = ["Timings", "time_methods"]


@dataclass(frozen=True)
class Timings:
    """Output of :func:`time_methods`.

    Attributes
    ----------
    seconds : dict of str to dict of int to float
        ``seconds[method][size]``: best wall-clock time of one call, for every size the
        method was run at.
    results : dict of str to dict of int to object
        ``results[method][size]``: what that call returned, so that the routes can be
        compared with each other wherever all of them ran.
    """

    seconds: dict
    results: dict


def time_methods(
    methods, sizes, repeat: int = 3, budget_s: float | None = None, single_thread: bool = True
) -> Timings:
    r"""Time several implementations of one computation over growing problem sizes.

    For the small timing figures of the book (the benchmark suite in ``benchmarks/`` is the
    place for real measurements). Each method is called as ``method(size)`` for the sizes in
    increasing order; the best of ``repeat`` calls is kept (the minimum is the least noisy
    estimate of the cost on a shared machine). Once one call of a method takes longer than
    ``budget_s`` seconds, that method is not run at larger sizes, so a slow route cannot
    blow the time budget of a chapter.

    On a shared machine multi-threaded BLAS gives erratic timings (threads spin while other
    processes hold the cores: a 144 x 144 eigenproblem can take 2 ms or 0.8 s). By default the
    calls therefore run with BLAS limited to one thread (through ``threadpoolctl`` when it is
    installed; it ships with scikit-learn), which compares the routes as algorithms.

    Parameters
    ----------
    methods : dict of str to callable
        Named callables taking the size (an int) and returning a result.
    sizes : sequence of int
        Problem sizes, positive; they are sorted.
    repeat : int
        Calls per method and size (>= 1).
    budget_s : float, optional
        Per-call time beyond which a method stops at the current size. Default: no limit.
    single_thread : bool
        Limit BLAS/OpenMP thread pools to one thread while timing (needs ``threadpoolctl``;
        without it the setting has no effect).

    Returns
    -------
    Timings
    """
    if not isinstance(methods, dict) or not methods:
        raise TypeError("methods must be a non-empty dict of name -> callable(size)")
    for name, fn in methods.items():
        if not callable(fn):
            raise TypeError(f"methods[{name!r}] must be callable, got {type(fn).__name__}")
    sizes = sorted(check_positive_int(s, "sizes") for s in sizes)
    if not sizes:
        raise ValueError("sizes must hold at least one size")
    repeat = check_positive_int(repeat, "repeat")
    if budget_s is not None:
        budget_s = check_lr(budget_s, "budget_s")
    if not isinstance(single_thread, bool | np.bool_):
        raise TypeError(f"single_thread must be True or False, got {type(single_thread).__name__}")
    limiter = contextlib.nullcontext()
    if single_thread:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        else:
            limiter = threadpool_limits(limits=1)
    with limiter:
        return _time_methods(methods, sizes, repeat, budget_s)


def _time_methods(methods, sizes, repeat, budget_s) -> Timings:
    seconds: dict = {}
    results: dict = {}
    for name, fn in methods.items():
        seconds[name], results[name] = {}, {}
        for size in sizes:
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                out = fn(size)
                best = min(best, time.perf_counter() - start)
            seconds[name][size], results[name][size] = best, out
            if budget_s is not None and best > budget_s:
                break
    return Timings(seconds=seconds, results=results)
