"""companion.hessian_ops: curvlinops operators, (1/2n) normalisation, Lanczos, Hutchinson."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import aslinearoperator

from companion.data import synthetic
from companion.hessian_ops import (
    CountingOperator,
    ggn_operator,
    hutchinson_trace,
    loss_hessian_operator,
    power_iteration,
    to_dense,
    top_eigenvalues,
)
from companion.jacobians import parameter_jacobian
from companion.models import make_model
from companion.training import fit_last_layer


def _problem(out_dim=2, n=7, seed=0):
    model = make_model("mlp", in_dim=3, widths=(4,), out_dim=out_dim, seed=seed)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, dtype=torch.float64, generator=g)
    y = torch.randn(n, out_dim, dtype=torch.float64, generator=g)
    return model, X, y


def _flat_loss(model, X, y, reduction="half-mean"):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss(theta):
        parts = [t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes, strict=True)]
        out = torch.func.functional_call(model, dict(zip(names, parts, strict=True)), (X,))
        if reduction == "mse-mean":
            return torch.nn.functional.mse_loss(out, y)
        return ((out - y) ** 2).sum() / (2 * X.shape[0])

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return loss, theta


def _dense_hessian(model, X, y, reduction="half-mean"):
    loss, theta = _flat_loss(model, X, y, reduction)
    return torch.autograd.functional.hessian(loss, theta).numpy()


def test_hessian_operator_equals_the_dense_hessian_of_the_half_mean_square_loss():
    model, X, y = _problem()
    dense = _dense_hessian(model, X, y)
    op = loss_hessian_operator(model, (X, y), batch_size=3)  # several curvlinops batches
    assert op.shape == dense.shape and op.dtype == np.float64
    # same derivatives by two autodiff routes: agreement to rounding of O(1) entries
    assert np.max(np.abs(to_dense(op, block=5) - dense)) <= 1e-12 * np.max(np.abs(dense))


def test_normalisation_trap_mse_mean_is_2_over_k_times_ours():
    model, X, y = _problem(out_dim=3)
    ours = _dense_hessian(model, X, y)
    mse_mean = _dense_hessian(model, X, y, reduction="mse-mean")
    assert np.allclose(mse_mean, (2 / 3) * ours, rtol=1e-12, atol=1e-14)


def test_hessian_vector_products_against_finite_differences():
    model, X, y = _problem(seed=1)
    loss, theta = _flat_loss(model, X, y)
    op = loss_hessian_operator(model, (X, y))
    v = np.random.default_rng(0).standard_normal(theta.numel())
    eps = 1e-5

    def grad(t):
        return torch.func.grad(loss)(t).numpy()

    vt = torch.as_tensor(v)
    fd = (grad(theta + eps * vt) - grad(theta - eps * vt)) / (2 * eps)
    # central differences: O(eps^2) truncation plus eps_machine/eps rounding, ~1e-10
    assert np.allclose(op @ v, fd, atol=1e-8 * np.linalg.norm(fd))


def test_first_layer_block_is_the_sub_block():
    model, X, y = _problem(seed=2)
    dense = _dense_hessian(model, X, y)
    block = to_dense(loss_hessian_operator(model, (X, y), params="first_layer"))
    assert block.shape == (12, 12)  # W1 is 4 x 3; the parameter vector starts with it
    assert np.allclose(block, dense[:12, :12], rtol=1e-12, atol=1e-14)
    rest = to_dense(loss_hessian_operator(model, (X, y), params="rest"))
    assert np.allclose(rest, dense[12:, 12:], rtol=1e-12, atol=1e-14)
    named = to_dense(loss_hessian_operator(model, (X, y), params=["first_layer.bias"]))
    assert np.allclose(named, dense[12:16, 12:16], rtol=1e-12, atol=1e-14)


def test_ggn_equals_mean_of_jacobian_products_everywhere():
    model, X, y = _problem(seed=3)
    jac = parameter_jacobian(model, X)
    expected = np.einsum("nkd,nke->de", jac, jac) / X.shape[0]
    assert np.allclose(to_dense(ggn_operator(model, (X, y))), expected, rtol=1e-12, atol=1e-14)


def test_hessian_equals_gauss_newton_at_an_interpolating_minimum():
    data = synthetic("teacher", n=6, d=3, seed=0, n_test=0)
    model = make_model("mlp", in_dim=3, widths=(8,), seed=0)
    assert fit_last_layer(model, data) < 1e-25
    hess = to_dense(loss_hessian_operator(model, data))
    ggn = to_dense(ggn_operator(model, data))
    # the difference is (1/n) sum_i r_i grad^2 f_i with residuals r_i ~ 1e-13
    assert np.max(np.abs(hess - ggn)) <= 1e-10 * np.max(np.abs(ggn))
    # away from the minimum they differ
    with torch.no_grad():
        model.head[-1].bias.add_(0.5)
    far = to_dense(loss_hessian_operator(model, data)) - to_dense(ggn_operator(model, data))
    assert np.max(np.abs(far)) > 1e-3


@pytest.mark.parametrize("k", [1, 3])
def test_lanczos_equals_dense_eigenvalues(k):
    model, X, y = _problem(seed=4)
    op = loss_hessian_operator(model, (X, y))
    dense = np.linalg.eigvalsh(_dense_hessian(model, X, y))[::-1]
    vals, vecs = top_eigenvalues(op, k, return_eigenvectors=True)
    assert np.allclose(vals, dense[:k], rtol=1e-9)
    assert np.allclose(np.linalg.norm(vecs, axis=0), 1.0)
    assert np.allclose(op @ vecs[:, 0], vals[0] * vecs[:, 0], atol=1e-7 * abs(vals[0]))


def test_small_operators_fall_back_to_dense_and_power_iteration_agrees():
    A = np.diag([3.0, 1.0, 0.5])
    assert np.allclose(top_eigenvalues(A, 2), [3.0, 1.0])
    rng = np.random.default_rng(0)
    m = rng.standard_normal((30, 30))
    psd = m @ m.T
    top = np.linalg.eigvalsh(psd)[-1]
    value, vec, products = power_iteration(aslinearoperator(psd), tol=1e-12)
    assert value == pytest.approx(top, rel=1e-9) and products > 1
    assert np.linalg.norm(vec) == pytest.approx(1.0)


def test_hutchinson_within_four_standard_errors_of_the_exact_trace():
    model, X, y = _problem(seed=5)
    op = loss_hessian_operator(model, (X, y))
    exact = np.trace(_dense_hessian(model, X, y))
    est = hutchinson_trace(op, n_samples=200, seed=1)
    assert est.n_samples == 200 and est.stderr > 0
    assert abs(est.estimate - exact) <= 4 * est.stderr


def test_hutchinson_is_exact_for_diagonal_matrices():
    diag = np.array([1.0, -2.0, 5.0, 0.25])
    est = hutchinson_trace(np.diag(diag), n_samples=5, seed=0, block=2)
    assert est.estimate == pytest.approx(diag.sum(), rel=1e-14) and est.stderr == 0.0


def test_flatness_identity_at_interpolation():
    """MY eq. (3): Tr grad^2 L = (1/n) sum_i ||grad_W f(x_i)||^2 at an interpolating minimum."""
    data = synthetic("single-neuron", n=5, d=3, seed=1, n_test=0)
    model = make_model("mlp", in_dim=3, widths=(7,), seed=1)
    fit_last_layer(model, data)
    jac = parameter_jacobian(model, data.X_train)
    flatness = np.mean(np.sum(jac**2, axis=(1, 2)))
    assert np.trace(to_dense(loss_hessian_operator(model, data))) == pytest.approx(
        flatness, rel=1e-10
    )
    w1 = np.trace(to_dense(loss_hessian_operator(model, data, params="first_layer")))
    assert w1 == pytest.approx(np.mean(np.sum(jac[:, :, :21] ** 2, axis=(1, 2))), rel=1e-10)


def test_counting_operator_counts_products():
    op = CountingOperator(aslinearoperator(np.eye(4)))
    op @ np.ones(4)
    op @ np.ones((4, 3))
    op.rmatvec(np.ones(4))
    assert op.n_products == 5 and op.adjoint() is op


def test_errors():
    model, X, y = _problem()
    with pytest.raises(ValueError, match="params"):
        loss_hessian_operator(model, (X, y), params="middle")
    with pytest.raises(ValueError, match="unknown"):
        loss_hessian_operator(model, (X, y), params=["nope"])
    with pytest.raises(ValueError, match="targets"):
        loss_hessian_operator(model, (X, y[:, :1]))
    with pytest.raises(ValueError, match="NaN"):
        ggn_operator(model, (X * float("nan"), y))
    with pytest.raises(TypeError, match="LinearOperator"):
        top_eigenvalues([[1.0]])
    with pytest.raises(ValueError, match="square"):
        top_eigenvalues(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at most"):
        top_eigenvalues(np.eye(2), 3)
    with pytest.raises(ValueError, match="n_samples"):
        hutchinson_trace(np.eye(2), n_samples=1)
