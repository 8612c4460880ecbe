"""ch12: gradient descent at the edge of stability, over a 40x range of learning rates.

Full-batch GD (B = n) from the book scale's initialisations, one run per (eta, seed), each
to convergence (training loss <= tol) within a step budget proportional to 1/eta, with
the loss-Hessian sharpness recorded along the way (Cohen et al.'s figure) and at the end
(Wu-Ma-E's table: sharpness against 2/eta).
"""

from __future__ import annotations

import math

from experiments.common import LOSS, compact, model_args, seeds, sizes, step_cap

VERSION = 1


def _config(scale: str) -> dict:
    base = {**sizes(scale), "loss": LOSS, "seeds": seeds(scale), "tol": 1e-5,
            "sharpness_points": 30}
    if scale == "book":
        # budget: 600/eta steps (loss 1e-5 is reached after about 400/eta at this size)
        return {**base, "lrs": [0.02, 0.04, 0.1, 0.2, 0.4, 0.8], "step_constant": 600,
                "min_steps": 8000}
    return {**base, "lrs": [0.01, 0.05, 0.1, 0.5, 1.0], "step_constant": 2000,
            "min_steps": 20_000}


CONFIG = {scale: _config(scale) for scale in ("book", "paper")}


def grid(scale: str) -> list[dict]:
    c = CONFIG[scale]
    points = []
    for lr in c["lrs"]:
        steps = max(c["min_steps"], math.ceil(c["step_constant"] / lr))
        for seed in c["seeds"]:
            points.append({**model_args(c), "n": c["n"], "loss": c["loss"], "lr": lr,
                           "seed": seed, "steps": steps, "tol": c["tol"],
                           "sharpness_every": max(1, steps // c["sharpness_points"])})
    return points


def run_point(*, lr, seed, n, steps, tol, sharpness_every, loss, **model) -> dict:
    from companion.nets.minima import train_minimum

    result = train_minimum(lr, n, seed, loss=loss, steps=step_cap(steps), tol=tol,
                           sharpness_every=sharpness_every, **model)
    return compact(result)
