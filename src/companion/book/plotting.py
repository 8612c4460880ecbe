r"""Figure helpers shared by the book: stability diagrams and two-sided bound plots.

Every drawing function takes a matplotlib ``Axes`` and draws on it; nothing here creates
figures, picks a backend or imports ``matplotlib.pyplot``, so importing this module is cheap
and safe headless. The geometry (``wme_boundary``, ``wme_region_contains``,
``diagram_points``) is plain numpy and is what the tests check.

The sharpness/non-uniformity diagram (:cite:p:`wu2018sgd`, :cite:p:`wu2020slides`)
----------------------------------------------------------------------------------
A minimum is summarised by its sharpness :math:`a = \lambda_{\max}(H)` and its
non-uniformity :math:`s = \sqrt{\lambda_{\max}(\Sigma)}`,
:math:`\Sigma = \frac1n\sum_i H_i^2 - H^2`. In one dimension SGD multiplies
:math:`\mathbb E x^2` by :math:`(1 - \eta a)^2 + \eta^2 p s^2` per step, so the minimum is
mean-square stable iff

.. math::

    (1 - \eta a)^2 + \eta^2 p\, s^2 \le 1, \qquad a, s \ge 0,

the upper half of an ellipse centred at :math:`(1/\eta, 0)` with semi-axes :math:`1/\eta`
(sharpness) and :math:`1/(\eta\sqrt p)` (non-uniformity); :math:`p` is the batch-noise
factor (``sampling.batch_noise_factor``). Its bounding box gives the necessary conditions
:math:`a \le 2/\eta`, :math:`s \le 1/(\eta\sqrt p)`. For :math:`p = 0` (gradient descent)
the region is the strip :math:`0 \le a \le 2/\eta`.

In more than one dimension the pair :math:`(a, s)` no longer decides stability. The exact
mean-square threshold :math:`\eta^*` (:cite:p:`mulayoff2024exact`) scales as
:math:`\eta^*(cH_\bullet) = \eta^*(H_\bullet)/c`, while :math:`(a, s)` scale by :math:`c`, so
a minimum scaled by :math:`c = \eta^*/\eta` sits exactly at the edge of stability for the
learning rate :math:`\eta`: its *edge point* :math:`(a, s)\,\eta^*/\eta` is where the exact
boundary crosses the ray through the minimum (``diagram_points``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..validation import as_float_array, as_hessians, check_lr, check_positive_int
from ..stability.curvature import non_uniformity, sharpness
from ..stability.bounds import wme_boundary, wme_region_contains
from ..stability.sampling import batch_noise_factor

__all__ = [
    "DiagramPoints",
    "bound_plot",
    "diagram_points",
    "place_minima",
    "stability_diagram",
]


def stability_diagram(
    ax,
    lr: float,
    batch_size: int,
    n: int,
    replacement: bool = False,
    *,
    color=None,
    label: str | None = None,
    fill: bool = True,
    necessary: bool = True,
    s_max: float | None = None,
    num: int = 401,
):
    r"""Draw the stable region of the sharpness/non-uniformity diagram on ``ax``.

    Draws the half-ellipse :math:`(1 - \eta a)^2 + \eta^2 p s^2 \le 1` (filled if ``fill``)
    and, if ``necessary``, the two necessary conditions :math:`a = 2/\eta` and
    :math:`s = 1/(\eta\sqrt p)` as dotted lines (:cite:p:`wu2018sgd`, :cite:p:`wu2020slides`).
    For :math:`p = 0` the region is the strip :math:`a \le 2/\eta`, drawn up to ``s_max``
    (default: the current upper y-limit, or :math:`2/\eta` on an empty axis).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    lr, batch_size, n, replacement
        As in ``wme_boundary``.
    color : matplotlib colour, optional
        Colour of the boundary, fill and necessary lines (default: the axes' next colour).
    label : str, optional
        Legend label of the boundary (default ``"η = …, B = …"``).

    Returns
    -------
    matplotlib.lines.Line2D
        The boundary line (its data are the boundary points; the fill is ``ax.patches[-1]``
        or ``ax.collections[-1]``).
    """
    lr = check_lr(lr)
    p = batch_noise_factor(check_positive_int(n, "n"), batch_size, replacement)
    a, s = wme_boundary(lr, batch_size, n, replacement, num)
    if label is None:
        label = f"η = {lr:g}, B = {batch_size}"
    if p == 0:
        top = s_max if s_max is not None else (ax.get_ylim()[1] if ax.has_data() else 2.0 / lr)
        a, s = np.array([2.0 / lr, 2.0 / lr]), np.array([0.0, float(top)])
        (line,) = ax.plot(a, s, color=color, label=label)
        color = line.get_color()
        if fill:
            ax.fill_betweenx(s, 0.0, a, color=color, alpha=0.15, linewidth=0)
    else:
        (line,) = ax.plot(a, s, color=color, label=label)
        color = line.get_color()
        if fill:
            ax.fill_between(a, 0.0, s, color=color, alpha=0.15, linewidth=0)
        if necessary:
            s_top = 1.0 / (lr * np.sqrt(p))
            ax.plot([0.0, 2.0 / lr], [s_top, s_top], color=color, linestyle=":", linewidth=1)
            ax.plot([2.0 / lr, 2.0 / lr], [0.0, s_top], color=color, linestyle=":", linewidth=1)
    ax.set_xlabel("sharpness $a = \\lambda_{\\max}(H)$")
    ax.set_ylabel("non-uniformity $s = \\sqrt{\\lambda_{\\max}(\\Sigma)}$")
    ax.set_xlim(left=0.0)
    ax.set_ylim(bottom=0.0)
    return line


@dataclass(frozen=True)
class DiagramPoints:
    r"""Minima placed on the sharpness/non-uniformity diagram for one :math:`(\eta, B)`.

    Attributes
    ----------
    sharpness, non_uniformity : numpy.ndarray, shape (m,)
        :math:`a` and :math:`s` of each minimum.
    threshold : numpy.ndarray, shape (m,)
        Exact mean-square threshold :math:`\eta^*` of each minimum.
    stable : numpy.ndarray of bool, shape (m,)
        :math:`\eta \le \eta^*`.
    wme_inside : numpy.ndarray of bool, shape (m,)
        Whether :math:`(a, s)` lies in the one-dimensional WME region.
    edge_sharpness, edge_non_uniformity : numpy.ndarray, shape (m,)
        The edge points :math:`(a, s)\,\eta^*/\eta`: the minimum rescaled to sit exactly at
        the threshold for this :math:`\eta` (``inf`` where :math:`\eta^* = \infty`).
    lr : float
    batch_size : int
    replacement : bool
    """

    sharpness: np.ndarray
    non_uniformity: np.ndarray
    threshold: np.ndarray
    stable: np.ndarray
    wme_inside: np.ndarray
    edge_sharpness: np.ndarray
    edge_non_uniformity: np.ndarray
    lr: float
    batch_size: int
    replacement: bool


def diagram_points(
    minima: Sequence,
    lr: float,
    batch_size: int,
    replacement: bool = False,
    thresholds=None,
) -> DiagramPoints:
    r"""Sharpness, non-uniformity, exact threshold and edge point of each minimum.

    Parameters
    ----------
    minima : sequence of array_like, each shape (n, d, d)
        Per-sample Hessians of each minimum. All must have the same ``n`` (the diagram's
        :math:`p` depends on it); ``d`` may differ.
    lr : float
        Learning rate :math:`\eta` of the diagram.
    batch_size : int
        Batch size :math:`B`.
    replacement : bool
        Sampling scheme.
    thresholds : array_like, shape (m,), optional
        Precomputed exact thresholds :math:`\eta^*` (e.g. from a cached run); computed with
        ``thresholds.ms_threshold`` (:cite:p:`mulayoff2024exact` Thm 3) when omitted.

    Returns
    -------
    DiagramPoints
    """
    lr = check_lr(lr)
    stacks = [as_hessians(h, f"minima[{j}]") for j, h in enumerate(minima)]
    if not stacks:
        raise ValueError("minima must hold at least one stack of per-sample Hessians")
    sizes = {h.shape[0] for h in stacks}
    if len(sizes) != 1:
        raise ValueError(f"every minimum must have the same number of samples n, got {sizes}")
    n = sizes.pop()
    batch_noise_factor(n, batch_size, replacement)  # validates batch_size and replacement
    a = np.array([sharpness(h) for h in stacks])
    s = np.array([non_uniformity(h) for h in stacks])
    if thresholds is None:
        from ..stability.thresholds import ms_threshold

        eta_star = np.array([ms_threshold(h, batch_size, replacement) for h in stacks])
    else:
        try:
            eta_star = np.asarray(thresholds, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError("thresholds must be an array of real numbers") from exc
        if eta_star.shape != (len(stacks),) or np.any(np.isnan(eta_star)) or np.any(
            eta_star <= 0
        ):
            raise ValueError(
                f"thresholds must hold one positive value (or inf) per minimum "
                f"({len(stacks)}), got shape {eta_star.shape} with values {eta_star}"
            )
    scale = eta_star / lr
    with np.errstate(invalid="ignore"):
        edge_a = np.where(np.isinf(scale), np.inf, a * scale)
        edge_s = np.where(np.isinf(scale), np.inf, s * scale)
    return DiagramPoints(
        sharpness=a,
        non_uniformity=s,
        threshold=eta_star,
        stable=lr <= eta_star,
        wme_inside=wme_region_contains(a, s, lr, batch_size, n, replacement),
        edge_sharpness=edge_a,
        edge_non_uniformity=edge_s,
        lr=lr,
        batch_size=int(batch_size),
        replacement=bool(replacement),
    )


def place_minima(ax, points: DiagramPoints, *, color=None, edges: bool = False, size=18):
    r"""Scatter minima on a stability diagram: filled if exactly stable, hollow if not.

    With ``edges`` also draws each minimum's edge point (``DiagramPoints``) as a small
    cross: the crosses trace the exact stability boundary of this family of minima, to be
    compared with the WME half-ellipse drawn by ``stability_diagram``.

    Returns
    -------
    dict
        ``"stable"``, ``"unstable"`` (and ``"edges"``) PathCollections; their offsets are
        the plotted :math:`(a, s)` points.
    """
    if not isinstance(points, DiagramPoints):
        raise TypeError(f"points must be a DiagramPoints (from diagram_points), got {points!r}")
    color = "tab:blue" if color is None else color
    st = points.stable
    out = {
        "stable": ax.scatter(
            points.sharpness[st], points.non_uniformity[st], s=size, color=color,
            label=f"exactly stable ({int(st.sum())})", zorder=3,
        ),
        "unstable": ax.scatter(
            points.sharpness[~st], points.non_uniformity[~st], s=size, facecolors="none",
            edgecolors=color, label=f"exactly unstable ({int((~st).sum())})", zorder=3,
        ),
    }
    if edges:
        finite = np.isfinite(points.edge_sharpness)
        out["edges"] = ax.scatter(
            points.edge_sharpness[finite], points.edge_non_uniformity[finite], s=size,
            marker="x", color="black", linewidths=0.8, label="edge points (exact)", zorder=4,
        )
    return out


def bound_plot(
    ax,
    lhs,
    rhs,
    *,
    label: str | None = None,
    color=None,
    log: bool = True,
    marker: str = "o",
):
    r"""Scatter both sides of an inequality ``lhs <= rhs`` against each other, with the diagonal.

    Each instance is a point (``rhs``, ``lhs``): points on or below the diagonal satisfy
    the bound, points above it violate it. The diagonal is drawn once per axes (an
    ``axline``, straight on log-log axes too). Returns the scatter's PathCollection.
    """
    left = as_float_array(lhs, "lhs", ndim=1)
    right = as_float_array(rhs, "rhs", ndim=1)
    if left.shape != right.shape:
        raise ValueError(f"lhs and rhs must have the same shape, got {left.shape}, {right.shape}")
    if log and (np.any(left <= 0) or np.any(right <= 0)):
        raise ValueError("a log-scale bound plot needs lhs > 0 and rhs > 0 (use log=False)")
    points = ax.scatter(right, left, s=12, color=color, label=label, marker=marker, zorder=3)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    if not any(getattr(line, "_companion_diagonal", False) for line in ax.get_lines()):
        diagonal = ax.axline((1.0, 1.0), (2.0, 2.0), color="black", linewidth=1,
                             label="lhs = rhs")
        diagonal._companion_diagonal = True
    ax.set_xlabel("right-hand side (the bound)")
    ax.set_ylabel("left-hand side")
    return points
