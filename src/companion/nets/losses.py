r"""Losses as functions of one sample's outputs: per-sample losses and their output Hessians.

The linear-stability analysis of SGD needs, for every sample, the loss :math:`\ell_i` as a
function of that sample's model outputs :math:`f_i \in \mathbb R^K` and its Hessian

.. math::

    \Lambda_i = \frac{\partial^2 \ell_i}{\partial f_i^2} \in \mathbb R^{K\times K},

so that the per-sample (generalized) Gauss–Newton matrix is
:math:`H_i = J_i^\top\Lambda_i J_i` with :math:`J_i = \partial f_i/\partial\theta`
(:cite:p:`mulayoff2024exact`; for the square loss :math:`\Lambda_i = I` and this is the
per-sample Hessian at an interpolating minimum, :cite:p:`ma2021linear`, :cite:p:`wu2018sgd`).

**Convention.** The per-sample losses are defined so that the user's own mini-batch loss
on ``B`` samples is

.. math::

    L_{\mathcal B} = \frac1B\sum_{i\in\mathcal B}\ell_i \quad(\texttt{reduction="mean"}),
    \qquad L_{\mathcal B} = \sum_{i\in\mathcal B}\ell_i \quad(\texttt{reduction="sum"}),

so a learning rate means what it means in the user's own torch loop. For the supported
losses:

* :class:`HalfSquaredError`: :math:`\ell_i = \frac12\|f_i - y_i\|^2`, :math:`\Lambda_i = I`;
* ``nn.MSELoss()`` (mean): :math:`\ell_i = \frac1K\|f_i - y_i\|^2`,
  :math:`\Lambda_i = \frac2K I`; ``nn.MSELoss(reduction="sum")``:
  :math:`\ell_i = \|f_i - y_i\|^2`, :math:`\Lambda_i = 2I`;
* ``nn.CrossEntropyLoss()``: :math:`\ell_i = -\log\mathrm{softmax}(f_i)_{y_i}`,
  :math:`\Lambda_i = \mathrm{diag}(p) - pp^\top`;
* ``nn.BCEWithLogitsLoss()`` (mean): :math:`\ell_i = \frac1K\sum_k\mathrm{bce}(f_{ik}, y_{ik})`,
  :math:`\Lambda_i = \mathrm{diag}(\sigma(1-\sigma))/K`;
* a callable ``fn(outputs, targets) -> (n,)``: its entries, :math:`\Lambda_i` by
  ``torch.func``,

with :math:`p = \mathrm{softmax}(f_i)` and :math:`\sigma = \sigma(f_i)` entrywise; the
``"sum"`` reductions drop the :math:`1/K` of the mean ones. Cross-entropy takes integer
labels ``(n,)`` or class probabilities ``(n, K)`` and allows ``label_smoothing`` (the
Hessian does not depend on the target). Model outputs of shape ``(n,)`` are treated as
``K = 1``. Tensors stay on their device.

* :class:`HalfSquaredError`: the book's :math:`\frac12\|f - y\|^2` as an ``nn.Module``.
* :class:`OutputLoss`: a loss in this convention, with ``per_sample``, ``batch_loss``,
  ``output_hessians`` (:math:`\Lambda_i`) and ``output_hessian_roots``
  (:math:`S_i = \Lambda_i^{1/2}`).
* :func:`as_output_loss`: the :class:`OutputLoss` of a torch loss, a string or a callable.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSS_NAMES", "HalfSquaredError", "OutputLoss", "as_output_loss"]

#: The kinds of :class:`OutputLoss`.
LOSS_NAMES = ("half_squared_error", "mse", "cross_entropy", "bce_with_logits", "callable")

_SQUARE = ("half_squared_error", "mse")
_REDUCTIONS = ("mean", "sum")
_SUPPORTED = (
    "nn.MSELoss (reduction 'mean' or 'sum'), nn.CrossEntropyLoss (integer labels or class "
    "probabilities, no class weights), nn.BCEWithLogitsLoss (no weight / pos_weight), "
    "companion.nets.losses.HalfSquaredError, the string 'half_squared_error', an OutputLoss, "
    "or a callable fn(outputs (n, K), targets) -> per-sample losses (n,)"
)
_NOT_SMOOTH = (nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


def _check_reduction(reduction, name: str = "reduction") -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"{name} must be 'mean' or 'sum', got {reduction!r}: the per-sample losses must "
            "be combined into the batch loss the learning rate is applied to"
        )
    return reduction


class HalfSquaredError(nn.Module):
    r"""The book's square loss :math:`\frac12\|f - y\|^2`, as a torch loss module.

    On a batch of ``B`` samples the value is

    .. math::

        \frac{1}{2B}\sum_{i=1}^B\|f_i - y_i\|^2 \quad(\texttt{"mean"}), \qquad
        \frac12\sum_{i=1}^B\|f_i - y_i\|^2 \quad(\texttt{"sum"}),

    the normalisation of :cite:p:`ma2021linear` and :cite:p:`mulayoff2024exact`, for which
    the per-sample output Hessian is :math:`\Lambda_i = I` and gradient descent is stable
    iff :math:`\eta \le 2/\lambda_{\max}(\nabla^2 L)`. (``nn.MSELoss()`` divides by
    :math:`BK` instead of :math:`2B`: its Hessian is :math:`2/K` times this one.)

    Parameters
    ----------
    reduction : {"mean", "sum"}
        Average or sum of the per-sample losses over the batch.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.losses import HalfSquaredError
    >>> f, y = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.zeros(2, 2)
    >>> HalfSquaredError()(f, y).item(), HalfSquaredError("sum")(f, y).item()
    (1.25, 2.5)
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim < 1:
            raise ValueError("input must have a batch dimension, got a scalar")
        if input.shape != target.shape:
            raise ValueError(
                f"input and target must have the same shape, got {tuple(input.shape)} and "
                f"{tuple(target.shape)}"
            )
        total = 0.5 * (input - target).pow(2).sum()
        return total / input.shape[0] if self.reduction == "mean" else total

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def _is_meta(t) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


