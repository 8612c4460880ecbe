"""Stored experiments (experiments/, companion.book.experiments): fresh, complete, resumable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from companion.book import experiments as ex
from companion.sweeps import load_results

ROOT = Path(__file__).resolve().parent.parent
NAMES = ex.experiment_names(ROOT)


@pytest.fixture
def isolated_experiments(monkeypatch):
    """Forget any imported ``experiments`` package; restore it afterwards."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "experiments"}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for k in [k for k in sys.modules if k == "experiments" or k.startswith("experiments.")]:
        del sys.modules[k]
    sys.modules.update(saved)


# ----------------------------------------------------------------------------------------
# the repository's stored results
# ----------------------------------------------------------------------------------------


def test_there_are_experiments():
    assert {"ch12_gd", "ch14_edge"} <= set(NAMES), NAMES


@pytest.mark.parametrize("name", NAMES)
def test_stored_book_results_fresh_and_complete(name):
    meta = ex.check_experiment(name, "book", ROOT)  # raises when stale or incomplete
    assert meta["complete"] is True
    records, _ = ex.load_experiment(name, "book", ROOT)
    assert len(records) == meta["n_points"]
    for key in ("git_commit", "versions", "machine", "date", "wall_time_s", "source_sha256"):
        assert key in meta, key


@pytest.mark.parametrize("name", NAMES)
def test_stored_paper_results_fresh_if_present(name):
    results, _ = ex.result_paths(name, "paper", ROOT)
    if not results.exists():
        pytest.skip(f"no paper-scale results for {name}")
    ex.check_experiment(name, "paper", ROOT)


@pytest.mark.parametrize("name", NAMES)
def test_experiment_modules_follow_the_interface(name):
    module = ex.experiment_module(name, ROOT)
    for scale in ex.SCALES:
        config = ex.experiment_config(module, scale)
        ex.config_hash(config)  # JSON values only
        points = module.grid(scale)
        assert points, (name, scale)
    assert isinstance(module.VERSION, int)


# ----------------------------------------------------------------------------------------
# the runner, on a tiny fake experiment
# ----------------------------------------------------------------------------------------

FAKE = '''
import os
from pathlib import Path

CONFIG = {"book": {"xs": XS, "seeds": [0, 1]}, "paper": {"xs": [1], "seeds": [0]}}
VERSION = 1
LOG = Path(__file__).with_name("calls.log")
FAIL = Path(__file__).with_name("fail_at")


def grid(scale):
    c = CONFIG[scale]
    return [{"x": x, "seed": s} for x in c["xs"] for s in c["seeds"]]


def run_point(x, seed):
    if FAIL.exists() and int(FAIL.read_text()) == x:
        raise RuntimeError("interrupted")
    with LOG.open("a") as fh:
        fh.write(f"{x} {seed} {os.getpid()}\\n")
    return {"square": x * x + seed}
'''


def _make_repo(tmp_path: Path, xs=(1, 2, 3)) -> Path:
    (tmp_path / "experiments").mkdir(exist_ok=True)
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "run.py").write_text("# marks the root\n")
    (tmp_path / "experiments" / "fake.py").write_text(FAKE.replace("XS", repr(list(xs))))
    return tmp_path


def _calls(root: Path) -> list[tuple[int, int]]:
    log = root / "experiments" / "calls.log"
    if not log.exists():
        return []
    return [tuple(map(int, line.split()[:2])) for line in log.read_text().split("\n") if line]


def test_runner_resumes_after_an_interruption(tmp_path, isolated_experiments):
    root = _make_repo(tmp_path)
    (root / "experiments" / "fail_at").write_text("3")
    with pytest.raises(RuntimeError, match="interrupted"):
        ex.run_experiment("fake", root=root, executor="serial", progress=False)
    assert _calls(root) == [(1, 0), (1, 1), (2, 0), (2, 1)]  # stored before the failure
    results, meta_path = ex.result_paths("fake", "book", root)
    assert len(load_results(results)) == 4
    assert json.loads(meta_path.read_text())["complete"] is False
    with pytest.raises(ex.StaleResultError, match="incomplete: 2 grid points"):
        ex.load_experiment("fake", root=root)

    (root / "experiments" / "fail_at").unlink()
    ex.run_experiment("fake", root=root, executor="serial", progress=False)
    # the second session computed only the two missing points
    assert _calls(root) == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    records, meta = ex.load_experiment("fake", root=root)
    assert [(r["x"], r["seed"], r["square"]) for r in records] == [
        (x, s, x * x + s) for x in (1, 2, 3) for s in (0, 1)
    ]
    assert records[0]["point"] == {"x": 1, "seed": 0}
    assert meta["complete"] is True and meta["n_points"] == 6 and meta["seeds"] == [0, 1]
    assert [s["points_computed"] for s in meta["sessions"]] == [2]
    assert meta["config"] == {"xs": [1, 2, 3], "seeds": [0, 1]}
    assert meta["versions"]["companion"] is not None and meta["git_commit"] is None

    # a third run has nothing to do
    ex.run_experiment("fake", root=root, executor="serial", progress=False)
    assert len(_calls(root)) == 6


