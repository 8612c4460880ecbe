r"""Matrix-free curvature of a network's training loss, with ``torch.func``.

The loss is the user's own: for a loss with per-sample losses :math:`\ell_i` (see
:mod:`companion.nets.losses`) the operators represent the curvature of

.. math::

    L(\theta) = w_n\sum_{i=1}^n \ell_i(f(x_i;\theta)),\qquad
    w_n = 1/n\ (\texttt{reduction="mean"}),\quad w_n = 1\ (\texttt{"sum"}),

the user's batch loss evaluated on **all** ``n`` samples as one batch (computed in sample
chunks). For :class:`~companion.nets.losses.HalfSquaredError` this is
:math:`\frac1{2n}\sum_i\|f_i - y_i\|^2`, the normalisation of :cite:p:`ma2021linear` and
:cite:p:`mulayoff2024exact`, for which gradient descent is stable iff
:math:`\eta\le 2/\lambda_{\max}(\nabla^2L)` (:cite:p:`wu2018sgd`). ``nn.MSELoss()`` divides
by :math:`nK` instead: its Hessian is :math:`2/K` times that one.

* :func:`loss_hessian_operator`: :math:`\nabla^2 L`, by Hessian-vector products
  (reverse over reverse: the chunk's gradient graph is built once per product, or once
  for all the columns of a block product).
* :func:`ggn_operator`: the generalized Gauss–Newton matrix
  :math:`G = w_n\sum_i J_i^\top\Lambda_iJ_i`, :math:`\Lambda_i = \partial^2\ell_i/\partial f_i^2`
  (a Jacobian-vector product, :math:`\Lambda_i`, a vector-Jacobian product; the closed
  forms of :mod:`companion.nets.losses` for :math:`\Lambda_i`). Since
  :math:`\nabla^2L = G + w_n\sum_i\sum_k \partial_k\ell_i\,\nabla^2 f_{ik}`, :math:`G`
  equals the Hessian where every :math:`\nabla_{f}\ell_i = 0`, e.g. at an interpolating
  minimum of a square loss.
* ``params="first_layer"`` restricts either to the block of :math:`W_1` (the first layer's
  weight), e.g. :math:`\mathrm{Tr}\,\nabla^2_{W_1}L = \frac1n\sum_i\|\nabla_{W_1}f(x_i)\|^2`
  at interpolation for the half square loss (MY eq. (4), Prop. 2).
* :func:`top_eigenvalues` (Lanczos, scipy ``eigsh``), :func:`power_iteration`,
  :func:`hutchinson_trace` (estimate and standard error), :func:`to_dense`, and
  :class:`CountingOperator` to count Hessian-vector products.

The operators are scipy ``LinearOperator`` objects in float64 on the parameter vector
ordered as :func:`companion.nets.models.trainable_parameters`. Products are computed where
the model's parameters are (or on ``device=``) in float64, moving the data there chunk by
chunk; vectors cross to and from NumPy on the CPU. A model in training mode with
BatchNorm or Dropout is refused (call ``model.eval()``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call

from ..validation import check_dense_size, check_positive_int
from .data import as_xy
from .losses import OutputLoss, as_output_loss
from .models import (
    as_float64,
    check_deterministic_mode,
    first_layer_parameters,
    model_device,
    to_numpy,
    trainable_parameters,
)

__all__ = [
    "CountingOperator",
    "TraceEstimate",
    "ggn_operator",
    "hutchinson_trace",
    "loss_hessian_operator",
    "power_iteration",
    "to_dense",
    "top_eigenvalues",
]


def _select_params(model: torch.nn.Module, params) -> list[str]:
    named = dict(trainable_parameters(model))
    if params is None or params == "all":
        return list(named)
    if params == "first_layer":
        names, _ = first_layer_parameters(model)
    elif params == "rest":
        _, names = first_layer_parameters(model)
    elif isinstance(params, Sequence) and not isinstance(params, str):
        names = list(params)
    else:
        raise ValueError(
            f"params must be None, 'all', 'first_layer', 'rest' or a list of parameter "
            f"names, got {params!r}"
        )
    unknown = [nm for nm in names if nm not in named]
    if unknown or not names:
        raise ValueError(
            f"params: unknown or empty parameter names {unknown}; known: {list(named)}"
        )
    # keep the model's order so blocks are contiguous slices of theta
    return [nm for nm in named if nm in set(names)]


#: Largest cache (bytes) of the output Hessians Lambda_i kept by a GGN operator.
_LAMBDA_CACHE_BYTES = 256 * 1024**2


class _LossCurvature:
    """Products with the Hessian or the GGN of ``w_n sum_i l_i`` on one device, chunked."""

    def __init__(self, kind, model, data, loss, params, batch_size, device):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_deterministic_mode(model)
        self.loss: OutputLoss = as_output_loss(loss)
        self.kind = kind
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.model = as_float64(model, device=device)
        self.device = model_device(self.model)
        self.X, self.y = as_xy(data, torch.float64)
        self.n = int(self.X.shape[0])
        self.weight = self.loss.sample_weight(self.n)
        named = dict(trainable_parameters(self.model))
        self.names = _select_params(self.model, params)
        # a snapshot: the operator is the curvature at the parameters it was built at
        self.fixed = {nm: p.detach().clone() for nm, p in named.items() if nm not in self.names}
        self.theta = {nm: named[nm].detach().clone() for nm in self.names}
        self.sizes = [self.theta[nm].numel() for nm in self.names]
        self.buffers = {nm: b.detach().clone() for nm, b in self.model.named_buffers()}
        self.dim = sum(self.sizes)
        self._lambda_cache: dict[int, torch.Tensor] = {}  # GGN: Lambda_i per chunk
        # validate every target against the model's outputs once (shapes, dtypes, labels),
        # and the loss on the first chunk (a callable's Hessians)
        X0, y0 = self._chunk(0)
        with torch.no_grad():
            out0 = self.model(X0)
        one = out0[:1]
        self.loss.prepare(one.expand(self.n, *one.shape[1:]), self.y)
        lam0 = self.loss.output_hessians(out0, y0)
        if kind == "ggn" and 8 * self.n * lam0.shape[1] ** 2 <= _LAMBDA_CACHE_BYTES:
            self._lambda_cache[0] = lam0

    def _chunk(self, start: int):
        stop = start + self.batch_size
        return self.X[start:stop].to(self.device), self.y[start:stop]

    def _outputs(self, leaves: list[torch.Tensor], Xc: torch.Tensor) -> torch.Tensor:
        theta = dict(zip(self.names, leaves, strict=True))
        out = functional_call(self.model, ({**self.fixed, **theta}, self.buffers), (Xc,))
        return out[:, None] if out.ndim == 1 else out

    def _grad(self, outputs, inputs, grad_outputs, create_graph=False) -> torch.Tensor:
        """Flat ``autograd.grad`` keeping the graph (zeros for inputs outside it)."""
        if not outputs.requires_grad:
            return torch.zeros(
                sum(t.numel() for t in inputs), dtype=torch.float64, device=self.device
            )
        grads = torch.autograd.grad(
            outputs,
            inputs,
            grad_outputs,
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
        )
        return torch.cat(
            [
                (torch.zeros_like(t) if g is None else g).reshape(-1)
                for g, t in zip(grads, inputs, strict=True)
            ]
        )

    def products(self, V: np.ndarray) -> np.ndarray:
        """``A @ V`` for a ``(d, m)`` array: one forward and backward pass per chunk."""
        Vt = torch.as_tensor(np.asarray(V, dtype=np.float64)).to(self.device)
        m = Vt.shape[1]
        total = torch.zeros(self.dim, m, dtype=torch.float64, device=self.device)
        for start in range(0, self.n, self.batch_size):
            Xc, yc = self._chunk(start)
            leaves = [self.theta[nm].detach().requires_grad_() for nm in self.names]
            with torch.enable_grad():
                if self.kind == "hessian":
                    self._hessian_products(leaves, Xc, yc, Vt, total)
                else:
                    self._ggn_products(leaves, Xc, yc, Vt, total, start)
        return to_numpy(total)

    def _hessian_products(self, leaves, Xc, yc, Vt, total) -> None:
        # reverse over reverse: the chunk's gradient graph, then one backward per column
        value = self.weight * self.loss.per_sample(self._outputs(leaves, Xc), yc).sum()
        gradient = self._grad(value, leaves, None, create_graph=True)
        for j in range(Vt.shape[1]):
            total[:, j] += self._grad(gradient, leaves, Vt[:, j])

    def _ggn_products(self, leaves, Xc, yc, Vt, total, start) -> None:
        out = self._outputs(leaves, Xc)
        lam = self._lambda_cache.get(start)
        if lam is None:
            lam = self.loss.output_hessians(out.detach(), yc)
            K = out.shape[1]
            if 8 * self.n * K * K <= _LAMBDA_CACHE_BYTES:
                self._lambda_cache[start] = lam
        # J v by the double-vjp trick: J^T u is linear in u, its vjp with v is J v
        u = torch.zeros_like(out, requires_grad=True)
        jtu = torch.autograd.grad(out, leaves, u, create_graph=True, allow_unused=True)
        jtu = torch.cat(
            [
                (torch.zeros_like(t) if g is None else g).reshape(-1)
                for g, t in zip(jtu, leaves, strict=True)
            ]
        )
        for j in range(Vt.shape[1]):
            jv = self._grad(jtu, [u], Vt[:, j]).reshape(out.shape)
            w = self.weight * torch.einsum("ikl,il->ik", lam, jv)
            total[:, j] += self._grad(out, leaves, w)


class _CurvatureOperator(LinearOperator):
    """A symmetric scipy operator backed by :class:`_LossCurvature` products."""

    def __init__(self, curvature: _LossCurvature):
        super().__init__(dtype=np.dtype(np.float64), shape=(curvature.dim, curvature.dim))
        self._curvature = curvature

    def _matvec(self, v):
        return self._curvature.products(np.reshape(v, (-1, 1)))[:, 0]

    def _rmatvec(self, v):
        return self._matvec(v)

    def _matmat(self, V):
        return self._curvature.products(V)

    def _adjoint(self):
        return self


def loss_hessian_operator(
    model: torch.nn.Module,
    data,
    *,
    loss,
    params=None,
    batch_size: int = 1024,
    device=None,
) -> LinearOperator:
    r"""The Hessian :math:`\nabla^2 L` of the user's loss on all the data, :math:`L = w_n\sum_i\ell_i`.

    Each product :math:`\nabla^2L\,v = \sum_{\text{chunks }c}\nabla^2\big(w_n\sum_{i\in c}
    \ell_i\big)v` is one pass over the data (``torch.func.functional_call`` and a
    double backward), ``batch_size`` samples at a time on the model's device; a block of
    vectors (``op @ V``) shares each chunk's gradient graph.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, ...)`` to ``(n, K)`` (or ``(n,)``); used in float64 (a float32 model is
        copied; the model is never modified). In eval mode if it has BatchNorm/Dropout.
    data : Dataset, (X, y) or DataLoader
        Training data (see :func:`companion.nets.data.as_xy`); integer labels for
        cross-entropy.
    loss : torch loss, str, OutputLoss or callable
        The loss the model is trained with (required), see
        :func:`companion.nets.losses.as_output_loss`: e.g.
        :class:`~companion.nets.losses.HalfSquaredError` for the book's
        :math:`\frac1{2n}\sum_i\|f_i - y_i\|^2`, ``nn.CrossEntropyLoss()``.
    params : None, "all", "first_layer", "rest" or list of str
        Which parameter block: all trainable parameters, :math:`W_1` only, everything but
        :math:`W_1`, or the named parameters.
    batch_size : int
        Samples per chunk (memory, not the result).
    device : torch.device, str or None
        Where to compute (None: where the model's parameters are). Apple MPS has no
        float64 and is refused; pass ``device="cpu"``.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Symmetric ``(d, d)`` float64 operator; each product costs one pass over the data.
        It is the curvature at the parameters the model has when the operator is built
        (a snapshot: training the model further does not change it).

    Examples
    --------
    >>> import torch
    >>> from companion.nets.curvature_ops import loss_hessian_operator, top_eigenvalues
    >>> from companion.nets.losses import HalfSquaredError
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=2, widths=())          # f = w.x + b
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    >>> op = loss_hessian_operator(model, (X, torch.zeros(2)), loss=HalfSquaredError())
    >>> dense = sum(torch.outer(v, v) for v in torch.cat([X, torch.ones(2, 1)], 1)) / 2
    >>> op.shape, bool(abs(top_eigenvalues(op, 1)[0] - torch.linalg.eigvalsh(dense)[-1]) < 1e-12)
    ((3, 3), True)
    """  # noqa: E501
    return _CurvatureOperator(
        _LossCurvature("hessian", model, data, loss, params, batch_size, device)
    )


def ggn_operator(
    model: torch.nn.Module,
    data,
    *,
    loss,
    params=None,
    batch_size: int = 1024,
    device=None,
) -> LinearOperator:
    r"""Generalized Gauss–Newton matrix :math:`G = w_n\sum_i J_i^\top\Lambda_iJ_i` of the loss.

    :math:`J_i = \partial f(x_i)/\partial\theta`, :math:`\Lambda_i =
    \partial^2\ell_i/\partial f_i^2` (:meth:`companion.nets.losses.OutputLoss.output_hessians`),
    :math:`w_n = 1/n` or :math:`1` by the loss's reduction: the Gauss–Newton part of
    :func:`loss_hessian_operator` (:math:`\nabla^2L = G + w_n\sum_{i,k}\partial_k\ell_i\,
    \nabla^2f_{ik}`), equal to the Hessian at an interpolating minimum of a square loss
    (:cite:p:`mulayoff2024exact`). Arguments as in :func:`loss_hessian_operator`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from companion.nets.curvature_ops import ggn_operator, to_dense
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=2, widths=(3,), out_dim=3)
    >>> X, labels = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> G = to_dense(ggn_operator(model, (X, labels), loss=nn.CrossEntropyLoss()))
    >>> G.shape, bool(abs(G - G.T).max() < 1e-12)
    ((21, 21), True)
    """
    return _CurvatureOperator(_LossCurvature("ggn", model, data, loss, params, batch_size, device))


class CountingOperator(LinearOperator):
    """Wraps a symmetric operator and counts matrix-vector products in ``n_products``."""

    def __init__(self, op: LinearOperator):
        super().__init__(dtype=np.dtype(np.float64), shape=op.shape)
        self.op = op
        self.n_products = 0

    def _matvec(self, v):
        self.n_products += 1
        return self.op.matvec(v)

    def _rmatvec(self, v):
        return self._matvec(v)

    def _matmat(self, V):
        self.n_products += V.shape[1]
        return self.op.matmat(V)

    def _adjoint(self):
        return self


def _check_operator(op) -> LinearOperator:
    if not isinstance(op, LinearOperator) and not (
        isinstance(op, np.ndarray) and op.ndim == 2
    ):
        raise TypeError(f"op must be a scipy LinearOperator or a 2-D array, got {type(op)}")
    if op.shape[0] != op.shape[1] or op.shape[0] < 1:
        raise ValueError(f"op must be square and non-empty, got shape {op.shape}")
    return op


def to_dense(op, block: int = 64) -> np.ndarray:
    """The matrix of a (small) operator, built column block by column block."""
    op = _check_operator(op)
    d = op.shape[0]
    check_dense_size(d * d, "the dense operator", "top_eigenvalues / hutchinson_trace")
    cols = [np.asarray(op @ np.eye(d, min(block, d - s), -s)) for s in range(0, d, block)]
    return np.hstack(cols)


def top_eigenvalues(
    op,
    k: int = 1,
    tol: float = 1e-10,
    seed: int = 0,
    return_eigenvectors: bool = False,
):
    r"""The ``k`` largest (algebraic) eigenvalues of a symmetric operator, by Lanczos.

    scipy's ``eigsh`` (implicitly restarted Lanczos, ARPACK) with ``which="LA"`` and a
    seeded start vector; ``tol`` is ARPACK's relative accuracy of the Ritz values. For
    the Hessian, the largest is the sharpness :math:`\lambda_{\max}(\nabla^2 L)`
    (:cite:p:`wu2018sgd`). Operators too small for ARPACK (``k >= d - 1``) are solved densely.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        Eigenvalues in decreasing order, and (optionally) unit eigenvectors as columns.
    """
    op = _check_operator(op)
    d = op.shape[0]
    k = check_positive_int(k, "k")
    if k > d:
        raise ValueError(f"k must be at most the dimension {d}, got {k}")
    if k >= d - 1:
        vals, vecs = np.linalg.eigh(_symmetrize(to_dense(op)))
    else:
        v0 = np.random.default_rng(seed).standard_normal(d)
        vals, vecs = eigsh(op, k=k, which="LA", tol=float(tol), v0=v0)
    order = np.argsort(vals)[::-1][:k]
    vals, vecs = vals[order], vecs[:, order]
    return (vals, vecs) if return_eigenvectors else vals


def _symmetrize(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def power_iteration(
    op, tol: float = 1e-10, max_iter: int = 10_000, seed: int = 0, callback=None
) -> tuple[float, np.ndarray, int]:
    r"""Power iteration for the eigenvalue of largest magnitude of a symmetric operator.

    Iterates :math:`v \leftarrow Av/\|Av\|` and stops when the Rayleigh quotient changes
    by less than ``tol`` relatively. Converges at the rate :math:`|\lambda_2/\lambda_1|`
    per product, against Lanczos' Chebyshev acceleration (see
    :func:`top_eigenvalues`); kept for comparison. ``callback(products, value)``, if
    given, sees the Rayleigh quotient after every product and stops the iteration by
    returning True.

    Returns
    -------
    (eigenvalue, unit vector, number of products)
    """
    op = _check_operator(op)
    max_iter = check_positive_int(max_iter, "max_iter")
    v = np.random.default_rng(seed).standard_normal(op.shape[0])
    v /= np.linalg.norm(v)
    value = 0.0
    for it in range(1, max_iter + 1):
        w = np.asarray(op @ v)
        new = float(v @ w)
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0, v, it
        v = w / norm
        if callback is not None and callback(it, new):
            return new, v, it
        if it > 1 and abs(new - value) <= tol * abs(new):
            return new, v, it
        value = new
    return value, v, max_iter


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of a trace with its standard error."""

    estimate: float
    stderr: float
    n_samples: int

    def __repr__(self) -> str:
        return (
            f"TraceEstimate({self.estimate:.6g} +- {self.stderr:.2g}, "
            f"n_samples={self.n_samples})"
        )


