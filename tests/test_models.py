"""companion.nets.models: explicit first layer, seeded float64 models, helper checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from companion.nets.models import (
    MLP,
    SmallCNN,
    as_float64,
    check_deterministic_mode,
    check_float64_device,
    first_layer,
    first_layer_parameters,
    make_model,
    model_device,
    num_parameters,
    to_numpy,
    trainable_parameters,
)


@pytest.mark.parametrize("out_dim", [1, 4])
def test_mlp_shapes_dtype_and_split(out_dim):
    model = make_model("mlp", in_dim=5, widths=(7, 3), out_dim=out_dim, seed=2)
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (6, out_dim) and out.dtype == torch.float64
    assert isinstance(first_layer(model), nn.Linear) and first_layer(model).weight.shape == (7, 5)
    # f(x, W) = f~(W1 x, W2): the head applied to the first layer's output
    assert torch.equal(model.head(model.first_layer(x)), out)
    assert num_parameters(model) == 5 * 7 + 7 + 7 * 3 + 3 + 3 * out_dim + out_dim


def test_linear_model_and_output_scale():
    model = make_model("mlp", in_dim=3, widths=(), seed=0)
    x = torch.ones(2, 3, dtype=torch.float64)
    assert torch.allclose(model(x), x @ model.first_layer.weight.T + model.first_layer.bias)
    scaled = make_model("mlp", in_dim=3, widths=(4,), seed=0, output_scale=0.25)
    plain = make_model("mlp", in_dim=3, widths=(4,), seed=0)
    assert torch.allclose(scaled(x), 0.25 * plain(x))


def test_small_cnn_flat_and_image_inputs_agree():
    model = make_model("cnn", in_shape=(1, 8, 8), channels=(4, 6), out_dim=3, seed=1)
    assert isinstance(first_layer(model), nn.Conv2d)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(x), model(x.reshape(5, 64)))
    assert model(x).shape == (5, 3)
    avg = make_model("cnn", in_shape=(3, 4, 4), channels=(2,), pool="avg", seed=0)
    assert avg(torch.zeros(2, 48, dtype=torch.float64)).shape == (2, 1)


def test_make_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    reference = torch.rand(3)
    torch.manual_seed(123)
    a = make_model("mlp", in_dim=4, widths=(5,), seed=7)
    after = torch.rand(3)
    assert torch.equal(reference, after)
    b = make_model("mlp", in_dim=4, widths=(5,), seed=7)
    c = make_model("mlp", in_dim=4, widths=(5,), seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.first_layer.weight, c.first_layer.weight)


def test_float32_models_and_as_float64():
    model = make_model("mlp", in_dim=2, widths=(3,), dtype=torch.float32, seed=0)
    assert model.first_layer.weight.dtype == torch.float32
    copy = as_float64(model)
    assert copy is not model and copy.first_layer.weight.dtype == torch.float64
    assert model.first_layer.weight.dtype == torch.float32  # the original is untouched
    double = make_model("mlp", in_dim=2, widths=(3,), seed=0)
    assert as_float64(double) is double


def test_first_layer_of_a_sequential_and_parameter_names():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    assert first_layer(seq) is seq[1]
    w1, rest = first_layer_parameters(seq)
    assert w1 == ["1.weight"] and rest == ["1.bias", "3.weight", "3.bias"]
    names = [n for n, _ in trainable_parameters(make_model("mlp", in_dim=2, widths=(3,)))]
    assert names[0] == "first_layer.weight"


class _NoFirstLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return (x * self.w).sum(dim=1, keepdim=True)


@pytest.mark.parametrize(
    "model",
    [_NoFirstLayer(), nn.Sequential(nn.Tanh(), nn.Linear(3, 1)), nn.Sequential(nn.ReLU())],
)
def test_models_without_a_linear_first_layer_are_refused(model):
    with pytest.raises(TypeError, match="first layer"):
        first_layer(model)
    with pytest.raises(TypeError, match="first layer"):
        first_layer_parameters(model)


def test_frozen_first_layer_weight_is_refused():
    model = make_model("mlp", in_dim=2, widths=(3,))
    model.first_layer.weight.requires_grad_(False)
    with pytest.raises(TypeError, match="trainable"):
        first_layer_parameters(model)


@pytest.mark.parametrize(
    ("kind", "kwargs", "error"),
    [
        ("mlp", {"in_dim": 3, "activation": "swish"}, ValueError),
        ("mlp", {"in_dim": 0}, ValueError),
        ("mlp", {"in_dim": 3, "widths": (2, -1)}, ValueError),
        ("mlp", {"in_dim": 3, "output_scale": "big"}, TypeError),
        ("cnn", {"in_shape": (8, 8)}, ValueError),
        ("cnn", {"channels": ()}, ValueError),
        ("cnn", {"pool": "min"}, ValueError),
        ("rnn", {}, ValueError),
        ("mlp", {"in_dim": 3, "dtype": torch.int64}, TypeError),
    ],
)
def test_bad_model_arguments(kind, kwargs, error):
    with pytest.raises(error):
        make_model(kind, **kwargs)


def test_helpers_reject_non_modules():
    with pytest.raises(TypeError, match=r"nn\.Module"):
        trainable_parameters("model")
    with pytest.raises(ValueError, match="no trainable"):
        trainable_parameters(nn.Tanh())
    assert isinstance(MLP(2, (2,)), nn.Module) and isinstance(SmallCNN(), nn.Module)


@pytest.mark.parametrize(
    "layer",
    [
        nn.BatchNorm1d(3),
        nn.SyncBatchNorm(3),
        nn.Dropout(0.2),
        nn.Dropout1d(0.2),
        nn.AlphaDropout(0.1),
    ],
)
def test_check_deterministic_mode(layer):
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(layer), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"model\.eval\(\)") as info:
        check_deterministic_mode(model)
    assert "1.0" in str(info.value) and type(layer).__name__ in str(info.value)
    assert check_deterministic_mode(model.eval()) is model
    # layers that act on one sample at a time are fine in training mode
    plain = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.GroupNorm(1, 3)).train()
    assert check_deterministic_mode(plain) is plain
    with pytest.raises(TypeError, match=r"nn\.Module"):
        check_deterministic_mode("model")


def test_model_device_and_mixed_devices():
    model = make_model("mlp", in_dim=2, widths=(3,))
    assert model_device(model) == torch.device("cpu")
    assert model_device(nn.Tanh()) == torch.device("cpu")
    mixed = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1).to("meta"))
    with pytest.raises(ValueError, match=r"model.*several devices"):
        model_device(mixed)
    with pytest.raises(ValueError, match="several devices"):
        as_float64(mixed)
    assert model_device(mixed.to("meta")) == torch.device("meta")


def test_float64_devices_and_copies():
    assert check_float64_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device.*MPS.*float64.*cpu"):
        check_float64_device("mps")
    with pytest.raises(TypeError, match="device"):
        check_float64_device(3.5)
    model = make_model("mlp", in_dim=2, widths=(3,))
    assert as_float64(model, device="cpu") is model
    moved = as_float64(model, device="meta")
    assert moved is not model and model_device(moved) == torch.device("meta")
    assert model_device(model) == torch.device("cpu")  # the original stays


def test_to_numpy_copies_to_float64():
    weight = make_model("mlp", in_dim=2, widths=(3,), dtype=torch.float32).first_layer.weight
    arr = to_numpy(weight)
    assert arr.dtype == np.float64 and arr.shape == (3, 2)
    assert np.array_equal(arr, weight.detach().double().numpy())
    arr[0, 0] = 123.0  # a copy: the parameter is untouched
    assert float(weight.detach()[0, 0]) != 123.0
    t = torch.arange(3.0, dtype=torch.float64)
    out = to_numpy(t)
    out[0] = 7.0
    assert float(t[0]) == 0.0
