"""companion.nets.curvature_ops: torch.func operators against dense autograd and curvlinops.

The references: ``torch.autograd.functional.hessian`` of the user's loss module applied to
the full batch (a function of the flat parameter vector), the dense Gauss–Newton
:math:`J^\\top(\\partial^2L/\\partial F^2)J` with both factors by autograd, and curvlinops'
``HessianLinearOperator`` / ``GGNLinearOperator`` with the same torch loss module.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import aslinearoperator
from torch import nn
from torch.func import functional_call

from companion.nets.curvature_ops import (
    CountingOperator,
    ggn_operator,
    hutchinson_trace,
    loss_hessian_operator,
    power_iteration,
    to_dense,
    top_eigenvalues,
)
from companion.nets.data import synthetic
from companion.nets.losses import HalfSquaredError
from companion.nets.models import make_model
from companion.nets.training import fit_last_layer


def _log_cosh(outputs, targets):
    return torch.log(torch.cosh(outputs - targets)).sum(dim=1)


def _targets(kind, n, k, g):
    if kind == "labels":
        return torch.randint(0, k, (n,), generator=g)
    if kind == "probs":
        return torch.softmax(torch.randn(n, k, dtype=torch.float64, generator=g), dim=1)
    if kind == "bernoulli":
        return torch.rand(n, k, dtype=torch.float64, generator=g)
    return torch.randn(n, k, dtype=torch.float64, generator=g)


# name: (loss module or callable, target kind, the batch loss as a function of (F, y))
LOSSES = {
    "half-mean": (HalfSquaredError(), "regression"),
    "half-sum": (HalfSquaredError("sum"), "regression"),
    "mse-mean": (nn.MSELoss(), "regression"),
    "mse-sum": (nn.MSELoss(reduction="sum"), "regression"),
    "ce-labels": (nn.CrossEntropyLoss(), "labels"),
    "ce-sum": (nn.CrossEntropyLoss(reduction="sum"), "labels"),
    "ce-probs-smooth": (nn.CrossEntropyLoss(label_smoothing=0.1), "probs"),
    "bce-mean": (nn.BCEWithLogitsLoss(), "bernoulli"),
    "bce-sum": (nn.BCEWithLogitsLoss(reduction="sum"), "bernoulli"),
    "callable": (_log_cosh, "regression"),
}


def _batch_loss(loss, F, y):
    """The user's batch loss: the module itself, or the mean of a per-sample callable."""
    return loss(F, y) if isinstance(loss, nn.Module) else loss(F, y).mean()


def _problem(out_dim=2, n=7, seed=0, kind="regression"):
    model = make_model("mlp", in_dim=3, widths=(4,), out_dim=out_dim, seed=seed)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, dtype=torch.float64, generator=g)
    return model, X, _targets(kind, n, out_dim, g)


