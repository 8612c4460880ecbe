"""Tests for companion.nets.probes: smoothness measured on torch models (Ma & Ying §4-§5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from companion.nets import probes
from companion.nets.jacobians import first_layer_gradients, input_gradients
from companion.nets.models import make_model
from companion.theory.smoothness import robustness_bound

# Distances and norms below are sums of at most a few hundred float64 products of O(1)
# numbers: rounding errors are ~1e-14 relative, so 1e-12 is a safe "exact" tolerance.
EXACT = 1e-12


# ------------------------------------------------------------------------------------
# small models with closed forms
# ------------------------------------------------------------------------------------
class _OneUnit(torch.nn.Module):
    """f(x) = act(w . x) with an explicit bias-free first layer (K = 1)."""

    def __init__(self, p: int, act):
        super().__init__()
        self.first_layer = torch.nn.Linear(p, 1, bias=False)
        self.act = act

    def forward(self, x):
        return self.act(self.first_layer(x.reshape(x.shape[0], -1)))


def _model(p, act, seed=0):
    torch.manual_seed(seed)
    return _OneUnit(p, act).double()


def _half_square(z):
    return 0.5 * z**2


def _mlp(p=6, width=8, seed=0):
    return make_model("mlp", seed=seed, in_dim=p, widths=(width,), out_dim=1, activation="tanh")


# ------------------------------------------------------------------------------------
# local smoothness (Def 1)
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2])
def test_local_smoothness_finds_the_exact_supremum(k):
    """f = (w.x)^2/2: grad_w f = (w.x) x, whose largest 2k-norm over |w' - w| <= r is
    (|w.x| + r |x|_2) |x|_2k (w' = w + r sign(w.x) x/|x|)."""
    torch.manual_seed(1)
    X = torch.randn(5, 4, dtype=torch.float64)
    model = _model(4, _half_square, seed=1)
    w = model.first_layer.weight.detach()[0]
    radius = 0.7
    est = probes.local_smoothness(model, X, radius, k=k, n_samples=4, ascent_steps=80)
    dot, xk = (X @ w).abs(), torch.linalg.vector_norm(X, 2 * k, dim=1)
    np.testing.assert_allclose(est.base_norms, (dot * xk).numpy(), rtol=EXACT)
    exact = ((dot + radius * X.norm(dim=1)) * xk).numpy()
    # the ascent's last steps are 1e-3 r long; the objective is flat (quadratic) at its
    # maximum on the sphere, so an iterate that close loses ~1e-5 relative at most
    np.testing.assert_allclose(est.max_norms, exact, rtol=1e-4)
    assert np.all(est.max_norms <= exact * (1 + 1e-12))
    assert est.constant == pytest.approx(float(np.max(exact / (est.base_norms + 1))), rel=1e-4)
    sampled = probes.local_smoothness(model, X, radius, k=k, n_samples=4, ascent_steps=0)
    assert np.all(sampled.max_norms <= est.max_norms * (1 + 1e-12))
    assert np.all(sampled.max_norms >= sampled.base_norms)


def test_local_smoothness_of_a_model_linear_in_parameters_is_constant():
    """f = w.x: grad_w f = x everywhere, so C = max |x|/(|x| + 1)."""
    X = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = _model(3, lambda z: z)
    est = probes.local_smoothness(model, X, 5.0, n_samples=8, ascent_steps=5)
    norms = X.norm(dim=1).numpy()
    np.testing.assert_allclose(est.max_norms, norms, rtol=EXACT)
    assert est.constant == pytest.approx(float(np.max(norms / (norms + 1))), rel=EXACT)


# ------------------------------------------------------------------------------------
# worst-case inputs (Thm 7)
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [0.1, 0.5, 3.0])
@pytest.mark.parametrize("k", [1, 2])
def test_worst_input_gradient_matches_closed_form(radius, k):
    """f = tanh(w.x): |grad f|_2k = |w|_2k sech^2(w.x), largest where |w.x| is smallest."""
    X = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    model = _model(5, torch.tanh, seed=3)
    w = model.first_layer.weight.detach()[0]
    found = probes.worst_case_inputs(model, X, radius, "input_gradient", k=k, steps=50)
    closest = ((X @ w).abs() - radius * w.norm()).clamp(min=0)
    exact = (torch.linalg.vector_norm(w, 2 * k) / torch.cosh(closest) ** 2).numpy()
    np.testing.assert_allclose(found.values, exact, rtol=1e-6)
    assert np.all(np.linalg.norm(found.points - X.numpy(), axis=1) <= radius * (1 + EXACT))
    at_centre = (torch.linalg.vector_norm(w, 2 * k) / torch.cosh(X @ w) ** 2).numpy()
    np.testing.assert_allclose(found.centre_values, at_centre, rtol=EXACT)


