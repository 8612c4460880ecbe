"""The exact eta* route against the flop limit, for nK = 500 ... 4,000, and its growth.

The exact route for Gauss-Newton curvature (``Curvature.from_gram(G, K).ms_threshold(B)``)
is one eigendecomposition of the nK x nK Gram matrix G = V diag(kappa) V^T, then Lanczos on
X -> C^{-1/2} D C^{-1/2} X in that eigenbasis, where C is diagonal and one product with D
costs two dense (nK x r) @ (r x r) matrix products, 4 nK r^2 flops (the K x K diagonal
blocks of A X A^T add 2 n K^2 r). The flop limit of one run is therefore

    F = 9 (nK)^3 + N * 4 nK r^2          (GVL's count for eigh with vectors; N products)

and this benchmark reports time / (F / rate), where ``rate`` is the machine's float64
matrix-multiply rate measured in the same run (best of 3 products of two nK x nK matrices,
2 (nK)^3 flops each). Target: <= 3 for nK >= 1,000. The eigendecomposition and the Lanczos
part are reported separately (LAPACK's eigh is bound by memory traffic in its
tridiagonal reduction, so its own ratio is the larger one).

Instances: random Jacobians, K = 10 outputs, n = nK / 10 samples, d = nK + 10 (full rank
r = nK), B = 16 without replacement. Sizes run in increasing order; a size is skipped when
the O((nK)^3) extrapolation from the last one exceeds the remaining time budget (--budget,
default 900 s in all), so the "largest nK in 10 minutes" is a size actually measured: the
largest that finished in under 600 s. Sizes up to 1,000 are run three times (fresh instances)
and the best ratio kept; larger ones once. ``--smoke`` runs nK = 200 and 400 and writes nothing.
Also measures the log-log slope of time against nK from the two largest sizes.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from _common import write_result

from companion.stability.curvature import Curvature

K, BATCH = 10, 16
SIZES = (500, 1000, 2000, 3000, 4000)
TARGET_RATIO, TEN_MINUTES = 3.0, 600.0
REPEATS = 3  # best of 3 for nK <= 1000 (a few seconds each)


def gemm_rate(side: int, rng: np.random.Generator) -> float:
    a = rng.standard_normal((side, side))
    b = rng.standard_normal((side, side))
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * side**3 / best


def run(side: int, rng: np.random.Generator) -> dict:
    n = side // K
    jac = rng.standard_normal((n * K, side + 10)) / math.sqrt(side)
    gram = jac @ jac.T
    del jac
    rate = gemm_rate(side, rng)
    start = time.perf_counter()
    curv = Curvature.from_gram(gram, num_outputs=K)
    t_eigh = time.perf_counter() - start
    start = time.perf_counter()
    eta = curv.ms_threshold(BATCH, method="lanczos")
    t_lanczos = time.perf_counter() - start
    r, products = curv.rank, curv.operator_products
    f_eigh = 9.0 * side**3
    f_lanczos = products * (4.0 * side * r**2 + 2.0 * n * K**2 * r)
    total = t_eigh + t_lanczos
    return {
        "nK": side, "n": n, "K": K, "rank": r, "batch_size": BATCH, "eta_star": eta,
        "gemm_gflops": rate / 1e9, "seconds_eigh": t_eigh, "seconds_lanczos": t_lanczos,
        "seconds": total, "products": products,
        "flop_limit_seconds": (f_eigh + f_lanczos) / rate,
        "ratio": total / ((f_eigh + f_lanczos) / rate),
        "ratio_eigh": t_eigh / (f_eigh / rate),
        "ratio_lanczos": t_lanczos / (f_lanczos / rate),
    }  # fmt: skip


def main(smoke: bool, budget: float) -> int:
    rng = np.random.default_rng(0)
    sizes = (200, 400) if smoke else SIZES
    rows, skipped, spent = [], [], 0.0
    print(f"{'nK':>6} {'GF/s':>6} {'eigh s':>8} {'Lanczos s':>10} {'products':>8} "
          f"{'limit s':>8} {'ratio':>6} {'eigh':>6} {'Lanczos':>8}")  # fmt: skip
    for side in sizes:
        if rows:
            predicted = rows[-1]["seconds"] * (side / rows[-1]["nK"]) ** 3
            if spent + predicted > budget:
                skipped.append({"nK": side, "predicted_seconds": predicted})
                print(f"{side:6d} skipped: about {predicted:.0f} s predicted, "
                      f"{budget - spent:.0f} s of the budget left")  # fmt: skip
                continue
        start = time.perf_counter()
        # best of REPEATS at the small sizes: on a shared machine one slow eigh (another
        # job's burst) otherwise decides the ratio; each repeat is a fresh instance
        repeats = [run(side, rng) for _ in range(REPEATS if side <= 1000 else 1)]
        row = min(repeats, key=lambda r: r["ratio"])
        row["repeats"] = len(repeats)
        spent += time.perf_counter() - start
        rows.append(row)
        print(f"{side:6d} {row['gemm_gflops']:6.1f} {row['seconds_eigh']:8.2f} "
              f"{row['seconds_lanczos']:10.2f} {row['products']:8d} "
              f"{row['flop_limit_seconds']:8.2f} {row['ratio']:6.2f} {row['ratio_eigh']:6.2f} "
              f"{row['ratio_lanczos']:8.2f}", flush=True)  # fmt: skip
    met = all(r["ratio"] <= TARGET_RATIO for r in rows if r["nK"] >= 1000)
    done = [r["nK"] for r in rows if r["seconds"] <= TEN_MINUTES]
    largest = max(done) if done else None
    slope = None
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        slope = math.log(b["seconds"] / a["seconds"]) / math.log(b["nK"] / a["nK"])
    for r in rows:
        if r["nK"] >= 1000:
            print(f"nK = {r['nK']}: time / flop limit = {r['ratio']:.2f} "
                  f"(target <= {TARGET_RATIO:.0f}): "
                  f"{'met' if r['ratio'] <= TARGET_RATIO else 'MISSED'}")  # fmt: skip
    print(f"largest nK measured within {TEN_MINUTES:.0f} s: {largest} "
          f"(sizes skipped to bound the run: {[s['nK'] for s in skipped]})")  # fmt: skip
    if slope is not None:
        print(f"log-log slope of time against nK between the two largest sizes: {slope:.2f} "
              "(3 = the O((nK)^3) asymptote)")  # fmt: skip
    if not smoke:
        write_result("exact_scaling", {
            "rows": rows, "skipped": skipped, "target_ratio": TARGET_RATIO, "met": met,
            "largest_nK_within_10_minutes": largest, "budget_seconds": budget,
            "loglog_slope_last_two": slope,
            "flop_count": "9 (nK)^3 for eigh + products * (4 nK r^2 + 2 n K^2 r)",
        })  # fmt: skip
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    budget = 900.0
    if "--budget" in args:
        budget = float(args[args.index("--budget") + 1])
    sys.exit(main("--smoke" in args, budget))
