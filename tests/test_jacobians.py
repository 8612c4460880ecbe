"""companion.jacobians: per-sample derivatives against loops, finite differences, dense products."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion.jacobians import (
    first_layer_gradients,
    first_layer_matrix,
    gram_matrix,
    input_gradients,
    operator_norm_bounds,
    parameter_jacobian,
    parameter_jacobian_loop,
    preactivation_gradients,
)
from companion.models import make_model

# Same float64 operations in a different order: agreement to a few ulps of the entries.
EXACT = 1e-12


def _inputs(n, shape=(6,), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, dtype=torch.float64, generator=g)


MODELS = {
    "mlp": lambda: make_model("mlp", in_dim=6, widths=(5, 4), out_dim=3, seed=0),
    "cnn": lambda: make_model(
        "cnn", in_shape=(1, 4, 4), channels=(3, 2), out_dim=2, activation="tanh", seed=1
    ),
}
SHAPES = {"mlp": (6,), "cnn": (16,)}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_parameter_jacobian_equals_a_per_sample_loop(kind):
    model, X = MODELS[kind](), _inputs(5, SHAPES[kind])
    jac = parameter_jacobian(model, X, chunk_size=2)
    loop = parameter_jacobian_loop(model, X)
    assert jac.shape == loop.shape and jac.dtype == np.float64
    assert np.max(np.abs(jac - loop)) <= EXACT * max(1.0, np.max(np.abs(loop)))


def test_float32_model_is_differentiated_in_float64():
    model32 = make_model("mlp", in_dim=6, widths=(4,), dtype=torch.float32, seed=3)
    model64 = make_model("mlp", in_dim=6, widths=(4,), seed=3)
    X = _inputs(4)
    jac = parameter_jacobian(model32, X)
    assert jac.dtype == np.float64
    # float32 weights cast exactly to float64: same numbers as the float64 model up to the
    # float32 rounding of the initial weights (~1e-7 relative)
    assert np.allclose(jac, parameter_jacobian(model64, X), rtol=1e-6, atol=1e-6)
    assert model32.first_layer.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("kind", "max_memory"),
    [("mlp", None), ("cnn", None), ("mlp", 8 * 5 * 3 * 12), ("cnn", 8 * 5 * 2 * 12), ("mlp", 8)],
)
def test_chunked_gram_equals_dense(kind, max_memory):
    """Default (one group), several parameter groups, and sample-chunk pairs (8 bytes)."""
    model, X = MODELS[kind](), _inputs(5, SHAPES[kind])
    jac = parameter_jacobian(model, X)
    flat = jac.reshape(-1, jac.shape[2])
    kwargs = {} if max_memory is None else {"max_memory": max_memory}
    gram = gram_matrix(model, X, chunk_size=2, **kwargs)
    dense = flat @ flat.T
    assert np.array_equal(gram, gram.T)
    assert np.max(np.abs(gram - dense)) <= EXACT * np.max(np.abs(dense))
    # sample-major rows: entry (i*K + k, j*K + l) is <J_ik, J_jl>
    K = jac.shape[1]
    assert np.isclose(gram[1 * K + 1, 3 * K + 0], jac[1, 1] @ jac[3, 0], rtol=1e-12)


def test_input_gradients_against_central_differences():
    model = make_model("mlp", in_dim=6, widths=(5,), out_dim=2, seed=4)
    X = _inputs(3)
    grads = input_gradients(model, X)
    assert grads.shape == (3, 2, 6)
    eps = 1e-6
    fd = np.empty_like(grads)
    with torch.no_grad():
        for j in range(6):
            e = torch.zeros(6, dtype=torch.float64)
            e[j] = eps
            fd[:, :, j] = ((model(X + e) - model(X - e)) / (2 * eps)).numpy()
    # central differences of a tanh net: truncation O(eps^2) ~ 1e-12, rounding eps_m/eps ~ 1e-10
    assert np.allclose(grads, fd, atol=1e-8)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_multiplicative_structure_eq1(kind):
    """MY eq. (1): grad_x f = W1^T u for both layers; grad_W1 f = u x^T for a linear one."""
    model, X = MODELS[kind](), _inputs(4, SHAPES[kind])
    u = preactivation_gradients(model, X)
    w1 = first_layer_matrix(model, X)
    gx = input_gradients(model, X)
    assert np.allclose(np.einsum("mp,nkm->nkp", w1, u), gx, atol=1e-13, rtol=1e-12)
    if kind == "mlp":
        jac = parameter_jacobian(model, X)
        m, p = w1.shape
        grad_w1 = jac[:, :, : m * p].reshape(4, -1, m, p)
        outer = np.einsum("nkm,np->nkmp", u, X.numpy())
        assert np.allclose(grad_w1, outer, atol=1e-13)


def test_first_layer_matrix_of_a_convolution_reproduces_the_layer():
    model = MODELS["cnn"]()
    X = _inputs(3, (16,))
    w1 = first_layer_matrix(model, X)
    layer = model.first_layer
    with torch.no_grad():
        z = layer(X.reshape(3, 1, 4, 4)).reshape(3, -1).numpy()
    bias = np.repeat(layer.bias.detach().numpy(), 16)
    assert w1.shape == (3 * 16, 16)
    assert np.allclose(X.numpy() @ w1.T + bias, z, atol=1e-13)


def test_operator_norm_bounds_exact_cases():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 3))
    assert operator_norm_bounds(A, 1) == (np.abs(A).sum(0).max(),) * 2
    assert operator_norm_bounds(A, np.inf) == (np.abs(A).sum(1).max(),) * 2
    lo, hi = operator_norm_bounds(A, 2)
    assert lo == hi == pytest.approx(np.linalg.svd(A, compute_uv=False)[0], rel=1e-14)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.sampled_from([1.5, 3.0, 4.0, 6.0]))
def test_operator_norm_bounds_bracket_the_norm_of_2x2_matrices(seed, p):
    A = np.random.default_rng(seed).standard_normal((2, 2))
    lo, hi = operator_norm_bounds(A, p)
    theta = np.linspace(0, np.pi, 20001)
    x = np.stack([np.cos(theta), np.sin(theta)])
    ratios = np.linalg.norm(A @ x, p, axis=0) / np.linalg.norm(x, p, axis=0)
    brute = ratios.max()  # a lower estimate of ||A||_p, within ~1e-8 on this grid
    assert lo <= hi
    assert brute <= hi * (1 + 1e-12)
    # every power iterate is attained by some x, so lo <= ||A||_p ~ brute
    assert lo <= brute * (1 + 1e-6)


def test_first_layer_gradients_k1_and_prop2():
    model = make_model("mlp", in_dim=6, widths=(5,), out_dim=2, seed=5)
    X = _inputs(7)
    fl = first_layer_gradients(model, X, k=1, chunk_size=3)
    jac = parameter_jacobian(model, X)
    gx = input_gradients(model, X)
    assert fl.g_W == pytest.approx(np.sqrt(np.mean(np.sum(jac**2, axis=(1, 2)))), rel=1e-12)
    assert fl.g_W1 == pytest.approx(np.sqrt(np.mean(np.sum(jac[:, :, :30] ** 2, (1, 2)))))
    assert fl.g_x == pytest.approx(np.sqrt(np.mean(np.sum(gx**2, axis=(1, 2)))), rel=1e-12)
    assert fl.w1t_norm[0] == pytest.approx(np.linalg.norm(model.first_layer.weight.detach(), 2))
    lhs, rhs = fl.prop2_sides()
    assert np.all(lhs <= rhs)
    # the intermediate step of MY (2): ||grad_x f|| <= ||W1|| ||grad_W1 f|| / ||x|| per output
    bound = fl.w1t_norm[1] * fl.first_layer_grad_norms / fl.input_norms
    assert np.all(fl.input_grad_norms <= bound)
    s_lhs, s_rhs = fl.cor2_sides()
    assert s_lhs == fl.g_x and s_lhs <= s_rhs


@pytest.mark.parametrize("k", [2, 3])
def test_first_layer_gradients_higher_moments(k):
    model = MODELS["cnn"]()
    X = _inputs(4, (16,))
    fl = first_layer_gradients(model, X, k=k)
    jac = parameter_jacobian(model, X).reshape(4, -1)
    assert fl.g_W == pytest.approx(np.mean(np.sum(jac ** (2 * k), axis=1)) ** (1 / (2 * k)))
    assert np.allclose(fl.input_norms, np.linalg.norm(X.numpy(), 2 * k, axis=1))
    lo, hi = fl.w1t_norm
    assert lo <= hi


def test_errors():
    model = make_model("mlp", in_dim=6, widths=(3,), seed=0)
    with pytest.raises(ValueError, match="NaN"):
        parameter_jacobian(model, torch.full((2, 6), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="chunk_size"):
        gram_matrix(model, _inputs(2), chunk_size=0)
    with pytest.raises(ValueError, match="zero input"):
        first_layer_gradients(model, torch.zeros(2, 6, dtype=torch.float64))
    no_first = nn.Sequential(nn.Tanh(), nn.Linear(6, 1)).double()
    with pytest.raises(TypeError, match="first layer"):
        first_layer_gradients(no_first, _inputs(2))
    with pytest.raises(TypeError, match="first layer"):
        preactivation_gradients(no_first, _inputs(2))
    with pytest.raises(ValueError, match="p must be"):
        operator_norm_bounds(np.eye(2), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        operator_norm_bounds(np.array([[np.nan]]), 2)
