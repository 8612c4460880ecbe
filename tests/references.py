"""Independent references for the tests: brute force from the definitions, no package code.

``brute_force_threshold`` enumerates every equally likely batch, averages
(I - eta H_b) (x) (I - eta H_b) over them in the full d^2 space and bisects on the spectral
radius (mean-square stability iff rho(Q) <= 1, MM Thm 3). On null(H) the matrix has the
eigenvalue 1 exactly, so "stable" is rho <= 1 + 1e-10; the bisection runs to 1e-12.
"""

from __future__ import annotations

import itertools

import numpy as np


def _batches(n, b, replacement):
    if replacement:
        return list(itertools.product(range(n), repeat=b))
    return list(itertools.combinations(range(n), b))


def project_on_range(hs, rtol=1e-9):
    """U^T H_i U for an orthonormal basis U of range(H), H = mean of the H_i (numpy eigh).

    Every H_i vanishes on null(H) (PSD), so linearised SGD is the identity there and the
    threshold is decided on the range; this keeps brute force small for networks.
    """
    w, v = np.linalg.eigh(hs.mean(axis=0))
    u = v[:, w > rtol * w[-1]]
    return np.einsum("da,nde,eb->nab", u, hs, u)


def brute_force_threshold(hs, b, replacement, lr_scale=1.0):
    """eta* by bisection on rho(E[(I - eta H_b)^{(x)2}]) over enumerated batches."""
    n, d, _ = hs.shape
    batch_means = np.array([hs[list(idx)].mean(axis=0) for idx in _batches(n, b, replacement)])
    eye = np.eye(d)

    def radius(lr):
        steps = eye - lr * lr_scale * batch_means
        q = np.zeros((d * d, d * d))
        for s in steps:
            q += np.kron(s, s)
        q /= len(steps)
        # each kron(S, S) of a symmetric S is symmetric, so Q is: eigvalsh is exact here
        return float(np.max(np.abs(np.linalg.eigvalsh(q))))

    top = float(np.linalg.eigvalsh(hs.mean(axis=0))[-1])
    lo, hi = 0.0, 2.5 / (lr_scale * top)
    assert radius(hi) > 1 + 1e-10
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if radius(mid) <= 1 + 1e-10 else (lo, mid)
    return 0.5 * (lo + hi)
