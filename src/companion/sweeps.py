r"""Resumable parameter sweeps over grids, and the problem sizes of the book's experiments.

The experiments of Part IV train many small networks, one per point of a grid of learning
rates :math:`\eta`, batch sizes :math:`B` and seeds, and measure the minimum each run
finds (:cite:p:`wu2018sgd`, :cite:p:`ma2021linear`, :cite:p:`mulayoff2024exact`). Three pieces:

* :func:`sweep` runs a function over a grid on any :class:`concurrent.futures.Executor`
  and appends each result to a JSON-lines file as soon as it finishes, keyed by its grid
  point. A sweep that is interrupted (an exception, Ctrl-C, a killed kernel) loses only the
  points that were running; calling it again skips every point already in the file.
* :func:`scale` reads ``COMPANION_SCALE`` (``book``, the default, or ``paper``) and returns
  the problem sizes to use (:class:`Scale`).
* the function swept is any module-level function of JSON values, so it can be sent to
  worker processes or to a Dask cluster; :func:`companion.nets.minima.train_minimum`
  trains one network and measures the minimum it reaches.

Running on more than one machine
--------------------------------
``sweep`` accepts any executor. With the optional ``dask`` extra
(``pip install "companion[dask]"``)::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")        # or Client() for a local cluster
    results = sweep(train_minimum, grid, "runs.jsonl", executor=client.get_executor())

Results travel back to the machine that calls ``sweep``, which alone writes the file.

This module does not import torch.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .progress import show_progress
from .validation import check_positive_int

__all__ = [
    "SCALE_ENV",
    "Scale",
    "SerialExecutor",
    "load_results",
    "make_grid",
    "point_key",
    "scale",
    "sweep",
]

#: Environment variable selecting the problem sizes (``book`` or ``paper``).
SCALE_ENV = "COMPANION_SCALE"
#: Environment variable forcing progress bars on ("1") or off ("0"); the same variable
#: ``companion.nets.training`` reads.


# ----------------------------------------------------------------------------------------
# grids and keys
# ----------------------------------------------------------------------------------------


def _to_json(value):
    """``json.dumps`` fallback: numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def point_key(point: Mapping) -> str:
    """Canonical JSON of a grid point (sorted keys): the key of its line in a sweep file.

    Values must be JSON values (numbers, strings, booleans, None, lists); numpy scalars
    are converted. ``{"lr": 0.1, "batch_size": 4}`` and ``{"batch_size": 4, "lr": 0.1}``
    have the same key.
    """
    if not isinstance(point, Mapping):
        raise TypeError(f"a grid point must be a mapping of argument names, got {point!r}")
    for name in point:
        if not isinstance(name, str):
            raise TypeError(f"grid point keys must be argument names (str), got {name!r}")
    try:
        return json.dumps(dict(point), sort_keys=True, default=_to_json, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"grid point {point!r} must hold finite JSON values (numbers, strings, lists): {exc}"
        ) from exc


def make_grid(**axes: Iterable) -> list[dict]:
    """The Cartesian product of named axes, as a list of points (last axis fastest).

    ``make_grid(lr=[0.1, 0.2], seed=[0, 1])`` gives ``[{"lr": 0.1, "seed": 0},
    {"lr": 0.1, "seed": 1}, {"lr": 0.2, "seed": 0}, {"lr": 0.2, "seed": 1}]``.
    """
    names = list(axes)
    values = []
    for name in names:
        axis = axes[name]
        if isinstance(axis, str | bytes) or not isinstance(axis, Iterable):
            raise TypeError(f"axis {name!r} must be a sequence of values, got {axis!r}")
        values.append(list(axis))
        if not values[-1]:
            raise ValueError(f"axis {name!r} is empty")
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _as_points(grid) -> list[dict]:
    if isinstance(grid, Mapping):
        return make_grid(**grid)
    if isinstance(grid, str | bytes) or not isinstance(grid, Iterable):
        raise TypeError(
            "grid must be a mapping of axes (name -> values) or a sequence of points "
            f"(mappings), got {type(grid).__name__}"
        )
    points = [dict(p) if isinstance(p, Mapping) else p for p in grid]
    for p in points:
        if not isinstance(p, dict):
            raise TypeError(f"every grid point must be a mapping, got {p!r}")
    if not points:
        raise ValueError("grid is empty")
    return points


# ----------------------------------------------------------------------------------------
# the results file
# ----------------------------------------------------------------------------------------


