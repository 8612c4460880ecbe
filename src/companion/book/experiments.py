r"""Experiments as data: run the heavy sweeps of Part IV once, store them, load them in chapters.

An *experiment* is a module ``experiments/<name>.py`` at the repository root defining

* ``CONFIG``: a JSON-able dict with one entry per scale, ``CONFIG["book"]`` and
  ``CONFIG["paper"]`` (sizes, axes of the grid, seeds, settings);
* ``VERSION``: an int, bumped whenever a change of the code (the module or the
  ``companion`` functions it calls) changes what a grid point returns;
* ``grid(scale_name) -> list[dict]``: the points, JSON values;
* ``run_point(**point) -> dict``: one point, JSON values in and out (a module-level
  function, so that it runs in worker processes or on a Dask cluster).

:func:`run_experiment` (behind ``python experiments/run.py``) runs the grid through
:func:`companion.sweeps.sweep` into ``experiments/results/<name>.jsonl`` (book scale; paper
scale under ``experiments/results/paper/``) and writes the provenance beside it,
``<name>.meta.json``. :func:`load_experiment` gives a chapter the records and refuses
results that are *stale* (the stored ``config_sha256`` or ``version`` differ from the
module's now) or *incomplete* (grid points missing).

Why a hash of the configuration plus a version tag, not a hash of the source: what a
point returns depends on the experiment module *and* on the ``companion`` code it calls
(training, curvature), which no hash of one file covers, while a hash of every file would
throw away hours of runs at each edited docstring. The configuration hash catches every
change of sizes, grids and seeds automatically; the version tag is the author's statement
that the code now computes something else. The SHA-256 of the module's source and the git
commit are recorded too, for audit.

This module does not import torch (the experiment modules import it inside ``run_point``).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path
from types import ModuleType

__all__ = [
    "SCALES",
    "StaleResultError",
    "canonical_json",
    "check_experiment",
    "config_hash",
    "experiment_config",
    "experiment_module",
    "experiment_names",
    "find_root",
    "load_experiment",
    "result_paths",
    "run_experiment",
]

#: The scales every experiment defines.
SCALES = ("book", "paper")
#: Environment variable naming the repository root (else found from the working directory).
ROOT_ENV = "COMPANION_ROOT"
_PACKAGES = ("companion", "numpy", "scipy", "torch", "scikit-learn")


class StaleResultError(RuntimeError):
    """Stored results that do not match the experiment's current configuration or code."""


# ----------------------------------------------------------------------------------------
# locating experiments
# ----------------------------------------------------------------------------------------


def find_root(start=None) -> Path:
    """The repository root: ``COMPANION_ROOT``, else the first folder upwards from ``start``
    (default the working directory, e.g. a notebook's) holding ``experiments/run.py``.

    Raises ``FileNotFoundError`` when there is none.
    """
    env = os.environ.get(ROOT_ENV)
    if env and start is None:
        root = Path(env).resolve()
        if not (root / "experiments" / "run.py").is_file():
            raise FileNotFoundError(f"{ROOT_ENV}={env!r} holds no experiments/run.py")
        return root
    here = Path.cwd() if start is None else Path(start)
    here = here.resolve()
    for folder in (here, *here.parents):
        if (folder / "experiments" / "run.py").is_file():
            return folder
    raise FileNotFoundError(
        f"no folder above {str(here)!r} holds experiments/run.py: run from inside the "
        f"repository or set {ROOT_ENV}"
    )


def experiment_names(root=None) -> list[str]:
    """Names of the experiment modules under ``root/experiments`` (sorted)."""
    root = find_root() if root is None else Path(root)
    skip = {"__init__", "run", "common"}
    return sorted(
        p.stem
        for p in (root / "experiments").glob("*.py")
        if p.stem not in skip and not p.stem.startswith("_")
    )


