"""Tests of companion.nets.minima: one trained minimum and its measured statistics."""

from __future__ import annotations

import inspect
import itertools
import json

import numpy as np
import pytest
import torch

from companion.nets.data import load
from companion.nets.jacobians import parameter_jacobian
from companion.nets.minima import minimum_statistics, train_minimum
from companion.nets.models import make_model
from companion.nets.training import fit_last_layer
from companion.sweeps import scale

TINY = {"n_per_class": 4, "widths": [3], "steps": 60, "tol": 1e-6, "loss": "half_squared_error"}


def dense_reference(jac, batch_size):
    """Sharpness, non-uniformity and the mean-square threshold from H_i = a_i a_i^T by hand.

    The threshold is found by bisection on the spectral radius of
    E[(I - eta H_b) (x) (I - eta H_b)], averaged over every batch of ``batch_size`` distinct
    samples, on range(H) (outside it every H_i vanishes and the operator is the identity).
    """
    n = jac.shape[0]
    hess = np.einsum("ni,nj->nij", jac, jac)
    mean = hess.mean(axis=0)
    evals, evecs = np.linalg.eigh(mean)
    sharpness = evals[-1]
    sigma = np.einsum("nij,njk->ik", hess, hess) / n - mean @ mean
    non_uniformity = np.sqrt(np.linalg.eigvalsh(sigma)[-1])
    basis = evecs[:, evals > 1e-10 * evals[-1]]
    small = np.einsum("ia,nij,jb->nab", basis, hess, basis)
    r = small.shape[1]
    batches = [small[list(b)].mean(axis=0) for b in itertools.combinations(range(n), batch_size)]
    eye = np.eye(r)

    def radius(lr):
        op = sum(np.kron(eye - lr * h, eye - lr * h) for h in batches) / len(batches)
        return np.max(np.abs(np.linalg.eigvals(op)))

    lo, hi = 0.0, 2.0 / sharpness  # unstable beyond the GD threshold 2 / lambda_max(H)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if radius(mid) <= 1 + 1e-12 else (lo, mid)
    return sharpness, non_uniformity, lo


def test_scale_sizes_are_train_minimum_arguments():
    params = inspect.signature(train_minimum).parameters
    assert set(scale("book").as_dict()) <= set(params)


def test_train_minimum_is_reproducible():
    first = train_minimum(0.1, 4, seed=3, **TINY)
    second = train_minimum(0.1, 4, seed=3, **TINY)
    assert first == second
    other = train_minimum(0.1, 4, seed=4, **TINY)
    assert other["final_loss"] != first["final_loss"]


def test_minimum_statistics_against_dense_hessians():
    digits = load("digits", classes=(3, 8), n_per_class=4, seed=1)
    # n = 8 samples, d = 12*10 + 10 + 10 + 1 = 141: range(H) has rank <= 8, 8 choose 3 batches
    data = (digits.X_train[:, 20:32], digits.y_train)
    model = make_model("mlp", seed=2, in_dim=12, widths=(10,), out_dim=1)
    fit_last_layer(model, data)  # an interpolating minimum: H_i = J_i^T J_i exactly
    stats = minimum_statistics(model, data, batch_size=3, loss="half_squared_error", rank_one=True)
    jac = parameter_jacobian(model, data[0])[:, 0, :]  # (n, d)
    sharp, nonuni, eta = dense_reference(jac, 3)
    # brute force in float64; 1e-8 relative leaves room for the Lanczos tolerance
    assert stats["sharpness"] == pytest.approx(sharp, rel=1e-8)
    assert stats["non_uniformity"] == pytest.approx(nonuni, rel=1e-6)
    # bisection to 60 halvings and eigenvalues of a 64 x 64 operator: ~1e-10 relative
    assert stats["ms_threshold"] == pytest.approx(eta, rel=1e-6)
    assert stats["generalized_sharpness"] == pytest.approx(2 / eta, rel=1e-6)
    assert stats["trace"] == pytest.approx(np.sum(jac**2) / jac.shape[0], rel=1e-10)
    # bounds on both sides of the exact threshold
    assert stats["ms_threshold"] <= stats["bound_top_eigenvector"] * (1 + 1e-9)
    assert stats["ms_threshold"] <= stats["bound_trace"] * (1 + 1e-9)
    assert stats["rank_one"] <= stats["generalized_sharpness"] * (1 + 1e-9)
    assert stats["loss"] < 1e-20
    w1 = model.first_layer.weight.detach().to(torch.float64)
    assert stats["first_layer_norm"] == pytest.approx(float(torch.linalg.matrix_norm(w1, 2)))


def test_train_minimum_reports_divergence():
    result = train_minimum(50.0, 8, **TINY)
    assert result["diverged"] and not result["interpolated"]
    assert "sharpness" not in result
    json.dumps(result)  # still a JSON record


def test_train_minimum_rejects_bad_input():
    with pytest.raises(ValueError, match="lr"):
        train_minimum(-1.0, 4, **TINY)
    with pytest.raises(ValueError, match="batch_size"):
        train_minimum(0.1, 100, **TINY)


def test_train_minimum_device_route_is_identical_on_the_cpu():
    default = train_minimum(0.1, 4, seed=5, **TINY)
    assert train_minimum(0.1, 4, seed=5, device="cpu", **TINY) == default
    with pytest.raises(ValueError, match="MPS"):
        train_minimum(0.1, 4, seed=5, device="mps", **TINY)
