r"""Is this minimum stable for my learning rate and batch size? One call, one report.

:func:`diagnose` evaluates a torch model on its training data under the loss it is trained
with, builds its per-sample curvature once (:func:`companion.nets.curvature.model_curvature`:
one Jacobian pass, one eigendecomposition of the Gram matrix) and reports, for SGD with
learning rate :math:`\eta` and batch size :math:`B`:

* where the point is: the loss, the gradient norm, the largest residual (square losses),
  and how far the Gauss-Newton curvature used below is from the true loss Hessian (both
  top eigenvalues side by side);
* sharpness :math:`a = \lambda_{\max}(H)` against :math:`2/\eta` (:cite:p:`wu2018sgd`,
  :cite:p:`mulayoff2024exact` Thm 1), non-uniformity, the Wu-Ma-E sufficient condition
  (:cite:p:`ma2021linear` Prop. 1);
* the exact generalized sharpness and :math:`\eta^*(B)` (:cite:p:`mulayoff2024exact` Thm 3),
  the necessary bounds MM (15)/(16), and the verdict;
* on request: :math:`\eta^*` over a grid of batch sizes, the rank-one bound (MM eq. 24),
  Ma & Ying's moment and smoothness bounds and the Wu-Wang-Su alignment bound.

Learning rates are in the units of the loss passed: the threshold is for the step
:math:`\eta\nabla` (the loss on a mini-batch of :math:`B` samples), exactly what
``torch.optim.SGD(lr=eta)`` applied to ``loss(model(x_batch), y_batch)`` does.
"""

from __future__ import annotations

import json
import math
import textwrap
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..progress import show_progress
from ..stability import bounds as stability_bounds
from ..stability.curvature import Curvature, NecessaryBounds
from ..stability.sampling import batch_noise_factor
from ..validation import check_lr, check_positive_int, check_replacement
from .curvature import ModelPoint, model_curvature, model_point
from .jacobians import DEFAULT_JACOBIAN_MEMORY, first_layer_gradients

__all__ = ["StabilityReport", "diagnose"]

#: Relative margin within which eta and eta* are reported as "at the edge".
EDGE_RTOL = 1e-2
#: Relative slack when lr is compared with a bound that may equal eta* (e.g. at a tight
#: instance, lr = eta* computed by another route): the routes agree to ~1e-13.
_ROUNDING = 1e-12
#: Grades of how well the Gauss-Newton curvature describes the loss Hessian here: the
#: relative gap between their top eigenvalues, |lambda_true - lambda_GGN| / lambda_GGN.
_GRADES = ((1e-6, "exact to rounding"), (1e-3, "close"), (1e-1, "approximate"))


SUMMARY_WIDTH = 90
"""Widest line of :meth:`StabilityReport.summary` (the book shows 90 characters)."""