@dataclass(frozen=True)
class OutputLoss:
    r"""A loss as a function of the model outputs, in the per-sample convention of the module.

    Build one with :func:`as_output_loss`. The user's mini-batch loss on ``B`` samples is
    :math:`L_{\mathcal B} = w_B\sum_{i\in\mathcal B}\ell_i` with :math:`w_B = 1/B`
    (``reduction="mean"``) or :math:`1` (``"sum"``), see :meth:`sample_weight`.

    Attributes
    ----------
    name : str
        One of :data:`LOSS_NAMES`.
    reduction : {"mean", "sum"}
        How the per-sample losses combine into the batch loss.
    minimum_at_targets : bool
        True for the square losses: :math:`f_i = y_i` minimises :math:`\ell_i` (so at an
        interpolating minimum the Hessian equals the Gauss–Newton matrix).
    label_smoothing : float
        Cross-entropy's label smoothing (0 otherwise).
    ignore_index : int
        Cross-entropy's ignored label; a target equal to it is refused.
    function : callable or None
        The per-sample callable (``name == "callable"``).
    module : torch.nn.Module or None
        The torch loss module, used by :meth:`batch_loss` (None: the per-sample losses
        are reduced directly).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from companion.nets.losses import as_output_loss
    >>> loss = as_output_loss(nn.CrossEntropyLoss())
    >>> f, y = torch.zeros(3, 2, dtype=torch.float64), torch.tensor([0, 1, 1])
    >>> loss.output_hessians(f, y)[0]
    tensor([[ 0.2500, -0.2500],
            [-0.2500,  0.2500]], dtype=torch.float64)
    >>> bool(torch.isclose(loss.batch_loss(f, y), nn.CrossEntropyLoss()(f, y)))
    True
    """

    name: str
    reduction: str = "mean"
    label_smoothing: float = 0.0
    ignore_index: int = -100
    function: Callable | None = field(default=None, repr=False, compare=False)
    module: nn.Module | None = field(default=None, repr=False, compare=False)
    minimum_at_targets: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"name must be one of {LOSS_NAMES}, got {self.name!r}")
        _check_reduction(self.reduction)
        if self.name == "callable":
            if not callable(self.function):
                raise TypeError("function must be callable for an OutputLoss named 'callable'")
            if self.reduction != "mean":
                raise ValueError("a per-sample callable loss is reduced by the mean")
        ls = self.label_smoothing
        if isinstance(ls, bool) or not isinstance(ls, numbers.Real) or not 0.0 <= ls <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {ls!r}")
        object.__setattr__(self, "minimum_at_targets", self.name in _SQUARE)

    # ------------------------------------------------------------------------------------
    def sample_weight(self, batch_size: int) -> float:
        r"""The weight :math:`w_B` with :math:`L_{\mathcal B} = w_B\sum_{i\in\mathcal B}\ell_i`.

        ``1/B`` for ``reduction="mean"``, ``1`` for ``"sum"``.

        Examples
        --------
        >>> from companion.nets.losses import as_output_loss
        >>> as_output_loss("half_squared_error").sample_weight(4)
        0.25
        """
        return 1.0 / int(batch_size) if self.reduction == "mean" else 1.0

    def prepare(self, outputs: torch.Tensor, targets) -> tuple[torch.Tensor, object]:
        r"""Validated ``(outputs (n, K), targets)``; targets moved to the outputs' device.

        Outputs ``(n,)`` become ``(n, 1)``. Square losses and BCE need floating targets of
        the outputs' shape (``(n,)`` accepted for ``K = 1``); cross-entropy needs integer
        labels ``(n,)`` in ``0..K-1`` or floating class probabilities ``(n, K)``. Raises
        ``TypeError``/``ValueError`` naming ``outputs`` or ``targets``.

        Examples
        --------
        >>> import torch
        >>> from companion.nets.losses import as_output_loss
        >>> f, y = as_output_loss("half_squared_error").prepare(torch.zeros(4), torch.ones(4))
        >>> tuple(f.shape), tuple(y.shape)
        ((4, 1), (4, 1))
        """
        if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
            raise TypeError(
                f"outputs must be a floating torch tensor, got {type(outputs).__name__}"
                + (f" of dtype {outputs.dtype}" if isinstance(outputs, torch.Tensor) else "")
            )
        if outputs.ndim == 1:
            outputs = outputs[:, None]
        if outputs.ndim != 2:
            raise ValueError(
                f"outputs must have shape (n,) or (n, K) (the model must map (n, ...) to "
                f"(n, K)), got {tuple(outputs.shape)}"
            )
        n, K = outputs.shape
        if self.name == "callable":
            if isinstance(targets, torch.Tensor):
                targets = targets.to(outputs.device)
            return outputs, targets
        if not isinstance(targets, torch.Tensor):
            try:
                targets = torch.as_tensor(np.asarray(targets))
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(
                    f"targets must be an array of numbers, got {type(targets).__name__}"
                ) from exc
        if targets.ndim == 0 or targets.shape[0] != n:
            raise ValueError(
                f"targets must hold one entry per sample ({n}), got shape {tuple(targets.shape)}"
            )
        if self.name == "cross_entropy":
            return outputs, self._prepare_labels(targets, n, K, outputs)
        if not targets.is_floating_point():
            raise TypeError(
                f"targets for {self.describe()} must be floating point (regression targets of "
                f"the outputs' shape), got dtype {targets.dtype}"
            )
        if targets.ndim == 1:
            targets = targets[:, None]
        if tuple(targets.shape) != (n, K):
            raise ValueError(
                f"model outputs {(K,)} per sample but targets are {tuple(targets.shape[1:])} "
                f"(targets of shape {tuple(targets.shape)} for outputs {(n, K)})"
            )
        return outputs, targets.to(device=outputs.device, dtype=outputs.dtype)

    def _prepare_labels(self, targets, n: int, K: int, outputs) -> torch.Tensor:
        if targets.is_floating_point():
            if targets.ndim == 1 or (K > 1 and tuple(targets.shape) == (n, 1)):
                raise TypeError(
                    "targets for CrossEntropyLoss must be integer class labels (torch.long, "
                    "shape (n,)) or floating class probabilities (n, K); got floating targets "
                    f"of shape {tuple(targets.shape)}: cast labels with .long()"
                )
            if tuple(targets.shape) != (n, K):
                raise ValueError(
                    f"class-probability targets must have the outputs' shape {(n, K)}, got "
                    f"{tuple(targets.shape)}"
                )
            return targets.to(device=outputs.device, dtype=outputs.dtype)
        if targets.dtype == torch.bool or targets.is_complex():
            raise TypeError(
                f"targets for CrossEntropyLoss must be integer labels, got dtype {targets.dtype}"
            )
        if targets.ndim != 1:
            raise ValueError(
                f"integer class labels must have shape (n,), got {tuple(targets.shape)}"
            )
        if not _is_meta(targets) and n > 0:
            if bool((targets == self.ignore_index).any()):
                raise ValueError(
                    f"targets contain ignore_index={self.ignore_index}: samples ignored by "
                    "the loss are not supported (the per-sample convention needs every sample "
                    "in the batch loss); drop them from the data"
                )
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or hi >= K:
                raise ValueError(
                    f"class labels in targets must be in 0..{K - 1} (K = {K} outputs), got "
                    f"labels from {lo} to {hi}"
                )
        return targets.to(device=outputs.device, dtype=torch.long)

    def describe(self) -> str:
        """A short description, e.g. ``"MSELoss(reduction='mean')"``."""
        base = {
            "half_squared_error": "HalfSquaredError",
            "mse": "MSELoss",
            "cross_entropy": "CrossEntropyLoss",
            "bce_with_logits": "BCEWithLogitsLoss",
            "callable": "a per-sample callable",
        }[self.name]
        return base if self.name == "callable" else f"{base}(reduction={self.reduction!r})"

    # ------------------------------------------------------------------------------------
    def per_sample(self, outputs: torch.Tensor, targets) -> torch.Tensor:
        r"""The per-sample losses :math:`\ell_i`, shape ``(n,)`` (see the module's table).

        Differentiable in ``outputs``.

        Examples
        --------
        >>> import torch
        >>> from torch import nn
        >>> from companion.nets.losses import as_output_loss
        >>> f, y = torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2)
        >>> as_output_loss(nn.MSELoss()).per_sample(f, y)   # ||f - y||^2 / K
        tensor([5.])
        """
        f, t = self.prepare(outputs, targets)
        K = f.shape[1]
        if self.name == "half_squared_error":
            return 0.5 * (f - t).pow(2).sum(dim=1)
        if self.name == "mse":
            sq = (f - t).pow(2).sum(dim=1)
            return sq / K if self.reduction == "mean" else sq
        if self.name == "cross_entropy":
            return F.cross_entropy(
                f, t, reduction="none", label_smoothing=float(self.label_smoothing)
            )
        if self.name == "bce_with_logits":
            bce = F.binary_cross_entropy_with_logits(f, t, reduction="none").sum(dim=1)
            return bce / K if self.reduction == "mean" else bce
        values = self.function(f, t)
        if (
            not isinstance(values, torch.Tensor)
            or not values.is_floating_point()
            or tuple(values.shape) != (f.shape[0],)
        ):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values)
            raise ValueError(
                "loss: a callable loss must return the per-sample losses, a floating tensor "
                f"of shape (n,) = {(f.shape[0],)}, got {got}"
            )
        return values

    def batch_loss(self, outputs: torch.Tensor, targets) -> torch.Tensor:
        r"""The user's loss on the batch: :math:`w_B\sum_i\ell_i` (a scalar tensor).

        For a torch loss this calls the loss module itself (on the prepared tensors), so
        the value and its gradient are exactly those of the user's own training loop.

        Examples
        --------
        >>> import torch
        >>> from companion.nets.losses import as_output_loss
        >>> f, y = torch.tensor([[1.0], [3.0]]), torch.zeros(2, 1)
        >>> as_output_loss("half_squared_error").batch_loss(f, y).item()   # (1 + 9) / (2 * 2)
        2.5
        """
        if self.module is not None:
            f, t = self.prepare(outputs, targets)
            return self.module(f, t)
        values = self.per_sample(outputs, targets)
        total = values.sum()
        return total / values.shape[0] if self.reduction == "mean" else total

    # ------------------------------------------------------------------------------------
    def output_hessians(self, outputs: torch.Tensor, targets) -> torch.Tensor:
        r"""Per-sample output Hessians :math:`\Lambda_i = \partial^2\ell_i/\partial f_i^2`.

        Closed forms for the torch losses (see the module's table); for a callable,
        ``torch.func.vmap`` of ``torch.func.hessian`` (a loop over samples if the callable
        cannot be vmapped). A callable whose Hessians are all exactly zero while its
        gradients are not (piecewise linear, not twice differentiable: L1, hinge) is refused
        with a ``ValueError`` naming ``loss``.

        Returns
        -------
        torch.Tensor
            ``(n, K, K)``, detached, on the outputs' device and in their dtype.

        Examples
        --------
        >>> import torch
        >>> from torch import nn
        >>> from companion.nets.losses import as_output_loss
        >>> lam = as_output_loss(nn.MSELoss()).output_hessians(torch.zeros(5, 2), torch.ones(5, 2))
        >>> tuple(lam.shape), lam[0].diagonal().tolist()   # (2/K) I with K = 2
        ((5, 2, 2), [1.0, 1.0])
        """
        f, t = self.prepare(outputs, targets)
        f = f.detach()
        n, K = f.shape
        eye = torch.eye(K, dtype=f.dtype, device=f.device).expand(n, K, K)
        if self.name == "half_squared_error":
            return eye.clone()
        if self.name == "mse":
            return (2.0 / K if self.reduction == "mean" else 2.0) * eye
        if self.name == "cross_entropy":
            p = torch.softmax(f, dim=1)
            return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        if self.name == "bce_with_logits":
            s = torch.sigmoid(f)
            d = s * (1.0 - s)
            return torch.diag_embed(d / K if self.reduction == "mean" else d)
        return self._callable_hessians(f, t)

    def _callable_hessians(self, f: torch.Tensor, t) -> torch.Tensor:
        n, K = f.shape
        self.per_sample(f, t)  # checks the callable's output shape
        batched = isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] == n

        def one(fi, ti):
            return self.function(fi[None], ti[None] if batched else ti)[0]

        in_dims = (0, 0 if batched else None)
        with warnings.catch_warnings():
            # torch's forward-mode AD (in hessian) calls its own deprecated torch.jit.script
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
            )
            try:
                lam = torch.func.vmap(torch.func.hessian(one), in_dims=in_dims)(f, t)
                grads = torch.func.vmap(torch.func.grad(one), in_dims=in_dims)(f, t)
            except (RuntimeError, NotImplementedError, ValueError):
                rows = [(f[i], t[i] if batched else t) for i in range(n)]
                lam = torch.stack([torch.func.hessian(one)(fi, ti) for fi, ti in rows])
                grads = torch.stack([torch.func.grad(one)(fi, ti) for fi, ti in rows])
        lam = lam.detach().reshape(n, K, K)
        if not _is_meta(lam) and n > 0:
            if not bool(torch.isfinite(lam).all()):
                raise ValueError("loss: the callable's output Hessians contain NaN or inf")
            if not bool(lam.any()) and bool(grads.any()):
                raise ValueError(
                    "loss: the callable's output Hessians are all exactly zero while its "
                    "gradients are not: it is piecewise linear in the outputs (like L1 or "
                    "hinge losses), not twice differentiable, and its curvature is not "
                    "defined by the linear-stability theory; use a smooth loss"
                )
        return 0.5 * (lam + lam.transpose(1, 2))

    def output_hessian_roots(self, outputs: torch.Tensor, targets) -> torch.Tensor:
        r"""Symmetric square roots :math:`S_i = \Lambda_i^{1/2}`: :math:`S_i^\top S_i = \Lambda_i`.

        Closed forms for the diagonal Hessians (square losses, BCE); otherwise an
        eigendecomposition :math:`\Lambda_i = Q\,\mathrm{diag}(\lambda)Q^\top` per sample
        with :math:`S_i = Q\,\mathrm{diag}(\sqrt{\lambda})Q^\top`, tiny negative eigenvalues
        (rounding) clipped to zero. A loss whose :math:`\Lambda_i` has a clearly negative
        eigenvalue (not convex in the outputs) is refused (``ValueError`` naming ``loss``).
        The rows of :math:`S_iJ_i` give the loss-weighted Gram matrix
        :math:`G_{ij} = S_iJ_iJ_j^\top S_j^\top`, whose nonzero eigenvalues are those of
        :math:`\sum_iJ_i^\top\Lambda_iJ_i` (:cite:p:`mulayoff2024exact`).

        Returns
        -------
        torch.Tensor
            ``(n, K, K)``, on the outputs' device.

        Examples
        --------
        >>> import torch
        >>> from torch import nn
        >>> from companion.nets.losses import as_output_loss
        >>> loss = as_output_loss(nn.CrossEntropyLoss())
        >>> f, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 0])
        >>> S = loss.output_hessian_roots(f, y)
        >>> bool(torch.allclose(S.transpose(1, 2) @ S, loss.output_hessians(f, y)))
        True
        """
        lam = self.output_hessians(outputs, targets)
        n = lam.shape[0]
        if self.name in ("half_squared_error", "mse", "bce_with_logits"):  # diagonal Λ_i
            return torch.diag_embed(torch.sqrt(torch.diagonal(lam, dim1=1, dim2=2)))
        vals, vecs = torch.linalg.eigh(lam)
        if not _is_meta(vals) and n > 0:
            scale = vals.abs().amax(dim=1).clamp_min(torch.finfo(vals.dtype).tiny)
            tol = math.sqrt(torch.finfo(vals.dtype).eps)
            worst = (vals.amin(dim=1) / scale).min()
            if float(worst) < -tol:
                raise ValueError(
                    "loss: an output Hessian has a negative eigenvalue (relative "
                    f"{float(worst):.3g}): the loss is not convex in the outputs, so the "
                    "Gauss–Newton matrix is not positive semi-definite"
                )
        root = torch.sqrt(vals.clamp_min(0.0))
        return (vecs * root[:, None, :]) @ vecs.transpose(1, 2)


