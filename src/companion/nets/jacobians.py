r"""Per-sample derivatives of a network: parameter Jacobians, input gradients, Gram matrix.

Everything is computed with ``torch.func`` (``vmap`` over samples of ``jacrev``) in
float64 (a float32 model is copied to float64 first) and returned as NumPy float64 arrays.

* :func:`parameter_jacobian`: :math:`J_i = \partial f(x_i)/\partial\theta`, shape
  ``(n, K, d)``. At an interpolating minimum the per-sample Hessians are
  :math:`H_i = J_i^\top J_i` (:cite:p:`ma2021linear`, :cite:p:`mulayoff2024exact`).
* :func:`gram_matrix`: :math:`JJ^\top` (``nK x nK``, rows sample-major: row
  ``i*K + k``), accumulated over groups of parameter tensors (and sample chunks) so the
  full ``nK x d`` Jacobian is never held when it would exceed ``max_memory``.
* :func:`input_gradients`: :math:`\nabla_x f(x_i)`, shape ``(n, K, p)``.
* :func:`preactivation_gradients` and :func:`first_layer_matrix`: the pieces of Ma & Ying's
  eq. (1), :math:`\nabla_{W_1} f = u x^\top`, :math:`\nabla_x f = W_1^\top u` with
  :math:`u = \partial f/\partial (W_1 x)`.
* :func:`first_layer_gradients`: :math:`g_W`, :math:`g_x` (eq. (5)) for any moment
  :math:`k` and both sides of Prop. 2 / Cor. 2.

The parameter vector :math:`\theta` is the concatenation of the trainable parameters in
``model.named_parameters()`` order (:func:`companion.models.trainable_parameters`), the
same order as the Hessian operators of :mod:`companion.hessian_ops`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad, jacrev, vmap

from ..validation import check_dense_size, check_positive_int
from .data import as_inputs
from .models import as_float64, first_layer, first_layer_parameters, trainable_parameters

__all__ = [
    "FirstLayerGradients",
    "first_layer_gradients",
    "first_layer_matrix",
    "gram_matrix",
    "input_gradients",
    "operator_norm_bounds",
    "parameter_jacobian",
    "parameter_jacobian_loop",
    "preactivation_gradients",
]

#: Default memory budget (bytes) for one block of Jacobian entries in :func:`gram_matrix`.
DEFAULT_JACOBIAN_MEMORY = 256 * 1024**2


class _Functional:
    """A float64 copy-free functional view ``f(params, x) -> (K,)`` of one sample."""

    def __init__(self, model: torch.nn.Module, X):
        self.model = as_float64(model)
        self.X = as_inputs(X, torch.float64)
        named = trainable_parameters(self.model)
        self.names = [n for n, _ in named]
        self.params = {n: p.detach() for n, p in named}
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        self.sizes = [self.params[n].numel() for n in self.names]
        with torch.no_grad():
            out = self.model(self.X[:1])
        if out.ndim != 2:
            raise ValueError(f"model must map (n, ...) to outputs (n, K), got {tuple(out.shape)}")
        self.n, self.K = int(self.X.shape[0]), int(out.shape[1])
        self.d = sum(self.sizes)

    def __call__(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        full = {**self.params, **params}
        return functional_call(self.model, (full, self.buffers), (x.unsqueeze(0),)).reshape(-1)

    def jacobian(self, names: list[str], X: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Jacobian w.r.t. the parameters ``names`` on the samples ``X``: ``(m, K, d_sub)``."""
        sub = {n: self.params[n] for n in names}
        m = X.shape[0]
        sizes = [sub[n].numel() for n in names]
        out = torch.empty(m, self.K, sum(sizes), dtype=torch.float64)
        for k, g in enumerate(_per_output_gradients(self, sub, X, self.K, chunk_size)):
            start = 0
            for n, size in zip(names, sizes, strict=True):
                out[:, k, start : start + size] = g[n].reshape(m, size)
                start += size
        return out


def _per_output_gradients(f, first, X: torch.Tensor, k_out: int, chunk_size: int):
    """Yield ``vmap(grad(f_k))(first, X)`` for ``k < k_out``: per-sample gradients.

    ``f(first, x)`` returns the ``K`` outputs of one sample; the gradient is taken with
    respect to ``first`` (not batched). One ``vmap(grad)`` per output is several times
    faster than ``vmap(jacrev)``, whose nested vmap over the outputs is slow.
    """
    chunk = None if X.shape[0] <= chunk_size else chunk_size  # unchunked vmap is leaner
    for k in range(k_out):

        def f_k(p, x, k=k):
            return f(p, x)[k]

        yield vmap(grad(f_k), in_dims=(None, 0), chunk_size=chunk)(first, X)


