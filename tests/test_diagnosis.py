"""diagnose and model_curvature against plain autograd and brute force, for every loss.

The per-sample loss is defined independently of the package as the user's own loss module
applied to a batch of one sample, l_i = loss(model(x_i), y_i); its parameter Hessian comes
from torch.autograd.functional.hessian, and eta* from the brute-force enumeration of
tests/references.py. For reduction="mean" a step with lr on the batch loss is the batch
mean of the per-sample steps; for "sum" it is B times that.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from references import brute_force_threshold, project_on_range
from torch import nn
from torch.func import functional_call

from companion.nets.curvature import model_curvature
from companion.nets.data import synthetic
from companion.nets.diagnosis import StabilityReport, diagnose
from companion.nets.losses import HalfSquaredError
from companion.nets.models import make_model
from companion.nets.training import fit_last_layer

RTOL = 1e-8  # brute-force bisection to 1e-12; Jacobians and eigensolvers to ~1e-12


def _flat(model):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])

    def unflat(vec):
        out, start = {}, 0
        for n in names:
            size = params[n].numel()
            out[n] = vec[start : start + size].reshape(params[n].shape)
            start += size
        return out

    return theta, unflat


def per_sample_hessians(model, X, y, loss):
    """Autograd Hessian in theta of l_i = loss(model(x_i), y_i), one sample at a time."""
    theta, unflat = _flat(model)
    out = []
    for i in range(X.shape[0]):

        def l_i(vec, i=i):
            return loss(functional_call(model, unflat(vec), (X[i : i + 1],)), y[i : i + 1])

        out.append(torch.autograd.functional.hessian(l_i, theta).numpy())
    return np.array(out)


def full_loss_hessian(model, X, y, loss):
    theta, unflat = _flat(model)
    hess = torch.autograd.functional.hessian(
        lambda vec: loss(functional_call(model, unflat(vec), (X,)), y), theta
    )
    return hess.numpy()


@pytest.fixture(scope="module")
def minimum():
    """An MLP (d = 22, K = 2) fitted exactly to 5 samples: an interpolating minimum."""
    torch.manual_seed(0)
    data = synthetic("teacher", n=5, d=2, seed=0, n_test=0)
    X = data.X_train
    model = make_model("mlp", in_dim=2, widths=(4,), out_dim=2, seed=0)
    y = torch.randn(5, 2, dtype=torch.float64)
    assert fit_last_layer(model, (X, y)) < 1e-25
    return model, X, y


SQUARE_LOSSES = {
    "half": (HalfSquaredError(), 1.0),
    "mse-mean": (nn.MSELoss(), 1.0),
    "mse-sum": (nn.MSELoss(reduction="sum"), None),  # None: the batch size
}


@pytest.mark.parametrize("name", list(SQUARE_LOSSES))
def test_eta_star_matches_autograd_hessians_and_brute_force(minimum, name):
    model, X, y = minimum
    loss, scale = SQUARE_LOSSES[name]
    hs = project_on_range(per_sample_hessians(model, X, y, loss))  # 22 -> rank 10
    curv = model_curvature(model, (X, y), loss=loss)
    assert curv.reduction == ("sum" if scale is None else "mean")
    for b, repl in ((1, False), (2, False), (3, True), (5, False)):
        reference = brute_force_threshold(hs, b, repl, lr_scale=b if scale is None else 1.0)
        assert curv.ms_threshold(b, repl) == pytest.approx(reference, rel=RTOL), (b, repl)


def test_mse_mean_is_k_over_2_times_the_half_convention():
    torch.manual_seed(3)
    X, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    model = make_model("mlp", in_dim=3, widths=(5,), out_dim=4, seed=3)  # K = 4
    half = model_curvature(model, (X, y), loss=HalfSquaredError())
    mse = model_curvature(model, (X, y), loss=nn.MSELoss())
    for b in (1, 2, 7):
        assert mse.ms_threshold(b) == pytest.approx(half.ms_threshold(b) * 4 / 2, rel=1e-10)


def test_gd_threshold_is_two_over_the_full_loss_hessian(minimum):
    """The silent error of 0.1: nn.MSELoss() at the edge of GD was reported as lr/eta* = 0.5."""
    model, X, y = minimum
    for loss in (nn.MSELoss(), nn.MSELoss(reduction="sum"), HalfSquaredError()):
        top = np.linalg.eigvalsh(full_loss_hessian(model, X, y, loss))[-1]
        rep = diagnose(model, (X, y), lr=2 / top, batch_size=5, loss=loss)
        assert rep.gd_threshold == pytest.approx(2 / top, rel=1e-9)
        assert rep.ms_threshold == pytest.approx(2 / top, rel=1e-9)  # B = n is GD
        assert "edge" in rep.verdict and rep.linearisation == "exact to rounding"


def test_cross_entropy_ggn_is_pulled_back_output_hessian():
    """H_i = J_i^T (d^2 l_i / d f^2) J_i with both factors from plain autograd."""
    torch.manual_seed(1)
    X = torch.randn(6, 2, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    model = make_model("mlp", in_dim=2, widths=(3,), out_dim=3, seed=1)
    loss = nn.CrossEntropyLoss()
    theta, unflat = _flat(model)
    hs = []
    for i in range(6):
        jac = torch.autograd.functional.jacobian(
            lambda vec, i=i: functional_call(model, unflat(vec), (X[i : i + 1],))[0], theta
        )
        f_i = model(X[i : i + 1]).detach()[0]
        lam = torch.autograd.functional.hessian(
            lambda f, i=i: loss(f[None], labels[i : i + 1]), f_i
        )
        hs.append((jac.T @ lam @ jac).numpy())
    hs = project_on_range(np.array(hs))
    curv = model_curvature(model, (X, labels), loss=loss)
    for b in (1, 2, 4):
        assert curv.ms_threshold(b) == pytest.approx(
            brute_force_threshold(hs, b, False), rel=RTOL
        )
    rep = diagnose(model, (X, labels), lr=0.1, batch_size=2, loss=loss)
    assert not rep.minimum_at_targets and rep.max_abs_residual is None
    assert "local quadratic" in rep.verdict and rep.hessian_sharpness is not None
    assert any("not a minimum" in note for note in rep.notes)


@pytest.fixture
def ch15_network():
    """The network and data of the book's ch15 (digits 3 vs 8, two hidden layers of 32)."""
    from companion.nets.data import load

    data = load("digits", classes=(3, 8), n_per_class=25, seed=0)
    return make_model("mlp", seed=0, in_dim=data.in_dim, widths=(32, 32)), data


