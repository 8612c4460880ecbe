"""Shared settings of the experiments: the problem sizes of a scale, as JSON values."""

from __future__ import annotations

from companion.sweeps import scale as _scale

#: The book's training loss, by name (a JSON value): (1/2n) sum_i (f(x_i) - y_i)^2.
LOSS = "half_squared_error"


def sizes(scale_name: str) -> dict:
    """The sizes of ``companion.sweeps.scale(scale_name)`` (dataset, classes, n_per_class,
    widths), JSON values, for ``companion.nets.minima.train_minimum``; plus ``n``."""
    s = _scale(scale_name)
    out = s.as_dict()
    del out["steps"]  # every experiment sets its own step budget
    out["n"] = s.n
    return out


def seeds(scale_name: str) -> list[int]:
    """The seeds of a scale (at least 5)."""
    return list(_scale(scale_name).seeds)


def model_args(config: dict) -> dict:
    """The ``train_minimum`` keyword arguments describing data and model in a CONFIG entry."""
    keys = ("dataset", "classes", "n_per_class", "widths")
    return {k: config[k] for k in keys}


def thin(steps: list, values: list, points: int = 60) -> tuple[list, list]:
    """At most about ``points`` entries of a recorded history, always keeping the last."""
    if len(steps) <= points:
        return list(steps), list(values)
    stride = -(-len(steps) // points)
    keep = list(range(0, len(steps), stride))
    if keep[-1] != len(steps) - 1:
        keep.append(len(steps) - 1)
    return [steps[i] for i in keep], [values[i] for i in keep]


def compact(result: dict, points: int = 60) -> dict:
    """A ``train_minimum`` result with its recorded histories thinned to ``points`` entries
    (the loss and the norm of W1 are recorded every 10 steps: too much to store)."""
    out = dict(result)
    steps = out.pop("norm_steps")
    out["history_steps"], out["loss_history"] = thin(steps, out.pop("loss_history"), points)
    out["norm_history"] = thin(steps, out.pop("norm_history"), points)[1]
    return out


def step_cap(steps: int) -> int:
    """``COMPANION_MAX_STEPS`` caps step budgets (the paper-scale smoke test only; applied
    inside ``run_point``, so the grid and its configuration hash do not change)."""
    import os

    cap = os.environ.get("COMPANION_MAX_STEPS")
    return min(int(steps), int(cap)) if cap else int(steps)
