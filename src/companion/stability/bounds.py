"""Inequalities implied by linear stability, each returned with both of its sides.

Every function returns a :class:`Bound`: the left-hand side, the right-hand side and whether
``lhs <= rhs`` holds. None of them decides stability; they state what the papers claim a
stable minimum must satisfy, so that a computation can put the claim to the test.
The exact thresholds these bounds are compared with live in :mod:`companion.stability.thresholds`;
the Mulayoff--Michaeli necessary bounds (15)/(16) are ``thresholds.ms_necessary_bounds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import (
    as_float_array,
    as_hessians,
    as_jacobians,
    check_batch_size,
    check_lr,
    check_positive_int,
    check_replacement,
    check_symmetric_psd,
)
from .curvature import non_uniformity, range_mask, sharpness
from .sampling import batch_noise_factor

#: Relative slack when ``lhs <= rhs`` is decided. The sides are sums of at most a few
#: thousand float64 terms, so each carries a relative rounding error far below 1e-12; the
#: slack only keeps an inequality that is tight by construction (a bound evaluated exactly
#: at its own threshold) from failing on the last bit.
BOUND_RTOL = 1e-9


#: Entries of one block of the sample Gram matrix in :func:`moment_tensor_norms`.
_GRAM_ENTRIES = 2**22


@dataclass(frozen=True)
class Bound:
    """Both sides of an inequality ``lhs <= rhs``.

    ``lhs`` and ``rhs`` are floats or arrays that broadcast together (per coordinate, per
    direction). ``holds`` is True when every entry satisfies
    ``lhs <= rhs * (1 + BOUND_RTOL)``; ``ratio`` is ``lhs / rhs`` (its maximum is the
    tightness: 1 means tight, above 1 means violated).
    """

    lhs: float | np.ndarray
    rhs: float | np.ndarray
    description: str

    @property
    def ratio(self) -> float | np.ndarray:
        lhs, rhs = np.asarray(self.lhs, float), np.asarray(self.rhs, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(rhs == np.inf, 0.0, lhs / np.where(rhs == 0, 1.0, rhs))
            out = np.where((rhs == 0) & (lhs > 0), np.inf, out)
            out = np.where((rhs == 0) & (lhs <= 0), 0.0, out)
        return float(out) if out.ndim == 0 else out

    @property
    def worst_ratio(self) -> float:
        return float(np.max(self.ratio))

    @property
    def holds(self) -> bool:
        lhs, rhs = np.asarray(self.lhs, float), np.asarray(self.rhs, float)
        return bool(np.all(lhs <= rhs * (1 + BOUND_RTOL)))


def _as_gradients(grads) -> np.ndarray:
    g = as_float_array(grads, "grads", ndim=2)
    if g.shape[0] < 1 or g.shape[1] < 1:
        raise ValueError(f"grads must have shape (n, d) with n, d >= 1, got {g.shape}")
    return g


def _moment_order(k) -> int:
    return check_positive_int(k, "k")


def gradient_moment_bound(grads, lr: float, batch_size: int, k: int, direction=None) -> Bound:
    r"""Ma--Ying Theorem 2: moments of the per-sample gradients at a k-th order stable minimum.

    With :math:`a_i = \nabla_W f(x_i, W^*)` (so :math:`H_i = a_i a_i^\top`), k-th order linear
    stability (Definition 5) for SGD with learning rate :math:`\eta` and batch size :math:`B`
    implies, for every coordinate :math:`j` (:cite:p:`ma2021linear`, eq. (18)),

    .. math::

        \frac1n\sum_{i=1}^n a_{i,j}^{2k} \le \frac{2^k B^{k-1}}{\eta^k}.

    The proof only tests Theorem 1 on the tensor :math:`e_j^{\otimes k}`, and stability is
    invariant under rotations of the parameters, so the same bound holds with
    :math:`a_{i,j}` replaced by :math:`a_i^\top v` for any unit vector :math:`v`
    (``direction``).

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Per-sample gradients :math:`a_i`.
    lr, batch_size : float, int
        :math:`\eta` and :math:`B`.
    k : int
        Order of stability, ``k >= 1``.
    direction : array_like, shape (d,) or (m, d), optional
        Directions :math:`v` (normalised here). Default: the coordinate axes.

    Returns
    -------
    Bound
        ``lhs`` has one entry per coordinate (or direction); ``rhs`` is the scalar
        :math:`2^k B^{k-1}/\eta^k`.
    """
    a = _as_gradients(grads)
    lr = check_lr(lr)
    b = check_positive_int(batch_size, "batch_size")
    k = _moment_order(k)
    if direction is None:
        proj = a
    else:
        v = as_float_array(direction, "direction", ndim=(1, 2))
        v = np.atleast_2d(v)
        if v.shape[1] != a.shape[1]:
            raise ValueError(
                f"direction must have {a.shape[1]} entries (one per parameter), got {v.shape[1]}"
            )
        norms = np.linalg.norm(v, axis=1)
        if np.any(norms == 0):
            raise ValueError("direction must be nonzero")
        proj = a @ (v / norms[:, None]).T
    lhs = np.mean(proj ** (2 * k), axis=0)
    rhs = 2.0**k * float(b) ** (k - 1) / lr**k
    what = f"MY Thm 2, k={k}: mean_i (a_i . v)^(2k) <= 2^k B^(k-1) / lr^k"
    return Bound(lhs=lhs, rhs=rhs, description=what)


def gradient_norm_bound(grads, lr: float, batch_size: int, k: int) -> Bound:
    r"""Ma--Ying Corollary 1: mean :math:`2k`-norm of the per-sample gradients.

    Summing Theorem 2 over the :math:`w` parameters gives
    :math:`\frac1n\sum_i \|a_i\|_{2k}^{2k} \le 2w(2B)^{k-1}/\eta^k`, and Hölder's
    (Jensen's) inequality :math:`\frac1n\sum_i\|a_i\|_{2k} \le
    (\frac1n\sum_i\|a_i\|_{2k}^{2k})^{1/2k}` turns it into (:cite:p:`ma2021linear`, eq. (19))

    .. math::

        \frac1n\sum_{i=1}^n \|a_i\|_{2k} \le \Big(\frac wB\Big)^{1/2k}\sqrt{\frac{2B}{\eta}},

    where :math:`w` is the number of parameters (the length of :math:`a_i`) and
    :math:`\|\cdot\|_{2k}` the vector :math:`2k`-norm.

    Parameters
    ----------
    grads : array_like, shape (n, w)
        Per-sample gradients :math:`a_i`.
    lr, batch_size, k
        :math:`\eta`, :math:`B` and the order :math:`k \ge 1`.
    """
    a = _as_gradients(grads)
    lr = check_lr(lr)
    b = check_positive_int(batch_size, "batch_size")
    k = _moment_order(k)
    w = a.shape[1]
    lhs = float(np.mean(np.linalg.norm(a, ord=2 * k, axis=1)))
    rhs = (w / b) ** (1.0 / (2 * k)) * np.sqrt(2.0 * b / lr)
    return Bound(lhs=lhs, rhs=float(rhs), description=f"MY Cor 1, k={k}")


def wme_necessary_conditions(
    hessians, lr: float, batch_size: int, replacement: bool = False
) -> tuple[Bound, Bound]:
    r"""Wu--Ma--E conditions :math:`a \le 2/\eta` and :math:`s \le 1/(\eta\sqrt p)`.

    With :math:`a = \lambda_{\max}(H)`, :math:`s^2 = \lambda_{\max}(\Sigma)`,
    :math:`\Sigma = \frac1n\sum_i H_i^2 - H^2` and the batch-noise factor :math:`p`, the
    slides (:cite:p:`wu2020slides`, after :cite:p:`wu2018sgd`) derive both from the sufficient
    condition :math:`\lambda_{\max}\{(I-\eta H)^2 + \eta^2 p\Sigma\} \le 1`: each is
    necessary for *that condition*. :math:`a \le 2/\eta` is also necessary for exact
    mean-square stability (it is mean stability). :math:`s \le 1/(\eta\sqrt p)` is not:
    there are instances (``tests/test_bounds.py``) that are mean-square stable at
    :math:`\eta^*` with :math:`s\,\eta^*\sqrt p \approx 1.08`, since a large one-step growth
    of :math:`\mathbb E\|x\|^2` along the top eigenvector of :math:`\Sigma` can be undone
    by later steps.

    Returns
    -------
    (Bound, Bound)
        Sharpness ``a <= 2/lr``, then non-uniformity ``s <= 1/(lr sqrt(p))`` (right side
        ``inf`` for gradient descent, ``p = 0``).
    """
    hs = as_hessians(hessians)
    lr = check_lr(lr)
    replacement = check_replacement(replacement)
    b = check_batch_size(batch_size, hs.shape[0], replacement)
    p = batch_noise_factor(hs.shape[0], b, replacement)
    a = sharpness(hs)
    s = non_uniformity(hs)
    s_rhs = float("inf") if p == 0 else 1.0 / (lr * np.sqrt(p))
    return (
        Bound(lhs=a, rhs=2.0 / lr, description="WME sharpness: a <= 2/lr"),
        Bound(lhs=s, rhs=s_rhs, description="WME non-uniformity: s <= 1/(lr sqrt(p))"),
    )


def _gradient_noise_terms(jac: np.ndarray, res: np.ndarray):
    """G, the per-sample loss gradients and the loss for residuals ``res`` (n, K)."""
    n = jac.shape[0]
    grads = np.einsum("nkd,nk->nd", jac, res)  # grad l_i = J_i^T r_i
    g_mat = np.einsum("nkd,nke->de", jac, jac) / n
    loss = 0.5 * float(np.sum(res**2)) / n
    return g_mat, grads, loss


def alignment_factor(jacobians, residuals) -> float:
    r"""Alignment factor of SGD noise (Wu--Wang--Su; definition reconstructed).

    For the square loss :math:`L = \frac1{2n}\sum_i\|r_i\|^2`, :math:`r_i = f(x_i,\theta)-y_i`,
    the per-sample gradients are :math:`\nabla\ell_i = J_i^\top r_i`. With
    :math:`G = \frac1n\sum_i J_i^\top J_i` and the single-sample noise covariance
    :math:`\Sigma = \frac1n\sum_i\nabla\ell_i\nabla\ell_i^\top - \nabla L\nabla L^\top`,

    .. math::

        \mu(\theta) = \frac{\operatorname{Tr}(\Sigma(\theta)\,G(\theta))}
                           {2L(\theta)\,\|G(\theta)\|_F^2}

    (:cite:p:`wu2022alignment`; the formula is a reconstruction, see ``FORMULAS.md``).
    Large :math:`\mu` means the noise concentrates in the sharp directions of :math:`G`.

    Parameters
    ----------
    jacobians : array_like, shape (n, d) or (n, K, d)
        Per-sample output gradients :math:`J_i = \nabla_\theta f(x_i,\theta)`.
    residuals : array_like, shape (n,) or (n, K)
        :math:`r_i`. At least one must be nonzero (:math:`\mu` is undefined at zero loss).
    """
    jac = as_jacobians(jacobians)
    res = as_float_array(residuals, "residuals", ndim=(1, 2))
    if res.ndim == 1:
        res = res[:, None]
    if res.shape != jac.shape[:2]:
        raise ValueError(
            f"residuals must have shape (n,) or (n, K) = {jac.shape[:2]}, got {res.shape}"
        )
    g_mat, grads, loss = _gradient_noise_terms(jac, res)
    if loss == 0:
        raise ValueError("residuals are all zero: the alignment factor is undefined at zero loss")
    g_norm2 = float(np.sum(g_mat**2))
    if g_norm2 == 0:
        raise ValueError("jacobians are all zero: the alignment factor is undefined for G = 0")
    mean_grad = grads.mean(axis=0)
    noise = grads.T @ grads / grads.shape[0] - np.outer(mean_grad, mean_grad)
    return float(np.sum(noise * g_mat) / (2.0 * loss * g_norm2))


def worst_alignment_factor(jacobians) -> float:
    r"""Smallest alignment factor of a linear model over all residuals it can produce.

    For a model linear in its parameters near an interpolating :math:`\theta^*`, the residuals
    are :math:`r_i = J_i x` with :math:`x = \theta - \theta^*`. Then
    :math:`2L = x^\top G x` and :math:`\operatorname{Tr}(\Sigma G) = x^\top M x` with
    :math:`M = \frac1n\sum_i J_i^\top J_i G J_i^\top J_i - G^3`, so

    .. math::

        \mu_0 = \inf_{Gx \ne 0}\mu = \frac{\lambda_{\min}(M, G)}{\|G\|_F^2},

    the smallest generalised eigenvalue on the range of :math:`G` (this is the constant the
    Wu--Wang--Su bound needs on a neighbourhood of :math:`\theta^*`, :cite:p:`wu2022alignment`).

    Parameters
    ----------
    jacobians : array_like, shape (n, d) or (n, K, d)
        Per-sample output gradients :math:`J_i`.
    """
    jac = as_jacobians(jacobians)
    n = jac.shape[0]
    hs = np.einsum("nkd,nke->nde", jac, jac)
    g_mat = hs.mean(axis=0)
    evals, evecs = np.linalg.eigh(g_mat)
    if evals[-1] <= 0:
        raise ValueError("jacobians are all zero: the alignment factor is undefined for G = 0")
    keep = range_mask(evals)  # the package's one rank rule
    u, lam = evecs[:, keep], evals[keep]
    m_mat = np.einsum("nab,bc,ncd->ad", hs, g_mat, hs) / n - g_mat @ g_mat @ g_mat
    m_r = u.T @ m_mat @ u
    scaled = m_r / np.sqrt(lam)[:, None] / np.sqrt(lam)[None, :]
    low = float(np.linalg.eigvalsh(0.5 * (scaled + scaled.T))[0])
    # Tr(Sigma G) >= 0 exactly (both PSD); a negative value is rounding of a zero
    return max(low, 0.0) / float(np.sum(g_mat**2))


def frobenius_bound(
    hessian, lr: float, batch_size: int, mu: float, noise_factor: float | None = None
) -> Bound:
    r"""Wu--Wang--Su bound :math:`\|H(\theta^*)\|_F \le \sqrt{B/\mu}/\eta` (constant reconstructed).

    If the alignment factor is at least :math:`\mu` near a linearly stable minimum,
    then (:cite:p:`wu2022alignment`; the summary states :math:`O(\sqrt B/\eta)`, the constant
    is reconstructed)

    .. math::

        \|H(\theta^*)\|_F \le \frac{1}{\eta}\sqrt{\frac{B}{\mu}} .

    Why, for the square loss with :math:`H = G`: one SGD step with noise covariance
    :math:`p\Sigma` gives :math:`\mathbb E L_{t+1} \ge \frac{\eta^2 p}{2}\operatorname{Tr}(\Sigma G)
    \ge \eta^2 p\,\mu\|G\|_F^2\,L_t`, so a bounded :math:`\mathbb E L_t` needs
    :math:`\eta^2 p\mu\|G\|_F^2 \le 1`. With i.i.d. sampling :math:`p = 1/B`, the bound
    above. Sampling without replacement has the smaller :math:`p = (n-B)/(B(n-1))`; pass
    it as ``noise_factor`` to get the right side :math:`1/(\eta\sqrt{p\mu})` instead
    (the :math:`\sqrt{B/\mu}/\eta` form can then fail, e.g. for ``B = n``).

    Parameters
    ----------
    hessian : array_like, shape (d, d)
        Symmetric Hessian :math:`H(\theta^*)`.
    lr, batch_size : float, int
        :math:`\eta` and :math:`B`.
    mu : float
        Lower bound :math:`\mu \ge 0` on the alignment factor near :math:`\theta^*`
        (``mu = 0`` gives no bound: right side ``inf``).
    noise_factor : float, optional
        Batch-noise factor :math:`p \in [0, 1]`; default ``1/batch_size``.
    """
    h = as_float_array(hessian, "hessian", ndim=2)
    h = check_symmetric_psd(h, "hessian", psd=False)
    lr = check_lr(lr)
    b = check_positive_int(batch_size, "batch_size")
    mu = float(as_float_array(mu, "mu", ndim=0))
    if mu < 0:
        raise ValueError(f"mu must be >= 0 (an alignment factor), got {mu}")
    if noise_factor is None:
        p = 1.0 / b
    else:
        p = float(as_float_array(noise_factor, "noise_factor", ndim=0))
        if not 0 <= p <= 1:
            raise ValueError(f"noise_factor must be in [0, 1], got {p}")
    rhs = float("inf") if p * mu == 0 else 1.0 / (lr * np.sqrt(p * mu))
    return Bound(
        lhs=float(np.linalg.norm(h, "fro")),
        rhs=rhs,
        description="WWS: ||H||_F <= 1/(lr sqrt(p mu)), p = 1/B gives sqrt(B/mu)/lr",
    )


@dataclass(frozen=True)
class MomentTensorNorms:
    r"""Both sides of Ma--Ying Remark 3 for order :math:`k`.

    ``lower <= tensor_norm <= upper`` with ``tensor_norm`` :math:`= \|\mathbb E x^{\otimes k}\|_F`,
    ``upper`` :math:`= \mathbb E\|x\|^k` and ``lower`` :math:`= \mathbb E\|x\|^k / w^{k/4}`
    (even :math:`k` only; ``None`` for odd :math:`k`, where no lower bound exists:
    a symmetric law has :math:`\mathbb E x^{\otimes k} = 0`).
    """

    k: int
    tensor_norm: float
    upper: float
    lower: float | None

    @property
    def holds(self) -> bool:
        slack = BOUND_RTOL * self.upper + 1e-300
        ok = self.tensor_norm <= self.upper + slack
        if self.lower is not None:
            ok = ok and self.lower <= self.tensor_norm + slack
        return bool(ok)


def moment_tensor_norms(samples, k: int = 2, weights=None) -> MomentTensorNorms:
    r"""Both sides of Ma--Ying Remark 3: :math:`\|\mathbb E x^{\otimes k}\|_F` against moments.

    For :math:`x \in \mathbb R^w` and even :math:`k`,

    .. math::

        \frac{\mathbb E\|x\|^k}{w^{k/4}} \le \|\mathbb E x^{\otimes k}\|_F \le \mathbb E\|x\|^k .

    The right inequality is the triangle inequality (:math:`\|x^{\otimes k}\|_F = \|x\|^k`);
    the left one pairs :math:`\mathbb E x^{\otimes k}` with :math:`I^{\otimes k/2}`
    (:math:`\langle x^{\otimes k}, I^{\otimes k/2}\rangle = \|x\|^k`,
    :math:`\|I^{\otimes k/2}\|_F = w^{k/4}`). For :math:`k = 2` this is
    :math:`\mathbb E\|x\|^2/\sqrt w \le \|\mathbb E xx^\top\|_F \le \mathbb E\|x\|^2`
    (:cite:p:`ma2021linear`, Remark 3), which makes Definition 5 with :math:`k = 2` equivalent
    to mean-square stability.

    The tensor is never formed: :math:`\|\mathbb E x^{\otimes k}\|_F^2 =
    \sum_{a,b} w_a w_b (x_a^\top x_b)^k` over the samples.

    Parameters
    ----------
    samples : array_like, shape (N, w)
        Draws of :math:`x` (or the support of a discrete law).
    k : int
        Order, ``k >= 1``.
    weights : array_like, shape (N,), optional
        Probabilities of the samples (default uniform).
    """
    x = as_float_array(samples, "samples", ndim=2)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"samples must have shape (N, w) with N, w >= 1, got {x.shape}")
    k = _moment_order(k)
    n_samples, w = x.shape
    if weights is None:
        wts = np.full(n_samples, 1.0 / n_samples)
    else:
        wts = as_float_array(weights, "weights", ndim=1)
        if wts.shape[0] != n_samples or np.any(wts < 0):
            raise ValueError(f"weights must be {n_samples} non-negative numbers")
        total = float(wts.sum())
        if abs(total - 1) > 1e-9:  # probabilities summed in float64: error ~ N * eps
            raise ValueError(f"weights must sum to 1, got {total!r}")
    upper = float(np.sum(wts * np.linalg.norm(x, axis=1) ** k))
    # Gram matrix in row blocks so that memory stays O(block * N)
    block = max(1, _GRAM_ENTRIES // n_samples)
    sq = 0.0
    for start in range(0, n_samples, block):
        gram = x[start : start + block] @ x.T
        sq += float(wts[start : start + block] @ (gram**k) @ wts)
    tensor_norm = float(np.sqrt(max(sq, 0.0)))
    lower = upper / w ** (k / 4) if k % 2 == 0 else None
    return MomentTensorNorms(k=k, tensor_norm=tensor_norm, upper=upper, lower=lower)


# --------------------------------------------------------------------------------------
# the Wu-Ma-E region in the (sharpness, non-uniformity) plane
# --------------------------------------------------------------------------------------
def _noise_factor(lr, batch_size, n, replacement) -> tuple[float, float]:
    lr = check_lr(lr)
    n = check_positive_int(n, "n")
    return lr, batch_noise_factor(n, batch_size, replacement)


def wme_boundary(
    lr: float, batch_size: int, n: int, replacement: bool = False, num: int = 401
) -> tuple[np.ndarray, np.ndarray]:
    r"""Points of the boundary :math:`(1 - \eta a)^2 + \eta^2 p s^2 = 1`, :math:`s \ge 0`.

    Parametrised by the angle :math:`\theta\in[0, \pi]`:
    :math:`\eta a = 1 - \cos\theta`, :math:`\eta\sqrt p\, s = \sin\theta`, which spaces the
    points evenly along the ellipse (a grid in :math:`a` would leave the steep ends at
    :math:`a = 0` and :math:`a = 2/\eta` coarse). (:cite:p:`wu2018sgd`, :cite:p:`wu2020slides`.)

    Parameters
    ----------
    lr : float
        Learning rate :math:`\eta > 0`.
    batch_size : int
        Batch size :math:`B`.
    n : int
        Number of training samples (enters through :math:`p`).
    replacement : bool
        Sampling scheme (see ``batch_noise_factor``).
    num : int
        Number of points (at least 2).

    Returns
    -------
    (sharpness, non_uniformity) : tuple of numpy.ndarray, each shape (num,)
        From :math:`(0, 0)` to :math:`(2/\eta, 0)`. For :math:`p = 0` the boundary is the
        vertical line :math:`a = 2/\eta`, returned as the two points
        :math:`(2/\eta, 0)` and :math:`(2/\eta, \infty)`.
    """
    lr, p = _noise_factor(lr, batch_size, n, replacement)
    num = check_positive_int(num, "num", minimum=2)
    if p == 0:
        return np.array([2.0 / lr, 2.0 / lr]), np.array([0.0, np.inf])
    theta = np.linspace(0.0, np.pi, num)
    a = (1.0 - np.cos(theta)) / lr
    s = np.sin(theta) / (lr * np.sqrt(p))
    # sin(pi) is 1e-16, not 0, and 1 - cos(pi) may round: pin the end points exactly.
    s[0] = s[-1] = 0.0
    a[0], a[-1] = 0.0, 2.0 / lr
    return a, s


def wme_region_contains(
    sharpness_values,
    non_uniformity_values,
    lr: float,
    batch_size: int,
    n: int,
    replacement: bool = False,
    rtol: float = 1e-12,
) -> np.ndarray:
    r"""Whether :math:`(a, s)` satisfies :math:`(1 - \eta a)^2 + \eta^2 p s^2 \le 1`.

    This is the one-dimensional stability condition of Wu, Ma and E (:cite:p:`wu2018sgd`,
    :cite:p:`wu2020slides`): exact for :math:`d = 1`, a summary only for :math:`d > 1`
    (see the module docstring). ``rtol`` absorbs rounding in the comparison with 1, so
    points computed on the boundary count as inside.

    Returns
    -------
    numpy.ndarray of bool
        Broadcast shape of the two inputs. Negative :math:`a` or :math:`s` are refused.
    """
    lr, p = _noise_factor(lr, batch_size, n, replacement)
    a = as_float_array(sharpness_values, "sharpness_values")
    s = as_float_array(non_uniformity_values, "non_uniformity_values")
    if np.any(a < 0) or np.any(s < 0):
        raise ValueError("sharpness_values and non_uniformity_values must be >= 0")
    value = (1.0 - lr * a) ** 2 + lr**2 * p * s**2
    return np.asarray(value <= 1.0 + rtol)
