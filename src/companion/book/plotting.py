r"""Figure helpers shared by the book: stability diagrams and two-sided bound plots.

Every drawing function takes a matplotlib ``Axes`` and draws on it; nothing here creates
figures, picks a backend or imports ``matplotlib.pyplot``, so importing this module is cheap
and safe headless. The geometry (``wme_boundary``, ``wme_region_contains``,
``diagram_points``) is plain numpy and is what the tests check.

The sharpness/non-uniformity diagram
------------------------------------
Following :cite:p:`wu2018sgd` and :cite:p:`wu2020slides`, a minimum is summarised by its
sharpness :math:`a = \lambda_{\max}(H)` and its non-uniformity :math:`s =
\sqrt{\lambda_{\max}(\Sigma)}`, :math:`\Sigma = \frac1n\sum_i H_i^2 - H^2`. In one dimension
SGD multiplies :math:`\mathbb E x^2` by :math:`(1 - \eta a)^2 + \eta^2 p s^2` per step, so the
minimum is mean-square stable iff

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

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..stability.bounds import wme_boundary, wme_region_contains
from ..stability.curvature import non_uniformity, sharpness
from ..stability.sampling import batch_noise_factor
from ..validation import as_float_array, as_hessians, check_lr, check_positive_int

__all__ = [
    "DiagramPoints",
    "InteractiveDiagram",
    "bound_plot",
    "diagram_points",
    "interactive_stability_diagram",
    "place_minima",
    "stability_diagram",
]


def _minima_stacks(minima) -> tuple[list[np.ndarray], int]:
    """Validated per-sample Hessian stacks of several minima, and their common ``n``."""
    stacks = [as_hessians(h, f"minima[{j}]") for j, h in enumerate(minima)]
    if not stacks:
        raise ValueError("minima must hold at least one stack of per-sample Hessians")
    sizes = {h.shape[0] for h in stacks}
    if len(sizes) != 1:
        raise ValueError(f"every minimum must have the same number of samples n, got {sizes}")
    return stacks, sizes.pop()


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
    stacks, n = _minima_stacks(minima)
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


# --------------------------------------------------------------------------------------
# The interactive diagram: a self-contained HTML figure (SVG drawn by client-side script)
# --------------------------------------------------------------------------------------

_DIAGRAM_TEMPLATE = """<div id="{uid}" class="companion-diagram" style="max-width:{width}px;\
font-family:sans-serif;font-size:13px;color:#222;background:#fff;padding:6px;\
border:1px solid #ddd;border-radius:4px">
<div style="display:flex;flex-wrap:wrap;gap:4px 18px;align-items:center">
<label>&eta; <input type="range" data-role="lr" style="vertical-align:middle;width:170px"
 aria-label="learning rate eta"> <span data-role="lr-value"></span></label>
<label>B <input type="range" data-role="bs" style="vertical-align:middle;width:170px"
 aria-label="batch size B"> <span data-role="bs-value"></span></label>
</div>
<svg data-role="plot" viewBox="0 0 {width} {height}" width="100%" role="img"
 aria-label="{alt}" style="display:block"></svg>
