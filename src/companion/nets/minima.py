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

__all__ = [
    "curvature_along_training",
    "minimum_statistics",
    "second_moment_maximiser",
    "second_moment_maximiser_from_gram",
    "train_minimum",
]


def curvature_along_training(data, batch_size: int, replacement: bool = False, *, loss):
    r"""A ``monitor`` for :func:`companion.nets.training.train`: curvature at the current point.

    Returns ``monitor(model) -> dict`` with ``loss``, ``sharpness`` (of the generalized
    Gauss-Newton curvature :math:`H = \frac1n\sum_iJ_i^\top\Lambda_iJ_i`) and
    ``generalized_sharpness`` :math:`\lambda_{\max}(C^\dagger D)` for ``batch_size``
    (:cite:p:`mulayoff2024exact` Thm 3) built from the same per-sample curvatures. At an
    interpolating minimum of the square loss these are the loss Hessian's quantities; away
    from one they describe the linearised model (the residual term of the Hessian is left
    out), which is what "the generalized sharpness along training" can mean.
    """
    from .curvature import model_curvature, model_point

    def monitor(model) -> dict:
        point = model_point(model, data, loss=loss)
        curv = model_curvature(point.model, None, loss=point.loss, point=point)
        return {
            "loss": point.loss_value(),
            "sharpness": curv.sharpness,
            "generalized_sharpness": curv.generalized_sharpness(batch_size, replacement),
        }

    return monitor



