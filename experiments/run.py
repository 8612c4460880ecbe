"""Run the book's experiments and store their results with provenance.

    python experiments/run.py [NAME ...] [--jobs N] [--scale book|paper] [--scheduler ADDRESS]

Runs the named experiments (all of ``experiments/*.py`` by default) through
``companion.sweeps.sweep``: resumable (an interrupted run keeps every finished point; the
same command continues it), a progress bar per experiment, results in
``experiments/results/<name>.jsonl`` and provenance in ``<name>.meta.json`` (see
``companion.book.experiments``). ``--jobs 1`` (default) runs in this process; ``--jobs N``
in N local worker processes; ``--scheduler tcp://host:8786`` on a Dask cluster (workers
need this repository on their path, e.g. started from its root with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# one BLAS/OpenMP thread per process: the networks are small and the machine is shared
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from companion.book.experiments import SCALES, experiment_names, run_experiment

    names = experiment_names(ROOT)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(names)}")
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--scale", choices=SCALES, default="book")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown experiments {unknown}; known: {names}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
        executor = client.get_executor()
    else:
        executor = "serial" if args.jobs == 1 else None
    try:
        for name in args.names or names:
            start = time.perf_counter()
            path = run_experiment(name, args.scale, executor=executor,
                                  max_workers=args.jobs, root=ROOT)
            print(f"{name}: done in {time.perf_counter() - start:.0f} s -> "
                  f"{path.relative_to(ROOT)}", flush=True)
    finally:
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
