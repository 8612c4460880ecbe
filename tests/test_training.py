"""companion.training: SGD on the (1/2n) square loss with independent uniform batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from companion.data import load, synthetic
from companion.hessian_ops import loss_hessian_operator, top_eigenvalues
from companion.models import make_model
from companion.sampling import sample_batches
from companion.training import History, fit_last_layer, square_loss, train


@pytest.fixture(scope="module")
def digits():
    return load("digits", classes=(0, 1), n_per_class=10, seed=0)


def _model(seed=0, widths=(6,)):
    return make_model("mlp", in_dim=64, widths=widths, seed=seed)


def test_same_seed_same_history_other_seed_differs(digits):
    kwargs = {"lr": 0.05, "batch_size": 4, "steps": 60, "record_every": 5, "progress": False}
    h1 = train(_model(), digits, seed=3, **kwargs)
    h2 = train(_model(), digits, seed=3, **kwargs)
    h3 = train(_model(), digits, seed=4, **kwargs)
    assert isinstance(h1, History)
    assert np.array_equal(h1.loss, h2.loss) and np.array_equal(h1.steps, h2.steps)
    assert np.array_equal(h1.first_layer_norm, h2.first_layer_norm)
    assert not np.array_equal(h1.loss, h3.loss)
    assert h1.steps[0] == 0 and h1.steps[-1] == 60 and h1.steps_taken == 60


@pytest.mark.parametrize("replacement", [False, True])
def test_one_step_is_the_sgd_update_on_the_drawn_batch(digits, replacement):
    model, ref = _model(seed=1), _model(seed=1)
    train(model, digits, lr=0.1, batch_size=5, steps=1, seed=7, replacement=replacement,
          progress=False)
    batch = sample_batches(np.random.default_rng(7), digits.n, 5, 1, replacement)[0]
    idx = torch.as_tensor(batch)
    loss = ((ref(digits.X_train[idx]) - digits.y_train[idx]) ** 2).sum() / (2 * 5)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for p, q, g in zip(model.parameters(), ref.parameters(), grads, strict=True):
        assert torch.allclose(p, q - 0.1 * g, rtol=0, atol=1e-15)


def test_full_batch_without_replacement_is_gradient_descent_with_warmup(digits):
    model, ref = _model(seed=2), _model(seed=2)
    train(model, digits, lr=0.2, batch_size=digits.n, steps=3, warmup_steps=4, progress=False)
    params = list(ref.parameters())
    for t in range(3):
        grads = torch.autograd.grad(square_loss(ref, digits.X_train, digits.y_train), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(0.2 * min(1.0, (t + 1) / 4) * g)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-14)


def test_square_loss_normalisation():
    model = make_model("mlp", in_dim=2, widths=(), out_dim=3, seed=0)
    X = torch.ones(4, 2, dtype=torch.float64)
    y = torch.zeros(4, 3, dtype=torch.float64)
    out = model(X)
    assert square_loss(model, X, y).item() == pytest.approx((out**2).sum().item() / 8)


def test_stops_at_interpolation_on_an_overparameterised_linear_model():
    data = synthetic("linear", n=5, d=12, seed=0, n_test=0)
    model = make_model("mlp", in_dim=12, widths=(), seed=0)
    hist = train(model, data, lr=0.5, batch_size=5, steps=5000, tol=1e-12, record_every=1,
                 progress=False)
    assert hist.interpolated and not hist.diverged
    assert hist.final_loss <= 1e-12 and hist.steps_taken < 5000
    assert hist.loss[-2] > 1e-12  # it stopped at the first recorded loss below tol
    assert "interpolated" in repr(hist)


def test_divergence_is_flagged(digits):
    hist = train(_model(), digits, lr=50.0, batch_size=4, steps=500, record_every=1,
                 progress=False)
    assert hist.diverged and not hist.interpolated and hist.steps_taken < 500


def test_divergence_between_loss_checks_is_flagged_not_raised(digits):
    """Weights that overflow between two recorded losses must give diverged, not an SVD error."""
    hist = train(_model(), digits, lr=1e4, batch_size=4, steps=400, record_every=50,
                 progress=False)
    assert hist.diverged and not hist.interpolated
    assert not np.isfinite(hist.loss[-1]) or hist.loss[-1] > 1e12 * hist.loss[0]


def test_recorded_norm_and_sharpness(digits):
    model = _model(seed=5)
    w0 = model.first_layer.weight.detach().clone()
    s0 = top_eigenvalues(loss_hessian_operator(model, digits), 1)[0]
    hist = train(model, digits, lr=0.05, batch_size=4, steps=20, sharpness_every=10,
                 progress=False)
    assert hist.first_layer_norm[0] == pytest.approx(torch.linalg.matrix_norm(w0, 2).item())
    assert hist.sharpness_steps.tolist() == [0, 10]
    assert hist.sharpness[0] == pytest.approx(s0, rel=1e-7)
    assert len(hist.first_layer_norm) == len(hist.loss)


def test_progress_bar_and_threads(digits, monkeypatch, capsys):
    before = torch.get_num_threads()
    train(_model(), digits, lr=0.01, batch_size=2, steps=5, progress=True)
    assert torch.get_num_threads() == before
    assert "SGD" in capsys.readouterr().err
    monkeypatch.setenv("COMPANION_PROGRESS", "0")
    train(_model(), digits, lr=0.01, batch_size=2, steps=5, num_threads=None)
    assert "SGD" not in capsys.readouterr().err


def test_float32_models_train_in_float32(digits):
    model = make_model("mlp", in_dim=64, widths=(4,), dtype=torch.float32, seed=0)
    hist = train(model, digits, lr=0.01, batch_size=4, steps=3, progress=False)
    assert model.first_layer.weight.dtype == torch.float32 and math.isfinite(hist.final_loss)


def test_model_without_first_layer_records_nan_norm(digits):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    hist = train(model.double(), digits, lr=0.01, batch_size=4, steps=2, progress=False)
    assert np.all(np.isnan(hist.first_layer_norm))


def test_plot_runs(digits):
    import matplotlib

    matplotlib.use("Agg")
    hist = train(_model(), digits, lr=0.01, batch_size=4, steps=4, progress=False)
    ax = hist.plot()
    assert ax.get_yscale() == "log"


def test_fit_last_layer_interpolates():
    data = synthetic("circle-neuron", n=8, d=3, seed=0, n_test=0)
    model = make_model("mlp", in_dim=3, widths=(5, 9), seed=0, output_scale=0.5)
    assert fit_last_layer(model, data) < 1e-24  # 10 features >= 8 samples: exact fit
    cnn = make_model("cnn", in_shape=(1, 4, 4), channels=(2,), seed=0)
    imgs = (torch.randn(3, 16, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64))
    assert fit_last_layer(cnn, imgs) < 1e-24
    with pytest.raises(TypeError, match="MLP"):
        fit_last_layer(torch.nn.Linear(3, 1), data)


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
    ],
)
def test_bad_arguments(digits, kwargs, error):
    args = {"lr": 0.1, "batch_size": 4, "steps": 1, "progress": False, **kwargs}
    with pytest.raises(error):
        train(_model(), digits, **args)


def test_bad_data(digits):
    with pytest.raises(ValueError, match="targets"):
        train(_model(), (digits.X_train, torch.zeros(20, 2)), lr=0.1, batch_size=2)
    with pytest.raises(ValueError, match="NaN"):
        train(_model(), (digits.X_train * float("nan"), digits.y_train), lr=0.1, batch_size=2)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        train("model", digits, lr=0.1, batch_size=2)