</div>
<script>
(function () {{
  var D = {data};
  var root = document.getElementById("{uid}");
  if (!root) return;
  var NS = "http://www.w3.org/2000/svg";
  var svg = root.querySelector("[data-role=plot]");
  var lrIn = root.querySelector("[data-role=lr]"), bsIn = root.querySelector("[data-role=bs]");
  var W = {width}, H = {height}, ml = 62, mr = 14, mt = 30, mb = 70;
  lrIn.min = D.lr_min; lrIn.max = D.lr_max; lrIn.step = D.lr_step; lrIn.value = D.lr;
  bsIn.min = 0; bsIn.max = D.batch_sizes.length - 1; bsIn.step = 1; bsIn.value = D.b_index;
  function X(a) {{ return ml + (a - D.xlim[0]) / (D.xlim[1] - D.xlim[0]) * (W - ml - mr); }}
  function Y(s) {{ return H - mb - (s - D.ylim[0]) / (D.ylim[1] - D.ylim[0]) * (H - mt - mb); }}
  function el(tag, attrs, parent, text) {{
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    (parent || svg).appendChild(e);
    return e;
  }}
  function ticks(lo, hi) {{
    var raw = (hi - lo) / 5, mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    var step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag, out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step)
      out.push(Math.round(t / step) * step);
    return out;
  }}
  function fmt(v) {{ return (Math.abs(v) < 1e-12 ? 0 : +v.toPrecision(4)).toString(); }}
  function draw() {{
    var lr = +lrIn.value, bi = +bsIn.value, B = D.batch_sizes[bi], p = D.p[bi];
    var thr = D.thresholds[bi];
    root.querySelector("[data-role=lr-value]").textContent = lr.toFixed(D.lr_digits);
    root.querySelector("[data-role=bs-value]").textContent = B;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var clipId = "{uid}-clip";
    var defs = el("defs", {{}});
    var cp = el("clipPath", {{id: clipId}}, defs);
    el("rect", {{x: ml, y: mt, width: W - ml - mr, height: H - mt - mb}}, cp);
    var g = el("g", {{"clip-path": "url(#" + clipId + ")"}});
    var green = "#2ca02c", blue = "#1f77b4";
    if (p > 0) {{
      var pts = [];
      for (var k = 0; k <= 240; k++) {{
        var t = Math.PI * k / 240;
        pts.push(X((1 - Math.cos(t)) / lr) + "," + Y(Math.sin(t) / (lr * Math.sqrt(p))));
      }}
      el("polygon", {{points: pts.join(" "), fill: green, "fill-opacity": 0.15,
                      stroke: "none"}}, g);
      el("polyline", {{points: pts.join(" "), fill: "none", stroke: green,
                       "stroke-width": 1.6}}, g);
      var sTop = 1 / (lr * Math.sqrt(p));
      el("polyline", {{points: X(0) + "," + Y(sTop) + " " + X(2 / lr) + "," + Y(sTop) + " " +
                       X(2 / lr) + "," + Y(0), fill: "none", stroke: green,
                       "stroke-dasharray": "2,3", "stroke-width": 1}}, g);
    }} else {{
      el("rect", {{x: X(0), y: mt, width: Math.max(0, X(2 / lr) - X(0)),
                   height: H - mt - mb, fill: green, "fill-opacity": 0.15}}, g);
      el("line", {{x1: X(2 / lr), x2: X(2 / lr), y1: mt, y2: H - mb, stroke: green,
                   "stroke-width": 1.6}}, g);
    }}
    var nStable = 0;
    for (var i = 0; i < D.a.length; i++) {{
      var eta = thr[i] === null ? Infinity : thr[i], ok = lr <= eta;
      nStable += ok ? 1 : 0;
      el("circle", {{cx: X(D.a[i]), cy: Y(D.s[i]), r: 3.6, stroke: blue,
                     "stroke-width": 1.2, fill: ok ? blue : "white"}}, g);
      if (isFinite(eta)) {{
        var ex = X(D.a[i] * eta / lr), ey = Y(D.s[i] * eta / lr), c = 3.2;
        el("path", {{d: "M" + (ex - c) + "," + (ey - c) + "L" + (ex + c) + "," + (ey + c) +
                      "M" + (ex - c) + "," + (ey + c) + "L" + (ex + c) + "," + (ey - c),
                     stroke: "black", "stroke-width": 1}}, g);
      }}
    }}
    el("rect", {{x: ml, y: mt, width: W - ml - mr, height: H - mt - mb, fill: "none",
                 stroke: "#444", "stroke-width": 1}});
    ticks(D.xlim[0], D.xlim[1]).forEach(function (t) {{
      el("line", {{x1: X(t), x2: X(t), y1: H - mb, y2: H - mb + 4, stroke: "#444"}});
      el("text", {{x: X(t), y: H - mb + 17, "text-anchor": "middle", fill: "#222"}}, null,
         fmt(t));
    }});
    ticks(D.ylim[0], D.ylim[1]).forEach(function (t) {{
      el("line", {{x1: ml - 4, x2: ml, y1: Y(t), y2: Y(t), stroke: "#444"}});
      el("text", {{x: ml - 7, y: Y(t) + 4, "text-anchor": "end", fill: "#222"}}, null,
         fmt(t));
    }});
    el("text", {{x: (ml + W - mr) / 2, y: H - 36, "text-anchor": "middle", fill: "#222"}},
       null, "sharpness a = \\u03bb_max(H)");
    el("text", {{x: 16, y: (mt + H - mb) / 2, "text-anchor": "middle", fill: "#222",
                 transform: "rotate(-90 16 " + (mt + H - mb) / 2 + ")"}}, null,
       "non-uniformity s = \\u221a\\u03bb_max(\\u03a3)");
    el("text", {{x: (ml + W - mr) / 2, y: 19, "text-anchor": "middle", fill: "#222"}}, null,
       D.title + "\\u03b7 = " + lr.toFixed(D.lr_digits) + ", B = " + B + ", p = " +
       p.toFixed(3) + ": " + nStable + " of " + D.a.length + " minima exactly stable");
    var lx = ml, ly = H - 14;
    el("circle", {{cx: lx + 6, cy: ly - 4, r: 3.6, fill: blue, stroke: blue}});
    el("text", {{x: lx + 14, y: ly, fill: "#222"}}, null, "exactly stable");
    el("circle", {{cx: lx + 126, cy: ly - 4, r: 3.6, fill: "white", stroke: blue}});
    el("text", {{x: lx + 134, y: ly, fill: "#222"}}, null, "exactly unstable");
    el("path", {{d: "M" + (lx + 258) + "," + (ly - 7) + "l6,6m-6,0l6,-6", stroke: "black"}});
    el("text", {{x: lx + 270, y: ly, fill: "#222"}}, null, "edge points (a, s) \u03b7*/\u03b7");
    el("line", {{x1: lx + 420, x2: lx + 440, y1: ly - 4, y2: ly - 4, stroke: green,
                 "stroke-width": 1.6}});
    el("text", {{x: lx + 446, y: ly, fill: "#222"}}, null, "WME region");
  }}
  lrIn.addEventListener("input", draw);
  bsIn.addEventListener("input", draw);
  draw();
}})();
</script>
"""


@dataclass(frozen=True)
class InteractiveDiagram:
    r"""A stability diagram with sliders for :math:`\eta` and :math:`B`, as one HTML block.

    Made by :func:`interactive_stability_diagram`. Jupyter and the book show it through
    ``_repr_html_``: an inline SVG redrawn by a few lines of client-side script when a
    slider moves; no kernel, no external file. Other outputs (PDF, plain text) get a
    one-line note.

    Attributes
    ----------
    html : str
        The self-contained HTML (markup, data and script).
    data : dict
        What the script draws from: ``a``, ``s`` (sharpness and non-uniformity of each
        minimum), ``batch_sizes``, ``p`` (batch-noise factor of each batch size),
        ``thresholds`` (exact :math:`\eta^*` of each minimum for each batch size, ``None``
        for :math:`\infty`), the slider ranges and the axis limits.
    """

    html: str
    data: dict

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return (
            f"<interactive stability diagram: {len(self.data['a'])} minima, "
            f"eta in [{self.data['lr_min']:g}, {self.data['lr_max']:g}], "
            f"B in {self.data['batch_sizes']} (sliders in the HTML version)>"
        )


def _rounded(values, digits: int = 7) -> list:
    """Floats for the embedded JSON: ``digits`` significant digits, ``None`` for inf."""
    return [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in values]


def interactive_stability_diagram(
    minima: Sequence,
    lr_range: tuple[float, float] = (0.2, 3.0),
    batch_sizes=None,
    *,
    lr: float = 1.0,
    batch_size: int | None = None,
    replacement: bool = False,
    thresholds=None,
    lr_step: float = 0.05,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    title: str | None = None,
    width: int = 620,
    height: int = 440,
) -> InteractiveDiagram:
    r"""The sharpness/non-uniformity diagram with sliders for :math:`\eta` and :math:`B`.

    For every slider position it draws what :func:`stability_diagram` and
    :func:`place_minima` draw for one :math:`(\eta, B)`: the WME half-ellipse
    :math:`(1 - \eta a)^2 + \eta^2 p s^2 \le 1` with the necessary conditions
    :math:`a \le 2/\eta`, :math:`s \le 1/(\eta\sqrt p)` dotted (:cite:p:`wu2018sgd`), the
    minima at :math:`(a, s)`, filled where :math:`\eta \le \eta^*` (exactly mean-square
    stable, :cite:p:`mulayoff2024exact`) and hollow otherwise, and their edge points
    :math:`(a, s)\,\eta^*/\eta` as crosses. Everything that depends on the package (the
    :math:`(a, s)` of each minimum, :math:`p` from ``sampling.batch_noise_factor``, the
    exact thresholds) is computed here, once per batch size; the page's script only draws.

    Parameters
    ----------
    minima : sequence of array_like, each shape (n, d, d)
        Per-sample Hessians of each minimum (same ``n``), as in :func:`diagram_points`.
    lr_range : (float, float)
        Smallest and largest :math:`\eta` of the slider.
    batch_sizes : iterable of int, optional
        Batch sizes of the :math:`B` slider, increasing (default ``1, ..., n``).
    lr : float
        Initial :math:`\eta` (inside ``lr_range``).
    batch_size : int, optional
        Initial :math:`B` (one of ``batch_sizes``; default the first).
    replacement : bool
        Sampling scheme.
    thresholds : mapping of int to array_like, optional
        Precomputed exact thresholds: ``thresholds[B]`` holds one :math:`\eta^*` per
        minimum, for every ``B`` in ``batch_sizes``. Computed with
        ``thresholds.ms_threshold`` when omitted.
    lr_step : float
        Step of the :math:`\eta` slider.
    xlim, ylim : (float, float), optional
        Axis ranges (default: from the minima and the region at the initial :math:`\eta`).
    title : str, optional
        Text put before the slider values in the figure's title line.
    width, height : int
        Size of the drawing in CSS pixels (it shrinks with a narrower page).

    Returns
    -------
    InteractiveDiagram
        Shown as HTML by Jupyter and the book; ``.html`` is the markup, ``.data`` the
        numbers it draws.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> minima = [np.abs(rng.normal(size=(6, 1, 1))) for _ in range(3)]
    >>> fig = interactive_stability_diagram(minima, (0.5, 2.0), [1, 3, 6], lr=1.0)
    >>> fig.data["batch_sizes"], fig.data["p"]
    ([1, 3, 6], [1.0, 0.2, 0.0])
    >>> len(fig.html) < 20_000 and "<script>" in fig.html
    True
    """
    import html as html_lib
    import json
    import uuid

    stacks, n = _minima_stacks(minima)
    try:
        lo, hi = (float(v) for v in lr_range)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"lr_range must be a pair of numbers (min, max), got {lr_range!r}") from exc
    check_lr(lo, "lr_range[0]")
    check_lr(hi, "lr_range[1]")
    if not lo < hi:
        raise ValueError(f"lr_range must be increasing, got {lr_range!r}")
    lr = check_lr(lr)
    if not lo <= lr <= hi:
        raise ValueError(f"lr must lie in lr_range {lr_range!r}, got {lr}")
    lr_step = check_lr(lr_step, "lr_step")
    if batch_sizes is None:
        batch_sizes = range(1, n + 1)
    bs = [check_positive_int(b, "batch_sizes") for b in batch_sizes]
    if not bs or any(b2 <= b1 for b1, b2 in itertools.pairwise(bs)):
        raise ValueError(f"batch_sizes must be a non-empty increasing sequence, got {bs}")
    p = [batch_noise_factor(n, b, replacement) for b in bs]  # validates each B against n
    if batch_size is None:
        batch_size = bs[0]
    if batch_size not in bs:
        raise ValueError(f"batch_size must be one of batch_sizes {bs}, got {batch_size!r}")
    a = np.array([sharpness(h) for h in stacks])
    s = np.array([non_uniformity(h) for h in stacks])
    table = []
    for b in bs:
        if thresholds is None:
            from ..stability.thresholds import ms_threshold

            row = np.array([ms_threshold(h, b, replacement) for h in stacks])
        else:
            try:
                row = np.asarray(thresholds[b], dtype=np.float64)
            except (KeyError, IndexError) as exc:
                raise ValueError(f"thresholds has no entry for batch size {b}") from exc
            except (TypeError, ValueError) as exc:
                raise TypeError(f"thresholds[{b}] must be an array of real numbers") from exc
            if row.shape != (len(stacks),) or np.any(np.isnan(row)) or np.any(row <= 0):
                raise ValueError(
                    f"thresholds[{b}] must hold one positive value (or inf) per minimum "
                    f"({len(stacks)}), got shape {row.shape}"
                )
        table.append(_rounded(row))
    if xlim is None:
        xlim = (0.0, 1.1 * max(2.0 / lr, float(a.max())))
    if ylim is None:
        p0 = p[bs.index(batch_size)]
        s_top = 1.0 / (lr * np.sqrt(p0)) if p0 > 0 else 0.0
        top = max(float(s.max()), min(s_top, 3.0 * float(s.max())))
        ylim = (0.0, 1.1 * top if top > 0 else (s_top or 2.0 / lr))
    for name, lim in (("xlim", xlim), ("ylim", ylim)):
        if len(lim) != 2 or not float(lim[0]) < float(lim[1]):
            raise ValueError(f"{name} must be an increasing pair, got {lim!r}")
    digits = max(0, -int(np.floor(np.log10(lr_step) + 1e-9)))
    data = {
        "a": _rounded(a),
        "s": _rounded(s),
        "batch_sizes": bs,
        "p": _rounded(p),
        "thresholds": table,
        "lr": lr,
        "lr_min": lo,
        "lr_max": hi,
        "lr_step": lr_step,
        "lr_digits": digits,
        "b_index": bs.index(batch_size),
        "xlim": [float(xlim[0]), float(xlim[1])],
        "ylim": [float(ylim[0]), float(ylim[1])],
        "title": f"{title}: " if title else "",
        "replacement": bool(replacement),
    }
    alt = (
        f"Sharpness/non-uniformity diagram of {len(stacks)} minima with sliders for the "
        f"learning rate and the batch size"
    )
    markup = _DIAGRAM_TEMPLATE.format(
        uid=f"companion-diagram-{uuid.uuid4().hex[:12]}",
        data=json.dumps(data, separators=(",", ":")).replace("</", "<\\/"),
        width=int(width),
        height=int(height),
        alt=html_lib.escape(alt),
    )
    return InteractiveDiagram(html=markup, data=data)
