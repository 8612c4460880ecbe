"""Cross-entropy: does SGD reach the edge of mean-square stability of the local quadratic model?

One point = (learning rate, seed): a ten-class digits classifier (one hidden layer of 32,
tanh) trained with ``nn.CrossEntropyLoss()`` and integer labels, SGD with batch size B,
from initialisation ``seed``. At the checkpoints of the grid it records the training loss,
the training accuracy, the generalized Gauss-Newton sharpness and the generalized sharpness
``2/eta*(B)`` of the GGN curvature H_i = J_i^T Lambda_i J_i
(``companion.nets.minima.curvature_along_training``); at the end it runs
``companion.diagnose`` (which adds the loss-Hessian sharpness by Lanczos and grades the gap).

A classifier trained with cross-entropy has no minimum at finite weights: eta*(B) is the
threshold of SGD on the local quadratic model at the current point, not a statement about
convergence (caveat of ch15).

Cost (measured, book scale, 2 shared cores under nice): one curvature evaluation in the
n K = 500 Gram space takes 1-10 s (the Lanczos iteration of eta* dominates), seven per run:
5-30 s a point, 10 points; the whole grid ran in 45 s on a quiet machine.
"""

from __future__ import annotations

from experiments.common import step_cap

VERSION = 1

_COMMON = {
    "batch_size": 10,
    "lrs": [0.5, 2.0],
    "checkpoints": [0, 10, 20, 40, 100, 300, 1000],
    "width": 32,
    "seeds": [0, 1, 2, 3, 4],
}

CONFIG = {
    "book": {**_COMMON, "dataset": "digits", "n_per_class": 5},
    # FashionMNIST-shaped, ten classes, 5 per class: the Gram matrix is (nK)^2 = 500^2
    "paper": {**_COMMON, "dataset": "fashion-mnist", "n_per_class": 5},
}


def grid(scale_name: str) -> list[dict]:
    """(lr, seed) points."""
    cfg = CONFIG[scale_name]
    return [{"scale": scale_name, "lr": lr, "seed": s} for lr in cfg["lrs"] for s in cfg["seeds"]]



def setup(scale: str, seed: int):
    """The data ``(X, labels)``, the seeded classifier and the loss of a point."""
    from torch import nn

    from companion.nets.data import load
    from companion.nets.models import make_model

    cfg = CONFIG[scale]
    data = load(cfg["dataset"], n_per_class=cfg["n_per_class"], seed=0)  # all ten classes
    xy = (data.X_train, data.y_train.argmax(dim=1))
    model = make_model("mlp", seed=seed, in_dim=data.in_dim, widths=(cfg["width"],),
                       out_dim=data.out_dim)
    return xy, model, nn.CrossEntropyLoss()


def checkpoints(scale: str) -> list[int]:
    """The steps at which the curvature is recorded (capped in the smoke test)."""
    return sorted({step_cap(c) for c in CONFIG[scale]["checkpoints"]})


def advance(model, xy, loss, scale: str, lr: float, seed: int, done: int, stop: int):
    """Train from step ``done`` to step ``stop`` (seeded by ``seed`` and ``stop``, so that
    a re-run reproduces the record); returns the History, or None when there is nothing
    to do."""
    from companion.nets.training import train

    if stop <= done:
        return None
    return train(model, xy, lr=lr, batch_size=CONFIG[scale]["batch_size"], loss=loss,
                 steps=stop - done, tol=0.0, seed=1000 * seed + stop, progress=False)


def measure(model, xy, loss, scale: str, lr: float, step: int) -> dict:
    """Loss, accuracy, GGN sharpness, generalized sharpness and eta/eta*(B) at ``step``."""
    import torch

    from companion.nets.minima import curvature_along_training

    b = CONFIG[scale]["batch_size"]
    with torch.no_grad():
        accuracy = float((model(xy[0]).argmax(dim=1) == xy[1]).double().mean())
    rec = curvature_along_training(xy, b, loss=loss)(model)
    return {"step": step, "accuracy": accuracy, **rec,
            "edge_ratio": rec["generalized_sharpness"] * lr / 2}


def run_point(scale: str, lr: float, seed: int) -> dict:
    """Train with cross-entropy and record the GGN curvature at the checkpoints."""
    from companion.nets.diagnosis import diagnose

    xy, model, loss = setup(scale, seed)
    track, done, diverged = [], 0, False
    for stop in checkpoints(scale):
        hist = advance(model, xy, loss, scale, lr, seed, done, stop)
        done = stop
        if hist is not None and hist.diverged:
            diverged = True
            break
        track.append(measure(model, xy, loss, scale, lr, stop))
    out = {"n": int(xy[0].shape[0]), "K": 10, "diverged": diverged, "track": track}
    if not diverged:
        b = CONFIG[scale]["batch_size"]
        rep = diagnose(model, xy, lr=lr, batch_size=b, loss=loss)
        out["final"] = {"ratio": rep.ratio, "linearisation_gap": rep.linearisation_gap,
                        "hessian_sharpness": rep.hessian_sharpness,
                        "sharpness": rep.sharpness, "gradient_norm": rep.gradient_norm,
                        "ms_stable": bool(rep.ms_stable)}
    return out
