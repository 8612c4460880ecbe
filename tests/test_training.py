"""companion.nets.training: SGD on the user's loss with independent uniform batches.

References: the same step taken by hand with ``torch.autograd.grad`` of the torch loss
module on the drawn batch, the module's value on the full data, dense autograd Hessians.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from companion.nets.data import load, synthetic
from companion.nets.losses import HalfSquaredError
from companion.nets.models import make_model
from companion.nets.training import (
    History,
    first_layer_norm,
    fit_last_layer,
    train,
)
from companion.stability.sampling import sample_batches

LOSS = HalfSquaredError()



@pytest.fixture(scope="module")
def digits():
    return load("digits", classes=(0, 1), n_per_class=10, seed=0)


@pytest.fixture(scope="module")
def digits3():
    """Three classes: one-hot targets and the integer labels 0, 1, 2."""
    ds = load("digits", classes=(0, 1, 2), n_per_class=6, seed=0)
    return ds, ds.y_train.argmax(dim=1)


def _model(seed=0, widths=(6,), out_dim=1):
    return make_model("mlp", in_dim=64, widths=widths, out_dim=out_dim, seed=seed)


def test_same_seed_same_history_other_seed_differs(digits):
    kwargs = {"lr": 0.05, "batch_size": 4, "steps": 60, "record_every": 5, "progress": False}
    h1 = train(_model(), digits, seed=3, loss=LOSS, **kwargs)
    h2 = train(_model(), digits, seed=3, loss=LOSS, **kwargs)
    h3 = train(_model(), digits, seed=4, loss=LOSS, **kwargs)
    assert isinstance(h1, History)
    assert np.array_equal(h1.loss, h2.loss) and np.array_equal(h1.steps, h2.steps)
    assert np.array_equal(h1.first_layer_norm, h2.first_layer_norm)
    assert not np.array_equal(h1.loss, h3.loss)
    assert h1.steps[0] == 0 and h1.steps[-1] == 60 and h1.steps_taken == 60
    assert h1.settings["loss"] == "HalfSquaredError(reduction='mean')"


def _step_cases(digits, digits3):
    ds3, labels = digits3
    return {
        "half": (HalfSquaredError(), _model(seed=1), digits.X_train, digits.y_train),
        "half-sum": (HalfSquaredError("sum"), _model(seed=1), digits.X_train, digits.y_train),
        "mse": (nn.MSELoss(), _model(seed=1, out_dim=3), ds3.X_train, ds3.y_train),
        "mse-sum": (nn.MSELoss(reduction="sum"), _model(seed=1), digits.X_train, digits.y_train),
        "ce": (nn.CrossEntropyLoss(), _model(seed=1, out_dim=3), ds3.X_train, labels),
        "ce-sum": (nn.CrossEntropyLoss(reduction="sum"), _model(seed=1, out_dim=3), ds3.X_train,
                   labels),
        "bce": (nn.BCEWithLogitsLoss(), _model(seed=1, out_dim=3), ds3.X_train, ds3.y_train),
    }


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("case", ["half", "half-sum", "mse", "mse-sum", "ce", "ce-sum", "bce"])
def test_one_step_is_the_users_sgd_step_on_the_drawn_batch(digits, digits3, case, replacement):
    loss, model, X, y = _step_cases(digits, digits3)[case]
    ref = make_model("mlp", in_dim=64, widths=(6,), out_dim=model.out_dim, seed=1)
    n = X.shape[0]
    hist = train(model, (X, y), lr=0.1, batch_size=5, steps=1, seed=7,
                 replacement=replacement, loss=loss, progress=False)
    with torch.no_grad():  # the recorded loss is the module on all the data
        assert hist.loss[0] == pytest.approx(loss(ref(X), y).item(), rel=1e-13)
    batch = sample_batches(np.random.default_rng(7), n, 5, 1, replacement)[0]
    idx = torch.as_tensor(batch)
    grads = torch.autograd.grad(loss(ref(X[idx]), y[idx]), list(ref.parameters()))
    for p, q, g in zip(model.parameters(), ref.parameters(), grads, strict=True):
        assert torch.allclose(p, q - 0.1 * g, rtol=0, atol=1e-15)


def test_full_batch_without_replacement_is_gradient_descent_with_warmup(digits):
    model, ref = _model(seed=2), _model(seed=2)
    train(model, digits, lr=0.2, batch_size=digits.n, steps=3, warmup_steps=4, loss=LOSS,
          progress=False)
    params = list(ref.parameters())
    for t in range(3):
        value = ((ref(digits.X_train) - digits.y_train) ** 2).sum() / (2 * digits.n)
        grads = torch.autograd.grad(value, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(0.2 * min(1.0, (t + 1) / 4) * g)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-14)


def test_first_layer_norm_is_the_spectral_norm():
    model = make_model("mlp", in_dim=5, widths=(4,), seed=3)
    expected = np.linalg.svd(model.first_layer.weight.detach().numpy(), compute_uv=False)[0]
    assert first_layer_norm(model) == pytest.approx(expected, rel=1e-13)
    cnn = make_model("cnn", in_shape=(1, 4, 4), channels=(2,), seed=0)
    w = cnn.first_layer.weight.detach().numpy().reshape(2, -1)
    assert first_layer_norm(cnn) == pytest.approx(np.linalg.norm(w, 2), rel=1e-13)
    assert math.isnan(first_layer_norm(nn.Sequential(nn.Tanh(), nn.Linear(2, 1))))


def test_stops_at_interpolation_on_an_overparameterised_linear_model():
    data = synthetic("linear", n=5, d=12, seed=0, n_test=0)
    model = make_model("mlp", in_dim=12, widths=(), seed=0)
    hist = train(model, data, lr=0.5, batch_size=5, steps=5000, tol=1e-12, record_every=1,
                 loss=LOSS, progress=False)
    assert hist.interpolated and not hist.diverged
    assert hist.final_loss <= 1e-12 and hist.steps_taken < 5000
    assert hist.loss[-2] > 1e-12  # it stopped at the first recorded loss below tol
    assert "interpolated" in repr(hist)


def test_cross_entropy_training_decreases_the_loss(digits3):
    ds, labels = digits3
    hist = train(_model(out_dim=3), (ds.X_train, labels), lr=0.5, batch_size=6, steps=60,
                 loss=nn.CrossEntropyLoss(), progress=False)
    assert hist.loss[-1] < 0.5 * hist.loss[0] and not hist.interpolated


def test_divergence_is_flagged(digits):
    hist = train(_model(), digits, lr=50.0, batch_size=4, steps=500, record_every=1,
                 loss=LOSS, progress=False)
    assert hist.diverged and not hist.interpolated and hist.steps_taken < 500


def test_divergence_between_loss_checks_is_flagged_not_raised(digits):
    """Weights that overflow between two recorded losses must give diverged, not an SVD error."""
    hist = train(_model(), digits, lr=1e4, batch_size=4, steps=400, record_every=50,
                 loss=LOSS, progress=False)
    assert hist.diverged and not hist.interpolated
    assert not np.isfinite(hist.loss[-1]) or hist.loss[-1] > 1e12 * hist.loss[0]


def _dense_sharpness(model, X, y, loss):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def full(t):
        parts = [u.reshape(s) for u, s in zip(torch.split(t, sizes), shapes, strict=True)]
        return loss(functional_call(model, dict(zip(names, parts, strict=True)), (X,)), y)

    dense = torch.autograd.functional.hessian(full, theta, vectorize=True)
    return float(torch.linalg.eigvalsh(dense)[-1])


@pytest.mark.parametrize("loss", [HalfSquaredError(), nn.MSELoss(reduction="sum")])
def test_recorded_norm_and_sharpness(digits, loss):
    model = _model(seed=5, widths=(3,))
    w0 = model.first_layer.weight.detach().clone()
    s0 = _dense_sharpness(model, digits.X_train, digits.y_train, loss)
    hist = train(model, digits, lr=0.01, batch_size=4, steps=20, sharpness_every=10,
                 loss=loss, progress=False)
    assert hist.first_layer_norm[0] == pytest.approx(torch.linalg.matrix_norm(w0, 2).item())
    assert hist.sharpness_steps.tolist() == [0, 10]
    assert hist.sharpness[0] == pytest.approx(s0, rel=1e-7)
    assert len(hist.first_layer_norm) == len(hist.loss)


def test_batchnorm_models(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
    model = model.double()
    # recording the loss is not a training step: the running statistics do not move
    mean = model[1].running_mean.clone()
    train(model, digits, lr=0.01, batch_size=4, steps=0, loss=LOSS, progress=False)
    assert torch.equal(model[1].running_mean, mean)
    # SGD in training mode, as the user's loop would do
    hist = train(model, digits, lr=0.01, batch_size=4, steps=3, loss=LOSS, progress=False)
    assert math.isfinite(hist.final_loss) and not torch.equal(model[1].running_mean, mean)
    # but the sharpness of a batch-dependent function is not defined
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        train(model, digits, lr=0.01, batch_size=4, steps=3, loss=LOSS, sharpness_every=1,
              progress=False)


def test_dataloader_data(digits):
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(digits.X_train, digits.y_train), batch_size=7)
    kwargs = {"lr": 0.05, "batch_size": 4, "steps": 10, "loss": LOSS, "progress": False}
    a = train(_model(seed=8), loader, **kwargs)
    b = train(_model(seed=8), digits, **kwargs)
    assert np.array_equal(a.loss, b.loss)


def test_progress_bar_and_threads(digits, monkeypatch, capsys):
    before = torch.get_num_threads()
    train(_model(), digits, lr=0.01, batch_size=2, steps=5, loss=LOSS, progress=True)
    assert torch.get_num_threads() == before
    assert "SGD" in capsys.readouterr().err
    monkeypatch.setenv("COMPANION_PROGRESS", "0")
    train(_model(), digits, lr=0.01, batch_size=2, steps=5, loss=LOSS, num_threads=None)
    assert "SGD" not in capsys.readouterr().err


def test_float32_models_train_in_float32(digits):
    model = make_model("mlp", in_dim=64, widths=(4,), dtype=torch.float32, seed=0)
    hist = train(model, digits, lr=0.01, batch_size=4, steps=3, loss=LOSS, progress=False)
    assert model.first_layer.weight.dtype == torch.float32 and math.isfinite(hist.final_loss)


def test_model_without_first_layer_records_nan_norm(digits):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    hist = train(model.double(), digits, lr=0.01, batch_size=4, steps=2, loss=LOSS,
                 progress=False)
    assert np.all(np.isnan(hist.first_layer_norm))


def test_plot_runs(digits):
    import matplotlib

    matplotlib.use("Agg")
    hist = train(_model(), digits, lr=0.01, batch_size=4, steps=4, loss=LOSS, progress=False)
    ax = hist.plot()
    assert ax.get_yscale() == "log"


def test_fit_last_layer_interpolates():
    data = synthetic("circle-neuron", n=8, d=3, seed=0, n_test=0)
    model = make_model("mlp", in_dim=3, widths=(5, 9), seed=0, output_scale=0.5)
    assert fit_last_layer(model, data) < 1e-24  # 10 features >= 8 samples: exact fit
    few = make_model("mlp", in_dim=3, widths=(2,), seed=0)  # 3 features < 8: a residual
    value = fit_last_layer(few, data)
    with torch.no_grad():
        residual = few(data.X_train) - data.y_train
    assert value == pytest.approx(float((residual**2).sum()) / (2 * data.n), rel=1e-12)
    # the least-squares fit: the residual is orthogonal to the features [phi, 1]
    with torch.no_grad():
        feats = few.head[0](few.first_layer(data.X_train))
    assert torch.allclose(feats.T @ residual, torch.zeros(2, 1, dtype=torch.float64), atol=1e-12)
    assert abs(float(residual.sum())) < 1e-12
    cnn = make_model("cnn", in_shape=(1, 4, 4), channels=(2,), seed=0)
    imgs = (torch.randn(3, 16, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64))
    assert fit_last_layer(cnn, imgs) < 1e-24
    with pytest.raises(TypeError, match="MLP"):
        fit_last_layer(torch.nn.Linear(3, 1), data)
    with pytest.raises(TypeError, match="targets"):
        fit_last_layer(model, (data.X_train, torch.zeros(8, dtype=torch.long)))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"lr": -1.0}, ValueError),
        ({"lr": "fast"}, TypeError),
        ({"batch_size": 21}, ValueError),
        ({"batch_size": 2.0}, TypeError),
        ({"steps": -1}, ValueError),
        ({"tol": -1.0}, ValueError),
        ({"replacement": "no"}, TypeError),
        ({"record_every": 0}, ValueError),
        ({"sharpness_every": 0}, ValueError),
        ({"warmup_steps": -2}, ValueError),
        ({"num_threads": 0}, ValueError),
        ({"loss": nn.L1Loss()}, ValueError),
        ({"loss": nn.MSELoss(reduction="none")}, ValueError),
    ],
)
def test_bad_arguments(digits, kwargs, error):
    args = {"lr": 0.1, "batch_size": 4, "steps": 1, "progress": False, "loss": LOSS, **kwargs}
    with pytest.raises(error):
        train(_model(), digits, **args)


def test_bad_data(digits, digits3):
    with pytest.raises(TypeError, match="loss"):
        train(_model(), digits, lr=0.1, batch_size=2)  # loss is required
    with pytest.raises(ValueError, match="targets"):
        train(_model(), (digits.X_train, torch.zeros(20, 2)), lr=0.1, batch_size=2, loss=LOSS)
    with pytest.raises(ValueError, match="NaN"):
        train(_model(), (digits.X_train * float("nan"), digits.y_train), lr=0.1, batch_size=2,
              loss=LOSS)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        train("model", digits, lr=0.1, batch_size=2, loss=LOSS)
    ds, labels = digits3
    with pytest.raises(TypeError, match=r"targets.*long"):
        train(_model(out_dim=3), (ds.X_train, labels.double()), lr=0.1, batch_size=2,
              loss=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"targets.*0\.\.1"):
        train(_model(out_dim=2), (ds.X_train, labels), lr=0.1, batch_size=2,
              loss=nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"targets.*floating"):
        train(_model(out_dim=1), (ds.X_train, labels), lr=0.1, batch_size=2, loss=nn.MSELoss())
    frozen = _model().requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable"):
        train(frozen, digits, lr=0.1, batch_size=2, loss=LOSS)


# ----------------------------------------------------------------------------------------
# Mulayoff and Michaeli's procedure, monitors (used by experiments/ch14_*)
# ----------------------------------------------------------------------------------------


def test_scale_parameters_scales_the_whole_initial_point():
    from companion.nets.training import scale_parameters

    model = _model(seed=2, widths=(4,))
    before = [p.detach().clone() for p in model.parameters()]
    assert scale_parameters(model, 2.5) is model
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), 2.5 * q)
    for bad in (0.0, -1.0, float("inf"), True, "2"):
        with pytest.raises(ValueError, match="factor"):
            scale_parameters(model, bad)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        scale_parameters("model", 2.0)


def test_monitor_is_called_every_k_steps_on_the_current_model(digits):
    model = _model(seed=1)
    w0 = model.first_layer.weight.detach().clone()
    seen = []

    def monitor(m):
        seen.append(m.first_layer.weight.detach().clone())
        return {"w_sum": float(m.first_layer.weight.detach().sum())}

    hist = train(model, digits, lr=0.05, batch_size=4, steps=25, tol=0.0, loss=LOSS,
                 monitor=monitor, monitor_every=10, progress=False)
    assert hist.monitor_steps == [0, 10, 20]
    assert hist.monitor[0]["w_sum"] == pytest.approx(float(w0.sum()), rel=1e-15)
    assert not torch.equal(seen[1], w0)  # called on the trained weights, not a copy of w0
    with pytest.raises(ValueError, match="together"):
        train(_model(), digits, lr=0.1, batch_size=4, steps=1, loss=LOSS, monitor=monitor)
    with pytest.raises(TypeError, match="callable"):
        train(_model(), digits, lr=0.1, batch_size=4, steps=1, loss=LOSS, monitor=3,
              monitor_every=1)


TINY_MM = {"dataset": "digits", "classes": [0, 1], "n_per_class": 4, "widths": [3],
           "loss": "half_squared_error"}


def test_train_minimum_mm_procedure_scaled_shared_initial_point_and_warmup():
    from companion.nets.minima import train_minimum

    data = load("digits", classes=(0, 1), n_per_class=4)
    X, y = data.X_train, data.y_train
    plain = make_model("mlp", seed=7, in_dim=64, widths=(3,))
    # by hand: theta0 = 2 x the default initialisation of init_seed, one GD step at lr/T
    scaled = make_model("mlp", seed=7, in_dim=64, widths=(3,))
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(2.0)
    out = scaled(X)
    grads = torch.autograd.grad(0.5 * ((out - y) ** 2).mean(), list(scaled.parameters()))
    with torch.no_grad():
        for p, g in zip(scaled.parameters(), grads, strict=True):
            p.sub_(0.3 / 4 * g)
        expected = float(0.5 * ((scaled(X) - y) ** 2).mean())
    runs = [train_minimum(0.3, 8, seed=s, init_seed=7, init_scale=2.0, warmup_steps=4,
                          steps=1, tol=0.0, record_every=1, **TINY_MM) for s in (0, 1)]
    w_norm = float(torch.linalg.matrix_norm(plain.first_layer.weight.detach(), 2))
    for r in runs:  # both seeds start from the one shared, doubled point
        assert r["norm_history"][0] == pytest.approx(2 * w_norm, rel=1e-12)
        assert r["final_loss"] == pytest.approx(expected, rel=1e-10)


def test_curvature_along_training_against_dense_per_sample_hessians():
    from companion.nets.jacobians import parameter_jacobian
    from companion.nets.minima import curvature_along_training
    from companion.stability.thresholds import ms_threshold

    data = load("digits", classes=(0, 1), n_per_class=3)
    X = data.X_train[:, 20:30]
    model = make_model("mlp", seed=3, in_dim=10, widths=(4,))
    monitor = curvature_along_training((X, data.y_train), 2, loss="half_squared_error")
    got = monitor(model)
    jac = parameter_jacobian(model, X)[:, 0, :]  # (n, d); the loss's output Hessian is 1
    hess = np.einsum("ni,nj->nij", jac, jac)
    assert got["sharpness"] == pytest.approx(np.linalg.eigvalsh(hess.mean(0))[-1], rel=1e-9)
    dense = 2 / ms_threshold(hess, 2, method="dense")
    assert got["generalized_sharpness"] == pytest.approx(dense, rel=1e-8)
    assert got["generalized_sharpness"] > got["sharpness"] * 1.01  # B = 2 adds noise
    with torch.no_grad():
        by_hand = float(0.5 * ((model(X) - data.y_train) ** 2).mean())
    assert got["loss"] == pytest.approx(by_hand, rel=1e-12)


def test_train_minimum_records_the_loss_hessian_sharpness():
    from companion.nets.minima import train_minimum

    data = load("digits", classes=(0, 1), n_per_class=4)
    r = train_minimum(0.1, 8, seed=0, init_seed=5, init_scale=1.5, steps=0, tol=0.0,
                      sharpness_every=1, **TINY_MM)
    model = make_model("mlp", seed=5, in_dim=64, widths=(3,))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    dense = _dense_sharpness(model, data.X_train, data.y_train, LOSS)
    assert r["hessian_sharpness"] == pytest.approx(dense, rel=1e-7)
    assert r["sharpness_history"] == [] and r["steps_taken"] == 0


def _dense_second_moment(a, batch_size):
    """C, D on d x d matrices (d^2 x d^2, by np.kron) for H_i = a_i a_i^T, no replacement."""
    n, d = a.shape
    p = (n - batch_size) / (batch_size * (n - 1))
    hs = np.einsum("ni,nj->nij", a, a)
    h = hs.mean(0)
    eye = np.eye(d)
    c = 0.5 * (np.kron(h, eye) + np.kron(eye, h))
    dd = (1 - p) * np.kron(h, h) + p * sum(np.kron(x, x) for x in hs) / n
    return c, dd


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_second_moment_maximiser_against_dense_operators(batch_size):
    import scipy.linalg

    from companion.nets.minima import second_moment_maximiser_from_gram

    rng = np.random.default_rng(batch_size)
    a = rng.standard_normal((6, 4))  # n = 6 samples, d = 4: H has full rank 4
    c, dd = _dense_second_moment(a, batch_size)
    dense = scipy.linalg.eigh(dd, c, eigvals_only=True)[-1]  # C is definite: H full rank
    got = second_moment_maximiser_from_gram(a @ a.T, batch_size)
    assert got["generalized_sharpness"] == pytest.approx(dense, rel=1e-9)
    # the rank-one value is a Rayleigh quotient: a lower bound, never above the exact value
    assert got["rank_one_value"] <= got["generalized_sharpness"] * (1 + 1e-12)
    assert 0 < got["rank_one_share"] <= 1 + 1e-12 and got["rank"] == 4


def test_second_moment_maximiser_rank_one_exactly_when_hessians_commute():
    from companion.nets.minima import second_moment_maximiser_from_gram

    # samples along coordinate axes: commuting H_i, the maximiser is e_a e_a^T (rank one)
    axes = np.zeros((6, 3))
    axes[np.arange(6), [0, 0, 1, 1, 2, 2]] = [3.0, 1.0, 1.5, 1.5, 1.0, 1.0]
    got = second_moment_maximiser_from_gram(axes @ axes.T, 2)
    c, dd = _dense_second_moment(axes, 2)
    e = np.zeros(9)
    e[0] = 1.0  # vec(e_1 e_1^T): its Rayleigh quotient is the top eigenvalue here
    assert got["rank_one_share"] == pytest.approx(1.0, abs=1e-10)
    assert got["rank_one_value"] == pytest.approx(got["generalized_sharpness"], rel=1e-10)
    assert got["generalized_sharpness"] == pytest.approx((e @ dd @ e) / (e @ c @ e), rel=1e-10)
    # generic samples: the maximiser is not rank one and the rank-one value misses
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 5))
    generic = second_moment_maximiser_from_gram(a @ a.T, 1)
    assert generic["rank_one_share"] < 0.99
    assert generic["rank_one_value"] < 0.999 * generic["generalized_sharpness"]


def test_second_moment_maximiser_of_a_model_and_bad_input():
    from companion.nets.curvature import model_curvature
    from companion.nets.minima import second_moment_maximiser, second_moment_maximiser_from_gram

    data = load("digits", classes=(0, 1), n_per_class=5)
    model = _model(seed=4, widths=(5,))
    got = second_moment_maximiser(model, data, 2, loss=LOSS)
    curv = model_curvature(model, data, loss=LOSS)
    assert got["generalized_sharpness"] == pytest.approx(curv.generalized_sharpness(2),
                                                         rel=1e-8)
    with pytest.raises(ValueError, match="one output"):
        second_moment_maximiser(_model(out_dim=2), (data.X_train, torch.zeros(10, 2,
                                dtype=torch.float64)), 2, loss=LOSS)
    with pytest.raises(ValueError, match="square"):
        second_moment_maximiser_from_gram(np.ones(3), 1)
    with pytest.raises(ValueError, match="zero"):
        second_moment_maximiser_from_gram(np.zeros((3, 3)), 1)