def _theta(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _unflatten(model, theta):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    parts = torch.split(theta, sizes)
    return {nm: t.reshape(s) for nm, t, s in zip(names, parts, shapes, strict=True)}


def _dense_hessian(model, X, y, loss):
    def full(theta):
        out = functional_call(model, _unflatten(model, theta), (X,))
        return _batch_loss(loss, out, y)

    return torch.autograd.functional.hessian(full, _theta(model)).numpy()


def _dense_ggn(model, X, y, loss):
    theta = _theta(model)

    def outputs(t):
        return functional_call(model, _unflatten(model, t), (X,))

    F = outputs(theta).detach()
    J = torch.autograd.functional.jacobian(lambda t: outputs(t).reshape(-1), theta)
    HF = torch.autograd.functional.hessian(
        lambda f: _batch_loss(loss, f.reshape(F.shape), y), F.reshape(-1)
    )
    return (J.T @ HF @ J).numpy()


def _close(a, b, rtol=1e-11):
    """Same derivatives by two autodiff routes: agreement to rounding of the largest entry."""
    return np.max(np.abs(a - b)) <= rtol * max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("name", list(LOSSES))
def test_hessian_operator_equals_the_dense_hessian_of_the_full_batch_loss(name):
    loss, kind = LOSSES[name]
    model, X, y = _problem(out_dim=3, kind=kind)
    dense = _dense_hessian(model, X, y, loss)
    op = loss_hessian_operator(model, (X, y), loss=loss, batch_size=3)  # three chunks
    assert op.shape == dense.shape and op.dtype == np.float64
    assert _close(to_dense(op, block=5), dense)


@pytest.mark.parametrize("name", list(LOSSES))
def test_ggn_operator_equals_the_dense_gauss_newton(name):
    loss, kind = LOSSES[name]
    model, X, y = _problem(out_dim=3, seed=1, kind=kind)
    dense = _dense_ggn(model, X, y, loss)
    assert _close(to_dense(ggn_operator(model, (X, y), loss=loss, batch_size=4)), dense)


def _curvlinops():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import curvlinops
    return curvlinops


@pytest.mark.parametrize(
    "name", ["mse-mean", "mse-sum", "ce-labels", "ce-sum", "ce-probs-smooth", "bce-mean"]
)
def test_against_curvlinops(name):
    curvlinops = _curvlinops()
    loss, kind = LOSSES[name]
    model, X, y = _problem(out_dim=3, seed=2, kind=kind)
    params = list(model.parameters())
    batches = [(X[:4], y[:4]), (X[4:], y[4:])]
    for ours, theirs in [
        (loss_hessian_operator, curvlinops.HessianLinearOperator),
        (ggn_operator, curvlinops.GGNLinearOperator),
    ]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            reference = theirs(model, loss, params, batches, check_deterministic=False)
            reference = to_dense(reference.to_scipy(np.float64))
        assert _close(to_dense(ours(model, (X, y), loss=loss, batch_size=4)), reference)


def test_normalisation_trap_mse_mean_is_2_over_k_times_the_half_square_loss():
    model, X, y = _problem(out_dim=3)
    ours = to_dense(loss_hessian_operator(model, (X, y), loss=HalfSquaredError()))
    mse = _dense_hessian(model, X, y, nn.MSELoss())
    assert np.allclose(mse, (2 / 3) * ours, rtol=1e-12, atol=1e-14)


def test_hessian_vector_products_against_finite_differences():
    model, X, y = _problem(seed=1, kind="labels")
    loss = nn.CrossEntropyLoss()
    theta = _theta(model)

    def grad(t):
        def full(t):
            return loss(functional_call(model, _unflatten(model, t), (X,)), y)

        return torch.func.grad(full)(t).numpy()

    op = loss_hessian_operator(model, (X, y), loss=loss)
    v = np.random.default_rng(0).standard_normal(theta.numel())
    eps, vt = 1e-5, torch.as_tensor(v)
    fd = (grad(theta + eps * vt) - grad(theta - eps * vt)) / (2 * eps)
    # central differences: O(eps^2) truncation plus eps_machine/eps rounding, ~1e-10
    assert np.allclose(op @ v, fd, atol=1e-8 * np.linalg.norm(fd))
    # matmat is column by column matvec
    V = np.random.default_rng(1).standard_normal((theta.numel(), 2))
    assert np.allclose(op @ V, np.column_stack([op @ V[:, 0], op @ V[:, 1]]), rtol=1e-14)


def test_parameter_blocks_are_the_sub_blocks():
    model, X, y = _problem(seed=2)
    loss = HalfSquaredError()
    dense = _dense_hessian(model, X, y, loss)
    block = to_dense(loss_hessian_operator(model, (X, y), loss=loss, params="first_layer"))
    assert block.shape == (12, 12)  # W1 is 4 x 3; the parameter vector starts with it
    assert np.allclose(block, dense[:12, :12], rtol=1e-12, atol=1e-14)
    rest = to_dense(loss_hessian_operator(model, (X, y), loss=loss, params="rest"))
    assert np.allclose(rest, dense[12:, 12:], rtol=1e-12, atol=1e-14)
    named = to_dense(loss_hessian_operator(model, (X, y), loss=loss, params=["first_layer.bias"]))
    assert np.allclose(named, dense[12:16, 12:16], rtol=1e-12, atol=1e-14)
    ggn = _dense_ggn(model, X, y, loss)
    first = to_dense(ggn_operator(model, (X, y), loss=loss, params="first_layer"))
    assert np.allclose(first, ggn[:12, :12], rtol=1e-12, atol=1e-14)


def test_hessian_equals_gauss_newton_at_an_interpolating_minimum():
    data = synthetic("teacher", n=6, d=3, seed=0, n_test=0)
    model = make_model("mlp", in_dim=3, widths=(8,), seed=0)
    assert fit_last_layer(model, data) < 1e-25
    for loss in (HalfSquaredError(), nn.MSELoss(reduction="sum")):
        hess = to_dense(loss_hessian_operator(model, data, loss=loss))
        ggn = to_dense(ggn_operator(model, data, loss=loss))
        # the difference is w_n sum_i r_i grad^2 f_i with residuals r_i ~ 1e-13
        assert np.max(np.abs(hess - ggn)) <= 1e-10 * np.max(np.abs(ggn))
    # away from the minimum they differ
    with torch.no_grad():
        model.head[-1].bias.add_(0.5)
    far = to_dense(loss_hessian_operator(model, data, loss=HalfSquaredError())) - to_dense(
        ggn_operator(model, data, loss=HalfSquaredError())
    )
    assert np.max(np.abs(far)) > 1e-3


@pytest.mark.parametrize("k", [1, 3])
def test_lanczos_equals_dense_eigenvalues(k):
    model, X, y = _problem(seed=4, kind="labels")
    loss = nn.CrossEntropyLoss()
    op = loss_hessian_operator(model, (X, y), loss=loss)
    dense = np.linalg.eigvalsh(_dense_hessian(model, X, y, loss))[::-1]
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
    loss = HalfSquaredError()
    op = loss_hessian_operator(model, (X, y), loss=loss)
    exact = np.trace(_dense_hessian(model, X, y, loss))
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
    theta = _theta(model)
    jac = torch.autograd.functional.jacobian(
        lambda t: functional_call(model, _unflatten(model, t), (data.X_train,)).reshape(-1), theta
    ).numpy()
    flatness = np.sum(jac**2) / data.n
    loss = HalfSquaredError()
    assert np.trace(to_dense(loss_hessian_operator(model, data, loss=loss))) == pytest.approx(
        flatness, rel=1e-10
    )
    w1 = np.trace(to_dense(loss_hessian_operator(model, data, loss=loss, params="first_layer")))
    assert w1 == pytest.approx(np.sum(jac[:, :21] ** 2) / data.n, rel=1e-10)


def test_counting_operator_counts_products():
    op = CountingOperator(aslinearoperator(np.eye(4)))
    op @ np.ones(4)
    op @ np.ones((4, 3))
    op.rmatvec(np.ones(4))
    assert op.n_products == 5 and op.adjoint() is op


class _Scalar(nn.Module):
    """A model with outputs of shape (n,)."""

    def __init__(self):
        super().__init__()
        self.net = make_model("mlp", in_dim=3, widths=(4,), seed=6)

    def forward(self, x):
        return self.net(x)[:, 0]


def test_vector_outputs_with_vector_targets():
    model = _Scalar()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 3, dtype=torch.float64, generator=g)
    for loss, y in [
        (nn.MSELoss(), torch.randn(6, dtype=torch.float64, generator=g)),
        (nn.BCEWithLogitsLoss(), torch.rand(6, dtype=torch.float64, generator=g)),
    ]:
        assert _close(
            to_dense(loss_hessian_operator(model, (X, y), loss=loss)),
            _dense_hessian(model, X, y, loss),
        )
        assert _close(
            to_dense(ggn_operator(model, (X, y), loss=loss)), _dense_ggn(model, X, y, loss)
        )