def test_one_jacobian_pass_and_one_eigendecomposition(ch15_network, monkeypatch):
    model, data = ch15_network
    import companion.nets.curvature as nets_curvature

    calls = {"jacobian": 0, "eigh": 0}
    real_jac, real_eigh = nets_curvature.parameter_jacobian, np.linalg.eigh

    def counting_jacobian(*args, **kwargs):
        calls["jacobian"] += 1
        return real_jac(*args, **kwargs)

    def counting_eigh(a, *args, **kwargs):
        if np.ndim(a) == 2 and np.shape(a)[0] >= 10:  # the nK x nK Gram matrix (or d x d H)
            calls["eigh"] += 1
        return real_eigh(a, *args, **kwargs)

    monkeypatch.setattr(nets_curvature, "parameter_jacobian", counting_jacobian)
    monkeypatch.setattr(np.linalg, "eigh", counting_eigh)
    rep = diagnose(
        model, data, 0.3, 5, loss=HalfSquaredError(), batch_sizes="auto", rank_one=True,
        bounds=True,
    )  # fmt: skip
    assert calls == {"jacobian": 1, "eigh": 1}
    assert len(rep.threshold_curve) >= 3 and rep.rank_one_bound is not None
    assert set(rep.timings) == {"point", "curvature", "hessian", "threshold", "bounds"}


