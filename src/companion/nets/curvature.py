r"""The per-sample curvature of a torch model on its data, for the loss it is trained with.

:func:`model_curvature` is the torch door into :class:`companion.stability.curvature.Curvature`:
it evaluates the model once, takes the per-sample output Jacobians :math:`J_i` and the loss's
output Hessians :math:`\Lambda_i = \partial^2\ell_i/\partial f^2`
(:meth:`companion.nets.losses.OutputLoss.output_hessians`), and builds the generalized
Gauss-Newton curvature :math:`H_i = J_i^\top\Lambda_iJ_i` — the per-sample Hessian at a
minimum of a square loss, and the curvature of the local quadratic model elsewhere
(:cite:p:`mulayoff2024exact`, :cite:p:`ma2021linear`). When the full Jacobian
(:math:`n\times K\times d`) does not fit in ``jacobian_memory`` only the Gram matrix of the
weighted rows :math:`S_iJ_i` (:math:`S_i^\top S_i = \Lambda_i`) is built, in blocks
(:func:`companion.nets.jacobians.gram_matrix`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..stability.curvature import Curvature
from ..validation import check_positive_int
from .data import as_xy
from .jacobians import DEFAULT_JACOBIAN_MEMORY, gram_matrix, parameter_jacobian
from .losses import OutputLoss, as_output_loss
from .models import as_float64, check_deterministic_mode, model_device, num_parameters

__all__ = ["ModelPoint", "model_curvature", "model_point"]


@dataclass(frozen=True)
class ModelPoint:
    r"""A model evaluated on its data under a loss: what every curvature quantity needs.

    Attributes
    ----------
    model : torch.nn.Module
        The float64 model (a float32 model is copied).
    X : torch.Tensor
        Inputs ``(n, ...)``.
    targets : torch.Tensor
        Targets as the loss reads them (e.g. integer labels ``(n,)`` for cross-entropy).
    outputs : torch.Tensor
        Model outputs ``(n, K)`` (outputs of shape ``(n,)`` become ``(n, 1)``).
    loss : OutputLoss
        The loss, with its reduction.
    """

    model: torch.nn.Module
    X: torch.Tensor
    targets: torch.Tensor
    outputs: torch.Tensor
    loss: OutputLoss

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.outputs.shape[0])

    @property
    def num_outputs(self) -> int:
        """:math:`K`."""
        return int(self.outputs.shape[1])

    @property
    def num_parameters(self) -> int:
        """:math:`d`, the number of trainable parameters."""
        return num_parameters(self.model)

    def loss_value(self) -> float:
        """The user's loss on all ``n`` samples as one batch."""
        return float(self.loss.batch_loss(self.outputs, self.targets))

    def output_hessians(self) -> np.ndarray:
        r""":math:`\Lambda_i`, ``(n, K, K)`` float64 on the CPU."""
        return self.loss.output_hessians(self.outputs, self.targets).detach().cpu().numpy()


def model_point(model: torch.nn.Module, data, *, loss, device=None) -> ModelPoint:
    r"""Evaluate ``model`` on ``data`` under ``loss`` once (float64, on the model's device).

    Parameters
    ----------
    model : torch.nn.Module
        In evaluation mode if it has BatchNorm or Dropout (per-sample curvature needs a
        deterministic function of one sample).
    data : Dataset, (X, y) or DataLoader
        The training data SGD samples from.
    loss : torch loss module, "half_squared_error", OutputLoss or callable
        See :func:`companion.nets.losses.as_output_loss`.
    device : torch.device or str, optional
        Where to evaluate (default: where the model's parameters are); the data is moved
        there.
    """
    spec = as_output_loss(loss)
    model = as_float64(check_deterministic_mode(model), device=device)
    X, y = as_xy(data, torch.float64, device=model_device(model))
    with torch.no_grad():
        raw = model(X)
    outputs, targets = spec.prepare(raw, y)
    return ModelPoint(model=model, X=X, targets=targets, outputs=outputs, loss=spec)


def model_curvature(
    model: torch.nn.Module,
    data,
    *,
    loss,
    jacobian_memory: int = 4 * DEFAULT_JACOBIAN_MEMORY,
    chunk_size: int = 1024,
    point: ModelPoint | None = None,
    device=None,
) -> Curvature:
    r"""Per-sample curvature :math:`H_i = J_i^\top\Lambda_iJ_i` of ``model`` on ``data``.

    Thresholds of the returned :class:`~companion.stability.curvature.Curvature` are for the
    learning rate applied to the gradient of exactly ``loss`` on a mini-batch (its
    ``reduction`` is the loss's). The Jacobian is computed once; if it exceeds
    ``jacobian_memory`` bytes the Gram matrix is accumulated in blocks instead and the
    object cannot map back to :math:`\mathbb R^d` (no rank-one direction).

    Parameters
    ----------
    model, data, loss
        As in :func:`model_point`.
    jacobian_memory : int
        Bytes allowed for the full Jacobian ``(n, K, d)`` in float64.
    chunk_size : int
        Samples per vectorised Jacobian chunk.
    point : ModelPoint, optional
        A point already evaluated by :func:`model_point` (saves one forward pass).
    device : torch.device or str, optional
        As in :func:`model_point`. Only the :math:`nK\times nK` Gram matrix (or the
        Jacobian, when it fits) comes back to the CPU.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.losses import HalfSquaredError
    >>> model = torch.nn.Linear(2, 1, bias=False).double()
    >>> X = torch.eye(2, dtype=torch.float64)
    >>> curv = model_curvature(model, (X, model(X).detach()), loss=HalfSquaredError())
    >>> curv.eigenvalues          # H = X^T X / n
    array([0.5, 0.5])
    """
    point = model_point(model, data, loss=loss, device=device) if point is None else point
    jacobian_memory = check_positive_int(jacobian_memory, "jacobian_memory")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    lam = point.output_hessians()
    n, k, d = point.n, point.num_outputs, point.num_parameters
    reduction = point.loss.reduction
    if 8 * n * k * d <= jacobian_memory:
        jac = parameter_jacobian(point.model, point.X, chunk_size=chunk_size)
        return Curvature.from_jacobians(jac.reshape(n, k, d), lam, reduction=reduction)
    gram = gram_matrix(
        point.model,
        point.X,
        chunk_size=chunk_size,
        max_memory=jacobian_memory,
        loss=point.loss,
        targets=point.targets,
    )  # rows S_i J_i: the Gram matrix of the weighted Jacobian, built in blocks
    return Curvature.from_gram(gram, num_outputs=k, reduction=reduction)