# ----------------------------------------------------------------------------------------
def as_output_loss(loss) -> OutputLoss:
    r"""The :class:`OutputLoss` of a torch loss module, a name, an ``OutputLoss`` or a callable.

    Accepted: ``nn.MSELoss``, ``nn.CrossEntropyLoss`` and ``nn.BCEWithLogitsLoss`` with
    ``reduction`` ``"mean"`` or ``"sum"``, :class:`HalfSquaredError`, the string
    ``"half_squared_error"``, an :class:`OutputLoss` (returned as is), or a callable
    ``fn(outputs (n, K), targets) -> (n,)`` returning per-sample losses, averaged over the
    batch (its :math:`\Lambda_i` come from ``torch.func``; it must be written in torch
    operations). The per-sample losses follow the convention of the module
    (:math:`L_{\mathcal B} = \frac1B\sum\ell_i` or :math:`\sum\ell_i`).

    Raises
    ------
    ValueError
        Naming ``loss``: ``reduction="none"``; losses not twice differentiable in the
        outputs (``L1Loss``, ``SmoothL1Loss``, ``HuberLoss``); other loss modules; class
        weights (``weight``) or ``pos_weight``.
    TypeError
        Naming ``loss``: anything not callable.

    Examples
    --------
    >>> from torch import nn
    >>> from companion.nets.losses import as_output_loss
    >>> as_output_loss(nn.MSELoss(reduction="sum"))
    OutputLoss(name='mse', reduction='sum', label_smoothing=0.0, ignore_index=-100, minimum_at_targets=True)
    >>> as_output_loss(nn.CrossEntropyLoss(label_smoothing=0.1)).label_smoothing
    0.1
    """  # noqa: E501
    if isinstance(loss, OutputLoss):
        return loss
    if isinstance(loss, str):
        if loss == "half_squared_error":
            return OutputLoss("half_squared_error", "mean", module=HalfSquaredError())
        raise ValueError(f"loss: unknown name {loss!r}; supported: {_SUPPORTED}")
    if isinstance(loss, nn.Module):
        return _from_module(loss)
    if callable(loss):
        return OutputLoss("callable", "mean", function=loss)
    raise TypeError(f"loss must be a torch loss or a callable, got {type(loss).__name__}")


