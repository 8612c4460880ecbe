"""Tests of ``companion.book.timing.time_methods`` (the helper behind the book's timing figures).

No real timing is tested: a fake clock replaces ``time.perf_counter`` so the budget logic
is checked deterministically.
"""

from __future__ import annotations

import pytest

from companion.book import timing
from companion.book.timing import Timings, time_methods


class FakeClock:
    """perf_counter stand-in: each call of the timed function advances it by its cost."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_results_and_best_of_repeat(clock):
    calls = []

    def square(size):
        calls.append(size)
        # first call of each size is slow, later ones fast: best-of must pick the fast one
        clock.now += 2.0 if calls.count(size) == 1 else 0.5
        return size * size

    out = time_methods({"square": square}, [3, 1, 2], repeat=3)
    assert isinstance(out, Timings)
    assert calls == [1, 1, 1, 2, 2, 2, 3, 3, 3]  # sizes sorted, each repeated
    assert out.results["square"] == {1: 1, 2: 4, 3: 9}
    assert out.seconds["square"] == {1: 0.5, 2: 0.5, 3: 0.5}


def test_budget_stops_a_slow_method_but_not_the_others(clock):
    def slow(size):
        clock.now += 0.1 * size
        return size

    def fast(size):
        clock.now += 0.001
        return -size

    out = time_methods({"slow": slow, "fast": fast}, [1, 5, 20, 40], repeat=1, budget_s=1.0)
    # 0.1, 0.5, 2.0 -> the call at size 20 exceeds the budget and is the last one
    assert sorted(out.seconds["slow"]) == [1, 5, 20]
    assert sorted(out.seconds["fast"]) == [1, 5, 20, 40]
    assert out.results["fast"][40] == -40


@pytest.mark.parametrize(
    ("methods", "sizes", "kwargs", "error"),
    [
        ({}, [1], {}, TypeError),
        ({"a": 3}, [1], {}, TypeError),
        ({"a": abs}, [], {}, ValueError),
        ({"a": abs}, [0], {}, ValueError),
        ({"a": abs}, [1.5], {}, TypeError),
        ({"a": abs}, [1], {"repeat": 0}, ValueError),
        ({"a": abs}, [1], {"budget_s": -1.0}, ValueError),
    ],
)
def test_bad_input(methods, sizes, kwargs, error):
    with pytest.raises(error):
        time_methods(methods, sizes, **kwargs)


def test_single_thread_limits_blas_during_the_calls_only():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads(size):
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]

    limited = time_methods({"probe": blas_threads}, [1], repeat=1)
    assert limited.results["probe"][1] and set(limited.results["probe"][1]) == {1}
    free = time_methods({"probe": blas_threads}, [1], repeat=1, single_thread=False)
    assert free.results["probe"][1] == blas_threads(1)  # untouched outside the limiter


def test_single_thread_must_be_bool():
    with pytest.raises(TypeError):
        time_methods({"a": abs}, [1], single_thread="yes")
