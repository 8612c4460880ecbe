"""The matrix-free Gram matrix (JVP/VJP products) against the per-sample Jacobian loop.

The reference is ``parameter_jacobian_loop`` (one ``torch.autograd.grad`` per sample and
output) with the loss-Hessian roots applied in numpy: an independent computation of
G = J~ J~^T. Both are float64 sums of O(d) products, so they agree to ~1e-14 relative;
1e-10 is the issue's bar.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from companion.nets.diagnosis import diagnose
from companion.nets.jacobians import (
    GramOperator,
    gram_top_eigenpairs,
    loss_hessians,
    parameter_jacobian_loop,
)
from companion.nets.losses import HalfSquaredError, as_output_loss
from companion.stability.bracket import gram_spectrum

RTOL = 1e-10


def network(k: int, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, k)).double()
    X = torch.randn(13, 4, dtype=torch.float64)
    y = torch.randint(0, k, (13,)) if k > 1 else torch.randn(13, 1, dtype=torch.float64)
    return model, X, y


def reference_gram(model, X, y, loss):
    """J~ J~^T from the per-sample loop; the rows weighted by the loss's own roots S_i.

    The roots are those of ``OutputLoss.output_hessian_roots`` (the symmetric square root):
    another root U_i S_i gives another Gram matrix with the same spectrum, and the softmax
    Hessian's zero eigenvalue makes any root computed differently disagree at sqrt(eps).
    """
    jac = parameter_jacobian_loop(model, X)
    if loss is not None:
        spec = as_output_loss(loss)
        with torch.no_grad():
            outputs, targets = spec.prepare(model(X), y)
        roots = spec.output_hessian_roots(outputs, targets).numpy()
        assert np.allclose(
            np.swapaxes(roots, 1, 2) @ roots, loss_hessians(model, (X, y), loss=loss), atol=1e-14
        )
        jac = np.einsum("nkl,nld->nkd", roots, jac)
    rows = jac.reshape(-1, jac.shape[2])
    return rows @ rows.T


@pytest.mark.parametrize(
    ("k", "loss"), [(1, None), (1, nn.MSELoss()), (3, None), (3, nn.CrossEntropyLoss())]
)
@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_dense_and_blocks_equal_reference(k, loss, chunk_size):
    model, X, y = network(k)
    ref = reference_gram(model, X, y, loss)
    kwargs = {} if loss is None else {"loss": loss, "targets": y}
    # a budget of a few vectors: many column blocks
    op = GramOperator(model, X, chunk_size=chunk_size, memory_budget=4000, **kwargs)
    assert op.block < 13 * k
    gram = op.dense()
    assert np.max(np.abs(gram - ref)) <= RTOL * np.max(np.abs(ref))
    idx = np.arange(13 * k).reshape(13, k)
    blocks = op.diagonal_blocks()
    ref_blocks = ref[idx[:, :, None], idx[:, None, :]]
    assert np.max(np.abs(blocks - ref_blocks)) <= RTOL * np.max(np.abs(ref))
    v = np.random.default_rng(0).standard_normal(13 * k)
    assert np.allclose(op.matmat(v), ref @ v, rtol=0, atol=RTOL * np.abs(ref).max() * 13 * k)


@pytest.mark.parametrize("k", [1, 3])
def test_top_eigenpairs_match_dense(k):
    model, X, y = network(k, seed=2)
    loss = nn.CrossEntropyLoss() if k > 1 else nn.MSELoss()
    ref = reference_gram(model, X, y, loss)
    top = gram_top_eigenpairs(model, X, 5, loss=loss, targets=y, chunk_size=4)
    w, v = np.linalg.eigh(ref)
    assert np.allclose(top.eigenvalues, w[::-1][:5], rtol=1e-9, atol=0)
    assert np.isclose(top.next_eigenvalue, w[::-1][5], rtol=1e-9)
    # eigenvectors up to sign: |<v_ref, v>| = 1 (the top eigenvalues are simple here)
    overlaps = np.abs(np.sum(top.eigenvectors * v[:, ::-1][:, :5], axis=0))
    assert np.allclose(overlaps, 1.0, atol=1e-7)
    # the same bracket as from the dense spectrum
    dense = gram_spectrum(ref, 5, k)
    for m in (1, 3, 5):
        a, b = top.bracket(2, False, m), dense.bracket(2, False, m)
        assert np.isclose(a.lower, b.lower, rtol=1e-8)
        assert np.isclose(a.upper, b.upper, rtol=1e-8)


def test_memory_budget_errors():
    model, X, _ = network(3)
    d = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="memory_budget"):
        GramOperator(model, X, memory_budget=8 * d)  # less than one product's vectors
    op = GramOperator(model, X, memory_budget=8 * (2 * d + 13 * 3 + 39))
    assert op.block == 1
    with pytest.raises(ValueError, match="m must be at most nK - 2"):
        gram_top_eigenpairs(model, X, 38)
    with pytest.raises(ValueError, match="targets are required"):
        GramOperator(model, X, loss=nn.CrossEntropyLoss())


def test_diagonal_blocks_budget_error():
    torch.manual_seed(0)
    model = nn.Linear(200, 10).double()  # K d = 20,100 entries: 160,800 bytes per sample
    X = torch.randn(4, 200, dtype=torch.float64)
    op = GramOperator(model, X, memory_budget=100_000)
    with pytest.raises(ValueError, match="one sample's Jacobian"):
        op.diagonal_blocks()


def test_rank_one_bound_from_chunks_in_diagnose():
    # the rank-one bound from the blocked Gram route (Jacobian never held) equals the one
    # from the full Jacobian
    model, X, _ = network(1, seed=4)
    y = model(X).detach()
    kwargs = {"loss": HalfSquaredError(), "hessian_check": False, "rank_one": True}
    full = diagnose(model, (X, y), 0.01, 2, **kwargs)
    blocked = diagnose(model, (X, y), 0.01, 2, jacobian_memory=8, **kwargs)
    assert any("blocks" in note for note in blocked.notes)
    assert np.isclose(blocked.rank_one_bound, full.rank_one_bound, rtol=1e-8)
    assert np.isclose(blocked.ms_threshold, full.ms_threshold, rtol=1e-8)
