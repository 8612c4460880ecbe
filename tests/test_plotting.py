"""companion.book.plotting: the stability-diagram helpers (drawn with matplotlib's Agg backend).

The Wu-Ma-E region itself (wme_boundary, wme_region_contains) is tested in test_bounds.py.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from companion.book.plotting import (
    DiagramPoints,
    bound_plot,
    diagram_points,
    place_minima,
    stability_diagram,
)
from companion.stability.bounds import wme_boundary, wme_region_contains
from companion.stability.curvature import non_uniformity, sharpness
from companion.stability.operators import second_moment_operator
from companion.stability.sampling import batch_noise_factor


@pytest.fixture
def ax():
    fig, axes = plt.subplots()
    yield axes
    plt.close(fig)


def brute_force_threshold(hessians, batch_size, replacement=False) -> float:
    """Bisection on the spectral radius of the dense second-moment operator Q(eta)."""
    lo, hi = 0.0, 1.0
    while max(abs(np.linalg.eigvals(second_moment_operator(hessians, hi, batch_size,
                                                           replacement)))) <= 1:
        hi *= 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        radius = max(abs(np.linalg.eigvals(second_moment_operator(hessians, mid, batch_size,
                                                                  replacement))))
        # rho(Q) = 1 exactly at the threshold; 1e-12 absorbs the eigenvalue rounding.
        lo, hi = (mid, hi) if radius <= 1 + 1e-12 else (lo, mid)
    return lo


# --------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------
def test_stability_diagram_draws_region_boundary_and_box(ax):
    lr, batch_size, n = 0.5, 2, 10
    p = batch_noise_factor(n, batch_size)
    line = stability_diagram(ax, lr, batch_size, n)
    a, s = wme_boundary(lr, batch_size, n)
    np.testing.assert_allclose(line.get_xdata(), a)
    np.testing.assert_allclose(line.get_ydata(), s)
    # every vertex of the filled region lies in the (closed) region
    verts = np.concatenate([path.vertices for path in ax.collections[-1].get_paths()])
    assert np.all(wme_region_contains(verts[:, 0], np.abs(verts[:, 1]), lr, batch_size, n,
                                      rtol=1e-9))
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    ys = {round(float(y), 12) for ln in dotted for y in ln.get_ydata()}
    xs = {round(float(x), 12) for ln in dotted for x in ln.get_xdata()}
    assert round(1 / (lr * np.sqrt(p)), 12) in ys
    assert round(2 / lr, 12) in xs
    assert line.get_label() == "η = 0.5, B = 2"
    assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0


def test_stability_diagram_for_gradient_descent_is_a_strip(ax):
    line = stability_diagram(ax, 0.25, 5, 5, s_max=3.0)
    np.testing.assert_array_equal(line.get_xdata(), [8.0, 8.0])
    np.testing.assert_array_equal(line.get_ydata(), [0.0, 3.0])


# --------------------------------------------------------------------------------------
# minima on the diagram
# --------------------------------------------------------------------------------------
def test_edge_points_of_1d_minima_lie_on_the_wme_boundary():
    # In d = 1 the WME condition is exact, so the exact edge point of every minimum is on
    # the ellipse and exact stability agrees with the region.
    rng = np.random.default_rng(0)
    n, batch_size, lr = 6, 2, 0.7
    minima = [rng.exponential(1.0, n)[:, None, None] * rng.uniform(0.2, 3) for _ in range(12)]
    eta_star = np.array([brute_force_threshold(h, batch_size) for h in minima])
    pts = diagram_points(minima, lr, batch_size, thresholds=eta_star)
    p = batch_noise_factor(n, batch_size)
    on_ellipse = (1 - lr * pts.edge_sharpness) ** 2 + lr**2 * p * pts.edge_non_uniformity**2
    # bisection to 60 halvings: eta* to ~1e-16 relative; the quadratic form inherits ~1e-12
    np.testing.assert_allclose(on_ellipse, 1.0, atol=1e-9)
    np.testing.assert_array_equal(pts.stable, lr <= eta_star)
    np.testing.assert_array_equal(pts.wme_inside, pts.stable)
    assert 0 < pts.stable.sum() < len(minima)  # both kinds present: the check can fail


def test_edge_point_is_the_minimum_rescaled_to_the_threshold():
    rng = np.random.default_rng(3)
    n, d, batch_size, lr = 5, 3, 2, 0.3
    grads = rng.standard_normal((n, d))
    hs = np.einsum("ni,nj->nij", grads, grads)
    eta_star = brute_force_threshold(hs, batch_size)
    pts = diagram_points([hs], lr, batch_size, thresholds=[eta_star])
    scaled = hs * eta_star / lr
    assert pts.edge_sharpness[0] == pytest.approx(sharpness(scaled), rel=1e-12)
    assert pts.edge_non_uniformity[0] == pytest.approx(non_uniformity(scaled), rel=1e-12)
    # the rescaled minimum has threshold lr: rho(Q) crosses 1 there
    assert brute_force_threshold(scaled, batch_size) == pytest.approx(lr, rel=1e-9)


def test_diagram_points_compute_exact_thresholds_when_not_given():
    rng = np.random.default_rng(4)
    grads = rng.standard_normal((6, 2))
    hs = np.einsum("ni,nj->nij", grads, grads)
    pts = diagram_points([hs, 2 * hs], 0.5, 3)
    reference = brute_force_threshold(hs, 3)
    # ms_threshold (dense route) and the bisection agree to ~1e-9 relative
    np.testing.assert_allclose(pts.threshold, [reference, reference / 2], rtol=1e-8)


def test_place_minima_draws_stable_filled_and_unstable_hollow(ax):
    rng = np.random.default_rng(1)
    n = 6
    minima = [rng.exponential(1.0, n)[:, None, None] * c for c in (0.2, 0.5, 3.0, 6.0)]
    eta_star = np.array([brute_force_threshold(h, 1) for h in minima])
    pts = diagram_points(minima, 1.0, 1, thresholds=eta_star)
    drawn = place_minima(ax, pts, edges=True)
    np.testing.assert_allclose(
        drawn["stable"].get_offsets(),
        np.c_[pts.sharpness[pts.stable], pts.non_uniformity[pts.stable]],
    )
    np.testing.assert_allclose(
        drawn["unstable"].get_offsets(),
        np.c_[pts.sharpness[~pts.stable], pts.non_uniformity[~pts.stable]],
    )
    assert len(drawn["edges"].get_offsets()) == len(minima)
    assert drawn["unstable"].get_facecolors().size == 0  # hollow markers
    assert pts.stable.any() and not pts.stable.all()


def test_bound_plot_points_and_diagonal(ax):
    lhs, rhs = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 4.0])
    pts = bound_plot(ax, lhs, rhs, label="k = 1")
    bound_plot(ax, lhs * 2, rhs, label="k = 2")
    np.testing.assert_allclose(pts.get_offsets(), np.c_[rhs, lhs])
    diagonals = [ln for ln in ax.get_lines() if ln.get_label() == "lhs = rhs"]
    assert len(diagonals) == 1
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
def test_errors(ax):
    one = np.ones((4, 1, 1))
    with pytest.raises(ValueError, match="same number of samples"):
        diagram_points([one, np.ones((5, 1, 1))], 1.0, 1, thresholds=[1.0, 1.0])
    with pytest.raises(ValueError, match="at least one"):
        diagram_points([], 1.0, 1)
    with pytest.raises(ValueError, match="thresholds"):
        diagram_points([one], 1.0, 1, thresholds=[1.0, 2.0])
    with pytest.raises(ValueError, match="thresholds"):
        diagram_points([one], 1.0, 1, thresholds=[-1.0])
    with pytest.raises(ValueError, match="symmetric"):
        diagram_points([np.array([[[0.0, 1.0], [0.0, 0.0]]])], 1.0, 1, thresholds=[1.0])
    with pytest.raises(TypeError, match="DiagramPoints"):
        place_minima(ax, {"sharpness": [1.0]})
    with pytest.raises(ValueError, match="same shape"):
        bound_plot(ax, [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="log"):
        bound_plot(ax, [0.0], [1.0])
    assert isinstance(diagram_points([one], 1.0, 1, thresholds=[np.inf]), DiagramPoints)