def load_results(path) -> dict[str, object]:
    """Results stored in a sweep file, ``{point_key: result}``.

    A missing file gives ``{}``. A last line cut off by an interruption (no newline, not
    valid JSON) is ignored; a damaged line elsewhere raises ``ValueError`` naming it. If a
    point appears twice, the later line wins.
    """
    path = Path(path)
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")
    out: dict[str, object] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key, result = record["key"], record["result"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if number == len(lines):  # the unfinished last line of an interrupted write
                continue
            raise ValueError(f"{path}: line {number} is not a sweep record: {exc}") from exc
        out[key] = result
    return out


def _append(path: Path, key: str, point: dict, result) -> object:
    """Append one record, flushed to disk; returns the result as it reads back."""
    try:
        line = json.dumps(
            {"key": key, "point": point, "result": result}, default=_to_json, allow_nan=True
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the result for point {key} must be JSON serialisable (numbers, strings, lists, "
            f"dicts, numpy arrays): {exc}"
        ) from exc
    _drop_partial_line(path)
    with path.open("a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return json.loads(line)["result"]


def _drop_partial_line(path: Path) -> None:
    """Cut off a last line without newline: a record whose writing was interrupted."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as fh:
        fh.truncate(data.rfind(b"\n") + 1)


# ----------------------------------------------------------------------------------------
# executors and the sweep
# ----------------------------------------------------------------------------------------


class SerialExecutor(Executor):
    """An executor that runs each task in the calling process when it is submitted.

    For functions that cannot be sent to worker processes (defined in a notebook), for
    debugging, and for the built book. Exceptions are stored in the returned future, as a
    real executor does.
    """

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Call ``fn(*args, **kwargs)`` now; return a finished future with its result or error."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future



def _default_executor(jobs: int, max_workers: int | None) -> Executor:
    workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
    # "spawn": worker processes start clean, which torch's thread pools require
    # (forking a process whose OpenMP pool is running can hang the child).
    return ProcessPoolExecutor(
        max_workers=max(1, min(workers, jobs)), mp_context=multiprocessing.get_context("spawn")
    )


def sweep(
    fn: Callable[..., object],
    grid,
    path,
    executor: Executor | str | None = None,
    progress: bool | None = None,
    *,
    max_workers: int | None = None,
) -> list:
    r"""Run ``fn(**point)`` for every grid point, saving each result as it finishes.

    Each finished point is appended to ``path`` (JSON lines ``{"key", "point",
    "result"}``, flushed and synced) before the next one is awaited, so an interrupted
    sweep loses only the points that were still running. Points already in the file are
    not recomputed: rerunning the same call resumes the sweep.

    Parameters
    ----------
    fn : callable
        Called as ``fn(**point)``; returns a JSON-serialisable result (numbers, strings,
        lists, dicts; numpy scalars and arrays are converted). For worker processes it
        must be importable (defined in a module, not in a notebook): the default pool
        starts workers with ``spawn``, so a script that calls ``sweep`` must do so under
        ``if __name__ == "__main__":``. ``fn`` should seed everything it draws from the
        point (e.g. a ``seed`` entry), so results do not depend on where it ran.
    grid : mapping or sequence of mappings
        Axes ``{name: values}`` (their Cartesian product, see :func:`make_grid`) or an
        explicit list of points. Point values must be JSON values.
    path : str or Path
        The results file (created if missing; its folder must exist).
    executor : concurrent.futures.Executor, "serial" or None
        None: a local ``ProcessPoolExecutor`` with ``max_workers`` (default
        ``os.cpu_count()``) workers, shut down at the end. ``"serial"`` (or a
        :class:`SerialExecutor`): in this process, one point after the other, each saved
        before the next starts. Any other executor is used as given and left running, e.g.
        a Dask client's ``client.get_executor()`` to spread a sweep over several machines.
    progress : bool or None
        tqdm progress bar over the grid; None: shown when stdout is a terminal (never in
        the built book), overridable with ``COMPANION_PROGRESS=0/1``.
    max_workers : int, optional
        Worker processes of the default pool.

    Returns
    -------
    list
        One result per grid point, in grid order, as read back from the file (so tuples
        are lists and numpy arrays are lists: a fresh and a resumed sweep return equal
        objects).

    Raises
    ------
    Exception
        The first exception raised by ``fn``, after every point that did finish has been
        saved; points not yet started are cancelled.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    points = _as_points(grid)
    keys = [point_key(p) for p in points]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"grid repeats points: {repeated}")
    if max_workers is not None:
        max_workers = check_positive_int(max_workers, "max_workers")
    if not (executor is None or executor == "serial" or isinstance(executor, Executor)):
        raise TypeError(
            "executor must be None (local processes), 'serial' or a "
            f"concurrent.futures.Executor, got {executor!r}"
        )
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"the folder of path {str(path)!r} does not exist")
    done = load_results(path)
    todo = [(k, p) for k, p in zip(keys, points, strict=True) if k not in done]

    bar = None
    if show_progress(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(points), initial=len(points) - len(todo), desc="sweep")
    try:
        if executor == "serial" or isinstance(executor, SerialExecutor):
            for key, point in todo:
                done[key] = _append(path, key, point, fn(**point))
                if bar is not None:
                    bar.update(1)
        elif todo:
            _run_on_executor(fn, todo, path, done, executor, max_workers, bar)
    finally:
        if bar is not None:
            bar.close()
    return [done[k] for k in keys]


def _run_on_executor(fn, todo, path, done, executor, max_workers, bar) -> None:
    own = executor is None
    pool = _default_executor(len(todo), max_workers) if own else executor
    error: BaseException | None = None
    futures: dict[Future, tuple[str, dict]] = {}
    try:
        for key, point in todo:
            futures[pool.submit(fn, **point)] = (key, point)
        for future in as_completed(futures):
            if future.cancelled():
                continue
            key, point = futures[future]
            exc = future.exception()
            if exc is not None:
                if error is None:
                    error = exc
                    for other in futures:
                        other.cancel()
                continue
            done[key] = _append(path, key, point, future.result())
            if bar is not None:
                bar.update(1)
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
        else:
            for other in futures:
                other.cancel()
    if error is not None:
        raise error


# ----------------------------------------------------------------------------------------
# problem sizes
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    r"""Problem sizes for the experiments of Part IV.

    Attributes
    ----------
    name : str
        ``"book"`` or ``"paper"``.
    dataset : str
        Name for :func:`companion.nets.data.load`.
    classes : tuple
        The two classes (targets :math:`\pm1`, one output); each a label or a tuple of
        labels (a group, e.g. the even digits).
    n_per_class : int
        Training samples per label (also inside a group): :math:`n` is this times the
        number of labels.
    widths : tuple of int
        Hidden widths of the MLP.
    steps : int
        Step budget of one training run.
    seeds : tuple of int
        Repetitions (initialisation and batch sampling).
    """

    name: str
    dataset: str
    classes: tuple
    n_per_class: int
    widths: tuple[int, ...]
    steps: int
    seeds: tuple[int, ...]

    @property
    def n(self) -> int:
        """Number of training samples (``n_per_class`` per label)."""
        labels = sum(len(c) if isinstance(c, tuple | list) else 1 for c in self.classes)
        return labels * self.n_per_class

    def as_dict(self) -> dict:
        """The sizes as keyword arguments of :func:`~companion.nets.minima.train_minimum`.

        JSON values only, so they can travel to worker processes.
        """
        out = asdict(self)
        del out["name"], out["seeds"]
        out["classes"] = [list(c) if isinstance(c, tuple | list) else c for c in self.classes]
        out["widths"] = list(self.widths)
        return out


_EVEN_ODD = ((0, 2, 4, 6, 8), (1, 3, 5, 7, 9))

_SCALES = {
    # digits ships with scikit-learn: offline. Even against odd digits, 20 images per digit
    # (n = 200) and two hidden layers of 64 (d = 8,385): the smallest size we measured at
    # which GD sharpens progressively from a loss-Hessian sharpness of about 2.5 at
    # initialisation to 12-19, so that GD reaches its edge 2/eta for every eta >= 0.2
    # and starts inside it for eta <= 0.7 (the former 0-vs-1, n = 50, width 32 started at
    # 5.0 and sharpened only to 6.6). One training run with its measurements takes 5-20 s,
    # so the stored sweeps of Part IV (experiments/) run in about half an hour on 2 cores.
    "book": Scale("book", "digits", _EVEN_ODD, 20, (64, 64), 10_000, (0, 1, 2, 3, 4)),
    # the order of the papers' experiments: FashionMNIST, two classes, 1000 samples
    # ({cite}`wu2018sgd`), wide fully connected nets, 5 repetitions; needs OpenML access.
    "paper": Scale("paper", "fashion-mnist", (0, 1), 500, (500, 500), 100_000, (0, 1, 2, 3, 4)),
}


def scale(name: str | None = None) -> Scale:
    """The problem sizes selected by ``name`` or the environment variable ``COMPANION_SCALE``.

    ``"book"`` (default): scikit-learn's digits, offline, sized so that every chapter of
    Part IV runs in about a minute. ``"paper"``: the order of magnitude of the papers'
    experiments (MNIST-family data through OpenML; raises
    ``companion.nets.data.DatasetUnavailableError`` when loaded offline).
    """
    if name is None:
        name = os.environ.get(SCALE_ENV, "book") or "book"
    if not isinstance(name, str):
        raise TypeError(f"scale name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _SCALES:
        raise ValueError(f"{SCALE_ENV} / name must be one of {', '.join(_SCALES)}; got {name!r}")
    return _SCALES[key]
