r"""Matrix-free curvature of a network's training loss, through curvlinops.

The loss is :math:`L(\theta) = \frac{1}{2n}\sum_{i=1}^n \|f(x_i;\theta) - y_i\|^2`
(the normalisation of :cite:p:`ma2021linear` and :cite:p:`mulayoff2024exact`, for which
gradient descent is stable iff :math:`\eta \le 2/\lambda_{\max}(\nabla^2 L)`).
curvlinops' operators with ``nn.MSELoss(reduction="sum")`` represent the curvature of
:math:`\sum_i \|f_i - y_i\|^2`, so they are scaled by :math:`1/(2n)` here. (``nn.MSELoss()``
with its default ``"mean"`` would divide by :math:`nK` instead of :math:`2n`: a Hessian
:math:`2/K` times ours.)

* :func:`loss_hessian_operator`: :math:`\nabla^2 L` (curvlinops ``HessianLinearOperator``).
* :func:`ggn_operator`: the Gauss–Newton matrix :math:`\frac1n\sum_i J_i^\top J_i`
  (``GGNLinearOperator``); it equals the Hessian at an interpolating minimum.
* ``params="first_layer"`` restricts either to the block of :math:`W_1` (the first layer's
  weight), e.g. :math:`\mathrm{Tr}\,\nabla^2_{W_1}L = \frac1n\sum_i\|\nabla_{W_1}f(x_i)\|^2`
  at interpolation (MY eq. (4), Prop. 2).
* :func:`top_eigenvalues` (Lanczos, scipy ``eigsh``), :func:`power_iteration`,
  :func:`hutchinson_trace` (estimate and standard error), :func:`to_dense`, and
  :class:`CountingOperator` to count Hessian-vector products.

All operators are scipy ``LinearOperator`` objects in float64 on the parameter vector
ordered as :func:`companion.models.trainable_parameters`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from ..validation import check_dense_size, check_positive_int
from .data import as_xy
from .models import (
    as_float64,
    check_output_shape,
    first_layer_parameters,
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


def _select_params(model: torch.nn.Module, params) -> list[torch.nn.Parameter]:
    named = dict(trainable_parameters(model))
    if params is None or params == "all":
        return list(named.values())
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
        raise ValueError(f"unknown or empty parameter names {unknown}; known: {list(named)}")
    # keep the model's order so blocks are contiguous slices of theta
    return [p for nm, p in named.items() if nm in set(names)]


def _curvlinops():
    """Import curvlinops, silencing a third-party deprecation warning.

    curvlinops' dependency ``linear_operator`` at import, and torch itself when forward-mode
    AD (used by the Hessian-vector products) first loads its decompositions, call the
    deprecated ``torch.jit.script``; neither is ours to fix, and the warning would clutter
    every notebook. One tiny ``jvp`` here triggers the lazy load inside the filter.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
        )
        import curvlinops

        one = torch.ones(1, dtype=torch.float64)
        torch.func.jvp(torch.sin, (one,), (one,))
    return curvlinops


def _curvature_operator(
    kind, model, data, params, batch_size, check_deterministic
) -> LinearOperator:
    curvlinops = _curvlinops()

    model = as_float64(model)
    X, y = as_xy(data, torch.float64)
    batch_size = check_positive_int(batch_size, "batch_size")
    n = int(X.shape[0])
    check_output_shape(model, X, y)
    batches = [(X[s : s + batch_size], y[s : s + batch_size]) for s in range(0, n, batch_size)]
    cls = {"hessian": curvlinops.HessianLinearOperator, "ggn": curvlinops.GGNLinearOperator}[kind]
    op = cls(
        model,
        torch.nn.MSELoss(reduction="sum"),
        _select_params(model, params),
        batches,
        check_deterministic=bool(check_deterministic),
        num_data=n,
    )
    # sum_i ||f_i - y_i||^2  ->  (1/2n) sum_i ||f_i - y_i||^2
    return (op * (1.0 / (2 * n))).to_scipy(np.float64)


def loss_hessian_operator(
    model: torch.nn.Module,
    data,
    params=None,
    batch_size: int = 1024,
    check_deterministic: bool = False,
) -> LinearOperator:
    r"""The Hessian :math:`\nabla^2 L` of :math:`L = \frac{1}{2n}\sum_i\|f(x_i) - y_i\|^2`.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, ...)`` to ``(n, K)``; used in float64 (a float32 model is copied).
    data : Dataset or (X, y)
        Training data; ``y`` of shape ``(n, K)`` (or ``(n,)`` for ``K = 1``).
    params : None, "all", "first_layer", "rest" or list of str
        Which parameter block: all trainable parameters, :math:`W_1` only, everything but
        :math:`W_1`, or the named parameters.
    batch_size : int
        Samples per curvlinops batch (memory, not the result).
    check_deterministic : bool
        Run curvlinops' determinism probe (two extra passes over the data).

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Symmetric ``(d, d)`` float64 operator; each product costs one pass over the data.
    """
    return _curvature_operator("hessian", model, data, params, batch_size, check_deterministic)


def ggn_operator(
    model: torch.nn.Module,
    data,
    params=None,
    batch_size: int = 1024,
    check_deterministic: bool = False,
) -> LinearOperator:
    r"""Gauss–Newton matrix :math:`G = \frac1n\sum_i J_i^\top J_i` of the same loss.

    :math:`\nabla^2 L = G + \frac1n\sum_i\sum_k (f_{ik} - y_{ik})\nabla^2 f_{ik}`, so
    :math:`G = \nabla^2 L` at an interpolating minimum (every :math:`f_i = y_i`). Arguments
    as in :func:`loss_hessian_operator`.
    """
    return _curvature_operator("ggn", model, data, params, batch_size, check_deterministic)


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