def test_verdict_flips_at_the_threshold_and_bounds_hold(minimum):
    model, X, y = minimum
    loss = HalfSquaredError()
    hs = project_on_range(per_sample_hessians(model, X, y, loss))
    eta = brute_force_threshold(hs, 2, False)
    below = diagnose(model, (X, y), 0.97 * eta, 2, loss=loss, rank_one=True)
    above = diagnose(model, (X, y), 1.03 * eta, 2, loss=loss)
    assert below.ms_stable and not above.ms_stable
    assert "unstable" in above.verdict and "unstable" not in below.verdict
    assert below.ms_threshold <= below.necessary_bounds.best * (1 + 1e-9)
    assert below.rank_one_bound <= below.generalized_sharpness * (1 + 1e-9)
    assert "holds" in below.summary() and "FAILS" in above.summary()


def test_report_exports_plain_values(minimum):
    model, X, y = minimum
    rep = diagnose(model, (X, y), 0.01, 2, loss=nn.MSELoss(), batch_sizes=[1, 5])
    data = json.loads(rep.to_json())
    assert data["ms_threshold"] == rep.ms_threshold and data["verdict"] == rep.verdict
    assert isinstance(data["necessary_bounds"]["trace"], float)
    assert set(data["threshold_curve"]) == {"1", "2", "5"}
    assert isinstance(rep, StabilityReport) and "verdict" in repr(rep)


def test_models_users_have():
    torch.manual_seed(2)
    X = torch.randn(8, 3, dtype=torch.float64)
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
    with pytest.raises(ValueError, match="eval"):
        diagnose(bn, (X, torch.zeros(8, 1)), 0.1, 2, loss=nn.MSELoss())
    bn.eval()
    rep = diagnose(bn, (X, bn(X).detach()), 0.1, 2, loss=nn.MSELoss())
    assert rep.linearisation == "exact to rounding"

    class Scalar(nn.Module):  # outputs (n,), targets (n,)
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def forward(self, x):
            return self.lin(x)[:, 0]

    model = Scalar().double()
    y = model(X).detach()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=3)
    rep = diagnose(model, loader, 0.1, 2, loss=nn.MSELoss())
    gram = (torch.cat([X, torch.ones(8, 1, dtype=X.dtype)], 1)).numpy()
    top = np.linalg.eigvalsh(2 * gram.T @ gram / 8)[-1]  # Hessian of mean (f - y)^2
    assert rep.gd_threshold == pytest.approx(2 / top, rel=1e-10)


def test_optional_parts_never_abort(minimum):
    model, X, y = minimum
    rep = diagnose(
        model, (X, y), 0.01, 2, loss=HalfSquaredError(), bounds=True, jacobian_memory=8
    )  # too small for the Jacobian: Gram route, no R^d direction
    assert rep.part3 is None and any("K = 1" in note for note in rep.notes)
    assert any("Gram matrix was built in blocks" in note for note in rep.notes)
    assert math.isfinite(rep.ms_threshold)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"loss": nn.L1Loss()}, ValueError, "loss"),
        ({"loss": nn.MSELoss(reduction="none")}, ValueError, "reduction"),
        ({"loss": nn.MSELoss(), "lr": -1.0}, ValueError, "lr"),
        ({"loss": nn.MSELoss(), "batch_size": 9}, ValueError, "batch_size"),
        ({"loss": nn.MSELoss(), "batch_sizes": "all"}, ValueError, "batch_sizes"),
        ({}, TypeError, "loss"),
    ],
)
def test_bad_arguments_are_named(minimum, kwargs, error, match):
    model, X, y = minimum
    args = {"lr": 0.01, "batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        diagnose(model, (X, y), **args)


def test_summary_fits_the_page_and_keeps_every_word(minimum, monkeypatch):
    """Lines of summary() are at most 90 characters; wrapping moves words, never drops them."""
    import companion.nets.diagnosis as diagnosis

    model, X, y = minimum
    rep = diagnose(model, (X, y), 0.1, 2, loss=HalfSquaredError(), batch_sizes=[1, 2, 4])
    text = rep.summary()
    assert max(len(line) for line in text.splitlines()) <= 90
    monkeypatch.setattr(diagnosis, "SUMMARY_WIDTH", 10_000)
    monkeypatch.setattr(diagnosis, "_wrap_line", lambda line, width=10_000: line)
    unwrapped = rep.summary()
    assert max(len(line) for line in unwrapped.splitlines()) > 90  # the check has teeth
    assert text.split() == unwrapped.split()