def _wrap_line(line: str, width: int = SUMMARY_WIDTH) -> str:
    """Wrap one summary entry at spaces; continuation lines are indented by 6."""
    if len(line) <= width:
        return line
    indent = line[: len(line) - len(line.lstrip())]
    return "\n".join(
        textwrap.wrap(
            line.strip(),
            width=width,
            initial_indent=indent,
            subsequent_indent=indent + "    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


@dataclass
class StabilityReport:
    r"""What :func:`diagnose` found. ``summary()`` prints it, ``to_dict()``/``to_json()`` export it.

    Optional parts that were not requested or could not be computed are None, with the
    reason in ``notes``. Learning rates are in the units of the loss passed (see
    :func:`diagnose`); curvatures are those of :math:`H = \frac1n\sum_iH_i`, the Hessian of
    the per-sample-mean loss.

    Attributes
    ----------
    lr, batch_size, replacement : float, int, bool
        The SGD being assessed: :math:`\eta`, :math:`B`, sampling scheme.
    n, num_outputs, num_parameters : int
        Samples :math:`n`, outputs :math:`K`, trainable parameters :math:`d`.
    loss_name, reduction : str
        The loss and how it combines samples on a batch ("mean" or "sum").
    noise_factor : float
        Batch-noise factor :math:`p` (``batch_noise_factor``).
    loss_value : float
        The loss on all :math:`n` samples as one batch.
    gradient_norm : float
        :math:`\|\nabla_\theta L\|_2` of that loss: 0 at a critical point.
    max_abs_residual : float or None
        :math:`\max_{i,k}|f_{ik} - y_{ik}|` for square losses (0 at interpolation), else None.
    minimum_at_targets : bool
        Whether :math:`f_i = y_i` minimises each :math:`\ell_i` (square losses): only then is
        an interpolating point a minimum where linear stability theory applies as stated.
    rank : int
        :math:`\mathrm{rank}\,H`.
    sharpness : float
        :math:`a = \lambda_{\max}(H)`, Gauss-Newton.
    hessian_sharpness : float or None
        :math:`\lambda_{\max}` of the true Hessian of the per-sample-mean loss (Lanczos).
    linearisation_gap : float or None
        :math:`|\lambda_{\max}^{\rm Hessian} - a|/a`: how far the Gauss-Newton model is from the
        loss Hessian at this point (0 at an interpolating minimum of a square loss).
    linearisation : str
        That gap in words.
    non_uniformity, trace : float
        :math:`s = \sqrt{\lambda_{\max}(\Sigma)}`, :math:`\mathrm{Tr}\,H` (:cite:p:`wu2018sgd`).
    gd_threshold : float
        Largest stable learning rate of full-batch GD (MM Thm 1).
    wu_condition : float
        :math:`\lambda_{\max}((I-\eta H)^2 + \eta^2p\Sigma)` on :math:`\mathrm{range}(H)`;
        :math:`\le 1` is sufficient (MY Prop. 1).
    generalized_sharpness, ms_threshold : float
        :math:`\lambda_{\max}(C^\dagger D)` and :math:`\eta^*(B)` (MM Thm 3).
    necessary_bounds : NecessaryBounds
        Upper bounds on :math:`\eta^*` (MM eqs. 15, 16, and GD).
    top_direction_moments : dict or None
        MY Thm 2 along the top eigenvector :math:`v` of :math:`H` (:math:`K = 1`):
        ``{k: (mean_i (a_i . v)^(2k), 2^k B^(k-1) / eta^k)}``, the sharpest direction.
    threshold_curve : dict or None
        :math:`\{B': \eta^*(B')\}` when ``batch_sizes`` is given.
    rank_one_bound : float or None
        Rank-one lower bound on the generalized sharpness (when ``rank_one=True``).
    worst_alignment_factor : float
        :math:`\mu_0` of the linearised model (:cite:p:`wu2022alignment`, reconstructed).
    frobenius_bound : tuple or None
        WWS: :math:`(\|H\|_F, 1/(\eta\sqrt{p\mu_0}))` when :math:`\mu_0 > 0`.
    part3 : dict or None
        Ma & Ying's Cor. 1 and first-layer quantities (when ``bounds=True``).
    notes : list of str
        What was skipped and why; caveats.
    timings : dict of str to float
        Seconds per stage.
    """

    lr: float
    batch_size: int
    replacement: bool
    n: int
    num_outputs: int
    num_parameters: int
    loss_name: str
    reduction: str
    noise_factor: float
    loss_value: float
    gradient_norm: float
    max_abs_residual: float | None
    minimum_at_targets: bool
    rank: int
    sharpness: float
    hessian_sharpness: float | None
    linearisation_gap: float | None
    linearisation: str
    non_uniformity: float
    trace: float
    gd_threshold: float
    wu_condition: float
    generalized_sharpness: float
    ms_threshold: float
    necessary_bounds: NecessaryBounds
    top_direction_moments: dict | None = None
    threshold_curve: dict | None = None
    rank_one_bound: float | None = None
    worst_alignment_factor: float = math.nan
    frobenius_bound: tuple | None = None
    part3: dict | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def mean_stable(self) -> bool:
        r"""Full-batch GD would be stable: :math:`\eta \le 2/\lambda_{\max}` (MM Thm 1)."""
        return self.lr <= self.gd_threshold

    @property
    def ms_stable(self) -> bool:
        r""":math:`\eta \le \eta^*(B)`: mean-square stable (MM Thm 3)."""
        return self.lr <= self.ms_threshold

    @property
    def ratio(self) -> float:
        r""":math:`\eta/\eta^*(B)`: below 1 stable, above 1 unstable."""
        return 0.0 if math.isinf(self.ms_threshold) else self.lr / self.ms_threshold

    @property
    def verdict(self) -> str:
        """One line: stable or unstable in mean square, with the caveats that apply."""
        state = "stable" if self.ms_stable else "unstable"
        text = (
            f"{state} in mean square for lr = {self.lr:g}, B = {self.batch_size} "
            f"(lr / eta* = {self.ratio:.3g})"
        )
        if abs(self.ratio - 1) <= EDGE_RTOL:
            text += ", at the edge of stability"
        if not self.minimum_at_targets:
            text += (
                "; this loss has no minimum at the targets, so the verdict is about the "
                "local quadratic (Gauss-Newton) model of the loss at this point"
            )
        elif self.linearisation not in ("exact to rounding", "close"):
            text += f"; the linearisation is {self.linearisation} here (see notes)"
        return text

    def summary(self) -> str:
        """A readable multi-line report; every line that states a condition says holds/fails.

        Lines are at most ``SUMMARY_WIDTH`` (90) characters: a longer entry is wrapped at
        spaces, its continuation lines indented, so that a printed report does not scroll.
        """

        def holds(ok: bool) -> str:
            return "holds" if ok else "FAILS"

        nb = self.necessary_bounds
        p = self.noise_factor
        s_max = math.inf if p == 0 else 1 / (self.lr * math.sqrt(p))
        lines = [
            f"Stability report: n = {self.n}, K = {self.num_outputs}, d = "
            f"{self.num_parameters}, loss = {self.loss_name} (reduction {self.reduction}), "
            f"lr = {self.lr:g}, B = {self.batch_size} "
            f"({'with' if self.replacement else 'without'} replacement, p = {p:.4g})",
            f"  loss {self.loss_value:.3e}, |grad| {self.gradient_norm:.2e}"
            + (
                f", max |residual| {self.max_abs_residual:.2e}"
                if self.max_abs_residual is not None
                else ""
            ),
            f"  Gauss-Newton vs loss Hessian: {self._gap_text()}",
            f"  sharpness a             {self.sharpness:.6g}  GD threshold 2/a = "
            f"{self.gd_threshold:.6g}: lr <= 2/a {holds(self.mean_stable)}",
            f"  non-uniformity s        {self.non_uniformity:.6g}  (WME necessary s <= "
            f"1/(lr sqrt p) = {s_max:.6g}: {holds(self.non_uniformity <= s_max)})",
            f"  trace of H              {self.trace:.6g}  (rank {self.rank})",
            f"  WME / MY Prop 1 value   {self.wu_condition:.6g} on range(H) (sufficient if <= 1: "
            f"{holds(self.wu_condition <= 1 + 1e-12)})",
            f"  generalized sharpness   {self.generalized_sharpness:.6g}  eta*(B={self.batch_size})"
            f" = {self.ms_threshold:.6g}: lr <= eta* {holds(self.ms_stable)}",
            f"  MM necessary: lr <= (15) {nb.top_eigenvector:.6g} "
            f"{holds(self.lr <= nb.top_eigenvector * (1 + _ROUNDING))}, lr <= (16) "
            f"{nb.trace:.6g} {holds(self.lr <= nb.trace * (1 + _ROUNDING))}",
        ]
        if self.top_direction_moments:
            for k, (lhs, rhs) in self.top_direction_moments.items():
                lines.append(
                    f"  MY Thm 2 (k={k}) along the top eigenvector: mean (a.v)^{2 * k} = "
                    f"{lhs:.4g} <= {rhs:.4g}: {holds(lhs <= rhs * (1 + 1e-9))}"
                )
        if self.threshold_curve:
            curve = ", ".join(f"{b}: {eta:.4g}" for b, eta in self.threshold_curve.items())
            lines.append(f"  eta*(B) on the grid     {curve}")
        if self.rank_one_bound is not None:
            lines.append(
                f"  rank-one bound          {self.rank_one_bound:.6g} <= generalized sharpness"
                f" (eta* <= {2 / self.rank_one_bound:.6g})"
            )
        lines.append(f"  worst alignment mu0     {self.worst_alignment_factor:.4g}")
        if self.frobenius_bound is not None:
            lhs, rhs = self.frobenius_bound
            lines.append(
                f"  WWS ||H||_F <= 1/(lr sqrt(p mu0)): {lhs:.4g} <= {rhs:.4g}: "
                f"{holds(lhs <= rhs)} (reconstructed constant)"
            )
        if self.part3:
            for key, value in self.part3.items():
                lines.append(f"  {key}: {value}")
        lines.append(f"  verdict: {self.verdict}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(_wrap_line(line) for line in lines)

    def _gap_text(self) -> str:
        if self.linearisation_gap is None:
            return "not checked (hessian_check=False)"
        return (
            f"top eigenvalues {self.sharpness:.6g} vs {self.hessian_sharpness:.6g}, relative "
            f"gap {self.linearisation_gap:.2e} ({self.linearisation})"
        )

    def __repr__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """Every field as plain Python values (floats, ints, lists, dicts), plus the verdict."""
        out = asdict(self)
        out["necessary_bounds"] = dict(self.necessary_bounds._asdict())
        out["ms_stable"] = self.ms_stable
        out["mean_stable"] = self.mean_stable
        out["verdict"] = self.verdict
        return _plain(out)

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as JSON (``inf`` written as ``Infinity``, as Python's json does)."""
        return json.dumps(self.to_dict(), **kwargs)

    def plot(self, fig=None):
        r"""Two panels: :math:`\eta^*(B)` (if computed) with :math:`(B, \eta)` marked, and the
        sharpness/non-uniformity diagram in units of :math:`\eta` with the Wu-Ma-E region.
        Returns the figure."""
        import matplotlib.pyplot as plt

        if fig is None:
            fig = plt.figure(figsize=(10, 3.8))
        ax1, ax2 = fig.subplots(1, 2)
        color = "tab:green" if self.ms_stable else "tab:red"
        curve = self.threshold_curve or {self.batch_size: self.ms_threshold}
        ax1.plot(list(curve), list(curve.values()), "o-", label=r"$\eta^*(B)$ (exact)")
        ax1.axhline(self.gd_threshold, color="0.4", ls="--", lw=1, label="GD threshold")
        ax1.plot([self.batch_size], [self.lr], "*", ms=14, color=color, label=r"$(B, \eta)$")
        ax1.set(xscale="log", yscale="log", xlabel="batch size $B$", ylabel="learning rate")
        ax1.set_title("stable below the curve", fontsize=9)
        ax1.legend(fontsize=8)
        lr = self.lr * (1.0 if self.reduction == "mean" else self.batch_size)
        p = self.noise_factor
        u = lr * self.sharpness
        if p > 0:
            a_b, s_b = stability_bounds.wme_boundary(lr, self.batch_size, self.n, self.replacement)
            x_b, y_b = lr * a_b, lr * math.sqrt(p) * s_b
            v = lr * math.sqrt(p) * self.non_uniformity
        else:
            v = lr * self.non_uniformity
            x_b, y_b = np.array([2.0, 2.0]), np.array([0.0, max(1.2, 1.1 * v)])
        ax2.plot(x_b, y_b, color="tab:blue", label="Wu-Ma-E boundary")
        ax2.fill_between(x_b, 0.0, y_b, color="tab:blue", alpha=0.15, linewidth=0)
        ax2.plot([u], [v], "*", ms=14, color=color, label="this minimum")
        ax2.set(xlim=(0, max(2.2, 1.1 * u)), ylim=(0, max(1.2, 1.1 * v)))
        ax2.set(xlabel=r"$\eta\,a$ (sharpness)", ylabel=r"$\eta\sqrt{p}\,s$ (non-uniformity)")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _plain(value):
    """Numpy scalars/arrays and tuples to plain Python values, recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _grade(gap: float) -> str:
    for limit, word in _GRADES:
        if gap <= limit:
            return word
    return "far (the Gauss-Newton model misses the loss Hessian)"


class _Stages:
    """Times each stage; shows a progress bar in a terminal (never in the built book)."""

    def __init__(self, names: list[str], progress: bool | None):
        self.timings: dict[str, float] = {}
        self.bar = None
        if show_progress(progress):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(names), desc="diagnose", leave=False)
        self.clock = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.clock
        self.clock = now
        if self.bar is not None:
            self.bar.set_postfix_str(name)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _gradient_norm(point: ModelPoint) -> float:
    params = [p for p in point.model.parameters() if p.requires_grad]
    value = point.loss.batch_loss(point.model(point.X), point.targets)
    grads = torch.autograd.grad(value, params)
    return float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)).cpu())


def _batch_sizes(batch_sizes, n: int, replacement: bool, batch_size: int) -> list[int] | None:
    if batch_sizes is None:
        return None
    if isinstance(batch_sizes, str):
        if batch_sizes != "auto":
            raise ValueError(f"batch_sizes must be None, 'auto' or a list, got {batch_sizes!r}")
        grid = {1, n, batch_size}
        grid.update(round(float(b)) for b in np.geomspace(1, n, 5)[1:-1])
        return sorted(grid)
    sizes = sorted({check_positive_int(b, "batch_sizes[i]") for b in batch_sizes} | {batch_size})
    for b in sizes:
        batch_noise_factor(n, b, replacement)
    return sizes


def diagnose(
    model: torch.nn.Module,
    data,
    lr: float,
    batch_size: int,
    replacement: bool = False,
    *,
    loss,
    batch_sizes=None,
    rank_one: bool = False,
    bounds: bool = False,
    hessian_check: bool = True,
    jacobian_memory: int = 4 * DEFAULT_JACOBIAN_MEMORY,
    chunk_size: int = 1024,
    progress: bool | None = None,
    seed: int = 0,
    device=None,
) -> StabilityReport:
    r"""Linear stability of ``model`` on ``data`` under ``loss`` for SGD :math:`(\eta, B)`.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model, in evaluation mode if it has BatchNorm or Dropout. Evaluated in
        float64 (a float32 model is copied), on its own device.
    data : Dataset, (X, y) or DataLoader
        The :math:`n` training samples SGD draws from.
    lr : float
        Learning rate :math:`\eta` of the SGD being assessed, applied to the gradient of
        exactly ``loss`` on a mini-batch.
    batch_size : int
        :math:`B`.
    replacement : bool
        Batches of :math:`B` i.i.d. indices (True) or uniform subsets (False).
    loss : torch loss module, "half_squared_error", OutputLoss or callable
        The training loss (required): ``nn.MSELoss`` (mean or sum), ``nn.CrossEntropyLoss``
        (integer labels), ``nn.BCEWithLogitsLoss``, :class:`~companion.nets.losses.HalfSquaredError`
        (the papers' :math:`\frac12\|f-y\|^2`) or a per-sample callable
        (:func:`~companion.nets.losses.as_output_loss`).
    batch_sizes : None, "auto" or sequence of int
        Also compute :math:`\eta^*(B')` on these sizes ("auto": 1, n, B and three log-spaced
        sizes). Each costs one eigenvalue solve.
    rank_one : bool
        Also compute the rank-one lower bound (MM eq. 24).
    bounds : bool
        Also evaluate Ma & Ying's Cor. 1 and first-layer quantities (square losses, K = 1).
    hessian_check : bool
        Compute the true loss Hessian's top eigenvalue by Lanczos, to grade the
        Gauss-Newton model (recommended; one Hessian-vector pass per Lanczos step).
    jacobian_memory : int
        Bytes allowed for the full Jacobian; above it the Gram matrix is built in blocks.
    chunk_size : int
        Samples per vectorised Jacobian chunk.
    progress : bool or None
        Progress bar over the stages (None: in a terminal only).
    seed : int
        Seed of the Lanczos start vector and of the rank-one restarts.
    device : torch.device or str, optional
        Where to evaluate the model (default: where its parameters are). Only the Gram
        matrix (or Jacobian) and scalars come back to the CPU.

    Returns
    -------
    StabilityReport

    Examples
    --------
    >>> import torch
    >>> from companion.nets.losses import HalfSquaredError
    >>> model = torch.nn.Linear(3, 1).double()
    >>> X = torch.randn(8, 3, dtype=torch.float64)
    >>> report = diagnose(model, (X, model(X).detach()), lr=0.1, batch_size=2,
    ...                   loss=HalfSquaredError(), hessian_check=False)
    >>> report.ms_stable == (0.1 <= report.ms_threshold)
    True
    """
    lr = check_lr(lr)
    replacement = check_replacement(replacement)
    seed = check_positive_int(seed, "seed", minimum=0)
    stages = _Stages(["point", "curvature", "hessian", "threshold", "bounds"], progress)
    notes: list[str] = []
    try:
        point = model_point(model, data, loss=loss, device=device)
        n = point.n
        p = batch_noise_factor(n, batch_size, replacement)
        grid = _batch_sizes(batch_sizes, n, replacement, int(batch_size))
        loss_value = point.loss_value()
        gradient_norm = _gradient_norm(point)
        residual = None
        if point.loss.minimum_at_targets:
            diff = point.outputs - point.targets.reshape(point.outputs.shape)
            residual = float(diff.abs().max().cpu())
        stages.done("point")

        curv = model_curvature(
            point.model, None, loss=point.loss, point=point,
            jacobian_memory=jacobian_memory, chunk_size=chunk_size,
        )  # fmt: skip
        if curv.dim is None:
            notes.append(
                "the full Jacobian exceeds jacobian_memory: the Gram matrix was built in "
                "blocks (no rank-one direction, no Part III bounds)"
            )
        stages.done("curvature")

        hessian_sharpness = gap = None
        if hessian_check:
            hessian_sharpness = _hessian_top(point, seed)
            if curv.sharpness > 0:
                gap = abs(hessian_sharpness - curv.sharpness) / curv.sharpness
        stages.done("hessian")

        gen = curv.generalized_sharpness(batch_size, replacement)
        eta_star = math.inf if gen <= 0 else 2.0 / gen
        curve = None
        if grid is not None:
            values = curv.ms_threshold_curve(grid, replacement)
            curve = {int(b): float(v) for b, v in zip(grid, values, strict=True)}
        stages.done("threshold")

        report = StabilityReport(
            lr=lr,
            batch_size=int(batch_size),
            replacement=replacement,
            n=n,
            num_outputs=point.num_outputs,
            num_parameters=point.num_parameters,
            loss_name=point.loss.name,
            reduction=point.loss.reduction,
            noise_factor=p,
            loss_value=loss_value,
            gradient_norm=gradient_norm,
            max_abs_residual=residual,
            minimum_at_targets=point.loss.minimum_at_targets,
            rank=curv.rank,
            sharpness=curv.sharpness,
            hessian_sharpness=hessian_sharpness,
            linearisation_gap=gap,
            linearisation="not checked" if gap is None else _grade(gap),
            non_uniformity=curv.non_uniformity,
            trace=curv.trace,
            gd_threshold=curv.gd_threshold(),
            wu_condition=curv.wu_condition(lr, batch_size, replacement, on_range=True),
            generalized_sharpness=gen,
            ms_threshold=eta_star,
            necessary_bounds=curv.necessary_bounds(batch_size, replacement),
            threshold_curve=curve,
            worst_alignment_factor=curv.worst_alignment_factor(),
            notes=notes,
        )
        _optional_parts(report, curv, point, rank_one, bounds, seed, chunk_size)
        stages.done("bounds")
    finally:
        stages.close()
    _explain(report)
    report.timings = stages.timings
    return report


def _hessian_top(point: ModelPoint, seed: int) -> float:
    r"""Top eigenvalue of the Hessian of the per-sample-mean loss (Lanczos, tol 1e-8)."""
    from .curvature_ops import loss_hessian_operator, top_eigenvalues

    op = loss_hessian_operator(point.model, (point.X, point.targets), loss=point.loss)
    top = float(top_eigenvalues(op, 1, tol=1e-8, seed=seed)[0])
    return top / (1.0 if point.loss.reduction == "mean" else point.n)


def _optional_parts(
    report: StabilityReport,
    curv: Curvature,
    point: ModelPoint,
    rank_one: bool,
    bounds: bool,
    seed: int,
    chunk_size: int,
) -> None:
    """The parts that may fail: each failure becomes None and a note, never an exception."""
    b, repl, lr = report.batch_size, report.replacement, report.lr
    lr_mean = lr * curv.lr_scale(b)  # the step in batch-mean units, as the papers write it
    if curv.num_outputs == 1 and curv.rank:
        along = curv.top_direction_curvatures()  # (a_i . v)^2 for H_i = a_i a_i^T
        report.top_direction_moments = {
            k: (float(np.mean(along**k)), 2.0**k * float(b) ** (k - 1) / lr_mean**k)
            for k in (1, 2)
        }
    if rank_one:
        try:
            report.rank_one_bound = curv.rank_one_bound(b, repl, seed=seed).value
        except ValueError as exc:
            report.notes.append(f"rank-one bound skipped: {exc}")
    mu0 = report.worst_alignment_factor
    if mu0 > 0 and report.noise_factor > 0:
        rhs = 1.0 / (lr_mean * math.sqrt(report.noise_factor * mu0))
        report.frobenius_bound = (math.sqrt(curv.frobenius2), rhs)
    if bounds:
        report.part3 = _part3(curv, point, lr_mean, b, chunk_size, report.notes)


def _part3(curv, point, lr_mean, b, chunk_size, notes) -> dict | None:
    """Ma & Ying Cor. 1 and the first-layer gradients (square losses with K = 1)."""
    if curv.num_outputs != 1 or not point.loss.minimum_at_targets:
        notes.append("MY Cor 1 / first-layer bounds are stated for square losses with K = 1")
        return None
    out = {}
    try:
        first = first_layer_gradients(point.model, point.X, 1, chunk_size=chunk_size)
        out["first layer (k=1)"] = f"g_W = {first.g_W:.4g}, g_x = {first.g_x:.4g}"
    except (TypeError, ValueError) as exc:
        notes.append(f"first-layer quantities skipped: {exc}")
    if curv.dim is not None and curv.rank:
        # sum over coordinates of a_ij^2 = ||a_i||^2 = Tr H_i (rotation invariant for k = 1)
        norms2 = curv.sample_traces()
        cor1 = stability_bounds.Bound(
            lhs=float(np.mean(norms2)),
            rhs=2.0 * curv.dim / lr_mean,
            description="MY Cor 1 (k=1): mean ||a_i||^2 <= 2 d / lr",
        )
        out["MY Cor 1 (k=1)"] = f"{cor1.lhs:.4g} <= {cor1.rhs:.4g}: {cor1.holds}"
    return out or None


def _explain(report: StabilityReport) -> None:
    """Plain-words caveats for points where the theory does not apply as stated."""
    if not report.minimum_at_targets:
        report.notes.append(
            f"{report.loss_name} has no minimum at finite outputs: this point is not a "
            "minimum, and eta* here is the exact threshold of SGD on the local quadratic "
            "(Gauss-Newton) model of the loss, which says whether small perturbations of "
            "the current iterate grow in mean square; it does not say the run will "
            "converge, and its value drifts as training continues"
        )
    elif report.linearisation_gap is not None and report.linearisation_gap > 1e-3:
        report.notes.append(
            f"the loss Hessian's top eigenvalue differs from the Gauss-Newton one by "
            f"{100 * report.linearisation_gap:.2g}%: the point is "
            f"{'not ' if report.max_abs_residual and report.max_abs_residual > 1e-3 else ''}"
            "near interpolation, and the linear-stability numbers describe the "
            "Gauss-Newton model, not the loss itself"
        )
    if report.reduction == "sum":
        report.notes.append(
            "reduction='sum': a step with lr on the summed batch loss is B times the "
            "batch-mean step, so eta* is 1/B of its batch-mean value"
        )
