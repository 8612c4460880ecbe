"""companion: the computational companion to *Linear Stability of SGD*.

The numpy/scipy core imported here never imports torch. The tools for torch models live in
``companion.data``, ``companion.models``, ``companion.training``, ``companion.jacobians``,
``companion.hessian_ops`` and ``companion.diagnosis``; they, and the shortcuts
``companion.diagnose``, ``companion.train``, ``companion.load_data``, ``companion.make_model``,
are loaded on first use (PEP 562), so ``import companion`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

# --- Part II: inequalities implied by stability (both sides) --------------------------
from .bounds import (
    alignment_factor,
    frobenius_bound,
    gradient_moment_bound,
    gradient_norm_bound,
    moment_tensor_norms,
    wme_necessary_conditions,
    worst_alignment_factor,
)

# --- sampling and curvature statistics of per-sample Hessians -------------------------
from .curvature import (
    gd_threshold,
    mean_hessian,
    noise_covariance,
    non_uniformity,
    sharpness,
)

# --- Part II: linearised SGD dynamics, regular minima, typical vs mean-square growth ---
from .dynamics import (
    covariance_limit,
    lyapunov_exponent,
    mixture_process_operator,
    second_moment_recursion,
    simulate_linearized_sgd,
    stationary_statistics,
)

# --- Part IV: resumable sweeps and measured minima (torch imported only when training) --
from .experiments import (
    Scale,
    SerialExecutor,
    load_results,
    make_grid,
    minimum_statistics,
    scale,
    sweep,
    train_minimum,
)

# --- Part I: implicit regularization (least squares, random features, two-minima toy) --
from .least_squares import (
    convex_norm_bound,
    early_stopping_time,
    expected_gd_error,
    gd_least_squares,
    gd_least_squares_closed_form,
    gd_logistic,
    logistic_minimizer,
    min_norm_solution,
    slow_deterioration_bound,
)
from .operators import (
    kron_operators,
    moment_operator,
    second_moment_map,
    second_moment_operator,
    symmetric_tensor_basis,
)
from .optimizers import general_optimizer_stability, preconditioned_threshold

# --- figures shared by the book (matplotlib is imported by the caller, not here) ---------
from .plotting import (
    bound_plot,
    diagram_points,
    place_minima,
    stability_diagram,
    time_methods,
    wme_boundary,
    wme_region_contains,
)
from .random_features import (
    random_feature_curve,
    random_feature_weights,
    relu_kernel,
    relu_kernel_monte_carlo,
    train_two_layer,
)
from .sampling import batch_noise_factor

# --- Part III: data geometry and input-smoothness bounds (numpy side; no torch) --------
from .smoothness import (
    covered_condition,
    covering_radius,
    first_layer_shift,
    generalization_bound,
    nearest_distances,
    proposition3_bound,
    required_parameter_radius,
    robustness_bound,
    sample_union_of_balls,
    scattering,
    stability_factor,
    theorem3_bound,
    theorem4_bound,
    theorem5_bound,
    uncovered_fraction,
)
from .thresholds import (
    NecessaryBounds,
    generalized_sharpness,
    generalized_sharpness_gn,
    kth_order_threshold,
    mean_threshold,
    ms_necessary_bounds,
    ms_necessary_bounds_gn,
    ms_threshold,
    ms_threshold_bisection,
    ms_threshold_curve_gn,
    ms_threshold_gn,
    rank_one_bound,
    rank_one_bound_gn,
    wu_condition,
)
from .toy import simulate_two_minima, two_minima_hessians, two_minima_loss

__all__ = [
    "NecessaryBounds",
    "Scale",  # Part IV
    "SerialExecutor",  # Part IV
    "__version__",
    "alignment_factor",  # Part II
    "batch_noise_factor",
    "bound_plot",  # plotting
    "convex_norm_bound",  # Part I
    "covariance_limit",  # Part II
    "covered_condition",  # Part III
    "covering_radius",  # Part III
    "diagram_points",  # plotting
    "early_stopping_time",  # Part I
    "expected_gd_error",  # Part I
    "first_layer_shift",  # Part III
    "frobenius_bound",  # Part II
    "gd_least_squares",  # Part I
    "gd_least_squares_closed_form",  # Part I
    "gd_logistic",  # Part I
    "gd_threshold",
    "general_optimizer_stability",  # Part II
    "generalization_bound",  # Part III
    "generalized_sharpness",
    "generalized_sharpness_gn",
    "gradient_moment_bound",  # Part II
    "gradient_norm_bound",  # Part II
    "kron_operators",
    "kth_order_threshold",
    "load_results",  # Part IV
    "logistic_minimizer",  # Part I
    "lyapunov_exponent",  # Part II
    "make_grid",  # Part IV
    "mean_hessian",
    "mean_threshold",
    "min_norm_solution",  # Part I
    "minimum_statistics",  # Part IV
    "mixture_process_operator",  # Part II
    "moment_operator",
    "moment_tensor_norms",  # Part II
    "ms_necessary_bounds",
    "ms_necessary_bounds_gn",
    "ms_threshold",
    "ms_threshold_bisection",
    "ms_threshold_curve_gn",
    "ms_threshold_gn",
    "nearest_distances",  # Part III
    "noise_covariance",
    "non_uniformity",
    "place_minima",  # plotting
    "preconditioned_threshold",  # Part II
    "proposition3_bound",  # Part III
    "random_feature_curve",  # Part I
    "random_feature_weights",  # Part I
    "rank_one_bound",
    "rank_one_bound_gn",
    "relu_kernel",  # Part I
    "relu_kernel_monte_carlo",  # Part I
    "required_parameter_radius",  # Part III
    "robustness_bound",  # Part III
    "sample_union_of_balls",  # Part III
    "scale",  # Part IV
    "scattering",  # Part III
    "second_moment_map",
    "second_moment_operator",
    "second_moment_recursion",  # Part II
    "sharpness",
    "simulate_linearized_sgd",  # Part II
    "simulate_two_minima",  # Part I
    "slow_deterioration_bound",  # Part I
    "stability_diagram",  # plotting
    "stability_factor",  # Part III
    "stationary_statistics",  # Part II
    "sweep",  # Part IV
    "symmetric_tensor_basis",
    "theorem3_bound",  # Part III
    "theorem4_bound",  # Part III
    "theorem5_bound",  # Part III
    "time_methods",  # plotting
    "train_minimum",  # Part IV
    "train_two_layer",  # Part I
    "two_minima_hessians",  # Part I
    "two_minima_loss",  # Part I
    "uncovered_fraction",  # Part III
    "wme_boundary",  # plotting
    "wme_necessary_conditions",  # Part II
    "wme_region_contains",  # plotting
    "worst_alignment_factor",  # Part II
    "wu_condition",
]


# --- torch-backed tools, loaded on first use ------------------------------------------
_LAZY_MODULES = ("data", "models", "training", "jacobians", "hessian_ops", "diagnosis")
_LAZY_NAMES = {
    "diagnose": ("diagnosis", "diagnose"),
    "StabilityReport": ("diagnosis", "StabilityReport"),
    "train": ("training", "train"),
    "load_data": ("data", "load"),
    "make_model": ("models", "make_model"),
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_NAMES:
        module, attr = _LAZY_NAMES[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES) | set(_LAZY_MODULES))