def _exact(loss: nn.Module, cls: type) -> bool:
    """An instance of ``cls`` that computes ``cls``'s loss (its ``forward`` not overridden)."""
    return isinstance(loss, cls) and type(loss).forward is cls.forward


def _from_module(loss: nn.Module) -> OutputLoss:
    kind = type(loss).__name__
    reduction = getattr(loss, "reduction", None)
    if isinstance(loss, _NOT_SMOOTH):
        raise ValueError(
            f"loss: {kind} is not twice differentiable in the outputs (piecewise linear or "
            "piecewise quadratic): its output Hessian is zero or jumps, and the linear "
            f"stability of SGD is defined by the curvature of a smooth loss. Supported: "
            f"{_SUPPORTED}"
        )
    known = (HalfSquaredError, nn.MSELoss, nn.CrossEntropyLoss, nn.BCEWithLogitsLoss)
    if not any(_exact(loss, cls) for cls in known):
        raise ValueError(f"loss: {kind} is not supported. Supported: {_SUPPORTED}")
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"loss: {kind}(reduction={reduction!r}) is not supported: the per-sample losses "
            "must be combined into the batch loss the learning rate is applied to; use "
            "reduction 'mean' or 'sum'"
        )
    if isinstance(loss, HalfSquaredError):
        return OutputLoss("half_squared_error", reduction, module=loss)
    if isinstance(loss, nn.MSELoss):
        return OutputLoss("mse", reduction, module=loss)
    if getattr(loss, "weight", None) is not None:
        raise ValueError(
            f"loss: {kind} with class weights (weight=...) is not supported: weighted losses "
            "are not sums of identically weighted per-sample losses"
        )
    if isinstance(loss, nn.CrossEntropyLoss):
        return OutputLoss(
            "cross_entropy",
            reduction,
            label_smoothing=float(loss.label_smoothing),
            ignore_index=int(loss.ignore_index),
            module=loss,
        )
    if getattr(loss, "pos_weight", None) is not None:
        raise ValueError(f"loss: {kind} with pos_weight is not supported")
    return OutputLoss("bce_with_logits", reduction, module=loss)
