"""companion.nets.losses: per-sample losses and output Hessians against torch's own losses.

The references are the torch loss modules themselves (the value of a one-sample batch is
that sample's loss, in both reductions) and dense autograd Hessians of those modules.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian, jacobian

from companion.nets.losses import LOSS_NAMES, HalfSquaredError, OutputLoss, as_output_loss

N, K = 5, 3



def _outputs(n=N, k=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, dtype=torch.float64, generator=g)


def _probabilities(n=N, k=K, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, dtype=torch.float64, generator=g), dim=1)


def _regression(n=N, k=K, seed=2):
    return _outputs(n, k, seed)


def _labels(n=N, k=K):
    return torch.arange(n) % k


def _bernoulli(n=N, k=K, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, k, dtype=torch.float64, generator=g)


CASES = {
    "half-mean": (lambda: HalfSquaredError(), _regression),
    "half-sum": (lambda: HalfSquaredError("sum"), _regression),
    "mse-mean": (lambda: nn.MSELoss(), _regression),
    "mse-sum": (lambda: nn.MSELoss(reduction="sum"), _regression),
    "ce-labels": (lambda: nn.CrossEntropyLoss(), _labels),
    "ce-labels-sum": (lambda: nn.CrossEntropyLoss(reduction="sum"), _labels),
    "ce-probs": (lambda: nn.CrossEntropyLoss(), _probabilities),
    "ce-smooth": (lambda: nn.CrossEntropyLoss(label_smoothing=0.2), _labels),
    "bce-mean": (lambda: nn.BCEWithLogitsLoss(), _bernoulli),
    "bce-sum": (lambda: nn.BCEWithLogitsLoss(reduction="sum"), _bernoulli),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batch_loss_is_the_torch_module_and_per_sample_is_the_one_sample_batch(case):
    make, targets = CASES[case]
    module, f, y = make(), _outputs(), targets()
    loss = as_output_loss(module)
    assert torch.equal(loss.batch_loss(f, y), module(f, y))
    per = loss.per_sample(f, y)
    assert per.shape == (N,)
    # a batch of one sample: (1/1) l_i ("mean") or l_i ("sum")
    single = torch.stack([module(f[i : i + 1], y[i : i + 1]) for i in range(N)])
    assert torch.allclose(per, single, rtol=1e-14, atol=1e-15)
    total = per.sum() / (N if module.reduction == "mean" else 1)
    assert torch.allclose(total, module(f, y), rtol=1e-14)
    assert loss.sample_weight(N) == (1 / N if module.reduction == "mean" else 1.0)


@pytest.mark.parametrize("case", list(CASES))
def test_output_hessians_and_roots_against_autograd_hessians_of_the_module(case):
    make, targets = CASES[case]
    module, f, y = make(), _outputs(), targets()
    loss = as_output_loss(module)
    lam = loss.output_hessians(f, y)
    dense = torch.stack(
        [hessian(lambda fi, i=i: module(fi[None], y[i : i + 1]), f[i]) for i in range(N)]
    )
    assert lam.shape == (N, K, K) and lam.dtype == torch.float64
    assert torch.allclose(lam, dense, rtol=1e-12, atol=1e-14)
    roots = loss.output_hessian_roots(f, y)
    assert torch.allclose(roots, roots.transpose(1, 2), atol=1e-15)
    assert torch.allclose(roots.transpose(1, 2) @ roots, dense, rtol=1e-10, atol=1e-13)


def test_full_batch_output_hessian_is_block_diagonal_with_weight_times_lambda():
    """d^2 L / dF^2 of the whole batch loss = w_n * blockdiag(Lambda_i)."""
    f, y = _outputs(), _labels()
    module = nn.CrossEntropyLoss()
    full = hessian(lambda F: module(F, y), f).reshape(N * K, N * K)
    lam = as_output_loss(module).output_hessians(f, y)
    assert torch.allclose(full, torch.block_diag(*lam) / N, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "make", [lambda: HalfSquaredError(), lambda: nn.MSELoss(), lambda: nn.BCEWithLogitsLoss()]
)
def test_vector_outputs_and_targets_are_one_output(make):
    module = make()
    f = _outputs(N, 1)[:, 0]
    y = _bernoulli(N, 1)[:, 0]
    loss = as_output_loss(module)
    assert torch.allclose(loss.batch_loss(f, y), module(f, y), rtol=1e-14)
    lam = loss.output_hessians(f, y)
    dense = torch.stack(
        [hessian(lambda fi, i=i: module(fi, y[i : i + 1]), f[i : i + 1]) for i in range(N)]
    )
    assert lam.shape == (N, 1, 1)
    assert torch.allclose(lam, dense.reshape(N, 1, 1), rtol=1e-12)
    prepared, targets = loss.prepare(f, y)
    assert prepared.shape == (N, 1) and targets.shape == (N, 1)


def test_half_squared_error_definition():
    f, y = _outputs(), _regression()
    assert HalfSquaredError()(f, y).item() == pytest.approx(((f - y) ** 2).sum().item() / (2 * N))
    assert HalfSquaredError("sum")(f, y).item() == pytest.approx(((f - y) ** 2).sum().item() / 2)
    assert as_output_loss("half_squared_error").reduction == "mean"
    with pytest.raises(ValueError, match="reduction"):
        HalfSquaredError("none")
    with pytest.raises(ValueError, match="shape"):
        HalfSquaredError()(f, y[:, :1])
    assert "mean" in repr(HalfSquaredError())


def _log_cosh(outputs, targets):
    return torch.log(torch.cosh(outputs - targets)).sum(dim=1)


def test_callable_loss_hessians_by_autograd():
    f, y = _outputs(), _regression()
    loss = as_output_loss(_log_cosh)
    assert loss.name == "callable" and loss.reduction == "mean" and not loss.minimum_at_targets
    assert torch.allclose(loss.batch_loss(f, y), _log_cosh(f, y).mean(), rtol=1e-14)
    dense = torch.stack(
        [hessian(lambda fi, i=i: _log_cosh(fi[None], y[i : i + 1])[0], f[i]) for i in range(N)]
    )
    assert torch.allclose(loss.output_hessians(f, y), dense, rtol=1e-12, atol=1e-14)
    roots = loss.output_hessian_roots(f, y)
    assert torch.allclose(roots.transpose(1, 2) @ roots, dense, rtol=1e-10, atol=1e-13)


def test_callable_that_cannot_be_vmapped_falls_back_to_a_loop():
    def itemised(outputs, targets):  # python control flow on values: not vmappable
        rows = []
        for o, t in zip(outputs, targets, strict=True):
            scale = 2.0 if float(t[0]) > 0 else 1.0
            rows.append(scale * ((o - t) ** 2).sum())
        return torch.stack(rows)

    f, y = _outputs(), _regression()
    lam = as_output_loss(itemised).output_hessians(f, y)
    expected = torch.stack([(4.0 if y[i, 0] > 0 else 2.0) * torch.eye(K) for i in range(N)])
    assert torch.allclose(lam, expected.double(), rtol=1e-13)


def test_piecewise_linear_and_misshaped_callables_are_refused():
    f, y = _outputs(), _regression()
    l1 = as_output_loss(lambda o, t: (o - t).abs().sum(dim=1))
    with pytest.raises(ValueError, match=r"loss.*piecewise linear"):
        l1.output_hessians(f, y)
    flat = as_output_loss(lambda o, t: (o - t).sum(dim=1))  # linear: Lambda = 0 everywhere
    with pytest.raises(ValueError, match="loss"):
        flat.output_hessian_roots(f, y)
    wrong = as_output_loss(lambda o, t: ((o - t) ** 2).sum())  # a scalar, not (n,)
    with pytest.raises(ValueError, match=r"loss.*shape"):
        wrong.per_sample(f, y)
    with pytest.raises(ValueError, match=r"loss.*shape"):
        wrong.output_hessians(f, y)
    concave = as_output_loss(lambda o, t: -((o - t) ** 2).sum(dim=1))
    with pytest.raises(ValueError, match=r"loss.*negative eigenvalue"):
        concave.output_hessian_roots(f, y)


def test_minimum_at_targets_against_the_gradient_at_f_equal_y():
    y = _regression()
    for module, expected in [
        (HalfSquaredError(), True),
        (nn.MSELoss(reduction="sum"), True),
        (nn.BCEWithLogitsLoss(), False),
    ]:
        loss = as_output_loss(module)
        assert loss.minimum_at_targets is expected
        g = jacobian(lambda f, module=module: module(f, y), y.clone())
        assert bool((g == 0).all()) is expected
    assert not as_output_loss(nn.CrossEntropyLoss()).minimum_at_targets


def test_output_loss_is_frozen_and_validated():
    loss = as_output_loss(nn.MSELoss())
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss.reduction = "sum"
    assert as_output_loss(loss) is loss
    assert loss == as_output_loss(nn.MSELoss())
    assert loss != as_output_loss(nn.MSELoss(reduction="sum"))
    assert set(LOSS_NAMES) >= {"mse", "cross_entropy", "bce_with_logits", "callable"}
    with pytest.raises(ValueError, match="name"):
        OutputLoss("l1")
    with pytest.raises(ValueError, match="reduction"):
        OutputLoss("mse", "none")
    with pytest.raises(TypeError, match="function"):
        OutputLoss("callable")
    # an OutputLoss without a module reduces its per-sample losses itself
    bare, module = OutputLoss("mse", "sum"), nn.MSELoss(reduction="sum")
    f, y = _outputs(), _regression()
    assert torch.allclose(bare.batch_loss(f, y), module(f, y), rtol=1e-14)


@pytest.mark.parametrize(
    ("loss", "match"),
    [
        (nn.L1Loss(), "twice differentiable"),
        (nn.SmoothL1Loss(), "twice differentiable"),
        (nn.HuberLoss(), "twice differentiable"),
        (nn.NLLLoss(), "not supported"),
        (nn.BCELoss(), "not supported"),
        (nn.Linear(2, 2), "not supported"),
        (nn.MSELoss(reduction="none"), "reduction"),
        (nn.CrossEntropyLoss(reduction="none"), "reduction"),
        (nn.CrossEntropyLoss(weight=torch.ones(3)), "weight"),
        (nn.BCEWithLogitsLoss(pos_weight=torch.ones(3)), "pos_weight"),
        (nn.BCEWithLogitsLoss(weight=torch.ones(3)), "weight"),
        ("mse", "unknown"),
    ],
)
def test_unsupported_losses_are_refused_naming_loss(loss, match):
    with pytest.raises(ValueError, match=rf"loss.*{match}") as info:
        as_output_loss(loss)
    if match != "unknown":
        assert "Supported" in str(info.value) or "reduction" in match or "weight" in match


def test_subclass_overriding_forward_is_refused():
    class Scaled(nn.MSELoss):
        def forward(self, input, target):
            return 3 * super().forward(input, target)

    with pytest.raises(ValueError, match=r"loss.*not supported"):
        as_output_loss(Scaled())
    with pytest.raises(TypeError, match="loss"):
        as_output_loss(3)


def test_label_and_target_mismatches_name_targets():
    f = _outputs()
    ce = as_output_loss(nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"targets.*long"):
        ce.per_sample(f, _labels().double())
    with pytest.raises(ValueError, match=r"targets.*0..2"):
        ce.per_sample(f, _labels() + 1)
    with pytest.raises(ValueError, match=r"targets.*ignore_index"):
        ce.per_sample(f, torch.tensor([0, 1, -100, 2, 0]))
    with pytest.raises(ValueError, match=r"targets.*ignore_index=4"):
        as_output_loss(nn.CrossEntropyLoss(ignore_index=4)).per_sample(
            torch.zeros(2, 5), torch.tensor([4, 0])
        )
    with pytest.raises(ValueError, match="shape"):
        ce.per_sample(f, _labels()[:, None])
    with pytest.raises(ValueError, match="targets"):
        ce.per_sample(f, _probabilities(N, K + 1))
    with pytest.raises(TypeError, match="targets"):
        ce.per_sample(f, torch.zeros(N, dtype=torch.bool))
    mse = as_output_loss(nn.MSELoss())
    with pytest.raises(TypeError, match=r"targets.*floating"):
        mse.per_sample(f, torch.zeros(N, K, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        mse.per_sample(f, _regression(N, K + 1))
    with pytest.raises(ValueError, match="targets"):
        mse.per_sample(f, _regression(N + 1, K))
    with pytest.raises(TypeError, match="targets"):
        as_output_loss(nn.BCEWithLogitsLoss()).per_sample(f, torch.ones(N, K, dtype=torch.long))
    with pytest.raises(TypeError, match="outputs"):
        mse.per_sample(torch.zeros(N, K, dtype=torch.long), _regression())
    with pytest.raises(ValueError, match="outputs"):
        mse.per_sample(torch.zeros(N, K, 2), _regression())


def test_numpy_targets_and_float32_outputs():
    f32 = _outputs().float()
    loss = as_output_loss(nn.CrossEntropyLoss())
    labels = np.arange(N) % K
    assert torch.allclose(
        loss.batch_loss(f32, labels), nn.CrossEntropyLoss()(f32, torch.as_tensor(labels))
    )
    assert loss.output_hessians(f32, labels).dtype == torch.float32
    roots = loss.output_hessian_roots(f32, labels)
    assert torch.allclose(roots @ roots, loss.output_hessians(f32, labels), atol=1e-6)
