"""companion: the computational companion to *Linear Stability of SGD*.

The numpy/scipy core (imported here) never imports torch. The network tools
(``companion.data``, ``companion.models``, ``companion.training``,
``companion.jacobians``, ``companion.hessian_ops``, ``companion.diagnose``) import
torch and are loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

# --- sampling and curvature statistics of per-sample Hessians -------------------------
from .curvature import (
    gd_threshold,
    mean_hessian,
    noise_covariance,
    non_uniformity,
    sharpness,
)
from .sampling import batch_noise_factor

__all__ = [
    "__version__",
    "batch_noise_factor",
    "gd_threshold",
    "mean_hessian",
    "noise_covariance",
    "non_uniformity",
    "sharpness",
]
