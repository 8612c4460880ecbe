"""Tests of companion.sweeps: resumable sweeps and problem sizes."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import sweeps
from companion.sweeps import (
    SerialExecutor,
    load_results,
    make_grid,
    point_key,
    scale,
    sweep,
)

# ----------------------------------------------------------------------------------------
# functions swept in the tests: module level, so worker processes can import them
# ----------------------------------------------------------------------------------------


def noisy_power(x: float, seed: int) -> dict:
    """A seeded random result that depends on the point."""
    rng = np.random.default_rng(seed)
    return {"value": float(x) ** 2 + float(rng.standard_normal()), "draws": rng.random(3)}


def fails_on_three(x: float, seed: int) -> dict:
    if x == 3:
        raise RuntimeError("simulated crash at x = 3")
    return noisy_power(x, seed)


class CountingFn:
    """Counts its calls (in-process executors only) and raises on the k-th call if asked."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[dict] = []
        self.fail_at = fail_at

    def __call__(self, **point):
        self.calls.append(point)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("simulated interrupt")
        return noisy_power(**point)


GRID = {"x": [0, 1, 2, 3, 4], "seed": [0, 7]}


def _numpy_to_json(value):
    """numpy scalars and arrays as Python numbers and lists (how a sweep file stores them)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def direct_loop(fn, grid):
    """The reference: a plain loop, results normalised as JSON (what a file stores)."""
    return [json.loads(json.dumps(fn(**p), default=_numpy_to_json)) for p in make_grid(**grid)]


# ----------------------------------------------------------------------------------------
# grids and keys
# ----------------------------------------------------------------------------------------


def test_make_grid_is_the_product_last_axis_fastest():
    grid = make_grid(lr=[0.1, 0.2], seed=[0, 1, 2])
    assert len(grid) == 6
    assert grid[0] == {"lr": 0.1, "seed": 0}
    assert grid[1] == {"lr": 0.1, "seed": 1}
    assert grid[3] == {"lr": 0.2, "seed": 0}


def test_point_key_ignores_order_and_converts_numpy():
    assert point_key({"a": 1, "b": 0.5}) == point_key({"b": 0.5, "a": 1})
    assert point_key({"a": np.int64(1), "b": np.float64(0.5)}) == point_key({"a": 1, "b": 0.5})
    assert point_key({"a": 1}) != point_key({"a": 2})


@pytest.mark.parametrize("bad", [{"a": object()}, {"a": math.nan}, {1: 2}, [("a", 1)]])
def test_point_key_rejects_non_json(bad):
    with pytest.raises(TypeError):
        point_key(bad)


def test_sweep_rejects_bad_input(tmp_path):
    path = tmp_path / "r.jsonl"
    with pytest.raises(TypeError, match="fn"):
        sweep(3, GRID, path)
    with pytest.raises(ValueError, match="repeats"):
        sweep(noisy_power, [{"x": 1, "seed": 0}, {"seed": 0, "x": 1}], path, "serial")
    with pytest.raises(ValueError, match="empty"):
        sweep(noisy_power, {"x": [], "seed": [0]}, path, "serial")
    with pytest.raises(TypeError, match="executor"):
        sweep(noisy_power, GRID, path, executor="threads")
    with pytest.raises(ValueError, match="folder"):
        sweep(noisy_power, GRID, tmp_path / "missing" / "r.jsonl", "serial")
    with pytest.raises(TypeError, match="grid"):
        sweep(noisy_power, "x=1", path, "serial")
    with pytest.raises(TypeError, match="JSON"):
        sweep(lambda x: {"v": object()}, {"x": [1]}, path, "serial")


# ----------------------------------------------------------------------------------------
# results equal a direct loop, on every executor
# ----------------------------------------------------------------------------------------


def test_serial_sweep_equals_direct_loop(tmp_path):
    results = sweep(noisy_power, GRID, tmp_path / "r.jsonl", executor="serial")
    assert results == direct_loop(noisy_power, GRID)


def test_serial_executor_equals_direct_loop(tmp_path):
    results = sweep(noisy_power, GRID, tmp_path / "r.jsonl", executor=SerialExecutor())
    assert results == direct_loop(noisy_power, GRID)


def test_process_pool_sweep_equals_direct_loop(tmp_path):
    # the default executor: spawned worker processes, results written as they complete
    # (in any order) and returned in grid order
    results = sweep(noisy_power, GRID, tmp_path / "r.jsonl", max_workers=2)
    assert results == direct_loop(noisy_power, GRID)
    assert len(load_results(tmp_path / "r.jsonl")) == len(results)


def test_sweep_is_seeded_reproducible(tmp_path):
    first = sweep(noisy_power, GRID, tmp_path / "a.jsonl", executor="serial")
    second = sweep(noisy_power, GRID, tmp_path / "b.jsonl", executor="serial")
    assert first == second
    # and the seed matters: the draws differ between the two seeds of one x
    assert first[0]["draws"] != first[1]["draws"]


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(-50, 50), min_size=1, max_size=6, unique=True),
    st.lists(st.integers(0, 1000), min_size=1, max_size=3, unique=True),
)
def test_sweep_equals_loop_on_random_grids(tmp_path_factory, xs, seeds):
    path = tmp_path_factory.mktemp("h") / "r.jsonl"
    grid = {"x": xs, "seed": seeds}
    assert sweep(noisy_power, grid, path, executor="serial") == direct_loop(noisy_power, grid)


# ----------------------------------------------------------------------------------------
# interruption and resumption
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["serial", SerialExecutor()])
@pytest.mark.parametrize("k", [1, 4, 10])
def test_resume_after_interrupt_serial(tmp_path, k, executor):
    path = tmp_path / "r.jsonl"
    crashing = CountingFn(fail_at=k)
    with pytest.raises(KeyboardInterrupt):
        sweep(crashing, GRID, path, executor=executor)
    assert len(load_results(path)) == k - 1  # every point before the k-th was saved

    again = CountingFn()
    results = sweep(again, GRID, path, executor="serial")
    points = make_grid(**GRID)
    # only the k-th point and those after it are computed on the rerun
    assert again.calls == points[k - 1 :]
    assert results == direct_loop(noisy_power, GRID)
    # a third run computes nothing
    idle = CountingFn()
    assert sweep(idle, GRID, path, executor="serial") == results
    assert idle.calls == []


def test_resume_after_crash_in_worker_processes(tmp_path):
    path = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError, match="x = 3"):
        sweep(fails_on_three, GRID, path, max_workers=2)
    saved = load_results(path)
    crashed = {point_key(p) for p in make_grid(**GRID) if p["x"] == 3}
    assert not crashed & set(saved)
    assert saved  # points finished before the crash are kept

    again = CountingFn()
    results = sweep(again, GRID, path, executor=SerialExecutor())
    assert {point_key(p) for p in again.calls} == {point_key(p) for p in make_grid(**GRID)} - set(
        saved
    )
    assert results == direct_loop(noisy_power, GRID)
    # every point is stored exactly once: nothing was recomputed
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert sorted(keys) == sorted(point_key(p) for p in make_grid(**GRID))


def test_cut_off_last_line_is_ignored_and_recomputed(tmp_path):
    path = tmp_path / "r.jsonl"
    sweep(noisy_power, GRID, path, executor="serial")
    lines = path.read_text().splitlines()
    # simulate a kill in the middle of writing the last record
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    assert len(load_results(path)) == len(lines) - 1
    again = CountingFn()
    results = sweep(again, GRID, path, executor="serial")
    assert len(again.calls) == 1
    assert results == direct_loop(noisy_power, GRID)
    assert len(load_results(path)) == len(lines)


def test_damaged_middle_line_raises(tmp_path):
    path = tmp_path / "r.jsonl"
    sweep(noisy_power, GRID, path, executor="serial")
    lines = path.read_text().splitlines()
    lines[2] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 3"):
        load_results(path)


@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask.distributed is not installed (optional extra: pip install 'companion[dask]')",
)
def test_dask_executor_equals_direct_loop(tmp_path):
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        results = sweep(noisy_power, GRID, tmp_path / "r.jsonl", executor=client.get_executor())
    assert results == direct_loop(noisy_power, GRID)


# ----------------------------------------------------------------------------------------
# problem sizes
# ----------------------------------------------------------------------------------------


def test_scale_reads_the_environment(monkeypatch):
    monkeypatch.delenv(sweeps.SCALE_ENV, raising=False)
    assert scale().name == "book"
    assert scale().dataset == "digits"
    monkeypatch.setenv(sweeps.SCALE_ENV, "paper")
    paper = scale()
    assert paper.name == "paper"
    assert paper.n > scale("book").n
    monkeypatch.setenv(sweeps.SCALE_ENV, "huge")
    with pytest.raises(ValueError, match="book"):
        scale()
    with pytest.raises(TypeError):
        scale(3)