def test_worst_case_inputs_use_given_starts():
    """Starting at the known maximiser of |grad f| for f = tanh(w.x), even steps=0 finds it."""
    X = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    model = _model(3, torch.tanh, seed=8)
    w = model.first_layer.weight.detach()[0]
    radius = 0.4
    dot = X @ w
    # move each centre along -sign(w.x) w towards the hyperplane w.x = 0, by at most radius
    move = torch.minimum(dot.abs() / w.norm(), torch.tensor(radius, dtype=torch.float64))
    best = X - (torch.sign(dot) * move)[:, None] * w / w.norm()
    found = probes.worst_case_inputs(model, X, radius, "input_gradient", steps=0, starts=best)
    exact = (w.norm() / torch.cosh(dot.abs() - move * w.norm()) ** 2).numpy()
    np.testing.assert_allclose(found.values, exact, rtol=EXACT)
    # starts outside the ball are projected back onto it
    far = probes.worst_case_inputs(model, X, radius, "input_gradient", steps=0, starts=X + 10.0)
    assert np.all(np.linalg.norm(far.points - X.numpy(), axis=1) <= radius * (1 + EXACT))
    with pytest.raises(ValueError, match="starts"):
        probes.worst_case_inputs(model, X, radius, "input_gradient", starts=X[:2])


def test_worst_output_change_of_a_linear_model_is_one_fgsm_step():
    model = torch.nn.Sequential(torch.nn.Linear(7, 1)).double()
    X = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    one_step = probes.worst_case_inputs(model, X, 0.3, steps=0)
    exact = 0.3 * float(model[0].weight.detach().norm())
    np.testing.assert_allclose(one_step.values, exact, rtol=EXACT)
    with_pgd = probes.worst_case_inputs(model, X, 0.3, steps=10, restarts=2)
    assert np.all(with_pgd.values >= one_step.values * (1 - EXACT))
    assert np.all(with_pgd.values <= exact * (1 + EXACT))
    assert np.all(one_step.centre_values == 0)


def test_worst_output_change_never_loses_to_random_points():
    model = _mlp()
    X = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    found = probes.worst_case_inputs(model, X, 0.8, steps=15, restarts=1)
    with torch.no_grad():
        f0 = model(X)
        gen = torch.Generator().manual_seed(9)
        for _ in range(20):
            u = torch.randn(6, 6, dtype=torch.float64, generator=gen)
            x = X + 0.8 * u / u.norm(dim=1, keepdim=True)
            change = (model(x) - f0).abs()[:, 0].numpy()
            assert np.all(change <= found.values * (1 + 1e-9))
        again = (model(torch.as_tensor(found.points)) - f0).abs()[:, 0].numpy()
    np.testing.assert_allclose(again, found.values, rtol=1e-10)


def test_worst_case_inputs_validates():
    model = _mlp()
    X = torch.zeros(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="objective"):
        probes.worst_case_inputs(model, X, 0.1, objective="loss")
    with pytest.raises(ValueError, match="radius"):
        probes.worst_case_inputs(model, X, -0.1)
    with pytest.raises(TypeError, match="steps"):
        probes.worst_case_inputs(model, X, 0.1, steps=1.5)


