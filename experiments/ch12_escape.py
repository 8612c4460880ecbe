"""ch12: SGD escapes from the minimum GD found, predicted by the exact threshold eta*(B).

Per seed: GD at eta_gd from the seed's initialisation to a loss <= tol; the exact
mean-square thresholds eta*(B) of that minimum (Gram space, MM Thm 3); then SGD with
batch size B from the minimum, once at eta_gd (above eta*(B)) and once at a fraction of
eta*(B) (below it), each for a fixed number of steps.
"""

from __future__ import annotations

from experiments.common import LOSS, model_args, seeds, sizes, step_cap

VERSION = 1


def _config(scale: str) -> dict:
    return {**sizes(scale), "loss": LOSS, "seeds": seeds(scale), "lr_gd": 0.4,
            "gd_steps": 20_000 if scale == "book" else 100_000, "gd_tol": 1e-6,
            "batch_sizes": [1, 2, 5, 10, 20, 50], "sgd_batch_size": 10,
            "below_fraction": 0.8, "sgd_steps": 300}


CONFIG = {scale: _config(scale) for scale in ("book", "paper")}


def grid(scale: str) -> list[dict]:
    c = CONFIG[scale]
    keys = ("loss", "n", "lr_gd", "gd_steps", "gd_tol", "batch_sizes", "sgd_batch_size",
            "below_fraction", "sgd_steps")
    return [{**model_args(c), **{k: c[k] for k in keys}, "seed": s} for s in c["seeds"]]


def run_point(*, seed, n, loss, lr_gd, gd_steps, gd_tol, batch_sizes, sgd_batch_size,
              below_fraction, sgd_steps, dataset, classes, n_per_class, widths) -> dict:
    from companion.nets.curvature import model_curvature
    from companion.nets.data import load
    from companion.nets.models import make_model
    from companion.nets.training import train

    data = load(dataset, classes=classes, n_per_class=n_per_class)
    model = make_model("mlp", seed=seed, in_dim=data.in_dim, widths=tuple(widths))
    gd = train(model, data, lr=lr_gd, batch_size=n, loss=loss, steps=step_cap(gd_steps),
               tol=gd_tol, progress=False)
    out = {"gd_interpolated": bool(gd.interpolated), "gd_diverged": bool(gd.diverged),
           "gd_steps_taken": int(gd.steps_taken), "gd_loss": gd.final_loss}
    if gd.diverged:
        return out
    curv = model_curvature(model, data, loss=loss)
    eta_star = {str(b): curv.ms_threshold(b) for b in batch_sizes}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    b = sgd_batch_size
    out.update(sharpness=curv.sharpness, eta_star=eta_star)
    for name, lr in (("above", lr_gd), ("below", below_fraction * curv.ms_threshold(b))):
        model.load_state_dict(state)
        h = train(model, data, lr=lr, batch_size=b, loss=loss, steps=step_cap(sgd_steps),
                  tol=0.0, seed=seed, record_every=1, progress=False)
        peak = int(h.loss.argmax())
        out[name] = {"lr": lr, "diverged": bool(h.diverged), "peak_loss": float(h.loss.max()),
                     "peak_step": int(h.steps[peak]), "final_loss": h.final_loss,
                     "loss_history": h.loss[:: max(1, len(h.loss) // 100)].tolist()}
    return out
