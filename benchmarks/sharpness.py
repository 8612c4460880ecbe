"""Sharpness of a trained network: Hessian-vector products needed by Lanczos vs power iteration.

An MLP is trained on digits (10 classes, one-hot targets) with the half squared error
(``HalfSquaredError``, (1/2n) sum_i |f_i - y_i|^2); the sharpness lambda_max of the loss
Hessian (``companion.nets.curvature_ops.loss_hessian_operator``, a curvlinops operator) is
computed to machine precision as the reference. Then both methods are run with oracle
stopping, counting the Hessian-vector products (HVPs) until the relative error first reaches
1e-6: power iteration checks its Rayleigh quotient after every product; Lanczos (scipy eigsh /
ARPACK, as in ``top_eigenvalues``, default basis size 20) is run with tolerances 1e-1, 1e-2,
... and the first run that is accurate enough counts.

Two trained nets: full-batch GD at lr = 0.5, which ends at the edge of stability
(lambda_max ~ 2/lr) with the top of the spectrum clustered (lambda_2 / lambda_max ~ 0.999)
-- the regime the book measures; the target ratio <= 1/3 is checked on it -- and SGD with
B = 50 at lr = 0.3, reported for information. The ratio depends on the gap: with a well
separated top eigenvalue (lambda_2 / lambda_max ~ 0.8, e.g. a net trained with a small lr)
power iteration needs only ~30 products and ARPACK's minimum of ~20 (its basis size)
makes the two comparable. Writes benchmarks/results/sharpness.json.
"""

from __future__ import annotations

import sys

import torch
from _common import write_result

from companion.nets.curvature_ops import (
    CountingOperator,
    loss_hessian_operator,
    power_iteration,
    top_eigenvalues,
)
from companion.nets.data import load
from companion.nets.losses import HalfSquaredError
from companion.nets.models import make_model, num_parameters
from companion.nets.training import train

TARGET = 1.0 / 3.0
RTOL = 1e-6
MAX_POWER_STEPS = 10_000
CASES = {
    # name: (samples per class, widths, lr, batch size, steps)
    "gd-edge-of-stability": (20, (64,), 0.5, 200, 3000),
    "sgd": (20, (64,), 0.3, 50, 3000),
}


def trained_operator(name: str):
    n_per_class, widths, lr, batch_size, steps = CASES[name]
    data = load("digits", n_per_class=n_per_class)
    model = make_model("mlp", in_dim=64, widths=widths, out_dim=10, seed=0)
    loss = HalfSquaredError()  # (1/2B) sum_i |f_i - y_i|^2, the papers' square loss
    hist = train(model, data, lr=lr, batch_size=batch_size, steps=steps, loss=loss, progress=False)
    print(f"[{name}] trained: {hist}")
    return loss_hessian_operator(model, data, loss=loss), num_parameters(model), hist.final_loss


def lanczos_products(op, reference: float) -> tuple[int, float, float]:
    """HVPs of the first eigsh run (tolerances 1e-1, 1e-2, ...) within RTOL of reference."""
    for exponent in range(1, 15):
        counted = CountingOperator(op)
        value = float(top_eigenvalues(counted, 1, tol=10.0**-exponent)[0])
        err = abs(value - reference) / abs(reference)
        if err <= RTOL:
            return counted.n_products, err, 10.0**-exponent
    raise RuntimeError("Lanczos never reached the tolerance")


def power_products(op, reference: float) -> tuple[int, float]:
    def close_enough(products: int, value: float) -> bool:
        return abs(value - reference) <= RTOL * abs(reference)

    value, _, products = power_iteration(
        op, tol=0.0, max_iter=MAX_POWER_STEPS, callback=close_enough
    )
    return products, abs(value - reference) / abs(reference)


def run_case(name: str) -> dict:
    op, d, loss = trained_operator(name)
    top = top_eigenvalues(op, 2, tol=0.0)  # ARPACK to machine precision: the reference
    reference, second = float(top[0]), float(top[1])
    n_lanczos, err_lanczos, tol = lanczos_products(op, reference)
    n_power, err_power = power_products(op, reference)
    ratio = n_lanczos / n_power
    print(
        f"[{name}] d = {d}, train loss {loss:.2e}, lambda_max = {reference:.8g} "
        f"(2/lr = {2 / CASES[name][2]:g}), lambda_2 / lambda_max = {second / reference:.4f}"
    )
    print(
        f"[{name}] Lanczos {n_lanczos} HVPs (eigsh tol {tol:g}), power iteration "
        f"{n_power} HVPs: ratio {ratio:.3f}"
    )
    return {
        "parameters": d,
        "train_loss": loss,
        "lambda_max": reference,
        "lambda_2_over_lambda_max": second / reference,
        "hvps_lanczos": n_lanczos,
        "lanczos_eigsh_tol": tol,
        "lanczos_relative_error": err_lanczos,
        "hvps_power_iteration": n_power,
        "power_relative_error": err_power,
        "power_iteration_capped": err_power > RTOL,
        "ratio": ratio,
    }


def main() -> int:
    torch.set_num_threads(1)
    results = {name: run_case(name) for name in CASES}
    ratio = results["gd-edge-of-stability"]["ratio"]
    print(f"ratio at the edge of stability {ratio:.3f} (target <= {TARGET:.3f})")
    path = write_result(
        "sharpness",
        {"relative_tolerance": RTOL, "target": TARGET, "target_case": "gd-edge-of-stability",
         **results},
    )
    print(f"wrote {path}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
