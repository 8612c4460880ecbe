"""ch14: the generalized sharpness 2/eta*(B) along SGD training, with MM's procedure.

Runs of ch14_edge's "mm" procedure at one learning rate and two batch sizes, recording
every track_every steps the Gauss-Newton sharpness and the generalized sharpness for the
run's own batch size (companion.nets.minima.curvature_along_training).
"""

from __future__ import annotations

from experiments.ch14_edge import CONFIG as EDGE
from experiments.common import compact, model_args, step_cap

VERSION = 1


def _config(scale: str) -> dict:
    edge = EDGE[scale]
    mm = edge["procedures"]["mm"]
    return {**{k: edge[k] for k in ("dataset", "classes", "n_per_class", "widths", "n",
                                    "loss", "seeds", "steps", "tol")},
            "procedure": mm, "lr": 0.1, "batch_sizes": [2, 10], "track_points": 16}


CONFIG = {scale: _config(scale) for scale in ("book", "paper")}


def grid(scale: str) -> list[dict]:
    c = CONFIG[scale]
    mm = c["procedure"]
    return [{**model_args(c), "loss": c["loss"], "lr": c["lr"], "batch_size": b, "seed": s,
             "init_seed": 0, "init_scale": mm["init_scale"],
             "warmup_steps": mm["warmup_steps"], "steps": c["steps"], "tol": c["tol"],
             "track_every": c["steps"] // c["track_points"]}
            for b in c["batch_sizes"] for s in c["seeds"]]


def run_point(**kwargs) -> dict:
    from companion.nets.minima import train_minimum

    kwargs["steps"] = step_cap(kwargs["steps"])
    return compact(train_minimum(**kwargs))