def _bn_model(dropout=False):
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)]
    if dropout:
        layers = [nn.Linear(3, 4), nn.Dropout(0.3), nn.Tanh(), nn.Linear(4, 2)]
    model = nn.Sequential(*layers).double()
    if not dropout:
        with torch.no_grad():  # running statistics that differ from the identity
            model[1].running_mean.uniform_(-0.5, 0.5)
            model[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("dropout", [False, True])
def test_batchnorm_and_dropout_in_training_mode_are_refused_and_work_in_eval(dropout):
    model = _bn_model(dropout)
    _, X, y = _problem(kind="labels")
    loss = nn.CrossEntropyLoss()
    for op in (loss_hessian_operator, ggn_operator):
        with pytest.raises(ValueError, match=r"model\.eval\(\)") as info:
            op(model, (X, y), loss=loss)
        assert ("BatchNorm" if not dropout else "Dropout") in str(info.value)
    model.eval()
    assert _close(
        to_dense(loss_hessian_operator(model, (X, y), loss=loss)),
        _dense_hessian(model, X, y, loss),
    )


def test_dataloader_data_and_float32_models():
    from torch.utils.data import DataLoader, TensorDataset

    model, X, y = _problem(seed=3, kind="labels")
    loss = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(X, y), batch_size=3)
    dense = _dense_hessian(model, X, y, loss)
    assert _close(to_dense(loss_hessian_operator(model, loader, loss=loss)), dense)
    model32 = make_model("mlp", in_dim=3, widths=(4,), out_dim=2, seed=3, dtype=torch.float32)
    op = loss_hessian_operator(model32, (X.float(), y), loss=loss)
    assert model32.first_layer.weight.dtype == torch.float32  # the model is not modified
    dense32 = _dense_hessian(model32.double(), X.float().double(), y, loss)
    assert _close(to_dense(op), dense32)


