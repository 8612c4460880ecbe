r"""Per-sample derivatives of a network: parameter Jacobians, input gradients, Gram matrix.

Everything is computed with ``torch.func`` (``vmap`` over samples of ``grad``) in float64
(a float32 model is copied to float64 first) **where the model's parameters are** (or on
``device=``): inputs are moved there chunk by chunk, and results come back to the CPU as
NumPy float64 arrays (:func:`companion.nets.models.to_numpy`).

* :class:`FunctionalModel`: the model as a pure function :math:`f(\theta, x)` of one sample.
* :func:`parameter_jacobian`: :math:`J_i = \partial f(x_i)/\partial\theta`, shape
  ``(n, K, d)``. With a loss, the per-sample Gauss–Newton matrices are
  :math:`H_i = J_i^\top\Lambda_iJ_i` (:func:`loss_hessians` gives :math:`\Lambda_i`); for
  the square loss :math:`\frac12\|f - y\|^2` at an interpolating minimum they are the
  per-sample Hessians :math:`J_i^\top J_i` (:cite:p:`ma2021linear`,
  :cite:p:`mulayoff2024exact`).
* :func:`gram_matrix`: :math:`JJ^\top` (``nK x nK``, rows sample-major: row ``i*K + k``),
  or with ``loss=`` the loss-weighted :math:`\tilde J\tilde J^\top`, rows of
  :math:`\tilde J_i = \Lambda_i^{1/2}J_i`; accumulated over groups of parameter tensors
  (and sample chunks) so the full ``nK x d`` Jacobian is never held when it would exceed
  ``max_memory``.
* :func:`loss_hessians`: :math:`\Lambda_i = \partial^2\ell_i/\partial f_i^2` at the model's
  outputs, shape ``(n, K, K)``.
* :func:`input_gradients`: :math:`\nabla_x f(x_i)`, shape ``(n, K, p)``.
* :func:`preactivation_gradients` and :func:`first_layer_matrix`: the pieces of Ma & Ying's
  eq. (1), :math:`\nabla_{W_1} f = u x^\top`, :math:`\nabla_x f = W_1^\top u` with
  :math:`u = \partial f/\partial (W_1 x)`.
* :func:`first_layer_gradients`: :math:`g_W`, :math:`g_x` (eq. (5)) for any moment
  :math:`k` and both sides of Prop. 2 / Cor. 2.

Per-sample derivatives need :math:`f(x_i)` to be a deterministic function of one sample:
a model in training mode with BatchNorm or Dropout is refused (call ``model.eval()``;
:func:`companion.nets.models.check_deterministic_mode`).

The parameter vector :math:`\theta` is the concatenation of the trainable parameters in
``model.named_parameters()`` order (:func:`companion.nets.models.trainable_parameters`),
the same order as the operators of :mod:`companion.nets.curvature_ops`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

from ..validation import check_dense_size, check_positive_int
from .data import as_inputs, as_xy
from .losses import as_output_loss
from .models import (
    as_float64,
    check_deterministic_mode,
    first_layer,
    first_layer_parameters,
    model_device,
    to_numpy,
    trainable_parameters,
)

__all__ = [
    "FirstLayerGradients",
    "FunctionalModel",
    "GramOperator",
    "first_layer_gradients",
    "first_layer_matrix",
    "gram_matrix",
    "gram_top_eigenpairs",
    "input_gradients",
    "loss_hessians",
    "operator_norm_bounds",
    "parameter_jacobian",
    "parameter_jacobian_loop",
    "preactivation_gradients",
]

#: Default memory budget (bytes) for one block of Jacobian entries in :func:`gram_matrix`.
DEFAULT_JACOBIAN_MEMORY = 256 * 1024**2


class FunctionalModel:
    r"""A model as a pure function of its parameters and one input, :math:`f(\theta, x)\in\mathbb R^K`.

    ``fn(params, x)`` evaluates the model on the single sample ``x`` (no batch axis) with
    the trainable parameters replaced by those in the dict ``params`` (a subset of
    ``names``; the others keep their values), through ``torch.func.functional_call``.
    It is what ``torch.func.grad``/``vmap`` differentiate per sample.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, ...)`` to ``(n, K)`` or ``(n,)`` (``K = 1``). Refused in training mode
        with BatchNorm/Dropout (``ValueError``: call ``model.eval()``).
    X : array_like or torch.Tensor
        Inputs ``(n, ...)``.
    device : torch.device, str or None
        Where to compute; None: where the model's parameters are. A float64 copy of the
        model is made when it is not float64 on that device (the model is never modified).

    Attributes
    ----------
    model : torch.nn.Module
        The float64 model on :attr:`device`.
    device : torch.device
    X : torch.Tensor
        The inputs in float64, where they were given; methods move them to :attr:`device`
        chunk by chunk (:meth:`to_device`).
    names, sizes : list
        Trainable parameter names (``named_parameters`` order) and their sizes.
    params, buffers : dict
        Detached parameters and buffers of :attr:`model`.
    n, K, d : int
        Samples, outputs, trainable parameters.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.jacobians import FunctionalModel
    >>> from companion.nets.models import make_model
    >>> fn = FunctionalModel(make_model("mlp", in_dim=3, widths=(4,), out_dim=2), torch.ones(5, 3))
    >>> fn.n, fn.K, fn.d, tuple(fn({}, fn.X[0]).shape)
    (5, 2, 26, (2,))
    """  # noqa: E501

    def __init__(self, model: torch.nn.Module, X, *, device=None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_deterministic_mode(model)
        self.model = as_float64(model, device=device)
        self.device = model_device(self.model)
        self.X = as_inputs(X, torch.float64)
        named = trainable_parameters(self.model)
        self.names = [n for n, _ in named]
        self.params = {n: p.detach() for n, p in named}
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        self.sizes = [self.params[n].numel() for n in self.names]
        with torch.no_grad():
            out = self.model(self.to_device(self.X[:1]))
        if out.ndim not in (1, 2):
            raise ValueError(
                f"model must map (n, ...) to outputs (n, K) or (n,), got {tuple(out.shape)}"
            )
        self.n = int(self.X.shape[0])
        self.K = 1 if out.ndim == 1 else int(out.shape[1])
        self.d = sum(self.sizes)

    def to_device(self, X: torch.Tensor) -> torch.Tensor:
        """``X`` on :attr:`device` (a no-op when it is already there)."""
        return X.to(self.device)

    def __call__(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        full = {**self.params, **params}
        return functional_call(self.model, (full, self.buffers), (x.unsqueeze(0),)).reshape(-1)

    def outputs(self, X: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Model outputs ``(m, K)`` on :attr:`device` (no gradient), chunk by chunk."""
        with torch.no_grad():
            rows = [
                self.model(self.to_device(X[s : s + chunk_size])).reshape(-1, self.K)
                for s in range(0, X.shape[0], chunk_size)
            ]
        return torch.cat(rows)

    def jacobian(self, names: list[str], X: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Jacobian w.r.t. the parameters ``names`` on the samples ``X``: ``(m, K, d_sub)``.

        Computed on :attr:`device`, ``chunk_size`` samples at a time.
        """
        sub = {n: self.params[n] for n in names}
        m = X.shape[0]
        sizes = [sub[n].numel() for n in names]
        out = torch.empty(m, self.K, sum(sizes), dtype=torch.float64, device=self.device)
        for s in range(0, m, chunk_size):
            Xc = self.to_device(X[s : s + chunk_size])
            rows = slice(s, s + Xc.shape[0])
            for k, g in enumerate(_per_output_gradients(self, sub, Xc, self.K)):
                start = 0
                for n, size in zip(names, sizes, strict=True):
                    out[rows, k, start : start + size] = g[n].reshape(Xc.shape[0], size)
                    start += size
        return out

    def input_gradients(self, X: torch.Tensor) -> torch.Tensor:
        """``(m, K, p)`` input gradients of the samples ``X`` (moved to :attr:`device`)."""
        X = self.to_device(X)
        m = X.shape[0]
        rows = []
        for k in range(self.K):

            def f_k(x, k=k):
                return self({}, x)[k]

            rows.append(vmap(grad(f_k))(X).reshape(m, -1))
        return torch.stack(rows, dim=1)


def _per_output_gradients(f, first, X: torch.Tensor, k_out: int):
    """Yield ``vmap(grad(f_k))(first, X)`` for ``k < k_out``: per-sample gradients.

    ``f(first, x)`` returns the ``K`` outputs of one sample; the gradient is taken with
    respect to ``first`` (not batched). One ``vmap(grad)`` per output is several times
    faster than ``vmap(jacrev)``, whose nested vmap over the outputs is slow.
    """
    for k in range(k_out):

        def f_k(p, x, k=k):
            return f(p, x)[k]

        yield vmap(grad(f_k), in_dims=(None, 0))(first, X)


def _chunk(chunk_size) -> int:
    return check_positive_int(chunk_size, "chunk_size")


def parameter_jacobian(
    model: torch.nn.Module, X, chunk_size: int = 1024, *, device=None
) -> np.ndarray:
    r"""Per-sample parameter Jacobians :math:`J_i = \partial f(x_i;\theta)/\partial\theta`.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, ...)`` to ``(n, K)`` (or ``(n,)``, ``K = 1``); in eval mode if it has
        BatchNorm/Dropout.
    X : array_like or torch.Tensor
        Inputs ``(n, ...)``, on any device.
    chunk_size : int
        Samples per vectorised chunk moved to the device (bounds the memory of ``vmap``).
    device : torch.device, str or None
        Where to compute (None: where the model is).

    Returns
    -------
    numpy.ndarray
        ``(n, K, d)`` float64. Refused (``ValueError``) if it would not fit in memory;
        use :func:`gram_matrix` or :func:`first_layer_gradients` then.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.jacobians import parameter_jacobian
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=3, widths=(), out_dim=1)   # f = w.x + b
    >>> J = parameter_jacobian(model, torch.ones(2, 3))
    >>> J.shape, J[0, 0].tolist()
    ((2, 1, 4), [1.0, 1.0, 1.0, 1.0])
    """
    chunk = _chunk(chunk_size)
    fn = FunctionalModel(model, X, device=device)
    check_dense_size(fn.n * fn.K * fn.d, "the parameter Jacobian", "gram_matrix")
    out = np.empty((fn.n, fn.K, fn.d))
    for s in range(0, fn.n, chunk):
        out[s : s + chunk] = to_numpy(fn.jacobian(fn.names, fn.X[s : s + chunk], chunk))
    return out


def parameter_jacobian_loop(model: torch.nn.Module, X) -> np.ndarray:
    r"""The same :math:`J` as :func:`parameter_jacobian`, one backward pass per sample and output.

    The naive method: a Python loop over samples and outputs calling ``torch.autograd.grad``
    (on the model's device). It is the independent reference in the tests and the baseline
    of ``benchmarks/jacobians.py``; use :func:`parameter_jacobian` for real work.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.jacobians import parameter_jacobian_loop
    >>> from companion.nets.models import make_model
    >>> parameter_jacobian_loop(make_model("mlp", in_dim=3), torch.ones(2, 3)).shape
    (2, 1, 4)
    """
    check_deterministic_mode(model)
    model = as_float64(model)
    device = model_device(model)
    X = as_inputs(X, torch.float64)
    params = [p for _, p in trainable_parameters(model)]
    rows = []
    for x in X:
        out = model(x[None].to(device)).reshape(-1)
        per_output = []
        for k in range(out.shape[0]):
            grads = torch.autograd.grad(out[k], params, retain_graph=k + 1 < out.shape[0])
            per_output.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_output))
    return to_numpy(torch.stack(rows))


def loss_hessians(
    model: torch.nn.Module, data, *, loss, chunk_size: int = 1024, device=None
) -> np.ndarray:
    r"""Per-sample output Hessians :math:`\Lambda_i = \partial^2\ell_i/\partial f_i^2` at the model.

    Evaluates the model on the training inputs and applies
    :meth:`companion.nets.losses.OutputLoss.output_hessians`; with :func:`parameter_jacobian`
    this gives the per-sample Gauss–Newton matrices :math:`H_i = J_i^\top\Lambda_iJ_i`
    (:cite:p:`mulayoff2024exact`).

    Parameters
    ----------
    model : torch.nn.Module
    data : Dataset, (X, y) or DataLoader
        Inputs and targets (integer labels for cross-entropy), see
        :func:`companion.nets.data.as_xy`.
    loss : torch loss, str, OutputLoss or callable
        See :func:`companion.nets.losses.as_output_loss`.
    chunk_size : int
        Samples per forward pass on the device.
    device : torch.device, str or None
        Where to compute (None: where the model is).

    Returns
    -------
    numpy.ndarray
        ``(n, K, K)`` float64.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from companion.nets.jacobians import loss_hessians
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=3, out_dim=2)
    >>> lam = loss_hessians(model, (torch.ones(4, 3), torch.zeros(4, 2)), loss=nn.MSELoss())
    >>> lam.shape, lam[0].tolist()
    ((4, 2, 2), [[1.0, 0.0], [0.0, 1.0]])
    """
    output_loss = as_output_loss(loss)
    chunk = _chunk(chunk_size)
    X, y = as_xy(data, torch.float64)
    fn = FunctionalModel(model, X, device=device)
    out = np.empty((fn.n, fn.K, fn.K))
    for s in range(0, fn.n, chunk):
        f = fn.outputs(fn.X[s : s + chunk], chunk)
        out[s : s + chunk] = to_numpy(output_loss.output_hessians(f, y[s : s + chunk]))
    return out


def input_gradients(
    model: torch.nn.Module, X, chunk_size: int = 1024, *, device=None
) -> np.ndarray:
    r"""Per-sample input gradients :math:`\nabla_x f(x_i)`, shape ``(n, K, p)`` float64.

    ``p`` is the number of input features (inputs are flattened). Computed on the model's
    device (or ``device``), ``chunk_size`` samples at a time.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.jacobians import input_gradients
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=3, widths=())   # f = w.x + b: the gradient is w
    >>> g = input_gradients(model, torch.randn(2, 3))
    >>> bool((g[0, 0] == model.first_layer.weight.detach().numpy()[0]).all())
    True
    """
    chunk = _chunk(chunk_size)
    fn = FunctionalModel(model, X, device=device)
    p = math.prod(fn.X.shape[1:])
    out = np.empty((fn.n, fn.K, p))
    for s in range(0, fn.n, chunk):
        out[s : s + chunk] = to_numpy(fn.input_gradients(fn.X[s : s + chunk]))
    return out


def gram_matrix(
    model: torch.nn.Module,
    X,
    chunk_size: int = 1024,
    max_memory: int = DEFAULT_JACOBIAN_MEMORY,
    *,
    loss=None,
    targets=None,
    device=None,
) -> np.ndarray:
    r"""The Gram matrix :math:`JJ^\top` of the stacked Jacobian (``nK x nK``, float64).

    Row ``i*K + k`` belongs to output ``k`` of sample ``i``. The product is accumulated
    as :math:`JJ^\top = \sum_g J_g J_g^\top` over groups ``g`` of parameter tensors whose
    Jacobian block ``(n, K, d_g)`` fits in ``max_memory`` bytes; a single tensor too large
    for that is handled by pairs of sample chunks (recomputing Jacobian chunks), so the
    full ``(n, K, d)`` Jacobian is never materialised when it would not fit. The result
    is exactly symmetrised. With :math:`H = \frac1n J^\top J`, the nonzero eigenvalues of
    :math:`H` are those of :math:`JJ^\top/n` (:cite:p:`mulayoff2024exact`).

    With ``loss`` (and ``targets``) the rows are those of
    :math:`\tilde J_i = S_iJ_i`, :math:`S_i = \Lambda_i^{1/2}`
    (:meth:`companion.nets.losses.OutputLoss.output_hessian_roots` at the model's outputs):
    :math:`G_{ij} = S_iJ_iJ_j^\top S_j`, whose nonzero eigenvalues are those of
    :math:`\sum_i J_i^\top\Lambda_iJ_i` (the Gauss–Newton matrix of :math:`\sum_i\ell_i`).

    Parameters
    ----------
    model, X
        As in :func:`parameter_jacobian`.
    chunk_size : int
        Samples per vectorised Jacobian chunk.
    max_memory : int
        Bytes allowed for one block of Jacobian entries.
    loss : torch loss, str, OutputLoss, callable or None
        Weight the rows by :math:`\Lambda_i^{1/2}` (see
        :func:`companion.nets.losses.as_output_loss`); None: the plain :math:`JJ^\top`.
    targets : array_like or torch.Tensor or None
        The targets (labels), required with ``loss``.
    device : torch.device, str or None
        Where to compute (None: where the model is).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from companion.nets.jacobians import gram_matrix
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=3, widths=(4,), out_dim=2)
    >>> X, labels = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    >>> gram_matrix(model, X).shape
    (10, 10)
    >>> G = gram_matrix(model, X, loss=nn.CrossEntropyLoss(), targets=labels)
    >>> bool(abs(G - G.T).max() == 0)
    True
    """
    chunk = _chunk(chunk_size)
    max_memory = check_positive_int(max_memory, "max_memory")
    if loss is None and targets is not None:
        raise ValueError("targets are only used with loss=: pass the loss too")
    fn = FunctionalModel(model, X, device=device)
    n, K = fn.n, fn.K
    check_dense_size(n * K * n * K, "the Gram matrix", "a smaller subset of samples")
    roots = None
    if loss is not None:
        output_loss = as_output_loss(loss)
        if targets is None:
            raise ValueError("targets are required with loss= (the loss Hessians need them)")
        _, y = as_xy((fn.X, targets), torch.float64)
        roots = torch.cat(
            [
                output_loss.output_hessian_roots(
                    fn.outputs(fn.X[s : s + chunk], chunk), y[s : s + chunk]
                )
                for s in range(0, n, chunk)
            ]
        )

    def block(names: list[str], start: int, stop: int) -> torch.Tensor:
        J = fn.jacobian(names, fn.X[start:stop], chunk)
        if roots is not None:
            J = torch.einsum("ikl,ild->ikd", roots[start:stop], J)
        return J.reshape(J.shape[0] * K, -1)

    gram = torch.zeros(n * K, n * K, dtype=torch.float64, device=fn.device)
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
            J = block(group, 0, n)
            gram += J @ J.T
            continue
        # one tensor larger than the budget: pairs of sample chunks
        rows = max(1, max_memory // (2 * 8 * K * size))
        starts = list(range(0, n, rows))
        for a, s_a in enumerate(starts):
            Ja = block(group, s_a, s_a + rows)
            ra = slice(s_a * K, s_a * K + Ja.shape[0])
            gram[ra, ra] += Ja @ Ja.T
            for s_b in starts[a + 1 :]:
                Jb = block(group, s_b, s_b + rows)
                rb = slice(s_b * K, s_b * K + Jb.shape[0])
                product = Ja @ Jb.T
                gram[ra, rb] += product
                gram[rb, ra] += product.T
    gram = 0.5 * (gram + gram.T)
    return to_numpy(gram)


# ----------------------------------------------------------------------------------------
# matrix-free Gram matrix: Jacobian-vector and vector-Jacobian products
# ----------------------------------------------------------------------------------------


#: Samples per chunk when the loss-Hessian roots are evaluated (as ``gram_matrix`` does by
#: default): batched eigendecompositions of different sizes round differently, and the
#: square root of a rounding-level eigenvalue (the null direction of the softmax Hessian)
#: is ~1e-8, so fixing the chunks keeps the roots bitwise reproducible.
_ROOT_CHUNK = 1024


class GramOperator:
    r"""The Gram matrix :math:`G = \tilde J\tilde J^\top` as products, never forming :math:`J`.

    :math:`Gv = \tilde J(\tilde J^\top v)`: one vector-Jacobian product
    :math:`g = \sum_iJ_i^\top S_i^\top v_i\in\mathbb R^d` (a backward pass over the
    samples, ``chunk_size`` at a time, summed) and one Jacobian-vector product
    :math:`u_i = S_iJ_ig` (a forward-mode pass), with :math:`S_i = \Lambda_i^{1/2}` the
    loss-Hessian roots (identity without ``loss``). The forward pass of every chunk is
    kept for its pullback (the model's activations on the :math:`n` samples); each product
    then adds one parameter-sized vector; nothing of size :math:`nKd` is formed.
    ``memory_budget`` bounds the work arrays: a block of ``b`` vectors is charged
    ``8 b (2d + nK + c K)`` bytes and the per-sample Jacobian chunk of
    :meth:`diagonal_blocks` ``8 c K d`` bytes; a budget that cannot hold one vector (or one
    sample's Jacobian) is refused with a ``ValueError``.

    Parameters
    ----------
    model, X
        As in :func:`parameter_jacobian`.
    loss, targets
        As in :func:`gram_matrix`.
    chunk_size : int
        Samples per pass.
    memory_budget : int
        Bytes for the work arrays (see above).
    device : torch.device, str or None
        Where to compute.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=3, widths=(4,), out_dim=2)
    >>> X = torch.randn(5, 3)
    >>> op = GramOperator(model, X)
    >>> bool(np.allclose(op.dense(), gram_matrix(model, X), rtol=1e-12, atol=1e-12))
    True
    """

    def __init__(
        self,
        model: torch.nn.Module,
        X,
        *,
        loss=None,
        targets=None,
        chunk_size: int = 1024,
        memory_budget: int = DEFAULT_JACOBIAN_MEMORY,
        device=None,
    ):
        self.chunk = _chunk(chunk_size)
        self.memory_budget = check_positive_int(memory_budget, "memory_budget")
        if loss is None and targets is not None:
            raise ValueError("targets are only used with loss=: pass the loss too")
        fn = FunctionalModel(model, X, device=device)
        self.fn = fn
        self.n, self.K, self.d = fn.n, fn.K, fn.d
        self.roots = None
        if loss is not None:
            if targets is None:
                raise ValueError("targets are required with loss= (the loss Hessians need them)")
            output_loss = as_output_loss(loss)
            _, y = as_xy((fn.X, targets), torch.float64)
            self.roots = torch.cat(
                [
                    output_loss.output_hessian_roots(
                        fn.outputs(fn.X[s : s + _ROOT_CHUNK], _ROOT_CHUNK), y[s : s + _ROOT_CHUNK]
                    )  # the chunks of gram_matrix's default: bitwise the same roots
                    for s in range(0, self.n, _ROOT_CHUNK)
                ]
            ).to(fn.device)
        per_vector = 8 * (2 * self.d + self.n * self.K + min(self.chunk, self.n) * self.K)
        if per_vector > self.memory_budget:
            raise ValueError(
                f"memory_budget = {self.memory_budget} bytes cannot hold one Gram-vector "
                f"product (at least {per_vector} bytes for d = {self.d}, nK = "
                f"{self.n * self.K}); raise memory_budget or lower chunk_size"
            )
        self.block = max(1, self.memory_budget // per_vector)
        self.products = 0
        self._cache = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(nK, nK)``."""
        return (self.n * self.K, self.n * self.K)

    def _batched(self, Xc: torch.Tensor):
        fn = self.fn
        names, params, buffers, model = fn.names, fn.params, fn.buffers, fn.model
        K = self.K

        def f(*flat):
            full = {**params, **dict(zip(names, flat, strict=True))}
            return functional_call(model, (full, buffers), (Xc,)).reshape(Xc.shape[0], K)

        return f, tuple(params[nm] for nm in names)

    def _passes(self) -> list:
        """Per chunk: the batched function, its primals and its pullback (cached forward)."""
        if self._cache is None:
            self._cache = []
            for s in range(0, self.n, self.chunk):
                f, primals = self._batched(self.fn.to_device(self.fn.X[s : s + self.chunk]))
                self._cache.append((s, f, primals, vjp(f, *primals)[1]))
        return self._cache

    def _block_product(self, V: torch.Tensor) -> torch.Tensor:
        """``G @ V`` for ``V`` of shape ``(b, n, K)`` on the device.

        One column at a time: for these products ``torch.func.vmap`` over the pullback and
        the forward-mode pass was measured 2-3 times slower than a loop.
        """
        b = V.shape[0]
        W = V if self.roots is None else torch.einsum("ilk,bil->bik", self.roots, V)
        passes = self._passes()
        out = torch.empty(b, self.n, self.K, dtype=torch.float64, device=self.fn.device)
        for j in range(b):
            grads = None
            for s, _, _, pullback in passes:
                g = pullback(W[j, s : s + self.chunk])
                grads = list(g) if grads is None else [a + c for a, c in zip(grads, g, strict=True)]
            for s, f, primals, _ in passes:
                out[j, s : s + self.chunk] = jvp(f, primals, tuple(grads))[1]
        if self.roots is not None:
            out = torch.einsum("ikl,bil->bik", self.roots, out)
        self.products += b
        return out

    def matmat(self, V) -> np.ndarray:
        r""":math:`GV` for ``V`` of shape ``(nK,)`` or ``(nK, b)`` (float64 NumPy)."""
        arr = np.asarray(V, dtype=np.float64)
        one = arr.ndim == 1
        cols = arr.reshape(self.n * self.K, -1)
        out = np.empty_like(cols)
        for start in range(0, cols.shape[1], self.block):
            part = cols[:, start : start + self.block]
            t = torch.as_tensor(np.ascontiguousarray(part.T), device=self.fn.device)
            res = self._block_product(t.reshape(-1, self.n, self.K))
            out[:, start : start + self.block] = to_numpy(res.reshape(part.shape[1], -1)).T
        return out.reshape(-1) if one else out

    def dense(self) -> np.ndarray:
        r"""The whole :math:`G` (``nK x nK``), from :math:`G` times the identity in blocks.

        :math:`O(n^2Kd)` work like :func:`gram_matrix`, but only ``block`` columns of
        parameter-sized work arrays at a time; exactly symmetrised.
        """
        side = self.n * self.K
        check_dense_size(side * side, "the Gram matrix", "top eigenpairs (gram_top_eigenpairs)")
        out = self.matmat(np.eye(side))
        return 0.5 * (out + out.T)

    def diagonal_blocks(self) -> np.ndarray:
        r"""The ``n`` blocks :math:`G_{ii} = S_iJ_iJ_i^\top S_i^\top`, ``(n, K, K)``.

        Per-sample Jacobians of ``c`` samples at a time, ``8 c K d`` bytes within
        ``memory_budget`` (a ``ValueError`` if one sample's Jacobian does not fit).
        """
        one = 8 * self.K * self.d
        if one > self.memory_budget:
            raise ValueError(
                f"memory_budget = {self.memory_budget} bytes cannot hold one sample's "
                f"Jacobian ({one} bytes for K = {self.K}, d = {self.d})"
            )
        rows = max(1, min(self.chunk, self.memory_budget // one))
        out = np.empty((self.n, self.K, self.K))
        for s in range(0, self.n, rows):
            J = self.fn.jacobian(self.fn.names, self.fn.X[s : s + rows], rows)
            if self.roots is not None:
                J = torch.einsum("ikl,ild->ikd", self.roots[s : s + rows], J)
            out[s : s + J.shape[0]] = to_numpy(J @ J.transpose(1, 2))
        return 0.5 * (out + np.swapaxes(out, 1, 2))

    def linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` of :math:`G`."""
        import scipy.sparse.linalg as spla

        return spla.LinearOperator(
            self.shape, matvec=self.matmat, matmat=self.matmat, dtype=np.float64
        )


def gram_top_eigenpairs(
    model: torch.nn.Module,
    X,
    m: int,
    *,
    loss=None,
    targets=None,
    reduction: str | None = None,
    chunk_size: int = 1024,
    memory_budget: int = DEFAULT_JACOBIAN_MEMORY,
    tol: float = 1e-12,
    seed: int = 0,
    device=None,
):
    r"""Top ``m`` eigenpairs of the Gram matrix, matrix-free, as a ``GramSpectrum``.

    Lanczos (ARPACK ``eigsh``, ``k = m + 1``, relative tolerance ``tol``) on the products of
    :class:`GramOperator`; the :math:`(m+1)`-th Ritz value is kept as
    ``next_eigenvalue`` (:math:`\kappa_{m+1}`) and the diagonal blocks :math:`G_{ii}` are
    computed from per-sample Jacobian chunks. This is everything
    :meth:`companion.stability.bracket.GramSpectrum.bracket` needs to bracket
    :math:`\eta^*` (proposition ``new-bracket``). Nothing of size :math:`nKd` is formed.

    Parameters
    ----------
    model, X, loss, targets, chunk_size, memory_budget, device
        As in :class:`GramOperator`.
    m : int
        :math:`1\le m\le nK - 2` (ARPACK needs :math:`k < nK`; for larger ``m`` form the
        Gram matrix and use :func:`companion.stability.bracket.gram_spectrum`).
    reduction : {"mean", "sum"} or None
        Learning-rate units of the bracket (None: the loss's, "mean" without a loss).
    tol : float
        ARPACK's relative accuracy of the Ritz values.
    seed : int
        Seed of the start vector.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from companion.nets.models import make_model
    >>> from companion.stability.bracket import gram_spectrum
    >>> model = make_model("mlp", in_dim=3, widths=(8,), out_dim=1)
    >>> X = torch.randn(20, 3)
    >>> top = gram_top_eigenpairs(model, X, 3)
    >>> ref = np.linalg.eigvalsh(gram_matrix(model, X))[::-1][:3]
    >>> bool(np.allclose(top.eigenvalues, ref, rtol=1e-9))
    True
    """
    import scipy.sparse.linalg as spla

    from ..stability.bracket import GramSpectrum

    op = GramOperator(
        model, X, loss=loss, targets=targets, chunk_size=chunk_size,
        memory_budget=memory_budget, device=device,
    )  # fmt: skip
    side = op.n * op.K
    m = check_positive_int(m, "m")
    if m > side - 2:
        raise ValueError(
            f"m must be at most nK - 2 = {side - 2} for the matrix-free route, got {m}; "
            "form the Gram matrix (gram_matrix) and use stability.bracket.gram_spectrum"
        )
    seed = check_positive_int(seed, "seed", minimum=0)
    if reduction is None:
        reduction = "mean" if loss is None else as_output_loss(loss).reduction
    start = np.random.default_rng(seed).standard_normal(side)
    vals, vecs = spla.eigsh(op.linear_operator(), k=m + 1, which="LA", v0=start, tol=tol)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order]
    return GramSpectrum(
        vals[:m], vecs[:, :m], op.diagonal_blocks(), float(vals[m]), reduction=reduction
    )


# ----------------------------------------------------------------------------------------
# the first layer: Ma & Ying eq. (1), (5), Prop. 2, Cor. 2
# ----------------------------------------------------------------------------------------


def _first_layer_io(fn: FunctionalModel) -> tuple[torch.nn.Module, torch.Size, torch.Size]:
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
            fn.model(fn.to_device(fn.X[:1]))
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

    Examples
    --------
    >>> import torch
    >>> from companion.nets.jacobians import first_layer_matrix
    >>> from companion.nets.models import make_model
    >>> cnn = make_model("cnn", in_shape=(1, 4, 4), channels=(2,))
    >>> first_layer_matrix(cnn, torch.zeros(1, 16)).shape   # 2 channels x 16 pixels, 16 inputs
    (32, 16)
    """
    fn = FunctionalModel(model, as_inputs(X)[:1])
    layer, in_shape, out_shape = _first_layer_io(fn)
    if isinstance(layer, torch.nn.Linear):
        return to_numpy(layer.weight)
    p, m = math.prod(in_shape), math.prod(out_shape)
    check_dense_size(m * p, "the first-layer matrix", "a smaller input")

    def layer_of_flat(x):  # affine in x (any padding mode): its Jacobian is W1
        return layer(x.reshape(1, *in_shape)).reshape(-1)

    with torch.no_grad():
        mat = jacrev(layer_of_flat)(
            torch.zeros(p, dtype=layer.weight.dtype, device=layer.weight.device)
        )
    return to_numpy(mat)


def preactivation_gradients(
    model: torch.nn.Module, X, chunk_size: int = 1024, *, device=None
) -> np.ndarray:
    r"""Per-sample :math:`u_i = \partial f(x_i)/\partial (W_1 x_i)`, shape ``(n, K, m)``.

    ``m`` is the size of the first layer's output; the derivative is taken with respect
    to that output (adding the bias does not change it). Ma & Ying's eq. (1):
    :math:`\nabla_{W_1} f = u x^\top` (``nn.Linear``) and :math:`\nabla_x f = W_1^\top u`
    (:cite:p:`ma2021linear`).

    Examples
    --------
    >>> import torch
    >>> from companion.nets.jacobians import preactivation_gradients
    >>> from companion.nets.models import make_model
    >>> model = make_model("mlp", in_dim=3, widths=(4,), out_dim=2)
    >>> preactivation_gradients(model, torch.randn(5, 3)).shape
    (5, 2, 4)
    """
    chunk = _chunk(chunk_size)
    fn = FunctionalModel(model, X, device=device)
    layer, _, out_shape = _first_layer_io(fn)

    def f_of_z(z, x):
        def replace_output(module, inputs, output):
            return z.reshape(1, *out_shape)

        handle = layer.register_forward_hook(replace_output)
        try:
            return fn({}, x)
        finally:
            handle.remove()

    out = np.empty((fn.n, fn.K, math.prod(out_shape)))
    for s in range(0, fn.n, chunk):
        Xc = fn.to_device(fn.X[s : s + chunk])
        captured = []

        def capture(module, inputs, output, captured=captured):
            captured.append(output.detach())

        handle = layer.register_forward_hook(capture)
        try:
            with torch.no_grad():
                fn.model(Xc)
        finally:
            handle.remove()
        z0 = captured[0]
        rows = []
        for k in range(fn.K):

            def f_k(z, x, k=k):
                return f_of_z(z, x)[k]

            rows.append(vmap(grad(f_k))(z0, Xc).reshape(Xc.shape[0], -1))
        out[s : s + chunk] = to_numpy(torch.stack(rows, dim=1))
    return out


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
    model: torch.nn.Module, X, k: int = 1, chunk_size: int = 512, *, device=None
) -> FirstLayerGradients:
    r"""Gradient norms of MY eq. (5) and Prop. 2 for moment order ``k``.

    For every training input :math:`x_i` computes :math:`\|\nabla_W f(x_i)\|_{2k}`,
    :math:`\|\nabla_{W_1} f(x_i)\|_{2k}`, :math:`\|\nabla_x f(x_i)\|_{2k}` and
    :math:`\|x_i\|_{2k}`, plus bounds on :math:`\|W_1^\top\|_{2k}` (see
    :func:`operator_norm_bounds`; :math:`W_1` from :func:`first_layer_matrix`). Works in
    sample chunks on the model's device (or ``device``), so the full Jacobian is never
    stored (:cite:p:`ma2021linear`). Raises ``TypeError`` for a model without a
    linear/conv first layer.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.jacobians import first_layer_gradients
    >>> from companion.nets.models import make_model
    >>> fl = first_layer_gradients(make_model("mlp", in_dim=3, widths=(4,)), torch.randn(6, 3))
    >>> lhs, rhs = fl.prop2_sides()
    >>> bool((lhs <= rhs).all())
    True
    """
    k = check_positive_int(k, "k")
    chunk = _chunk(chunk_size)
    fn = FunctionalModel(model, X, device=device)
    _first_layer_io(fn)
    (w1_name,), _ = first_layer_parameters(fn.model)
    offsets = np.cumsum([0, *fn.sizes])
    i = fn.names.index(w1_name)
    w1_cols = slice(int(offsets[i]), int(offsets[i + 1]))
    p = 2 * k

    param_norms, w1_norms, input_norms = [], [], []
    for start in range(0, fn.n, chunk):
        Xc = fn.to_device(fn.X[start : start + chunk])
        m = Xc.shape[0]
        J = fn.jacobian(fn.names, Xc, chunk)
        gx = fn.input_gradients(Xc).reshape(m, -1)
        param_norms.append(torch.linalg.vector_norm(J.reshape(m, -1), p, dim=1))
        w1_norms.append(torch.linalg.vector_norm(J[:, :, w1_cols].reshape(m, -1), p, dim=1))
        input_norms.append(torch.linalg.vector_norm(gx, p, dim=1))
    x_norms = to_numpy(torch.linalg.vector_norm(fn.X.reshape(fn.n, -1), p, dim=1))
    if np.any(x_norms == 0):
        raise ValueError("X contains a zero input: Prop. 2 needs x != 0")
    w1 = first_layer_matrix(fn.model, fn.X[:1])
    return FirstLayerGradients(
        k=k,
        param_grad_norms=to_numpy(torch.cat(param_norms)),
        first_layer_grad_norms=to_numpy(torch.cat(w1_norms)),
        input_grad_norms=to_numpy(torch.cat(input_norms)),
        input_norms=x_norms,
        w1t_norm=operator_norm_bounds(w1.T, p),
    )
