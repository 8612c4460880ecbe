"""ch13: Ma and Ying's Figure 1b with a convolutional network (``SmallCNN``).

One point = (eta, B, seed): a small VGG-like network (3x3 convolutions with ReLU and max
pooling, then a linear layer) trained with SGD on the book's default data (the sizes of
``companion.sweeps.scale``) and the book's loss, from initialisation ``seed``, until the
training loss is at most ``tol`` or the step budget is spent; then
``companion.nets.minima.minimum_statistics`` at the point reached: sharpness,
non-uniformity, eta*(B), g_W and g_x (Ma and Ying eq. (5); for a convolution the
first layer's "W_1" is the convolution's matrix). Like Ma and Ying's Figure 1 the grid
varies the learning rate at a fixed batch size and the batch size at a fixed learning rate.

Cost (measured, book scale, 2 shared cores under nice): see the chapter (about 10-30 s a
run).
"""

from __future__ import annotations

from experiments.common import LOSS, seeds, sizes, step_cap

VERSION = 1


def _config(scale: str) -> dict:
    s = sizes(scale)
    shape = {"digits": [1, 8, 8], "fashion-mnist": [1, 28, 28], "mnist": [1, 28, 28],
             "cifar10": [3, 32, 32]}[s["dataset"]]
    return {
        "dataset": s["dataset"], "classes": s["classes"], "n_per_class": s["n_per_class"],
        "n": s["n"], "in_shape": shape, "channels": [8, 16], "loss": LOSS,
        "seeds": seeds(scale), "lr_axis": [0.02, 0.05, 0.1], "lr_axis_batch": 20,
        "batch_axis": [2, 20, s["n"]], "batch_axis_lr": 0.05,
        "steps": 10_000 if scale == "book" else 50_000, "tol": 1e-6,
    }


CONFIG = {scale: _config(scale) for scale in ("book", "paper")}


def grid(scale: str) -> list[dict]:
    """The learning-rate axis at B = lr_axis_batch and the batch axis at lr = batch_axis_lr."""
    c = CONFIG[scale]
    pairs = [(lr, c["lr_axis_batch"]) for lr in c["lr_axis"]]
    pairs += [(c["batch_axis_lr"], b) for b in c["batch_axis"]]
    pairs = sorted(set(pairs))
    return [{"scale": scale, "lr": lr, "batch_size": b, "seed": s}
            for lr, b in pairs for s in c["seeds"]]



def train_point(scale: str, lr: float, batch_size: int, seed: int):
    """Build and train the CNN of one point: ``(model, data, loss, history)``."""
    from companion.nets.data import load
    from companion.nets.losses import as_output_loss
    from companion.nets.models import make_model
    from companion.nets.training import train

    c = CONFIG[scale]
    loss = as_output_loss(c["loss"])
    data = load(c["dataset"], classes=c["classes"], n_per_class=c["n_per_class"], seed=0)
    model = make_model("cnn", seed=seed, in_shape=tuple(c["in_shape"]),
                       channels=tuple(c["channels"]), out_dim=data.out_dim)
    hist = train(model, data, lr=lr, batch_size=batch_size, loss=loss,
                 steps=step_cap(c["steps"]), tol=c["tol"], seed=seed, record_every=50,
                 progress=False)
    return model, data, loss, hist


def run_point(scale: str, lr: float, batch_size: int, seed: int) -> dict:
    """Train one CNN and measure the point it reached."""
    from companion.nets.minima import minimum_statistics

    model, data, loss, hist = train_point(scale, lr, batch_size, seed)
    out = {"diverged": bool(hist.diverged), "interpolated": bool(hist.interpolated),
           "final_loss": hist.final_loss, "steps_taken": int(hist.steps_taken)}
    if not hist.diverged:
        out.update(minimum_statistics(model, data, batch_size, loss=loss))
    return out
