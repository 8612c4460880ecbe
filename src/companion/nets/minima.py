r"""One trained minimum: train a seeded network and measure where SGD stopped.

:func:`train_minimum` trains one network with SGD :math:`(\eta, B)` and returns the
statistics of the point it reached (:func:`minimum_statistics`): sharpness, non-uniformity,
the exact generalized sharpness and :math:`\eta^*(B)`, the bounds of MM Prop. 3,
first-layer gradients and the history of :math:`\|W_1\|_2`
(:cite:p:`wu2018sgd`, :cite:p:`ma2021linear`, :cite:p:`mulayoff2024exact`). It is a plain
module-level function of JSON values, for :func:`companion.sweeps.sweep`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..validation import check_batch_size, check_lr, check_positive_int
from .models import check_float64_device

__all__ = ["minimum_statistics", "train_minimum"]




def minimum_statistics(
    model, data, batch_size: int, replacement: bool = False, *, loss, rank_one: bool = False
) -> dict:
    r"""Linear-stability statistics of ``model`` at its current parameters on ``data``.

    One :func:`~companion.nets.curvature.model_curvature` (one Jacobian pass, one
    eigendecomposition) under ``loss``, then:

    * ``sharpness`` :math:`a = \lambda_{\max}(H)`, ``non_uniformity``
      :math:`s = \sqrt{\lambda_{\max}(\Sigma)}` (:cite:p:`wu2018sgd`), ``trace``
      :math:`\mathrm{Tr}\,H`;
    * ``generalized_sharpness`` :math:`\lambda_{\max}(C^\dagger D)` and ``ms_threshold``
      :math:`\eta^* = 2/\lambda_{\max}(C^\dagger D)` for ``batch_size``
      (:cite:p:`mulayoff2024exact` Thm 3), in the learning-rate units of ``loss``;
    * ``bound_top_eigenvector`` and ``bound_trace``: the upper bounds (15) and (16) on
      :math:`\eta^*` (MM Prop. 3), and ``rank_one`` the rank-one lower bound on the
      generalized sharpness when ``rank_one`` is set;
    * ``g_W`` and ``g_x`` (:math:`k = 1`, :cite:p:`ma2021linear` eq. (5)), ``first_layer_norm``
      :math:`\|W_1\|_2`;
    * ``loss``, the value of ``loss`` on all the data, and ``noise_factor`` :math:`p`.

    Returns a dict of floats (JSON values).
    """
    from .curvature import model_curvature, model_point
    from .jacobians import first_layer_gradients
    from .training import first_layer_norm

    point = model_point(model, data, loss=loss)
    batch_size = check_batch_size(batch_size, point.n, replacement)
    curv = model_curvature(point.model, None, loss=point.loss, point=point)
    bounds = curv.necessary_bounds(batch_size, replacement)
    gen = curv.generalized_sharpness(batch_size, replacement)
    grads = first_layer_gradients(point.model, point.X, k=1)
    out = {
        "loss": point.loss_value(),
        "noise_factor": curv.noise_factor(batch_size, replacement),
        "sharpness": curv.sharpness,
        "non_uniformity": curv.non_uniformity,
        "trace": curv.trace,
        "generalized_sharpness": gen,
        "ms_threshold": math.inf if gen <= 0 else 2.0 / gen,
        "bound_top_eigenvector": float(bounds.top_eigenvector),
        "bound_trace": float(bounds.trace),
        "g_W": grads.g_W,
        "g_x": grads.g_x,
        "first_layer_norm": first_layer_norm(point.model),
    }
    if rank_one:
        out["rank_one"] = float(curv.rank_one_bound(batch_size, replacement).value)
    return out


def train_minimum(
    lr: float,
    batch_size: int,
    seed: int = 0,
    *,
    loss,
    init_seed: int | None = None,
    dataset: str = "digits",
    classes: Sequence = (0, 1),
    n_per_class: int = 25,
    data_seed: int = 0,
    widths: Sequence[int] = (32,),
    activation: str = "tanh",
    steps: int = 3000,
    tol: float = 1e-7,
    replacement: bool = False,
    rank_one: bool = False,
    record_every: int = 10,
    device: str | None = None,
) -> dict:
    r"""Train a seeded MLP with SGD :math:`(\eta, B)` and measure the minimum it reaches.

    Loads ``dataset`` (two classes, targets :math:`\pm1`, float64), builds
    ``make_model("mlp", seed=init_seed)`` and runs :func:`companion.nets.training.train`
    (SGD on ``loss``, batches drawn independently at every step, stop once the loss is at
    most ``tol``). A module-level function of JSON values,
    for :func:`~companion.sweeps.sweep`.

    Parameters
    ----------
    lr, batch_size, seed
        :math:`\eta`, :math:`B` and the seed of the batch sampling (and of the
        initialisation unless ``init_seed`` is given). ``batch_size = n`` is GD.
    loss : torch loss module or str
        The training loss (:func:`companion.nets.losses.as_output_loss`), e.g.
        ``"half_squared_error"`` for the papers' :math:`\frac1{2n}\sum_i(f_i-y_i)^2`: a
        string keeps the function's arguments JSON values.
    init_seed : int, optional
        Seed of the initialisation (default ``seed``); fix it to start every run from the
        same point.
    dataset, classes, n_per_class, data_seed
        Passed to :func:`companion.nets.data.load`.
    widths, activation
        Of the :class:`companion.nets.models.MLP`.
    steps, tol, replacement, record_every
        Passed to :func:`companion.nets.training.train`.
    rank_one : bool
        Also compute the rank-one lower bound (see :func:`minimum_statistics`).
    device : str, optional
        Where to train and measure (``"cuda"``, ``"cuda:1"``, ...; default the CPU). The model
        is initialised on the CPU from its seed and then moved, so every device starts from
        the same point; only scalars come back.

    Returns
    -------
    dict
        ``lr``, ``batch_size``, ``seed``, ``n``, ``d``, ``interpolated``, ``diverged``,
        ``steps_taken``, ``final_loss``, ``norm_steps`` and ``norm_history`` (the recorded
        :math:`\|W_1\|_2`), and, unless the run diverged, every entry of
        :func:`minimum_statistics` for ``batch_size``.
    """
    import torch

    from .data import load
    from .models import make_model, num_parameters
    from .training import train

    lr = check_lr(lr)
    seed = check_positive_int(seed, "seed", minimum=0)
    init_seed = seed if init_seed is None else check_positive_int(init_seed, "init_seed", 0)
    data = load(dataset, classes=list(classes), n_per_class=n_per_class, seed=data_seed)
    model = make_model(
        "mlp",
        seed=init_seed,
        in_dim=data.in_dim,
        widths=tuple(widths),
        out_dim=data.out_dim,
        activation=activation,
    )
    if device is not None:
        model = model.to(check_float64_device(device))
    try:
        history = train(
            model,
            data,
            loss=loss,
            lr=lr,
            batch_size=batch_size,
            steps=steps,
            tol=tol,
            replacement=replacement,
            seed=seed,
            record_every=record_every,
            progress=False,
        )
    except torch.linalg.LinAlgError:
        # the weights overflowed to inf/NaN between two loss checks and the norm of W1
        # could not be computed: the run diverged
        return {
            "lr": lr,
            "batch_size": int(batch_size),
            "seed": seed,
            "n": data.n,
            "d": num_parameters(model),
            "interpolated": False,
            "diverged": True,
            "steps_taken": None,
            "final_loss": math.inf,
            "norm_steps": [],
            "norm_history": [],
        }
    out = {
        "lr": lr,
        "batch_size": int(batch_size),
        "seed": seed,
        "n": data.n,
        "d": num_parameters(model),
        "interpolated": bool(history.interpolated),
        "diverged": bool(history.diverged),
        "steps_taken": int(history.steps_taken),
        "final_loss": history.final_loss,
        "norm_steps": history.steps.tolist(),
        "norm_history": history.first_layer_norm.tolist(),
    }
    if not history.diverged:
        out.update(
            minimum_statistics(
                model, data, batch_size, replacement, loss=loss, rank_one=rank_one
            )
        )
    return out