def test_changed_config_or_version_makes_results_stale(tmp_path, isolated_experiments):
    root = _make_repo(tmp_path, xs=(1, 2))
    ex.run_experiment("fake", root=root, executor="serial", progress=False)
    ex.check_experiment("fake", root=root)

    for name in [k for k in sys.modules if k.startswith("experiments")]:
        del sys.modules[name]
    _make_repo(tmp_path, xs=(1, 2, 4))
    with pytest.raises(ex.StaleResultError, match="config_sha256"):
        ex.load_experiment("fake", root=root)

    for name in [k for k in sys.modules if k.startswith("experiments")]:
        del sys.modules[name]
    fake = root / "experiments" / "fake.py"
    fake.write_text(fake.read_text().replace("[1, 2, 4]", "[1, 2]").replace(
        "VERSION = 1", "VERSION = 2"))
    with pytest.raises(ex.StaleResultError, match="version"):
        ex.load_experiment("fake", root=root)

    # rerunning moves the stale file aside and recomputes everything
    ex.run_experiment("fake", root=root, executor="serial", progress=False)
    assert (root / "experiments" / "results" / "fake.jsonl.old").exists()
    assert len(_calls(root)) == 4 + 4
    ex.check_experiment("fake", root=root)


def test_runner_in_worker_processes_and_at_paper_scale(tmp_path, isolated_experiments):
    root = _make_repo(tmp_path)
    path = ex.run_experiment("fake", "paper", root=root, executor=None, max_workers=2,
                             progress=False)
    assert path == root / "experiments" / "results" / "paper" / "fake.jsonl"
    records, _ = ex.load_experiment("fake", "paper", root=root)
    assert [r["square"] for r in records] == [1]
    with pytest.raises(FileNotFoundError, match=r"run `python experiments/run\.py fake`"):
        ex.load_experiment("fake", "book", root=root)


def test_bad_input(tmp_path, isolated_experiments):
    root = _make_repo(tmp_path)
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        ex.experiment_module("nope", root)
    with pytest.raises(ValueError, match="scale must be one of"):
        ex.result_paths("fake", "huge", root)
    with pytest.raises(FileNotFoundError, match=r"experiments/run\.py"):
        ex.find_root(tmp_path.parent)
    assert ex.find_root(root / "experiments") == root
    with pytest.raises(TypeError, match="finite JSON"):
        ex.config_hash({"x": float("nan")})


def test_a_second_concurrent_run_is_refused_and_a_dead_lock_taken_over(
    tmp_path, isolated_experiments
):
    import os
    import socket
    import subprocess

    root = _make_repo(tmp_path)
    results, _ = ex.result_paths("fake", "book", root)
    results.parent.mkdir(parents=True)
    lock = results.with_name(results.name + ".lock")
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")  # a live process holds it
    with pytest.raises(RuntimeError, match="another run of this experiment"):
        ex.run_experiment("fake", root=root, executor="serial", progress=False)
    assert _calls(root) == [] and lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock.write_text(f"{socket.gethostname()} {dead}")  # its process has exited
    ex.run_experiment("fake", root=root, executor="serial", progress=False)
    assert len(_calls(root)) == 6 and not lock.exists()


def test_book_scale_sizes_match_the_data_they_load():
    from companion.nets.data import load
    from companion.sweeps import scale

    sizes = scale("book")
    data = load(sizes.dataset, classes=sizes.classes, n_per_class=sizes.n_per_class)
    assert sizes.n == data.n == 200  # 20 images of each of the ten digits
    assert sizes.as_dict()["classes"] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    assert len(sizes.seeds) >= 5