def _chunk(chunk_size) -> int:
    return check_positive_int(chunk_size, "chunk_size")


def parameter_jacobian(model: torch.nn.Module, X, chunk_size: int = 1024) -> np.ndarray:
    r"""Per-sample parameter Jacobians :math:`J_i = \partial f(x_i;\theta)/\partial\theta`.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, ...)`` to ``(n, K)``.
    X : array_like or torch.Tensor
        Inputs ``(n, ...)``.
    chunk_size : int
        Samples per vectorised chunk (bounds the memory of ``vmap``).

    Returns
    -------
    numpy.ndarray
        ``(n, K, d)`` float64. Refused (``ValueError``) if it would not fit in memory;
        use :func:`gram_matrix` or :func:`first_layer_gradients` then.
    """
    fn = _Functional(model, X)
    check_dense_size(fn.n * fn.K * fn.d, "the parameter Jacobian", "gram_matrix")
    return fn.jacobian(fn.names, fn.X, _chunk(chunk_size)).numpy()


def parameter_jacobian_loop(model: torch.nn.Module, X) -> np.ndarray:
    r"""The same :math:`J` as :func:`parameter_jacobian`, one backward pass per sample and output.

    The naive method: a Python loop over samples and outputs calling ``torch.autograd.grad``.
    It is the independent reference in the tests and the baseline of
    ``benchmarks/jacobians.py``; use :func:`parameter_jacobian` for real work.
    """
    model = as_float64(model)
    X = as_inputs(X, torch.float64)
    params = [p for _, p in trainable_parameters(model)]
    rows = []
    for x in X:
        out = model(x[None])[0]
        per_output = []
        for k in range(out.shape[0]):
            grads = torch.autograd.grad(out[k], params, retain_graph=k + 1 < out.shape[0])
            per_output.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_output))
    return torch.stack(rows).detach().numpy()


def input_gradients(model: torch.nn.Module, X, chunk_size: int = 1024) -> np.ndarray:
    r"""Per-sample input gradients :math:`\nabla_x f(x_i)`, shape ``(n, K, p)`` float64.

    ``p`` is the number of input features (inputs are flattened).
    """
    fn = _Functional(model, X)
    chunk = _chunk(chunk_size)

    return _input_gradients(fn, fn.X, chunk).numpy()


def _input_gradients(fn: _Functional, X: torch.Tensor, chunk: int) -> torch.Tensor:
    """``(m, K, p)`` input gradients of the samples ``X``."""

    m = X.shape[0]
    rows = []
    for k in range(fn.K):

        def f_k(x, k=k):
            return fn({}, x)[k]

        rows.append(vmap(grad(f_k), chunk_size=chunk)(X).reshape(m, -1))
    return torch.stack(rows, dim=1)


