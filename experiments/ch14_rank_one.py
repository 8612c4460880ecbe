"""ch14: is the worst second moment rank one at SGD's edge? (MM's reading of their Fig. 2)

For the minima of ch14_edge's "mm" runs with small batches (retrained from the same
seeds), the exact generalized sharpness, its top eigenvector X* (the worst second moment,
companion.nets.minima.second_moment_maximiser), how much of X* is rank one, and the lower
bounds: the rank-one bound by gradient ascent (as in ch14_edge, 8 restarts, and with 32),
the Rayleigh quotient at X*'s top eigenvector, and MM's bounds (15) and (16).
"""

from __future__ import annotations

from experiments.ch14_edge import CONFIG as EDGE
from experiments.common import model_args, step_cap

VERSION = 1


def _config(scale: str) -> dict:
    edge = EDGE[scale]
    keys = ("dataset", "classes", "n_per_class", "widths", "n", "loss", "seeds", "steps", "tol")
    return {**{k: edge[k] for k in keys}, "procedure": edge["procedures"]["mm"],
            "cases": [[0.05, 2], [0.1, 2], [0.1, 5]], "restarts": [8, 32]}


CONFIG = {scale: _config(scale) for scale in ("book", "paper")}


def grid(scale: str) -> list[dict]:
    c = CONFIG[scale]
    mm = c["procedure"]
    return [{**model_args(c), "loss": c["loss"], "lr": lr, "batch_size": b, "seed": s,
             "init_scale": mm["init_scale"], "warmup_steps": mm["warmup_steps"],
             "steps": c["steps"], "tol": c["tol"], "restarts": c["restarts"]}
            for lr, b in c["cases"] for s in c["seeds"]]


def run_point(*, lr, batch_size, seed, init_scale, warmup_steps, steps, tol, restarts, loss,
              dataset, classes, n_per_class, widths) -> dict:
    from companion.nets.curvature import model_curvature
    from companion.nets.data import load
    from companion.nets.minima import second_moment_maximiser
    from companion.nets.models import make_model
    from companion.nets.training import scale_parameters, train

    data = load(dataset, classes=classes, n_per_class=n_per_class)
    model = make_model("mlp", seed=0, in_dim=data.in_dim, widths=tuple(widths))
    scale_parameters(model, init_scale)  # ch14_edge's "mm" runs: init_seed 0, shared
    h = train(model, data, lr=lr, batch_size=batch_size, loss=loss, steps=step_cap(steps),
              tol=tol, warmup_steps=warmup_steps, seed=seed, progress=False)
    out = {"final_loss": h.final_loss, "diverged": bool(h.diverged),
           "steps_taken": int(h.steps_taken)}
    if h.diverged:
        return out
    curv = model_curvature(model, data, loss=loss)
    bounds = curv.necessary_bounds(batch_size)
    out.update(
        generalized_sharpness=curv.generalized_sharpness(batch_size),
        sharpness=curv.sharpness,
        bound_15=2 / float(bounds.top_eigenvector),
        bound_16=2 / float(bounds.trace),
        rank_one_ascent={str(k): float(curv.rank_one_bound(batch_size, restarts=k).value)
                         for k in restarts},
        maximiser=second_moment_maximiser(model, data, batch_size, loss=loss),
    )
    return out
