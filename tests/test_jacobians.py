"""companion.nets.jacobians: per-sample derivatives against loops, finite differences, autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd.functional import hessian, jacobian
from torch.func import functional_call

from companion.nets.jacobians import (
    FunctionalModel,
    first_layer_gradients,
    first_layer_matrix,
    gram_matrix,
    input_gradients,
    loss_hessians,
    operator_norm_bounds,
    parameter_jacobian,
    parameter_jacobian_loop,
    preactivation_gradients,
)
from companion.nets.losses import HalfSquaredError
from companion.nets.models import make_model

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


# ----------------------------------------------------------------------------------------
# FunctionalModel, loss Hessians and the loss-weighted Gram matrix
# ----------------------------------------------------------------------------------------


def _autograd_jacobian(model, X):
    """J (n, K, d) of the batched model by torch.autograd.functional.jacobian."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def outputs(t):
        parts = [u.reshape(s) for u, s in zip(torch.split(t, sizes), shapes, strict=True)]
        return functional_call(model, dict(zip(names, parts, strict=True)), (X,))

    out = outputs(theta)
    return jacobian(outputs, theta).reshape(X.shape[0], -1, theta.numel()).numpy(), out


def _autograd_lambdas(module, F, y):
    return np.stack(
        [
            hessian(lambda f, i=i: module(f[None], y[i : i + 1]), F[i].detach()).numpy()
            for i in range(F.shape[0])
        ]
    )


def test_functional_model_is_the_model_on_one_sample():
    model = MODELS["mlp"]()
    X = _inputs(4)
    fn = FunctionalModel(model, X)
    assert (fn.n, fn.K, fn.d) == (4, 3, sum(p.numel() for p in model.parameters()))
    assert fn.names == [n for n, _ in model.named_parameters()]
    assert fn.device == torch.device("cpu") and fn.X.dtype == torch.float64
    with torch.no_grad():
        expected = model(X)
    for i in range(4):  # a batch of one against the batch: rounding of the matmuls only
        assert torch.allclose(fn({}, X[i]), expected[i], rtol=1e-14, atol=1e-15)
    # replacing a parameter changes the function as replacing it in the model would
    zero = {"first_layer.bias": torch.zeros(5, dtype=torch.float64)}
    with torch.no_grad():
        model.first_layer.bias.zero_()
        assert torch.allclose(fn(zero, X[0]), model(X[:1])[0], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    ("module", "targets"),
    [
        (nn.CrossEntropyLoss(), lambda n, k: torch.arange(n) % k),
        (nn.MSELoss(), lambda n, k: torch.zeros(n, k, dtype=torch.float64)),
        (nn.BCEWithLogitsLoss(reduction="sum"), lambda n, k: torch.full((n, k), 0.3).double()),
    ],
)
def test_loss_hessians_and_the_loss_weighted_gram_against_autograd(module, targets):
    model, X = MODELS["mlp"](), _inputs(5)
    y = targets(5, 3)
    J, F = _autograd_jacobian(model, X)
    lam = _autograd_lambdas(module, F, y)
    assert np.allclose(loss_hessians(model, (X, y), loss=module, chunk_size=2), lam, atol=1e-14)
    # G_ij = Lambda_i^(1/2) J_i J_j^T Lambda_j^(1/2), sample-major rows
    vals, vecs = np.linalg.eigh(lam)  # the PSD square root, by its definition
    roots = np.einsum("ikl,il,iml->ikm", vecs, np.sqrt(np.clip(vals, 0, None)), vecs)
    tilde = np.einsum("ikl,ild->ikd", roots, J).reshape(15, -1)
    dense = tilde @ tilde.T
    for max_memory in (None, 8):  # one block; pairs of one-sample chunks
        kwargs = {} if max_memory is None else {"max_memory": max_memory}
        gram = gram_matrix(model, X, chunk_size=2, loss=module, targets=y, **kwargs)
        assert np.allclose(gram, dense, rtol=1e-8, atol=1e-8 * np.abs(dense).max())
    # its nonzero spectrum is that of sum_i J_i^T Lambda_i J_i
    ggn = np.einsum("ikd,ikl,ile->de", J, lam, J)
    top = np.sort(np.linalg.eigvalsh(gram))[::-1][:5]
    assert np.allclose(top, np.sort(np.linalg.eigvalsh(ggn))[::-1][:5], rtol=1e-8)


def test_half_squared_error_gram_is_the_plain_gram():
    model, X = MODELS["cnn"](), _inputs(4, (16,))
    y = torch.zeros(4, 2, dtype=torch.float64)
    J, _ = _autograd_jacobian(model, X)
    flat = J.reshape(8, -1)
    gram = gram_matrix(model, X, loss=HalfSquaredError(), targets=y)
    assert np.max(np.abs(gram - flat @ flat.T)) <= EXACT * np.max(np.abs(flat @ flat.T))


class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_model("mlp", in_dim=6, widths=(3,), seed=2)

    def forward(self, x):
        return self.net(x)[:, 0]


def test_vector_output_models_have_one_output():
    model, X = _Scalar(), _inputs(3)
    J, _ = _autograd_jacobian(model, X)
    jac = parameter_jacobian(model, X)
    assert jac.shape == (3, 1, J.shape[2])
    assert np.allclose(jac, J, rtol=1e-12, atol=1e-14)
    assert np.allclose(parameter_jacobian_loop(model, X), J, rtol=1e-12, atol=1e-14)
    y = torch.rand(3, dtype=torch.float64)
    lam = loss_hessians(model, (X, y), loss=nn.BCEWithLogitsLoss())
    assert lam.shape == (3, 1, 1)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(5), nn.Dropout(0.5), nn.AlphaDropout(0.1)])
def test_training_mode_batchnorm_and_dropout_are_refused_everywhere(layer):
    model = nn.Sequential(nn.Linear(6, 5), layer, nn.Tanh(), nn.Linear(5, 2)).double()
    X, y = _inputs(4), torch.zeros(4, 2, dtype=torch.float64)
    calls = [
        lambda: parameter_jacobian(model, X),
        lambda: parameter_jacobian_loop(model, X),
        lambda: gram_matrix(model, X),
        lambda: input_gradients(model, X),
        lambda: preactivation_gradients(model, X),
        lambda: first_layer_gradients(model, X),
        lambda: loss_hessians(model, (X, y), loss=nn.MSELoss()),
        lambda: FunctionalModel(model, X),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            call()
    model.eval()  # deterministic now: the Jacobian is the batched model's
    J, _ = _autograd_jacobian(model, X)
    assert np.allclose(parameter_jacobian(model, X), J, rtol=1e-12, atol=1e-14)


def test_loss_weighted_gram_errors():
    model, X = MODELS["mlp"](), _inputs(3)
    with pytest.raises(ValueError, match="targets"):
        gram_matrix(model, X, loss=nn.MSELoss())
    with pytest.raises(ValueError, match="loss"):
        gram_matrix(model, X, targets=torch.zeros(3, 3))
    with pytest.raises(TypeError, match=r"targets.*long"):
        gram_matrix(model, X, loss=nn.CrossEntropyLoss(), targets=torch.zeros(3))
    with pytest.raises(ValueError, match=r"loss.*twice differentiable"):
        loss_hessians(model, (X, torch.zeros(3, 3)), loss=nn.HuberLoss())
    frozen = MODELS["mlp"]().requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable"):
        parameter_jacobian(frozen, X)
