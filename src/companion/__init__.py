"""companion: the computational companion to *Linear Stability of SGD*.

Is a minimum stable for a learning rate and a batch size? The top level answers in a few
names; everything else lives in sub-packages that show the architecture:

* :mod:`companion.stability` (numpy/scipy only): the per-sample curvature object
  :class:`Curvature`, exact thresholds, moment operators, dynamics, bounds;
* :mod:`companion.theory` (numpy/scipy only): least squares, random features, data geometry
  and Ma & Ying's smoothness bounds;
* :mod:`companion.nets` (torch): data, models, losses, per-sample derivatives, curvature
  operators, training, probes and :func:`~companion.nets.diagnosis.diagnose`;
* :mod:`companion.sweeps`: resumable parameter sweeps on any executor.

``import companion`` never imports torch: the torch-backed names (``diagnose``,
``model_curvature``, ``train``, the losses, ...) load :mod:`companion.nets` on first use.

Examples
--------
>>> import numpy as np
>>> import companion
>>> hs = np.array([np.diag([1.0, 0.0]), np.diag([0.0, 3.0])])   # per-sample Hessians
>>> curv = companion.Curvature.from_hessians(hs)
>>> round(companion.ms_threshold(curv, batch_size=1), 6), round(curv.gd_threshold(), 6)
(0.666667, 1.333333)
"""

from __future__ import annotations

__version__ = "0.3.0"

# --- the curvature object and its statistics -------------------------------------------
from .stability.curvature import (
    Curvature,
    gd_threshold,
    mean_hessian,
    noise_covariance,
    non_uniformity,
    sharpness,
)

# --- mini-batch sampling -----------------------------------------------------------------
from .stability.sampling import batch_noise_factor

# --- thresholds: the functional front door -----------------------------------------------
from .stability.thresholds import (
    generalized_sharpness,
    ms_necessary_bounds,
    ms_threshold,
    ms_threshold_curve,
    rank_one_bound,
    wu_condition,
)

__all__ = [
    "Curvature",
    "HalfSquaredError",
    "StabilityReport",
    "__version__",
    "batch_noise_factor",
    "diagnose",
    "gd_threshold",
    "generalized_sharpness",
    "load_data",
    "make_model",
    "mean_hessian",
    "model_curvature",
    "ms_necessary_bounds",
    "ms_threshold",
    "ms_threshold_curve",
    "noise_covariance",
    "non_uniformity",
    "rank_one_bound",
    "sharpness",
    "train",
    "wu_condition",
]


# --- torch-backed names and sub-packages, loaded on first use (PEP 562) --------------------
_LAZY_NAMES = {
    "diagnose": ("nets.diagnosis", "diagnose"),
    "StabilityReport": ("nets.diagnosis", "StabilityReport"),
    "model_curvature": ("nets.curvature", "model_curvature"),
    "HalfSquaredError": ("nets.losses", "HalfSquaredError"),
    "train": ("nets.training", "train"),
    "load_data": ("nets.data", "load"),
    "make_model": ("nets.models", "make_model"),
}
_SUBPACKAGES = ("stability", "theory", "nets", "sweeps", "validation", "book")


def __getattr__(name: str):
    import importlib

    if name in _LAZY_NAMES:
        module, attr = _LAZY_NAMES[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES) | set(_SUBPACKAGES))
