r"""Small networks whose first layer is explicit, and helpers shared by the torch modules.

Ma & Ying write a network as :math:`f(x, W) = \tilde f(W_1 x, W_2)`: the input meets
the parameters first through one linear map :math:`W_1` (:cite:p:`ma2021linear`, eq. (6)).
The models here keep that layer as the attribute ``first_layer`` (an ``nn.Linear`` for
:class:`MLP`, an ``nn.Conv2d`` for :class:`SmallCNN`), so :math:`W_1` can be split off.
Its bias, added after the product, belongs to :math:`W_2`.

Every model maps a batch ``(n, ...)`` to outputs ``(n, K)``; ``K = 1`` is the scalar
model of the paper. Models are built in float64 by default and seeded
(:func:`make_model`).

This module imports torch; ``import companion`` does not load it.
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from ..validation import check_positive_int

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "SmallCNN",
    "as_float64",
    "check_deterministic_mode",
    "check_float64_device",
    "check_output_shape",
    "first_layer",
    "first_layer_parameters",
    "make_model",
    "model_device",
    "num_parameters",
    "to_numpy",
    "trainable_parameters",
]

#: Activation names accepted by the models.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def _activation(name: str) -> nn.Module:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    r"""Fully connected network :math:`x \mapsto W_L\sigma(\cdots\sigma(W_1 x + b_1)\cdots)`.

    Parameters
    ----------
    in_dim : int
        Input dimension (inputs of any shape ``(n, ...)`` are flattened).
    widths : sequence of int
        Hidden widths; empty gives the linear model ``W_1 x + b_1``.
    out_dim : int
        Number of outputs ``K``.
    activation : str
        One of :data:`ACTIVATIONS`.
    bias : bool
        Whether the layers have biases.
    output_scale : float
        Factor multiplying the output (``1/m`` gives the mean-field scaling of a
        two-layer net of width ``m``, :cite:p:`wu2020slides`).
    """

    def __init__(
        self,
        in_dim: int,
        widths: Sequence[int] = (),
        out_dim: int = 1,
        activation: str = "tanh",
        bias: bool = True,
        output_scale: float = 1.0,
    ):
        super().__init__()
        in_dim = check_positive_int(in_dim, "in_dim")
        out_dim = check_positive_int(out_dim, "out_dim")
        widths = [check_positive_int(w, "widths[i]") for w in widths]
        _activation(activation)
        if isinstance(output_scale, bool) or not isinstance(output_scale, numbers.Real):
            raise TypeError(f"output_scale must be a real number, got {output_scale!r}")
        sizes = [in_dim, *widths, out_dim]
        self.first_layer = nn.Linear(sizes[0], sizes[1], bias=bias)
        rest: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes[1:]):
            rest += [_activation(activation), nn.Linear(a, b, bias=bias)]
        self.head = nn.Sequential(*rest)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.output_scale = float(output_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.first_layer(x.reshape(x.shape[0], -1)))
        return out if self.output_scale == 1.0 else self.output_scale * out


class SmallCNN(nn.Module):
    """A small VGG-like network: blocks of 3x3 convolution, activation and 2x2 pooling.

    ``first_layer`` is the first ``nn.Conv2d``. Pooling follows each block while the
    feature map is at least 2x2; a linear layer maps the flattened features to ``K``
    outputs. Flat inputs ``(n, C*H*W)`` are reshaped to ``(n, *in_shape)``.

    Parameters
    ----------
    in_shape : tuple of int
        ``(channels, height, width)`` of one input, e.g. ``(1, 8, 8)`` for digits.
    channels : sequence of int
        Output channels of the convolution blocks.
    out_dim : int
        Number of outputs ``K``.
    activation : str
        One of :data:`ACTIVATIONS`.
    pool : str
        ``"max"`` (VGG) or ``"avg"``.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 8, 8),
        channels: Sequence[int] = (8, 16),
        out_dim: int = 1,
        activation: str = "relu",
        pool: str = "max",
    ):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (channels, height, width), got {in_shape!r}")
        c, h, w = (check_positive_int(s, "in_shape[i]") for s in in_shape)
        channels = [check_positive_int(ch, "channels[i]") for ch in channels]
        if not channels:
            raise ValueError("channels must name at least one convolution block")
        out_dim = check_positive_int(out_dim, "out_dim")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        _activation(activation)
        self.in_shape = (c, h, w)
        self.first_layer = nn.Conv2d(c, channels[0], kernel_size=3, padding=1)
        blocks: list[nn.Module] = [_activation(activation)]
        for i, ch in enumerate(channels):
            if i > 0:
                blocks += [nn.Conv2d(channels[i - 1], ch, 3, padding=1), _activation(activation)]
            if h >= 2 and w >= 2:
                blocks.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                h, w = h // 2, w // 2
        blocks += [nn.Flatten(), nn.Linear(channels[-1] * h * w, out_dim)]
        self.head = nn.Sequential(*blocks)
        self.in_dim, self.out_dim = math.prod(self.in_shape), out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)
        return self.head(self.first_layer(x))


