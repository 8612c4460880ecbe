"""Per-sample parameter Jacobians: torch.func (vmap of grad) against a per-sample backward loop.

Both compute J (n, K, d) of the same float64 MLP on digits; the loop runs one forward pass per
sample and one backward pass per output, the way one would without torch.func. Two cases:
the book's scalar-output setting (500 digits, even against odd, K = 1; the target >= 10x
applies here) and a one-hot 10-class case (K = 10, reported for information: torch.func
then needs one vmap per output and the gap narrows). Checks that the Jacobians agree and
writes benchmarks/results/jacobians.json.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from _common import best_time, write_result

from companion.nets.data import load
from companion.nets.jacobians import parameter_jacobian, parameter_jacobian_loop
from companion.nets.models import make_model, num_parameters

TARGET = 10.0
CASES = {
    # name: (classes, n_per_class, hidden widths); targets are +-1 (K = 1) or one-hot (K = 10)
    "scalar": (((0, 2, 4, 6, 8), (1, 3, 5, 7, 9)), 50, (32, 16)),
    "one-hot": (None, 20, (32, 16)),
}


def run_case(name: str) -> dict:
    classes, n_per_class, widths = CASES[name]
    data = load("digits", classes=classes, n_per_class=n_per_class)
    model = make_model("mlp", in_dim=64, widths=widths, out_dim=data.out_dim, seed=0)
    X = data.X_train
    parameter_jacobian(model, X[:2])  # warm-up: the first torch.func call builds machinery
    t_func, jac = best_time(lambda: parameter_jacobian(model, X), repeat=5)
    t_loop, ref = best_time(lambda: parameter_jacobian_loop(model, X))
    err = float(np.max(np.abs(jac - ref)) / np.max(np.abs(ref)))
    n, k, d = jac.shape
    ratio = t_loop / t_func
    print(f"[{name}] n = {n}, K = {k}, d = {d} ({num_parameters(model)} parameters)")
    print(f"[{name}] torch.func {t_func * 1e3:.1f} ms, loop {t_loop * 1e3:.1f} ms: {ratio:.1f}x")
    return {
        "n": n,
        "outputs": k,
        "parameters": d,
        "seconds_torch_func": t_func,
        "seconds_loop": t_loop,
        "speedup": ratio,
        "max_relative_difference": err,
    }


def main() -> int:
    torch.set_num_threads(1)  # both methods on one thread: the ratio is about the method
    results = {name: run_case(name) for name in CASES}
    ratio = results["scalar"]["speedup"]
    print(f"speed-up on the scalar case {ratio:.1f}x (target >= {TARGET:.0f}x)")
    path = write_result("jacobians", {"target": TARGET, "target_case": "scalar", **results})
    print(f"wrote {path}")
    # the two are the same float64 derivatives: agreement to rounding
    agree = all(r["max_relative_difference"] < 1e-12 for r in results.values())
    return 0 if agree and ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
