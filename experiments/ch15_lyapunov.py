"""ch15: typical (Lyapunov) against mean-square growth of linearised SGD at trained networks.

One point = one seed: train ch15's network (digits 3 against 8, two hidden layers of 32,
SGD eta = 0.3, B = 5, to a training loss of 1e-8) from initialisation ``seed``, build its
curvature under the book's loss, and for every batch size and every ratio eta/eta*(B) of
the grid estimate the top Lyapunov exponent of linearised SGD and its mean-square growth
rate (``companion.nets.probes.sgd_growth_rates``). A second part of the point runs the
*nonlinear* SGD from the trained minimum at two learning rates on either side of
eta*(B_verdict) (the verdict test of ch15), with several seeds of the batch sampling.

Cost (measured, book scale, 2 shared cores under nice): training 3-5 s, curvature 2-3 s,
growth rates 1-3 s per (B, ratio) (the Lanczos iteration for rho(Q) dominates just below
eta*), verdict runs ~0.5 s each: the 5 points took 269 s on a loaded machine.
"""

from __future__ import annotations

from experiments.common import step_cap

VERSION = 1

_COMMON = {
    "loss": "half_squared_error",
    "train_lr": 0.3,
    "train_batch_size": 5,
    "tol": 1e-8,
    "batch_sizes": [1, 5],
    "ratios": [0.9, 0.95, 1.0, 1.025, 1.05, 1.1, 1.2, 1.3],
    "lyapunov_steps": 2000,
    "lyapunov_burn_in": 200,
    "trajectories": 100,
    "verdict_batch_size": 5,
    "verdict_ratios": [0.9, 1.1],
    "verdict_seeds": 8,
    "verdict_steps": 400,
}

CONFIG = {
    "book": {
        **_COMMON,
        "dataset": "digits",
        "classes": [3, 8],
        "n_per_class": 25,
        "widths": [32, 32],
        "steps": 8000,
        "analysis_n": 50,
        "seeds": [0, 1, 2, 3, 4],
    },
    # the papers' order of magnitude: FashionMNIST-shaped data, two wide layers; the growth
    # rates are those of SGD on a 100-sample subset (the r^2 operator of all 1000 samples
    # is out of reach), which the chapter states
    "paper": {
        **_COMMON,
        "dataset": "fashion-mnist",
        "classes": [0, 1],
        "n_per_class": 500,
        "widths": [500, 500],
        "steps": 100_000,
        "analysis_n": 100,
        "seeds": [0, 1, 2, 3, 4],
    },
}


def grid(scale_name: str) -> list[dict]:
    """One point per seed."""
    return [{"scale": scale_name, "seed": s} for s in CONFIG[scale_name]["seeds"]]



def run_point(scale: str, seed: int) -> dict:
    """Train one minimum, then growth rates and the verdict runs (module docstring)."""
    from companion.nets.curvature import model_curvature
    from companion.nets.data import load
    from companion.nets.losses import as_output_loss
    from companion.nets.models import make_model
    from companion.nets.probes import sgd_growth_rates
    from companion.nets.training import train

    cfg = CONFIG[scale]
    loss = as_output_loss(cfg["loss"])
    data = load(cfg["dataset"], classes=cfg["classes"], n_per_class=cfg["n_per_class"], seed=0)
    model = make_model("mlp", seed=seed, in_dim=data.in_dim, widths=tuple(cfg["widths"]))
    hist = train(model, data, lr=cfg["train_lr"], batch_size=cfg["train_batch_size"],
                 loss=loss, steps=step_cap(cfg["steps"]), tol=cfg["tol"], seed=seed,
                 progress=False)
    out = {"interpolated": bool(hist.interpolated), "diverged": bool(hist.diverged),
           "final_loss": hist.final_loss, "steps_taken": int(hist.steps_taken)}
    if hist.diverged:
        return out
    sub = data if cfg["analysis_n"] >= data.n else data.subset(cfg["analysis_n"], seed=seed)
    curv = model_curvature(model, sub, loss=loss)
    out["sharpness"] = curv.sharpness
    out["rank"] = curv.rank
    rates = []
    for b in cfg["batch_sizes"]:
        eta_star = curv.ms_threshold(b)
        for ratio in cfg["ratios"]:
            g = sgd_growth_rates(curv, ratio * eta_star, b, steps=cfg["lyapunov_steps"],
                                 n_trajectories=cfg["trajectories"],
                                 burn_in=cfg["lyapunov_burn_in"], seed=seed)
            rates.append({"batch_size": b, "ratio": ratio, "eta_star": eta_star,
                          "lyapunov": g.lyapunov, "lyapunov_stderr": g.lyapunov_stderr,
                          "ms_rate": g.ms_rate})
    out["rates"] = rates
    # the verdict test: nonlinear SGD from the minimum, on the analysed samples
    b = cfg["verdict_batch_size"]
    eta_star = curv.ms_threshold(b)
    runs = verdict_runs(model, sub, scale, eta_star)
    out["verdict_eta_star"] = eta_star
    out["verdict"] = [summarise(ratio, s, h) for (ratio, s), h in runs.items()]
    return out


def verdict_runs(model, data, scale: str, eta_star: float) -> dict:
    """SGD from the model's current parameters at ``verdict_ratios`` times ``eta_star``.

    ``verdict_seeds`` seeds of the batch sampling each, ``verdict_steps`` steps, the loss
    recorded at every step; the model's parameters are restored afterwards. Returns
    ``{(ratio, seed): History}``.
    """
    from companion.nets.losses import as_output_loss
    from companion.nets.training import train

    cfg = CONFIG[scale]
    loss = as_output_loss(cfg["loss"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {}
    for ratio in cfg["verdict_ratios"]:
        for s in range(cfg["verdict_seeds"]):
            model.load_state_dict(state)
            runs[ratio, s] = train(model, data, lr=ratio * eta_star,
                                   batch_size=cfg["verdict_batch_size"], loss=loss,
                                   steps=step_cap(cfg["verdict_steps"]), tol=0.0,
                                   seed=1000 + s, record_every=1, progress=False)
    model.load_state_dict(state)
    return runs


def summarise(ratio: float, seed: int, history) -> dict:
    """Peak and final level (median of the last 50 steps) of a verdict run's loss, both
    relative to the loss at step 0 (the minimum)."""
    import numpy as np

    losses = np.asarray(history.loss, dtype=float)
    start = losses[0]
    return {"ratio": ratio, "seed": seed, "diverged": bool(history.diverged),
            "peak": float(np.max(losses)) / start,
            "end": float(np.median(losses[-50:])) / start}
