"""Curvature statistics of per-sample Hessians: sharpness, non-uniformity, GD threshold.

Inputs are per-sample Hessians ``hessians`` of shape ``(n, d, d)`` (symmetric PSD);
``H = (1/n) sum_i H_i`` is the Hessian of the training loss at an interpolating minimum.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_hessians


def mean_hessian(hessians) -> np.ndarray:
    r"""The loss Hessian :math:`H = \frac1n\sum_i H_i`."""
    return as_hessians(hessians).mean(axis=0)


def noise_covariance(hessians) -> np.ndarray:
    r"""Hessian-noise matrix :math:`\Sigma = \frac1n\sum_i H_i^2 - H^2` (:cite:p:`wu2018sgd`).

    :math:`\Sigma` is PSD (it is the covariance of the random matrix :math:`H_\xi`
    acting on vectors: :math:`v^\top\Sigma v = \frac1n\sum_i\|(H_i - H)v\|^2`).
    """
    hs = as_hessians(hessians)
    h = hs.mean(axis=0)
    centred = hs - h
    sigma = np.einsum("nij,njk->ik", centred, centred) / hs.shape[0]
    return 0.5 * (sigma + sigma.T)


def sharpness(hessians) -> float:
    r"""Sharpness :math:`a = \lambda_{\max}(H)` (:cite:p:`wu2018sgd`)."""
    return float(np.linalg.eigvalsh(mean_hessian(hessians))[-1])


def non_uniformity(hessians) -> float:
    r"""Non-uniformity :math:`s = \sqrt{\lambda_{\max}(\Sigma)}` (:cite:p:`wu2018sgd`).

    :math:`\Sigma = \frac1n\sum_i H_i^2 - H^2`; in one dimension :math:`s` is the standard
    deviation of the per-sample curvatures.
    """
    top = float(np.linalg.eigvalsh(noise_covariance(hessians))[-1])
    return float(np.sqrt(max(top, 0.0)))


def gd_threshold(hessians) -> float:
    r"""Largest stable learning rate of gradient descent, :math:`2/\lambda_{\max}(H)`.

    Full-batch GD linearised at a minimum is :math:`x_{t+1} = (I - \eta H)x_t`, stable iff
    every eigenvalue of :math:`I - \eta H` lies in :math:`[-1, 1]`, i.e.
    :math:`\eta \le 2/\lambda_{\max}(H)` (:cite:p:`wu2018sgd`, :cite:p:`mulayoff2024exact`
    Thm 1). Returns ``inf`` when ``H = 0``.
    """
    a = sharpness(hessians)
    return float("inf") if a <= 0 else 2.0 / a