def experiment_module(name: str, root=None) -> ModuleType:
    """Import ``experiments/<name>.py`` of ``root`` as ``experiments.<name>``.

    The root goes on ``sys.path`` (worker processes started with ``spawn`` inherit it), so
    that ``run_point`` is importable by reference in workers.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"experiment name must be a module name, got {name!r}")
    root = find_root() if root is None else Path(root).resolve()
    path = root / "experiments" / f"{name}.py"
    if not path.is_file():
        raise ValueError(
            f"no experiment {name!r}: {str(path)!r} does not exist "
            f"(experiments: {', '.join(experiment_names(root)) or 'none'})"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(f"experiments.{name}")
    if Path(module.__file__).resolve() != path.resolve():
        raise ImportError(
            f"experiments.{name} is already imported from {module.__file__}, not {path}"
        )
    for attr in ("CONFIG", "VERSION", "grid", "run_point"):
        if not hasattr(module, attr):
            raise TypeError(f"experiment module {path} must define {attr}")
    return module


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def experiment_config(module: ModuleType, scale: str) -> dict:
    """``CONFIG[scale]`` of an experiment module (what its grid at that scale depends on)."""
    config = module.CONFIG
    if not isinstance(config, Mapping) or _check_scale(scale) not in config:
        raise TypeError(
            f"{module.__name__}.CONFIG must be a dict with an entry per scale {SCALES}"
        )
    return dict(config[scale])


def canonical_json(value) -> str:
    """JSON with sorted keys and no spaces: equal configurations give equal strings."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"configuration must hold finite JSON values only: {exc}") from exc