def make_model(
    kind: str = "mlp", *, seed: int = 0, dtype: torch.dtype = torch.float64, **kwargs
) -> nn.Module:
    """Build an :class:`MLP` (``kind="mlp"``) or :class:`SmallCNN` (``"cnn"``), seeded.

    The initialisation (PyTorch's default) uses its own generator state seeded with
    ``seed``; the global torch RNG is left untouched. ``kwargs`` go to the constructor.
    """
    seed = check_positive_int(seed, "seed", minimum=0)
    classes = {"mlp": MLP, "cnn": SmallCNN}
    if kind not in classes:
        raise ValueError(f"kind must be 'mlp' or 'cnn', got {kind!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = classes[kind](**kwargs)
    return model.to(dtype)


# ----------------------------------------------------------------------------------------
# helpers used by training, jacobians, curvature_ops and diagnosis
# ----------------------------------------------------------------------------------------


def _check_module(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    r"""Named parameters with ``requires_grad``, in ``model.named_parameters()`` order.

    This order defines the flattened parameter vector :math:`\theta` everywhere in
    companion (Jacobian columns, Hessian operators).
    """
    params = [(n, p) for n, p in _check_module(model).named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "model has no trainable parameters (none with requires_grad=True): there is "
            "nothing to differentiate"
        )
    return params


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters ``d``."""
    return sum(p.numel() for _, p in trainable_parameters(model))


def first_layer(model: nn.Module) -> nn.Module:
    r"""The layer that multiplies the input, :math:`W_1` in :math:`\tilde f(W_1x, W_2)`.

    Looks for ``model.first_layer``, else the first module of an ``nn.Sequential``
    (after ``nn.Flatten``/``nn.Unflatten``). It must be an ``nn.Linear`` or
    ``nn.Conv2d``; otherwise raises ``TypeError``.
    """
    _check_module(model)
    layer = getattr(model, "first_layer", None)
    if layer is None and isinstance(model, nn.Sequential):
        for module in model:
            if not isinstance(module, nn.Flatten | nn.Unflatten):
                layer = module
                break
    if not isinstance(layer, nn.Linear | nn.Conv2d):
        raise TypeError(
            f"{type(model).__name__} has no linear or convolutional first layer: the "
            "multiplicative split f(x, W) = f~(W1 x, W2) needs an nn.Linear or nn.Conv2d "
            "exposed as `model.first_layer` (or first in an nn.Sequential), found "
            f"{type(layer).__name__ if layer is not None else 'none'}"
        )
    return layer


def first_layer_parameters(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the :math:`W_1` parameters (the first layer's weight) and of the rest.

    Raises ``TypeError`` if the model has no linear/conv first layer or its weight is
    frozen.
    """
    weight = first_layer(model).weight
    names = [n for n, p in trainable_parameters(model) if p is weight]
    if not names:
        raise TypeError("the first layer's weight must be a trainable parameter of the model")
    rest = [n for n, _ in trainable_parameters(model) if n != names[0]]
    return names, rest


def model_device(model: nn.Module) -> torch.device:
    """The one device holding the model's parameters and buffers.

    Raises ``ValueError`` naming ``model`` when they are spread over several devices
    (move the model with ``model.to(device)``). A model without tensors is on the CPU.

    Examples
    --------
    >>> from companion.nets.models import make_model, model_device
    >>> model_device(make_model("mlp", in_dim=2))
    device(type='cpu')
    """
    _check_module(model)
    devices = {t.device for t in itertools.chain(model.parameters(), model.buffers())}
    if len(devices) > 1:
        raise ValueError(
            f"model has parameters or buffers on several devices ({sorted(map(str, devices))}): "
            "move it to one device with model.to(device)"
        )
    return devices.pop() if devices else torch.device("cpu")


def _resolve_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise TypeError(
            f"device must be a torch.device or a device string, got {device!r}"
        ) from exc
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def check_float64_device(device) -> torch.device:
    """A device for float64 computations: refuses Apple MPS (no float64) with a ValueError.

    Curvature, Jacobians and thresholds are computed in float64 (eigenvalues of
    ill-conditioned matrices need it). On MPS pass ``device="cpu"``: a float64 copy of the
    model is used there and the original is left alone.

    Examples
    --------
    >>> from companion.nets.models import check_float64_device
    >>> check_float64_device("cpu")
    device(type='cpu')
    """
    device = _resolve_device(device)
    if device.type == "mps":
        raise ValueError(
            "device: Apple MPS has no float64, and curvature is computed in float64; pass "
            "device='cpu' (a float64 copy of the model is used there; the model itself is "
            "not moved)"
        )
    return device


def as_float64(model: nn.Module, *, device=None) -> nn.Module:
    """The model itself if float64 (and on ``device``), else a float64 deep copy there.

    ``device=None`` keeps the model's device (:func:`model_device`). The original model is
    never modified. Raises ``ValueError`` on Apple MPS (see :func:`check_float64_device`).

    Examples
    --------
    >>> import torch
    >>> from companion.nets.models import as_float64, make_model
    >>> model = make_model("mlp", in_dim=2, dtype=torch.float32)
    >>> as_float64(model).first_layer.weight.dtype, model.first_layer.weight.dtype
    (torch.float64, torch.float32)
    """
    current = model_device(model)
    target = check_float64_device(current if device is None else device)
    tensors = [*model.parameters(), *model.buffers()]
    if target == current and all(
        t.dtype == torch.float64 for t in tensors if t.is_floating_point()
    ):
        return model
    return copy.deepcopy(model).to(device=target, dtype=torch.float64)


def check_deterministic_mode(model: nn.Module) -> nn.Module:
    r"""Refuse a model in training mode that contains BatchNorm or Dropout (``ValueError``).

    Per-sample curvature (Jacobians :math:`J_i`, Hessians :math:`H_i`, Gram matrices)
    needs :math:`f(x_i;\theta)` to be a deterministic function of one sample and the
    parameters. In training mode BatchNorm normalises with the statistics of the current
    batch (so :math:`f(x_i)` depends on the other samples) and Dropout draws a random mask
    at every call. Call ``model.eval()`` first: BatchNorm then uses its running statistics
    and Dropout is the identity. Returns the model.

    Examples
    --------
    >>> from torch import nn
    >>> from companion.nets.models import check_deterministic_mode
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Linear(3, 1))
    >>> check_deterministic_mode(model.eval()) is model
    True
    """
    _check_module(model)
    found = [
        (name or type(model).__name__, type(m).__name__)
        for name, m in model.named_modules()
        if m.training and isinstance(m, _BatchNorm | _DropoutNd)
    ]
    if found:
        listed = ", ".join(f"{name} ({kind})" for name, kind in found)
        raise ValueError(
            f"model is in training mode and contains {listed}: call model.eval() first. "
            "Per-sample curvature needs f(x_i) to be a deterministic function of one sample, "
            "but in training mode BatchNorm normalises with the current batch's statistics "
            "and Dropout draws a random mask at every call"
        )
    return model


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 NumPy copy of a tensor on any device: ``tensor.detach().cpu()`` first.

    The one place where companion's torch modules hand results to the NumPy core; the
    copy never shares memory with the tensor (or with a model's parameters).

    Examples
    --------
    >>> import torch
    >>> from companion.nets.models import to_numpy
    >>> to_numpy(torch.ones(2, requires_grad=True))
    array([1., 1.])
    """
    return np.array(tensor.detach().cpu().double().numpy(), dtype=np.float64, copy=True)


def check_output_shape(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse a model whose per-sample output shape differs from the targets' (``ValueError``).

    ``X[:1]`` is moved to the model's device.
    """
    with torch.no_grad():
        out = model(X[:1].to(model_device(model)))
    if out.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"model outputs {tuple(out.shape[1:])} per sample but targets are "
            f"{tuple(y.shape[1:])}"
        )
