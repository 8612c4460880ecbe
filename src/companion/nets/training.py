r"""Plain mini-batch SGD on the square loss, as analysed in the linear-stability papers.

The loss is :math:`L(\theta) = \frac{1}{2n}\sum_{i=1}^n\|f(x_i;\theta) - y_i\|^2` and one
step is

.. math::

    \theta_{t+1} = \theta_t - \frac{\eta_t}{B}\sum_{i\in\mathcal B_t}
    \nabla_\theta\, \tfrac12\|f(x_i;\theta_t) - y_i\|^2 ,

(:cite:p:`ma2021linear` eq. (7), :cite:p:`wu2018sgd`). The batches :math:`\mathcal B_t` are
drawn **independently at every step**: a uniform subset of size :math:`B` (default), or
:math:`B` i.i.d. indices (``replacement=True``). This is the sampling the theory assumes
(its batch-noise factor :math:`p` is :func:`companion.sampling.batch_noise_factor`); it is not the
usual "epochs of a shuffled permutation". ``B = n`` without replacement is gradient
descent. No momentum, no weight decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..progress import show_progress
from ..validation import check_batch_size, check_lr, check_positive_int, check_replacement
from .data import as_xy
from .models import check_output_shape, first_layer, trainable_parameters
from ..stability.sampling import sample_batches

__all__ = ["History", "fit_last_layer", "square_loss", "train"]

#: Environment variable forcing the progress bar on ("1") or off ("0").

_BATCH_BLOCK = 1024  # batches drawn per call of the sampler


@dataclass
class History:
    r"""What :func:`train` recorded.

    Attributes
    ----------
    steps : numpy.ndarray
        Step indices at which ``loss`` and ``first_layer_norm`` were recorded (0 is the
        initial point; the last entry is the final point).
    loss : numpy.ndarray
        Full training loss :math:`L = \frac1{2n}\sum_i\|f_i - y_i\|^2` at ``steps``.
    first_layer_norm : numpy.ndarray
        Spectral norm :math:`\|W_1\|_2` of the first-layer weight (reshaped to
        ``(out_channels, -1)`` for a convolution; NaN for models without one).
    sharpness_steps, sharpness : numpy.ndarray
        Steps and :math:`\lambda_{\max}(\nabla^2 L)` when ``sharpness_every`` is set.
    steps_taken : int
        Number of SGD steps performed.
    interpolated : bool
        Whether the training loss reached ``tol``.
    diverged : bool
        Whether the loss became NaN/inf or exceeded ``1e12`` times its initial value.
    """

    steps: np.ndarray
    loss: np.ndarray
    first_layer_norm: np.ndarray
    sharpness_steps: np.ndarray
    sharpness: np.ndarray
    steps_taken: int
    interpolated: bool
    diverged: bool
    lr: float
    batch_size: int
    replacement: bool
    seed: int
    tol: float
    settings: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Training loss at the end."""
        return float(self.loss[-1])

    def __repr__(self) -> str:
        state = "interpolated" if self.interpolated else "diverged" if self.diverged else "ran"
        return (
            f"History({state} after {self.steps_taken} steps, final loss "
            f"{self.final_loss:.3g}, lr={self.lr:g}, batch_size={self.batch_size}, "
            f"replacement={self.replacement})"
        )

    def plot(self, ax=None):
        """Training loss (log scale) against steps; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        ax.semilogy(self.steps, np.maximum(self.loss, 1e-300))
        ax.axhline(self.tol, color="0.6", ls=":", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"SGD, $\\eta$ = {self.lr:g}, B = {self.batch_size}")
        return ax


def square_loss(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`\frac{1}{2m}\sum_{i=1}^m\|f(x_i) - y_i\|^2` on the given samples (a tensor)."""
    return ((model(X) - y) ** 2).sum() / (2 * X.shape[0])



def _first_layer_norm(model: torch.nn.Module) -> float:
    try:
        weight = first_layer(model).weight.detach()
    except TypeError:
        return math.nan
    if not bool(torch.isfinite(weight).all()):
        return math.inf  # diverged weights: the caller sees a non-finite loss and stops
    return float(torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2))