def hutchinson_trace(op, n_samples: int = 100, seed: int = 0, block: int = 16) -> TraceEstimate:
    r"""Hutchinson's estimator :math:`\mathrm{Tr}A \approx \frac1m\sum_j v_j^\top A v_j`.

    The :math:`v_j` are independent Rademacher vectors (:math:`\mathbb E vv^\top = I`).
    The standard error is the sample standard deviation of :math:`v_j^\top A v_j` over
    :math:`\sqrt m` (needs ``n_samples >= 2``). For :math:`A = \nabla^2 L` at an
    interpolating minimum the trace is the flatness
    :math:`\frac1n\sum_i\|\nabla_W f(x_i)\|^2` (MY eq. (3)).
    """
    op = _check_operator(op)
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
    block = check_positive_int(block, "block")
    rng = np.random.default_rng(seed)
    d = op.shape[0]
    values = []
    for start in range(0, n_samples, block):
        m = min(block, n_samples - start)
        V = rng.choice(np.array([-1.0, 1.0]), size=(d, m))
        AV = np.asarray(op @ V).reshape(d, m)
        values.append(np.einsum("ij,ij->j", V, AV))
    samples = np.concatenate(values)
    return TraceEstimate(
        estimate=float(samples.mean()),
        stderr=float(samples.std(ddof=1) / math.sqrt(n_samples)),
        n_samples=n_samples,
    )