def gram_matrix(
    model: torch.nn.Module,
    X,
    chunk_size: int = 1024,
    max_memory: int = DEFAULT_JACOBIAN_MEMORY,
) -> np.ndarray:
    r"""The Gram matrix :math:`JJ^\top` of the stacked Jacobian (``nK x nK``, float64).

    Row ``i*K + k`` belongs to output ``k`` of sample ``i``. The product is accumulated
    as :math:`JJ^\top = \sum_g J_g J_g^\top` over groups ``g`` of parameter tensors whose
    Jacobian block ``(n, K, d_g)`` fits in ``max_memory`` bytes; a single tensor too large
    for that is handled by pairs of sample chunks (recomputing Jacobian chunks), so the
    full ``(n, K, d)`` Jacobian is never materialised when it would not fit. The result
    is exactly symmetrised. With :math:`H = \frac1n J^\top J`, the nonzero eigenvalues of
    :math:`H` are those of :math:`JJ^\top/n` (:cite:p:`mulayoff2024exact`).

    Parameters
    ----------
    model, X
        As in :func:`parameter_jacobian`.
    chunk_size : int
        Samples per vectorised Jacobian chunk.
    max_memory : int
        Bytes allowed for one block of Jacobian entries.
    """
    fn = _Functional(model, X)
    chunk = _chunk(chunk_size)
    max_memory = check_positive_int(max_memory, "max_memory")
    n, K = fn.n, fn.K
    check_dense_size(n * K * n * K, "the Gram matrix", "a smaller subset of samples")
    gram = torch.zeros(n * K, n * K, dtype=torch.float64)
    per_entry = 8 * n * K  # bytes per parameter column of a full-sample block

    groups: list[list[str]] = []
    current: list[str] = []
    current_size = 0
    for name, size in zip(fn.names, fn.sizes, strict=True):
        if current and (current_size + size) * per_entry > max_memory:
            groups.append(current)
            current, current_size = [], 0
        current.append(name)
        current_size += size
    groups.append(current)

    for group in groups:
        size = sum(fn.params[nm].numel() for nm in group)
        if size * per_entry <= max_memory:
            J = fn.jacobian(group, fn.X, chunk).reshape(n * K, size)
            gram += J @ J.T
            continue
        # one tensor larger than the budget: pairs of sample chunks
        rows = max(1, max_memory // (2 * 8 * K * size))
        starts = list(range(0, n, rows))
        for a, s_a in enumerate(starts):
            Xa = fn.X[s_a : s_a + rows]
            Ja = fn.jacobian(group, Xa, chunk).reshape(-1, size)
            ra = slice(s_a * K, s_a * K + Ja.shape[0])
            gram[ra, ra] += Ja @ Ja.T
            for s_b in starts[a + 1 :]:
                Jb = fn.jacobian(group, fn.X[s_b : s_b + rows], chunk).reshape(-1, size)
                rb = slice(s_b * K, s_b * K + Jb.shape[0])
                block = Ja @ Jb.T
                gram[ra, rb] += block
                gram[rb, ra] += block.T
    gram = 0.5 * (gram + gram.T)
    return gram.numpy()


# ----------------------------------------------------------------------------------------
# the first layer: Ma & Ying eq. (1), (5), Prop. 2, Cor. 2
# ----------------------------------------------------------------------------------------


def _first_layer_io(fn: _Functional) -> tuple[torch.nn.Module, torch.Size, torch.Size]:
    """The first layer and the per-sample shapes of its input and output.

    Raises ``TypeError`` unless the layer sees the model input itself (up to a reshape).
    """
    layer = first_layer(fn.model)
    seen = {}

    def hook(module, inputs, output):
        seen["in"], seen["out"] = inputs[0].shape[1:], output.shape[1:]

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            fn.model(fn.X[:1])
    finally:
        handle.remove()
    if "in" not in seen:
        raise TypeError("the model's first layer is not called in its forward pass")
    if math.prod(seen["in"]) != math.prod(fn.X.shape[1:]):
        raise TypeError(
            "the first layer must act on the model input itself (up to a reshape): it sees "
            f"{tuple(seen['in'])}, the input is {tuple(fn.X.shape[1:])}"
        )
    return layer, seen["in"], seen["out"]


def first_layer_matrix(model: torch.nn.Module, X) -> np.ndarray:
    r"""The first layer as a matrix :math:`W_1` acting on flattened inputs, ``(m, p)``.

    For ``nn.Linear`` this is the weight; for ``nn.Conv2d`` it is the (dense) matrix of
    the convolution :math:`x \mapsto W_1 * x` (bias excluded) on inputs shaped like
    ``X[0]``, so that :math:`\nabla_x f = W_1^\top u` holds with the matrix.
    """
    fn = _Functional(model, as_inputs(X)[:1])
    layer, in_shape, out_shape = _first_layer_io(fn)
    if isinstance(layer, torch.nn.Linear):
        return layer.weight.detach().to(torch.float64).numpy().copy()
    p, m = math.prod(in_shape), math.prod(out_shape)
    check_dense_size(m * p, "the first-layer matrix", "a smaller input")

    def layer_of_flat(x):  # affine in x (any padding mode): its Jacobian is W1
        return layer(x.reshape(1, *in_shape)).reshape(-1)

    with torch.no_grad():
        mat = jacrev(layer_of_flat)(torch.zeros(p, dtype=layer.weight.dtype))
    return mat.to(torch.float64).numpy()


def preactivation_gradients(model: torch.nn.Module, X, chunk_size: int = 1024) -> np.ndarray:
    r"""Per-sample :math:`u_i = \partial f(x_i)/\partial (W_1 x_i)`, shape ``(n, K, m)``.

    ``m`` is the size of the first layer's output; the derivative is taken with respect
    to that output (adding the bias does not change it). Ma & Ying's eq. (1):
    :math:`\nabla_{W_1} f = u x^\top` (``nn.Linear``) and :math:`\nabla_x f = W_1^\top u`
    (:cite:p:`ma2021linear`).
    """
    fn = _Functional(model, X)
    layer, _, out_shape = _first_layer_io(fn)
    chunk = _chunk(chunk_size)
    captured = []

    def capture(module, inputs, output):
        captured.append(output.detach())

    handle = layer.register_forward_hook(capture)
    try:
        with torch.no_grad():
            fn.model(fn.X)
    finally:
        handle.remove()
    z0 = captured[0]

    def f_of_z(z, x):
        def replace_output(module, inputs, output):
            return z.reshape(1, *out_shape)

        handle = layer.register_forward_hook(replace_output)
        try:
            return fn({}, x)
        finally:
            handle.remove()

    rows = []
    for k in range(fn.K):

        def f_k(z, x, k=k):
            return f_of_z(z, x)[k]

        rows.append(vmap(grad(f_k), chunk_size=chunk)(z0, fn.X).reshape(fn.n, -1))
    return torch.stack(rows, dim=1).numpy()


def operator_norm_bounds(A, p: float, iterations: int = 200) -> tuple[float, float]:
    r"""Lower and upper bounds on the induced norm :math:`\|A\|_p = \max_x \|Ax\|_p/\|x\|_p`.

    Exact (lower = upper) for ``p`` in ``{1, 2, inf}``. Otherwise the upper bound is the
    smaller of the Riesz–Thorin interpolations
    :math:`\|A\|_1^{1/p}\|A\|_\infty^{1-1/p}` and, for ``p >= 2``,
    :math:`\|A\|_2^{2/p}\|A\|_\infty^{1-2/p}`; the lower bound is :math:`\|Ax\|_p/\|x\|_p`
    at the iterate of Boyd's power method (every iterate gives a valid lower bound).
    Computing :math:`\|A\|_p` exactly is NP-hard for other ``p``.
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or min(A.shape) < 1:
        raise ValueError(f"A must be a non-empty matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError("A contains NaN or infinite entries")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not p >= 1:
        raise ValueError(f"p must be a real number >= 1 (or inf), got {p!r}")
    norm1 = float(np.abs(A).sum(axis=0).max())
    norm_inf = float(np.abs(A).sum(axis=1).max())
    if p == 1:
        return norm1, norm1
    if p == np.inf:
        return norm_inf, norm_inf
    norm2 = float(np.linalg.norm(A, 2))
    if p == 2:
        return norm2, norm2
    upper = norm1 ** (1 / p) * norm_inf ** (1 - 1 / p)
    if p > 2:
        upper = min(upper, norm2 ** (2 / p) * norm_inf ** (1 - 2 / p))
    q = p / (p - 1)

    def dual(v, r):  # the vector achieving Hoelder equality for the r-norm
        mag = np.abs(v) ** (r - 1)
        return np.sign(v) * mag / max(np.linalg.norm(mag, r / (r - 1)), 1e-300)

    x = np.linalg.svd(A, full_matrices=False)[2][0]
    lower = 0.0
    for _ in range(iterations):
        x = x / max(np.linalg.norm(x, p), 1e-300)
        value = float(np.linalg.norm(A @ x, p))
        if value <= lower * (1 + 1e-12):
            lower = max(lower, value)
            break
        lower = value
        x = dual(A.T @ dual(A @ x, p), q)
    return lower, max(upper, lower)


@dataclass(frozen=True)
class FirstLayerGradients:
    r"""Per-sample gradient norms at the training inputs, for moment order ``k``.

    All norms are entrywise :math:`2k`-norms, summed over the ``K`` outputs (the paper
    has ``K = 1``). ``w1t_norm`` holds lower and upper bounds on the induced norm
    :math:`\|W_1^\top\|_{2k}` (equal for ``k = 1``, the spectral norm).
    """

    k: int
    param_grad_norms: np.ndarray
    first_layer_grad_norms: np.ndarray
    input_grad_norms: np.ndarray
    input_norms: np.ndarray
    w1t_norm: tuple[float, float]

    def _moment(self, norms: np.ndarray) -> float:
        p = 2 * self.k
        return float(np.mean(norms**p) ** (1 / p))

    @property
    def g_W(self) -> float:
        r""":math:`g_W = (\frac1n\sum_i\|\nabla_W f(x_i)\|_{2k}^{2k})^{1/2k}` (eq. (5) at k=1)."""
        return self._moment(self.param_grad_norms)

    @property
    def g_W1(self) -> float:
        """As :attr:`g_W` for the first-layer weight only."""
        return self._moment(self.first_layer_grad_norms)

    @property
    def g_x(self) -> float:
        r""":math:`g_x`; also the Sobolev seminorm :math:`|f|_{1,2k,\{x_i\}}` at the data."""
        return self._moment(self.input_grad_norms)

    def prop2_sides(self) -> tuple[np.ndarray, np.ndarray]:
        r"""Both sides of MY Prop. 2 at every sample (upper bound on the norm of W1^T).

        :math:`\|\nabla_x f\|_{2k}^{2k} \le \|W_1^\top\|_{2k}^{2k}\|\nabla_W f\|_{2k}^{2k}
        / \|x\|_{2k}^{2k}`.
        """
        p = 2 * self.k
        lhs = self.input_grad_norms**p
        rhs = (self.w1t_norm[1] / self.input_norms) ** p * self.param_grad_norms**p
        return lhs, rhs

    def cor2_sides(self) -> tuple[float, float]:
        r"""Both sides of MY Cor. 2.

        :math:`|f|_{1,2k,\{x_i\}} \le \|W_1^\top\|_{2k}\, g_W / \min_i\|x_i\|_{2k}`.
        """
        return self.g_x, self.w1t_norm[1] / float(self.input_norms.min()) * self.g_W


def first_layer_gradients(
    model: torch.nn.Module, X, k: int = 1, chunk_size: int = 512
) -> FirstLayerGradients:
    r"""Gradient norms of MY eq. (5) and Prop. 2 for moment order ``k``.

    For every training input :math:`x_i` computes :math:`\|\nabla_W f(x_i)\|_{2k}`,
    :math:`\|\nabla_{W_1} f(x_i)\|_{2k}`, :math:`\|\nabla_x f(x_i)\|_{2k}` and
    :math:`\|x_i\|_{2k}`, plus bounds on :math:`\|W_1^\top\|_{2k}` (see
    :func:`operator_norm_bounds`; :math:`W_1` from :func:`first_layer_matrix`). Works in
    sample chunks, so the full Jacobian is never stored (:cite:p:`ma2021linear`).
    Raises ``TypeError`` for a model without a linear/conv first layer.
    """
    k = check_positive_int(k, "k")
    chunk = _chunk(chunk_size)
    fn = _Functional(model, X)
    _first_layer_io(fn)
    (w1_name,), _ = first_layer_parameters(fn.model)
    offsets = np.cumsum([0, *fn.sizes])
    i = fn.names.index(w1_name)
    w1_cols = slice(int(offsets[i]), int(offsets[i + 1]))
    p = 2 * k

    param_norms, w1_norms, input_norms = [], [], []
    for start in range(0, fn.n, chunk):
        Xc = fn.X[start : start + chunk]
        J = fn.jacobian(fn.names, Xc, chunk)
        gx = _input_gradients(fn, Xc, chunk).reshape(Xc.shape[0], -1)
        param_norms.append(torch.linalg.vector_norm(J.reshape(len(Xc), -1), p, dim=1))
        w1_norms.append(torch.linalg.vector_norm(J[:, :, w1_cols].reshape(len(Xc), -1), p, dim=1))
        input_norms.append(torch.linalg.vector_norm(gx, p, dim=1))
    x_norms = torch.linalg.vector_norm(fn.X.reshape(fn.n, -1), p, dim=1).numpy()
    if np.any(x_norms == 0):
        raise ValueError("X contains a zero input: Prop. 2 needs x != 0")
    w1 = first_layer_matrix(fn.model, fn.X[:1])
    return FirstLayerGradients(
        k=k,
        param_grad_norms=torch.cat(param_norms).numpy(),
        first_layer_grad_norms=torch.cat(w1_norms).numpy(),
        input_grad_norms=torch.cat(input_norms).numpy(),
        input_norms=x_norms,
        w1t_norm=operator_norm_bounds(w1.T, p),
    )
