"""ch13: Ma and Ying's Table 1, the norm ||W_1||_2 of the first layer over a long training.

One point = one seed: the book's default MLP and data (``companion.sweeps.scale``) trained
with SGD at Ma and Ying's Figure 1a batch size B = 20 and eta = 0.1 for 50,000 steps
*without* stopping at a small loss (their Table 1 reports iterations 0 to 50,000), from
initialisation ``seed``. Recorded every 100 steps: ||W_1||_2 and the training loss; at the
end, the statistics of the point (``minimum_statistics``: eta*(B), sharpness, g_W, g_x).

Cost (measured, book scale, 2 shared cores under nice): about 40-90 s a run, 5 runs.
"""

from __future__ import annotations

from experiments.common import LOSS, model_args, seeds, sizes, step_cap

VERSION = 1


def _config(scale: str) -> dict:
    return {**sizes(scale), "loss": LOSS, "seeds": seeds(scale), "lr": 0.1,
            "batch_size": 20, "steps": 50_000, "record_every": 100,
            "checkpoints": [0, 100, 1000, 10_000, 20_000, 50_000]}


CONFIG = {scale: _config(scale) for scale in ("book", "paper")}


def grid(scale: str) -> list[dict]:
    """One point per seed."""
    return [{"scale": scale, "seed": s} for s in CONFIG[scale]["seeds"]]



def run_point(scale: str, seed: int) -> dict:
    """Train for the whole budget (tol = 0) and keep the recorded histories."""
    from companion.nets.minima import train_minimum

    c = CONFIG[scale]
    r = train_minimum(lr=c["lr"], batch_size=c["batch_size"], seed=seed, loss=c["loss"],
                      **model_args(c), activation="tanh", steps=step_cap(c["steps"]),
                      tol=0.0, record_every=step_cap(c["record_every"]))
    keep = ("diverged", "steps_taken", "final_loss", "ms_threshold", "sharpness",
            "non_uniformity", "g_W", "g_x", "first_layer_norm")
    out = {k: r[k] for k in keep if k in r}
    out["steps"] = r["norm_steps"]
    out["norm"] = r["norm_history"]
    out["loss"] = r["loss_history"]
    return out