def second_moment_maximiser_from_gram(
    gram, batch_size: int, replacement: bool = False, *, tol: float = 1e-10
) -> dict:
    r"""The top eigenpair of :math:`C^\dagger D` for rank-one per-sample Hessians, and how
    close the maximiser is to rank one.

    For per-sample Hessians :math:`H_i = a_ia_i^\top` (one output, the square loss) with
    Gram matrix :math:`G_{ij} = a_i^\top a_j` and :math:`H = \frac1n\sum_iH_i`, write
    :math:`G = VSV^\top` (nonzero part, rank :math:`r`). In the eigenbasis of :math:`H`
    (eigenvalues :math:`\lambda = s/n`) the samples are the rows :math:`u_i` of
    :math:`VS^{1/2}` and, on symmetric :math:`r\times r` matrices :math:`X`,

    .. math::

        \mathcal C(X) = \tfrac12(\Lambda X + X\Lambda), \qquad
        \mathcal D(X) = (1-p)\,\Lambda X\Lambda + \frac pn\sum_i (u_i^\top Xu_i)\,
        u_iu_i^\top

    (:cite:p:`mulayoff2024exact` Thm 3: :math:`C`, :math:`D` restricted to
    :math:`\mathrm{range}(H)`; :math:`p` the batch-noise factor). The top eigenvector
    :math:`X^*` of :math:`\mathcal C^{-1}\mathcal D` (Lanczos on
    :math:`\mathcal C^{-1/2}\mathcal D\mathcal C^{-1/2}`, :math:`O(nr^2)` per product) is
    the worst second moment; Mulayoff and Michaeli read their Figure 2 as saying it is rank
    one for small batches. With :math:`X^*` normalised and :math:`\xi_1` its eigenvalue of
    largest modulus, ``rank_one_share`` :math:`=\xi_1^2/\|X^*\|_F^2` is 1 exactly when
    :math:`X^*` is rank one, and ``rank_one_value`` is the Rayleigh quotient at
    :math:`vv^\top`, :math:`v` the eigenvector of :math:`\xi_1` (a rank-one lower bound on
    the generalized sharpness, MM eq. (24), attained when :math:`X^*` is rank one).

    Parameters
    ----------
    gram : array_like, shape (n, n)
        :math:`G`, symmetric PSD.
    batch_size : int
    replacement : bool
    tol : float
        Eigenvalues of :math:`G` at most ``tol`` times the largest are dropped.

    Returns
    -------
    dict
        ``generalized_sharpness`` (batch-mean units), ``rank_one_share``,
        ``rank_one_value``, ``effective_rank`` :math:`\|X^*\|_*^2/\|X^*\|_F^2`,
        ``rank`` :math:`r`, ``noise_factor`` :math:`p`.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.nets.minima import second_moment_maximiser_from_gram
    >>> a = np.diag([3.0, 1.0, 1.0])  # three samples along three axes: commuting H_i
    >>> out = second_moment_maximiser_from_gram(a @ a.T, 1)
    >>> round(out["rank_one_share"], 12), round(out["rank_one_value"], 9)
    (1.0, 9.0)
    """
    import numpy as np
    import scipy.sparse.linalg as spla

    from ..stability.sampling import batch_noise_factor

    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be a square (n, n) matrix, got shape {g.shape}")
    if not np.allclose(g, g.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(g).max())):
        raise ValueError("gram must be symmetric")
    n = g.shape[0]
    batch_size = check_batch_size(batch_size, n, replacement)
    p = batch_noise_factor(n, batch_size, replacement)
    s, v = np.linalg.eigh(0.5 * (g + g.T))
    keep = s > tol * max(s[-1], 0.0)
    if not keep.any():
        raise ValueError("gram is zero: no curvature")
    s, v = s[keep], v[:, keep]
    r = s.size
    lam = s / n
    u = v * np.sqrt(s)  # (n, r): row i is a_i in the eigenbasis of H
    c_diag = 0.5 * (lam[:, None] + lam[None, :])
    inv_sqrt_c = 1.0 / np.sqrt(c_diag)

    def d_op(x: np.ndarray) -> np.ndarray:
        forms = np.einsum("ia,ab,ib->i", u, x, u, optimize=True)
        return (1.0 - p) * (lam[:, None] * x * lam[None, :]) + (p / n) * (u.T * forms) @ u

    def apply(vec: np.ndarray) -> np.ndarray:
        x = inv_sqrt_c * vec.reshape(r, r)
        return (inv_sqrt_c * d_op(x)).reshape(-1)

    op = spla.LinearOperator((r * r, r * r), matvec=apply, dtype=np.float64)
    start = (np.eye(r)[-1][:, None] * np.eye(r)[-1][None, :] + 1e-3) / inv_sqrt_c
    if r * r <= 400:
        mat = np.column_stack([apply(col) for col in np.eye(r * r)])
        vals, vecs = np.linalg.eigh(0.5 * (mat + mat.T))
        value, y = vals[-1], vecs[:, -1]
    else:
        vals, vecs = spla.eigsh(op, k=1, which="LA", v0=start.reshape(-1), tol=1e-12)
        value, y = vals[0], vecs[:, 0]
    x = inv_sqrt_c * y.reshape(r, r)
    x = 0.5 * (x + x.T)
    xi, w = np.linalg.eigh(x)
    top = int(np.argmax(np.abs(xi)))
    vec = w[:, top]
    h = float(vec @ (lam * vec))
    forms = (u @ vec) ** 2
    rank_one_value = ((1.0 - p) * h**2 + (p / n) * float(forms @ forms)) / h
    return {
        "generalized_sharpness": float(value),
        "rank_one_share": float(xi[top] ** 2 / np.sum(xi**2)),
        "rank_one_value": float(rank_one_value),
        "effective_rank": float(np.sum(np.abs(xi)) ** 2 / np.sum(xi**2)),
        "rank": int(r),
        "noise_factor": float(p),
    }


