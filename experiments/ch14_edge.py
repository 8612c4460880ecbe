"""ch14: where SGD ends relative to its edge of mean-square stability, eta / eta*(B).

The grid eta x B x seed, each run with and without Mulayoff and Michaeli's Sec. 4
procedure ("mm": the initial point of one shared seed, init_seed = 0, times init_scale,
and a linear learning-rate warm-up over warmup_steps; "plain": torch's default
initialisation of the run's own seed, no warm-up). Every run trains to loss <= tol or the
step budget and measures the point it reached: sharpness, exact generalized sharpness
2/eta*(B), MM's bounds (15), (16) and (for B = 2) the rank-one bound. Diverged runs are
kept (diverged = True).
"""

from __future__ import annotations

from experiments.common import LOSS, compact, model_args, seeds, sizes, step_cap

VERSION = 1

#: MM's procedure; their factor and warm-up length are not in our copy of the paper.
PROCEDURES = {
    "mm": {"init_scale": 2.0, "warmup_steps": 2000, "shared_init": True},
    "plain": {"init_scale": 1.0, "warmup_steps": 0, "shared_init": False},
}


def _config(scale: str) -> dict:
    base = {**sizes(scale), "loss": LOSS, "seeds": seeds(scale), "procedures": PROCEDURES,
            "tol": 1e-6, "rank_one_batch_sizes": [2]}
    if scale == "book":
        return {**base, "lrs": [0.05, 0.1, 0.2], "batch_sizes": [2, 5, 10, base["n"]],
                "steps": 12_000}
    return {**base, "lrs": [0.05, 0.1, 0.2], "batch_sizes": [2, 5, 10, base["n"]],
            "steps": 50_000}


CONFIG = {scale: _config(scale) for scale in ("book", "paper")}


def grid(scale: str) -> list[dict]:
    c = CONFIG[scale]
    points = []
    for procedure, settings in c["procedures"].items():
        for lr in c["lrs"]:
            for b in c["batch_sizes"]:
                for seed in c["seeds"]:
                    points.append({
                        **model_args(c), "loss": c["loss"], "procedure": procedure,
                        "lr": lr, "batch_size": b, "seed": seed,
                        "init_seed": 0 if settings["shared_init"] else seed,
                        "init_scale": settings["init_scale"],
                        "warmup_steps": settings["warmup_steps"],
                        "steps": c["steps"], "tol": c["tol"],
                        "rank_one": b in c["rank_one_batch_sizes"],
                    })
    return points


def run_point(*, procedure, **kwargs) -> dict:
    from companion.nets.minima import train_minimum

    kwargs["steps"] = step_cap(kwargs["steps"])
    return {"procedure": procedure, **compact(train_minimum(**kwargs))}