def config_hash(config) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``config``.

    Examples
    --------
    >>> from companion.book.experiments import config_hash
    >>> config_hash({"a": 1, "b": [2, 3]}) == config_hash({"b": [2, 3], "a": 1})
    True
    >>> config_hash({"a": 1}) == config_hash({"a": 1.5})
    False
    """
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def result_paths(name: str, scale: str = "book", root=None) -> tuple[Path, Path]:
    """``(results, meta)`` files of an experiment at a scale."""
    root = find_root() if root is None else Path(root)
    folder = root / "experiments" / "results"
    if _check_scale(scale) != "book":
        folder = folder / scale
    return folder / f"{name}.jsonl", folder / f"{name}.meta.json"


# ----------------------------------------------------------------------------------------
# provenance
# ----------------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def _provenance(root: Path) -> dict:
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git(root, "rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "versions": _versions(),
        "machine": {
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _source_hash(module: ModuleType) -> str:
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------


def _grid(module: ModuleType, scale: str) -> list[dict]:
    from ..sweeps import point_key

    points = list(module.grid(scale))
    keys = [point_key(p) for p in points]  # checks JSON values
    if len(set(keys)) != len(keys):
        raise ValueError(f"{module.__name__}.grid({scale!r}) repeats points")
    return points


def run_experiment(
    name: str,
    scale: str = "book",
    *,
    executor: Executor | str | None = "serial",
    max_workers: int | None = None,
    root=None,
    progress: bool | None = True,
) -> Path:
    """Run (or resume) one experiment's grid; returns the results file.

    Stored results made with another configuration hash or version are moved aside to
    ``<name>.jsonl.old`` and the sweep starts afresh; otherwise the points already stored
    are skipped (:func:`companion.sweeps.sweep`). A lock file ``<name>.jsonl.lock`` keeps a
    second run of the same experiment from starting meanwhile. The meta file is written before the
    sweep (``complete: false``) and after it, with one entry per session in ``sessions``
    (date, machine, commit, wall time, points computed).

    Parameters
    ----------
    name : str
        The module ``experiments/<name>.py``.
    scale : {"book", "paper"}
    executor : Executor, "serial" or None
        As in :func:`companion.sweeps.sweep` (None: a local process pool).
    max_workers : int, optional
        Workers of the local process pool.
    root : path, optional
        Repository root (default :func:`find_root`).
    progress : bool or None
        Progress bar over the grid.
    """
    root = find_root() if root is None else Path(root).resolve()
    module = experiment_module(name, root)
    config = experiment_config(module, scale)
    points = _grid(module, scale)
    results, meta_path = result_paths(name, scale, root)
    results.parent.mkdir(parents=True, exist_ok=True)
    identity = {"config_sha256": config_hash(config), "version": module.VERSION}

    with _lock(results):
        return _run_locked(name, scale, module, config, points, results, meta_path, identity,
                           root, executor, max_workers, progress)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _lock:
    """``<results>.lock`` holding this process's id: one run of an experiment at a time.

    A lock left by a process that no longer exists (on this machine) is taken over.
    """

    def __init__(self, results: Path):
        self.path = results.with_name(results.name + ".lock")

    def __enter__(self):
        owner = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                host, _, pid = self.path.read_text().strip().partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise RuntimeError(
                    f"{self.path.name}: another run of this experiment is in progress "
                    f"({host} pid {pid}); wait for it, or delete the lock if it is dead"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(owner)
            return self
        raise RuntimeError(f"could not take the lock {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def _run_locked(name, scale, module, config, points, results, meta_path, identity, root,
                executor, max_workers, progress) -> Path:
    from ..sweeps import load_results, point_key, sweep

    old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    sessions = []
    if results.exists():
        same = old is not None and all(old.get(k) == v for k, v in identity.items())
        if same:
            sessions = old.get("sessions", [])
        else:
            print(f"{name}: stored results are stale (another config or version): "
                  f"moved to {results.name}.old, starting afresh", flush=True)
            results.replace(results.with_name(results.name + ".old"))
    before = set(load_results(results))
    todo = sum(point_key(p) not in before for p in points)

    def write_meta(complete: bool, wall: float | None) -> None:
        session = {**_provenance(root), "wall_time_s": wall, "points_computed": todo}
        meta = {
            "name": name,
            "scale": scale,
            **identity,
            "config": config,
            "source_sha256": _source_hash(module),
            "n_points": len(points),
            "seeds": config.get("seeds"),
            "complete": complete,
            "wall_time_s": sum(s["wall_time_s"] or 0.0 for s in sessions) + (wall or 0.0),
            "sessions": [*sessions, session] if wall is not None else sessions,
            **{k: v for k, v in session.items() if k != "points_computed"},
        }
        tmp = meta_path.with_name(meta_path.name + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        tmp.replace(meta_path)

    write_meta(complete=False, wall=None)
    print(f"{name} ({scale}): {len(points)} points, {todo} to run", flush=True)
    start = time.perf_counter()
    sweep(module.run_point, points, results, executor=executor, progress=progress,
          max_workers=max_workers)
    write_meta(complete=True, wall=time.perf_counter() - start)
    return results


# ----------------------------------------------------------------------------------------
# checking and loading
# ----------------------------------------------------------------------------------------


def check_experiment(name: str, scale: str = "book", root=None) -> dict:
    """Check the stored results of an experiment; returns its meta dict.

    Raises
    ------
    FileNotFoundError
        No results or no meta file (run ``python experiments/run.py <name>``).
    StaleResultError
        The stored ``config_sha256`` or ``version`` differ from the module's now, or grid
        points are missing from the results file (incomplete).
    """
    from ..sweeps import load_results, point_key

    root = find_root() if root is None else Path(root).resolve()
    module = experiment_module(name, root)
    results, meta_path = result_paths(name, scale, root)
    command = f"python experiments/run.py {name}"
    if scale != "book":
        command += f" --scale {scale}"
    if not meta_path.is_file() or not results.is_file():
        raise FileNotFoundError(
            f"no stored results for {name!r} at scale {scale!r}: run `{command}`"
        )
    meta = json.loads(meta_path.read_text())
    now = {"config_sha256": config_hash(experiment_config(module, scale)),
           "version": module.VERSION}
    for key, value in now.items():
        if meta.get(key) != value:
            raise StaleResultError(
                f"stored results of {name!r} ({scale}) are stale: {key} is "
                f"{meta.get(key)!r} in {meta_path.name} but {value!r} for the code now; "
                f"rerun `{command}`"
            )
    stored = load_results(results)
    missing = [p for p in _grid(module, scale) if point_key(p) not in stored]
    if missing:
        raise StaleResultError(
            f"stored results of {name!r} ({scale}) are incomplete: {len(missing)} grid points "
            f"missing (first {missing[0]}); resume with `{command}`"
        )
    return meta


def load_experiment(name: str, scale: str = "book", root=None) -> tuple[list[dict], dict]:
    """Records and provenance of a stored experiment, checked for staleness.

    Parameters
    ----------
    name : str
        The module ``experiments/<name>.py``.
    scale : {"book", "paper"}
    root : path, optional
        Repository root (default: found from the working directory, see :func:`find_root`).

    Returns
    -------
    records : list of dict
        One per grid point, in grid order: the point's entries, then the result's (which
        win on a clash), and ``"point"``, the point itself (to re-run it with
        ``experiment_module(name).run_point(**record["point"])``).
    meta : dict
        The ``.meta.json`` provenance (hashes, commit, versions, machine, date, wall time).

    Raises
    ------
    FileNotFoundError, StaleResultError
        See :func:`check_experiment`.
    """
    from ..sweeps import load_results, point_key

    root = find_root() if root is None else Path(root).resolve()
    meta = check_experiment(name, scale, root)
    module = experiment_module(name, root)
    stored = load_results(result_paths(name, scale, root)[0])
    records = []
    for point in _grid(module, scale):
        result = stored[point_key(point)]
        if not isinstance(result, Mapping):
            result = {"result": result}
        record = {**point, **result}
        record["point"] = dict(point)
        records.append(record)
    return records, meta