def test_errors():
    model, X, y = _problem()
    loss = HalfSquaredError()
    with pytest.raises(TypeError, match="loss"):
        loss_hessian_operator(model, (X, y))  # loss is required
    with pytest.raises(ValueError, match="params"):
        loss_hessian_operator(model, (X, y), loss=loss, params="middle")
    with pytest.raises(ValueError, match="unknown"):
        loss_hessian_operator(model, (X, y), loss=loss, params=["nope"])
    with pytest.raises(ValueError, match="targets"):
        loss_hessian_operator(model, (X, y[:, :1]), loss=loss)
    with pytest.raises(ValueError, match="NaN"):
        ggn_operator(model, (X * float("nan"), y), loss=loss)
    with pytest.raises(ValueError, match=r"loss.*twice differentiable"):
        ggn_operator(model, (X, y), loss=nn.L1Loss())
    with pytest.raises(ValueError, match=r"loss.*piecewise linear"):
        ggn_operator(model, (X, y), loss=lambda f, t: (f - t).abs().sum(dim=1))
    with pytest.raises(TypeError, match=r"targets.*long"):
        ggn_operator(model, (X, y[:, 0]), loss=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"targets.*0..1"):
        ggn_operator(model, (X, torch.arange(7)), loss=nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"targets.*floating"):
        loss_hessian_operator(model, (X, torch.zeros(7, 2, dtype=torch.long)), loss=nn.MSELoss())
    with pytest.raises(ValueError, match="batch_size"):
        loss_hessian_operator(model, (X, y), loss=loss, batch_size=0)
    with pytest.raises(TypeError, match="model"):
        loss_hessian_operator("model", (X, y), loss=loss)
    frozen = make_model("mlp", in_dim=3, widths=(4,), out_dim=2).requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable"):
        ggn_operator(frozen, (X, y), loss=loss)
    with pytest.raises(TypeError, match="LinearOperator"):
        top_eigenvalues([[1.0]])
    with pytest.raises(ValueError, match="square"):
        top_eigenvalues(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at most"):
        top_eigenvalues(np.eye(2), 3)
    with pytest.raises(ValueError, match="n_samples"):
        hutchinson_trace(np.eye(2), n_samples=1)


def test_operators_are_snapshots_of_the_parameters():
    model, X, y = _problem(seed=7, kind="labels")
    loss = nn.CrossEntropyLoss()
    before = _dense_ggn(model, X, y, loss)
    op = ggn_operator(model, (X, y), loss=loss)
    hess = loss_hessian_operator(model, (X, y), loss=loss)
    dense_hess = _dense_hessian(model, X, y, loss)
    with torch.no_grad():
        model.first_layer.weight.mul_(2.0)
    assert _close(to_dense(op), before) and _close(to_dense(hess), dense_hess)