def second_moment_maximiser(
    model, data, batch_size: int, replacement: bool = False, *, loss
) -> dict:
    r""":func:`second_moment_maximiser_from_gram` for a model with one output at its
    current parameters, under ``loss`` (mean reduction).

    The Gram matrix is that of the weighted per-sample Jacobians :math:`S_iJ_i`
    (:func:`companion.nets.jacobians.gram_matrix` with the loss), so that
    :math:`H_i = J_i^\top\Lambda_iJ_i`, the Gauss-Newton part of the per-sample Hessians
    (the Hessians themselves at an interpolating minimum of the square loss).
    """
    from .curvature import model_point
    from .jacobians import gram_matrix

    point = model_point(model, data, loss=loss)
    if point.num_outputs != 1:
        raise ValueError(
            f"second_moment_maximiser needs a model with one output, got {point.num_outputs}"
        )
    if point.loss.reduction != "mean":
        raise ValueError(f"loss must have reduction='mean', got {point.loss.reduction!r}")
    gram = gram_matrix(point.model, point.X, loss=point.loss, targets=point.targets)
    return second_moment_maximiser_from_gram(gram, batch_size, replacement)


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
    init_scale: float = 1.0,
    warmup_steps: int = 0,
    sharpness_every: int | None = None,
    track_every: int | None = None,
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
    init_scale, warmup_steps
        Mulayoff and Michaeli's procedure (:cite:p:`mulayoff2024exact` Sec. 4): the
        initial point (torch's default initialisation of ``init_seed``) is multiplied by
        ``init_scale`` (:func:`companion.nets.training.scale_parameters`) and the learning
        rate rises linearly from :math:`\eta/T_w` to :math:`\eta` over ``warmup_steps``
        steps; with a fixed ``init_seed`` every run starts from the same point. Their
        factor and warm-up length are not in our copy of the paper. Defaults: neither.
    sharpness_every : int, optional
        Record the loss-Hessian sharpness every this many steps
        (``sharpness_steps``, ``sharpness_history``; :func:`~companion.nets.training.train`)
        and at the end (``hessian_sharpness``, unless the run diverged).
    track_every : int, optional
        Record :func:`curvature_along_training` every this many steps (``track_steps``,
        ``track``: Gauss-Newton sharpness and generalized sharpness for ``batch_size``).
    device : str, optional
        Where to train and measure (``"cuda"``, ``"cuda:1"``, ...; default the CPU). The model
        is initialised on the CPU from its seed and then moved, so every device starts from
        the same point; only scalars come back.

    Returns
    -------
    dict
        ``lr``, ``batch_size``, ``seed``, ``n``, ``d``, ``interpolated``, ``diverged``,
        ``steps_taken``, ``final_loss``, ``norm_steps``, ``norm_history`` and
        ``loss_history`` (the recorded :math:`\|W_1\|_2` and training loss), and, unless
        the run diverged, every entry of
        :func:`minimum_statistics` for ``batch_size``.
    """
    import torch

    from .data import load
    from .models import make_model, num_parameters
    from .training import scale_parameters, train

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
    if init_scale != 1.0:
        scale_parameters(model, init_scale)
    if device is not None:
        model = model.to(check_float64_device(device))
    monitor = None
    if track_every is not None:
        monitor = curvature_along_training(data, batch_size, replacement, loss=loss)
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
            warmup_steps=warmup_steps,
            sharpness_every=sharpness_every,
            monitor=monitor,
            monitor_every=track_every,
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
            "loss_history": [],
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
        "loss_history": history.loss.tolist(),
    }
    if sharpness_every is not None:
        out["sharpness_steps"] = history.sharpness_steps.tolist()
        out["sharpness_history"] = history.sharpness.tolist()
        if not history.diverged:
            from .curvature_ops import loss_hessian_operator, top_eigenvalues

            op = loss_hessian_operator(model, data, loss=loss)
            out["hessian_sharpness"] = float(top_eigenvalues(op, 1, tol=1e-8)[0])
    if track_every is not None:
        out["track_steps"] = list(history.monitor_steps)
        out["track"] = list(history.monitor)
    if not history.diverged:
        out.update(
            minimum_statistics(
                model, data, batch_size, replacement, loss=loss, rank_one=rank_one
            )
        )
    return out