def test_robustness_bound_holds_for_a_linear_model_and_is_tight_at_d_1():
    """f(x) = w x on R: |f(x) - f(x_i)| = |w| delta exactly at the end of the ball."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1)).double()
    centres = np.array([[0.3], [-1.0]])
    worst = probes.worst_case_inputs(model, centres, 0.2, steps=5)
    grad = abs(float(model[0].weight.detach()))
    b = robustness_bound(worst.values, gradient_bound=grad, delta=0.2, input_dim=1)
    assert b.holds and b.worst_ratio == pytest.approx(1.0, rel=1e-12)


# ------------------------------------------------------------------------------------
# Sobolev seminorm on the union of balls (Thm 4)
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2])
def test_union_seminorm_of_a_linear_model_is_its_gradient_norm(k):
    model = _model(3, lambda z: 2.0 * z, seed=5)
    w = model.first_layer.weight.detach()[0]
    centres = np.random.default_rng(0).normal(size=(4, 3))
    est = probes.union_seminorm(model, centres, 0.8, k=k, n_samples=300)
    expected = 2.0 * float(torch.linalg.vector_norm(w, 2 * k))
    assert est.normalized == pytest.approx(expected, rel=EXACT)
    assert est.stderr < EXACT * expected ** (2 * k)
    assert est.log_seminorm == pytest.approx(
        math.log(expected) + est.sample.log_volume / (2 * k), rel=EXACT
    )


def test_union_seminorm_of_a_quadratic_matches_the_exact_ball_average():
    """f = |x|^2/2 on one ball around 0 in R^2: |grad f|^2 = |x|^2, average r^2/2 over the disk."""

    class Half(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first_layer = torch.nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.first_layer.weight.copy_(torch.eye(2))

        def forward(self, x):
            return 0.5 * (self.first_layer(x) ** 2).sum(dim=1, keepdim=True)

    est = probes.union_seminorm(Half().double(), np.zeros((1, 2)), 1.5, k=1, n_samples=20_000)
    assert est.mean_power == pytest.approx(1.5**2 / 2, abs=4 * est.stderr)
    assert est.stderr < 0.01


# ------------------------------------------------------------------------------------
# the first-layer shift of Prop. 3
# ------------------------------------------------------------------------------------
def test_shifted_model_moves_the_input_into_the_parameters():
    model = _mlp(p=5, width=7, seed=2)
    rng = np.random.default_rng(0)
    x_star, x = rng.normal(size=5), rng.normal(size=5)
    moved = probes.shifted_model(model, x, x_star)
    with torch.no_grad():
        here = model(torch.as_tensor(x[None]))
        there = moved(torch.as_tensor(x_star[None]))
    assert float(here) == pytest.approx(float(there), rel=1e-12, abs=1e-12)
    # the original model is untouched
    with torch.no_grad():
        assert not torch.equal(model.first_layer.weight, moved.first_layer.weight)


def test_shifted_model_refuses_a_convolution():
    cnn = make_model("cnn", seed=0, in_shape=(1, 4, 4), channels=(2,))
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        probes.shifted_model(cnn, np.ones(16), np.ones(16))


def test_proposition3_chain_on_a_network():
    """The exact steps of Prop. 3 on a random MLP: for x near x*,
    |grad_x f(x)|_2 <= |W1|_2 |grad_W1 f(x*, W')|_2 / |x*|_2, with W' = shifted_model."""
    model = _mlp(p=6, width=9, seed=7)
    rng = np.random.default_rng(7)
    x_star = rng.normal(size=6)
    w1_norm = float(torch.linalg.matrix_norm(model.first_layer.weight.detach(), 2))
    for scale in (0.1, 0.5, 1.0):
        x = x_star + scale * rng.normal(size=6)
        lhs = np.linalg.norm(input_gradients(model, x[None]))
        moved = probes.shifted_model(model, x, x_star)
        g_w1 = first_layer_gradients(moved, x_star[None], k=1).first_layer_grad_norms[0]
        assert lhs <= w1_norm * g_w1 / np.linalg.norm(x_star) * (1 + 1e-10)


# ------------------------------------------------------------------------------------
# where the model lives (as tests/test_device.py does for the other modules)
# ------------------------------------------------------------------------------------
def _device_model(out_dim=2, seed=0, dtype=torch.float64):
    return make_model(
        "mlp", seed=seed, in_dim=4, widths=(5,), out_dim=out_dim, activation="tanh", dtype=dtype
    )


def _device_inputs(seed=0):
    return torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _run_every_probe(model, linear_model, X, **kwargs):
    """Each probe once, small; returns the NumPy results (and the shifted copy)."""
    ls = probes.local_smoothness(model, X, 0.3, k=2, n_samples=3, ascent_steps=3, **kwargs)
    out = {"ls_base": ls.base_norms, "ls_max": ls.max_norms}
    for objective in ("output_change", "input_gradient"):
        found = probes.worst_case_inputs(
            model, X, 0.4, objective, steps=3, restarts=1, starts=X + 0.1, **kwargs
        )
        out[f"{objective}_points"] = found.points
        out[f"{objective}_values"] = found.values
        out[f"{objective}_centre"] = found.centre_values
    out["union_norms"] = probes.union_seminorm(model, X, 0.5, n_samples=40, **kwargs).norms
    shifted = probes.shifted_model(linear_model, np.ones(4), np.arange(4.0), **kwargs)
    return out, shifted


@pytest.fixture
def seen(record_devices):
    """Devices given to ``to_numpy`` where the probes use it."""
    from companion.nets import jacobians

    return record_devices(probes, jacobians)


def test_probes_run_on_the_models_device(seen):
    """On a ``meta`` model with CPU data every probe moves its inputs (and random points)
    to the model's device: torch refuses to mix meta and CPU tensors."""
    model, linear = _device_model().to("meta"), _device_model(out_dim=1).to("meta")
    X = _device_inputs()
    out, shifted = _run_every_probe(model, linear, X)
    assert out["ls_max"].shape == (6,)
    assert out["output_change_points"].shape == out["input_gradient_points"].shape == (6, 4)
    assert out["union_norms"].shape == (40,)
    assert shifted.first_layer.weight.device.type == "meta"
    assert seen and all(dev.type == "meta" for dev in seen)
    # nothing was moved in place
    assert X.device.type == "cpu"
    assert all(p.device.type == "meta" for m in (model, linear) for p in m.parameters())


def test_probes_device_argument_overrides_and_leaves_the_model_alone(seen):
    model, linear = _device_model(), _device_model(out_dim=1)
    before = [p.detach().clone() for p in model.parameters()]
    _, shifted = _run_every_probe(model, linear, _device_inputs(), device="meta")
    assert shifted.first_layer.weight.device.type == "meta"
    assert seen and all(dev.type == "meta" for dev in seen)
    assert all(p.device.type == "cpu" for m in (model, linear) for p in m.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_probe_routes_on_the_cpu_give_identical_results():
    """Default device, ``device="cpu"``, ``torch.device("cpu")``, NumPy inputs and a float32
    model (copied to float64) give bit-identical numbers."""
    X = _device_inputs(1)
    ref, ref_shifted = _run_every_probe(_device_model(seed=1), _device_model(1, seed=1), X)
    routes = [
        (_device_model(seed=1), _device_model(1, seed=1), X, {"device": "cpu"}),
        (_device_model(seed=1), _device_model(1, seed=1), X, {"device": torch.device("cpu")}),
        (_device_model(seed=1), _device_model(1, seed=1), X.numpy(), {}),
    ]
    for model, linear, inputs, kwargs in routes:
        out, shifted = _run_every_probe(model, linear, inputs, **kwargs)
        for key, value in ref.items():
            assert np.array_equal(out[key], value), (key, kwargs)
        assert torch.equal(shifted.first_layer.weight, ref_shifted.first_layer.weight)
    # a float32 model is used through a float64 copy of its (float32) parameters
    single = _device_model(seed=1, dtype=torch.float32)
    double = _device_model(seed=1, dtype=torch.float32).double()
    ls32 = probes.local_smoothness(single, X, 0.3, n_samples=3, ascent_steps=3)
    ls64 = probes.local_smoothness(double, X, 0.3, n_samples=3, ascent_steps=3)
    assert np.array_equal(ls32.max_norms, ls64.max_norms)
    assert single.first_layer.weight.dtype == torch.float32


def test_probes_refuse_a_model_in_training_mode_with_dropout():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Dropout(0.5), torch.nn.Tanh(), torch.nn.Linear(5, 1)
    ).double()
    X = _device_inputs()
    calls = [
        lambda: probes.local_smoothness(model, X, 0.3),
        lambda: probes.worst_case_inputs(model, X, 0.3),
        lambda: probes.union_seminorm(model, X, 0.3, n_samples=10),
        lambda: probes.shifted_model(model, np.ones(4), np.arange(4.0)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
            call()
    model.eval()
    for call in calls:
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probes_on_cuda_match_the_cpu():
    X = _device_inputs(2)
    cpu, cpu_shifted = _run_every_probe(_device_model(seed=2), _device_model(1, seed=2), X)
    gpu_model, gpu_linear = _device_model(seed=2).cuda(), _device_model(1, seed=2).cuda()
    gpu, gpu_shifted = _run_every_probe(gpu_model, gpu_linear, X.cuda())
    for key, value in cpu.items():
        np.testing.assert_allclose(gpu[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    assert gpu_shifted.first_layer.weight.is_cuda
    torch.testing.assert_close(
        gpu_shifted.first_layer.weight.cpu(), cpu_shifted.first_layer.weight, rtol=1e-12, atol=0
    )
    # the CPU model computed on the GPU
    on_gpu, _ = _run_every_probe(_device_model(seed=2), _device_model(1, seed=2), X, device="cuda")
    for key, value in cpu.items():
        np.testing.assert_allclose(on_gpu[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