def train(
    model: torch.nn.Module,
    data,
    lr: float,
    batch_size: int,
    steps: int = 10_000,
    tol: float = 1e-10,
    replacement: bool = False,
    warmup_steps: int = 0,
    seed: int = 0,
    record_every: int = 10,
    sharpness_every: int | None = None,
    progress: bool | None = None,
    num_threads: int | None = 1,
) -> History:
    r"""Train ``model`` in place with SGD on the square loss; stop at interpolation.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, ...)`` to ``(n, K)``; trained in its own dtype (use float64 for theory).
    data : Dataset or (X, y)
        Training data; targets ``(n, K)``.
    lr : float
        Learning rate :math:`\eta` (after warm-up).
    batch_size : int
        Batch size :math:`B`.
    steps : int
        Step budget.
    tol : float
        Stop once the full training loss is :math:`\le` ``tol`` (checked every
        ``record_every`` steps).
    replacement : bool
        Batches of ``B`` i.i.d. indices (True) or uniform subsets of size ``B`` (False).
    warmup_steps : int
        Linear warm-up :math:`\eta_t = \eta\min(1, (t+1)/T_w)`; 0 for none.
    seed : int
        Seed of the batch sampling (the model's initialisation is seeded by
        :func:`companion.models.make_model`). Same seed, same model, same data: identical
        history.
    record_every : int
        Record loss and :math:`\|W_1\|_2` every this many steps.
    sharpness_every : int or None
        Also record the sharpness every this many steps (Lanczos on the Hessian; costly).
    progress : bool or None
        tqdm progress bar; None: shown when stdout is a terminal, overridable with the
        environment variable ``COMPANION_PROGRESS=0/1`` (never in the built book).
    num_threads : int or None
        torch intra-op threads while training (restored afterwards). One thread is the
        fastest for the small networks of the book (thread start-up dominates tiny
        matrix products); None keeps the current setting.

    Returns
    -------
    History
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for _, p in trainable_parameters(model)]
    dtype = params[0].dtype
    X, y = as_xy(data, dtype)
    n = int(X.shape[0])
    lr = check_lr(lr)
    replacement = check_replacement(replacement)
    batch_size = check_batch_size(batch_size, n, replacement)
    steps = check_positive_int(steps, "steps", minimum=0)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    warmup_steps = check_positive_int(warmup_steps, "warmup_steps", minimum=0)
    seed = check_positive_int(seed, "seed", minimum=0)
    record_every = check_positive_int(record_every, "record_every")
    if sharpness_every is not None:
        sharpness_every = check_positive_int(sharpness_every, "sharpness_every")
    check_output_shape(model, X, y)

    if num_threads is not None:
        num_threads = check_positive_int(num_threads, "num_threads")
    rng = np.random.default_rng(seed)
    rec_steps, rec_loss, rec_norm, sh_steps, sh_vals = [], [], [], [], []
    interpolated = diverged = False
    initial_loss = None

    def record(t: int) -> float:
        with torch.no_grad():
            value = float(square_loss(model, X, y))
        rec_steps.append(t)
        rec_loss.append(value)
        rec_norm.append(_first_layer_norm(model))
        return value

    def record_sharpness(t: int) -> None:
        from .curvature_ops import loss_hessian_operator, top_eigenvalues

        op = loss_hessian_operator(model, (X, y))
        sh_steps.append(t)
        sh_vals.append(float(top_eigenvalues(op, 1, tol=1e-8)[0]))

    bar = None
    if show_progress(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="SGD", leave=False)

    t = 0
    batches = np.empty((0, batch_size), dtype=np.int64)
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        while True:
            if t % record_every == 0 or t == steps:
                value = record(t)
                initial_loss = value if initial_loss is None else initial_loss
                if bar is not None:
                    bar.set_postfix(loss=f"{value:.3g}")
                if not math.isfinite(value) or value > 1e12 * max(initial_loss, 1e-300):
                    diverged = True
                    break
                if value <= tol:
                    interpolated = True
                    break
            if sharpness_every is not None and t % sharpness_every == 0 and t < steps:
                record_sharpness(t)
            if t == steps:
                break
            if len(batches) == 0:
                block = min(_BATCH_BLOCK, steps - t)
                batches = sample_batches(rng, n, batch_size, block, replacement)
            idx = torch.as_tensor(batches[0])
            batches = batches[1:]
            lr_t = lr * min(1.0, (t + 1) / warmup_steps) if warmup_steps else lr
            grads = torch.autograd.grad(square_loss(model, X[idx], y[idx]), params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.sub_(lr_t * g)
            t += 1
            if bar is not None:
                bar.update(1)
    finally:
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
    if rec_steps[-1] != t:
        record(t)

    return History(
        steps=np.asarray(rec_steps),
        loss=np.asarray(rec_loss),
        first_layer_norm=np.asarray(rec_norm),
        sharpness_steps=np.asarray(sh_steps, dtype=np.int64),
        sharpness=np.asarray(sh_vals, dtype=np.float64),
        steps_taken=t,
        interpolated=interpolated,
        diverged=diverged,
        lr=lr,
        batch_size=batch_size,
        replacement=replacement,
        seed=seed,
        tol=float(tol),
        settings={"steps": steps, "warmup_steps": warmup_steps, "record_every": record_every},
    )


def fit_last_layer(model: torch.nn.Module, data) -> float:
    r"""Set the last linear layer of an :class:`~companion.models.MLP` or
    :class:`~companion.models.SmallCNN` to the minimum-norm least-squares fit of ``data``.

    With features :math:`\phi(x_i)` entering the last layer, solves
    :math:`\min\|[\Phi, 1]w - y\|` (bias included) in float64. When the last layer has at
    least as many inputs as there are samples (and :math:`[\Phi, 1]` has full row rank) the
    residual vanishes to rounding: a quick way to build an *interpolating minimum* of the
    square loss without training. Returns the resulting training loss
    :math:`\frac1{2n}\sum_i\|f_i - y_i\|^2`.
    """
    from .models import MLP, SmallCNN

    if not isinstance(model, MLP | SmallCNN):
        raise TypeError(
            f"fit_last_layer supports companion's MLP and SmallCNN, got {type(model).__name__}"
        )
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    last = layers[-1]
    dtype = last.weight.dtype
    X, y = as_xy(data, dtype)
    captured = {}

    def hook(module, inputs, output):
        captured["z"] = inputs[0].detach()

    handle = last.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(X)
    finally:
        handle.remove()
    scale = getattr(model, "output_scale", 1.0)
    feats = captured["z"].to(torch.float64).numpy()
    if last.bias is not None:
        feats = np.hstack([feats, np.ones((feats.shape[0], 1))])
    target = y.to(torch.float64).numpy() / scale
    coef = np.linalg.lstsq(feats, target, rcond=None)[0]  # (features[+1], K)
    with torch.no_grad():
        if last.bias is not None:
            last.bias.copy_(torch.as_tensor(coef[-1], dtype=dtype))
            coef = coef[:-1]
        last.weight.copy_(torch.as_tensor(coef.T, dtype=dtype))
        return float(square_loss(model, X, y))
