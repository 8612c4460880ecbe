r"""Data sets for the network chapters: real images (offline digits) and synthetic targets.

Every loader returns a :class:`Dataset` of standardised tensors set up for regression
with the square loss :math:`L = \frac{1}{2n}\sum_i \|f(x_i) - y_i\|^2`
(:cite:p:`ma2021linear`): targets are always two-dimensional, shape ``(n, K)``.

* Classification data become regression targets. With ``classes=None`` (or a list of
  three or more classes) the target is the one-hot vector of the class, ``K`` outputs.
  With ``classes=(a, b)`` the target is the scalar ``+1`` for ``a`` and ``-1`` for
  ``b`` (``K = 1``); ``a`` and ``b`` may themselves be groups of classes, e.g.
  ``classes=((0, 2, 4, 6, 8), (1, 3, 5, 7, 9))`` (even against odd digits).
* ``"digits"`` (scikit-learn's 8x8 digits, 1797 images, 64 inputs) ships with
  scikit-learn and works offline; it is the book's default. ``"mnist"``,
  ``"fashion-mnist"`` and ``"cifar10"`` are fetched from OpenML through scikit-learn's
  cache and fail with :class:`DatasetUnavailableError` when they are neither cached nor
  reachable.
* ``"standin:<name>"`` (e.g. ``"standin:fashion-mnist"``) is a stand-in of an OpenML set
  generated locally, offline: the same image shape, ten classes, pixels in ``[0, 1]``
  (:func:`standin_images`). It exists to test code paths at the papers' sizes without
  the network; it is not the data set. With the environment variable
  ``COMPANION_DATA=standin`` every OpenML name loads its stand-in (how the paper-scale
  smoke test runs the chapters offline).
* :func:`synthetic` draws the synthetic targets of :cite:p:`wu2020slides`: a single
  neuron, the circle neuron, a two-layer teacher, a linear target and 1-D functions.

This module imports torch; ``import companion`` does not load it.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..validation import check_positive_int

__all__ = [
    "OPENML_DATASETS",
    "SYNTHETIC_TARGETS",
    "Dataset",
    "DatasetUnavailableError",
    "as_inputs",
    "as_xy",
    "load",
    "standin_images",
    "synthetic",
]

#: Environment variable: ``"standin"`` makes :func:`load` return the locally generated
#: stand-in of every OpenML data set (:func:`standin_images`).
DATA_ENV = "COMPANION_DATA"

#: Images per class of a stand-in data set (enough for 500 training images per class
#: with the default 20 % held out).
STANDIN_PER_CLASS = 700

#: OpenML names and image shapes ``(channels, height, width)`` of the downloadable sets.
OPENML_DATASETS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "mnist": ("mnist_784", (1, 28, 28)),
    "fashion-mnist": ("Fashion-MNIST", (1, 28, 28)),
    "cifar10": ("CIFAR_10", (3, 32, 32)),
}

#: Names accepted by :func:`synthetic`.
SYNTHETIC_TARGETS = ("single-neuron", "circle-neuron", "teacher", "linear", "sine", "abs")


class DatasetUnavailableError(OSError):
    """A data set could not be fetched (offline and not in scikit-learn's cache)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test tensors with their metadata.

    Attributes
    ----------
    X_train, X_test : torch.Tensor
        Inputs, shape ``(n, p)`` (flattened) or ``(n, C, H, W)`` (``flatten=False``).
    y_train, y_test : torch.Tensor
        Regression targets, shape ``(n, K)`` (``K = 1`` for ``+-1`` and synthetic targets).
    name : str
        Data set name (``"digits"``, ``"synthetic:circle-neuron"``, ...).
    input_shape : tuple of int
        Shape of one input before flattening (``(1, 8, 8)`` for digits, ``(d,)`` for
        synthetic data).
    target : str
        ``"one-hot"``, ``"pm1"`` (scalar ``+-1``) or ``"regression"``.
    classes : tuple or None
        The classes in output order (one-hot), the two groups ``(+1, -1)`` (pm1), or None.
    labels_train, labels_test : torch.Tensor or None
        Integer class labels (original label values), for accuracies.
    feature_mean, feature_std : numpy.ndarray or None
        Per-feature statistics of the training inputs used for standardisation.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    name: str
    input_shape: tuple[int, ...]
    target: str
    classes: tuple | None = None
    labels_train: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of training samples."""
        return int(self.X_train.shape[0])

    @property
    def in_dim(self) -> int:
        """Number of input features, ``prod(input_shape)``."""
        return math.prod(self.input_shape)

    @property
    def out_dim(self) -> int:
        """Number of outputs ``K``."""
        return int(self.y_train.shape[1])

    def subset(self, n: int, seed: int | None = None) -> Dataset:
        """The first ``n`` training samples (or ``n`` drawn at random with ``seed``).

        The test set is kept. Useful to build dense quantities on a small subset.
        """
        n = check_positive_int(n, "n")
        if n > self.n:
            raise ValueError(f"n must be at most the training set size {self.n}, got {n}")
        if seed is None:
            idx = torch.arange(n)
        else:
            idx = torch.as_tensor(np.random.default_rng(seed).permutation(self.n)[:n])
        labels = None if self.labels_train is None else self.labels_train[idx]
        return replace(
            self, X_train=self.X_train[idx], y_train=self.y_train[idx], labels_train=labels
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, n_train={self.n}, n_test={int(self.X_test.shape[0])}, "
            f"input_shape={self.input_shape}, outputs={self.out_dim} ({self.target}), "
            f"dtype={self.X_train.dtype})"
        )


# ----------------------------------------------------------------------------------------
# helpers shared with training, jacobians and curvature_ops
# ----------------------------------------------------------------------------------------


def as_xy(
    data, dtype: torch.dtype | None = None, *, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Training inputs and targets ``(X, y)`` from a :class:`Dataset`, a pair or a DataLoader.

    Parameters
    ----------
    data : Dataset, (X, y), torch.utils.data.DataLoader or torch.utils.data.Dataset
        A companion :class:`Dataset` (its training split), a pair of arrays/tensors, or a
        torch ``DataLoader`` (or map-style torch ``Dataset``) yielding ``(x, y)`` batches,
        which are concatenated in the order the loader yields them (a shuffling loader
        gives a different order at every call; ``drop_last`` drops samples).
    dtype : torch.dtype or None
        Floating dtype of ``X`` and of *floating* targets (None: float64 for non-tensor or
        integer inputs, else kept). Integer targets (class labels, e.g. for
        ``nn.CrossEntropyLoss``) stay ``torch.long`` with their shape.
    device : torch.device, str or None
        Move both tensors there (None: leave them where they are).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``X`` of shape ``(n, ...)``; ``y`` of shape ``(n, K)`` for floating targets (a
        vector becomes ``(n, 1)``) or the integer labels as given. Raises
        ``TypeError``/``ValueError`` naming the argument for anything else, mismatched
        lengths, or NaN/inf entries.

    Examples
    --------
    >>> import torch
    >>> from companion.nets.data import as_xy
    >>> X, y = as_xy((torch.zeros(4, 3), torch.tensor([0, 1, 1, 0])), torch.float64)
    >>> X.dtype, y.dtype, tuple(y.shape)
    (torch.float64, torch.int64, (4,))
    """
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    if isinstance(data, TorchDataset):
        data = DataLoader(data, batch_size=1024, shuffle=False)
    if isinstance(data, Dataset):
        X, y = data.X_train, data.y_train
    elif isinstance(data, DataLoader):
        X, y = _concatenate_batches(data)
    elif isinstance(data, tuple | list) and len(data) == 2:
        X, y = data
    else:
        raise TypeError(
            "data must be a companion Dataset, a pair (X, y) or a torch DataLoader of (x, y) "
            f"batches, got {type(data).__name__}"
        )
    X = _as_tensor(X, "X", dtype)
    y = _as_tensor(y, "y", dtype if dtype is not None else X.dtype, keep_integer=True)
    if X.ndim < 2:
        raise ValueError(f"X must have shape (n, features...), got {tuple(X.shape)}")
    if y.is_floating_point() and y.ndim == 1:
        y = y[:, None]
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (n,) or (n, K), got {tuple(y.shape)}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y must have the same number of samples, got {X.shape[0]} and {y.shape[0]}"
        )
    if X.shape[0] < 1:
        raise ValueError("data must hold at least one sample")
    if device is not None:
        X, y = X.to(device), y.to(device)
    return X, y


def _concatenate_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for batch in loader:
        if not (isinstance(batch, tuple | list) and len(batch) == 2):
            raise TypeError(
                "data: a DataLoader must yield (x, y) pairs of tensors, got a batch of type "
                f"{type(batch).__name__}"
                + (f" with {len(batch)} entries" if isinstance(batch, tuple | list) else "")
            )
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ValueError("data: the DataLoader yielded no batches")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as exc:
        raise ValueError(f"data: the DataLoader's batches cannot be concatenated: {exc}") from exc


def as_inputs(X, dtype: torch.dtype | None = None, name: str = "X", *, device=None) -> torch.Tensor:
    """Inputs ``(n, features...)`` as a finite floating tensor (of ``dtype`` if given).

    ``device``: move the tensor there (None: leave it where it is).

    Examples
    --------
    >>> from companion.nets.data import as_inputs
    >>> as_inputs([[1, 2], [3, 4]]).dtype
    torch.float64
    """
    X = _as_tensor(X, name, dtype)
    if X.ndim < 2 or X.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (n, features...) with n >= 1, got {tuple(X.shape)}"
        )
    return X if device is None else X.to(device)


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _as_tensor(x, name: str, dtype: torch.dtype | None, keep_integer: bool = False) -> torch.Tensor:
    """A finite tensor; integers become ``dtype`` (float64) unless ``keep_integer`` (long)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if keep_integer and arr.dtype.kind in "iu":
            t = torch.as_tensor(arr.astype(np.int64))
        else:
            try:
                t = torch.as_tensor(np.asarray(x, dtype=np.float64))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be an array of real numbers") from exc
    if not (t.is_floating_point() or t.dtype in _INTEGER_DTYPES):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.is_floating_point():
        if dtype is not None:
            t = t.to(dtype)
    elif keep_integer:
        return t.to(torch.long)  # integers are finite
    else:
        t = t.to(dtype if dtype is not None else torch.float64)
    if t.device.type != "meta" and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return t


# ----------------------------------------------------------------------------------------
# real data
# ----------------------------------------------------------------------------------------


def load(
    name: str = "digits",
    classes: Sequence | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    standardize: bool = True,
    test_size: float | int = 0.2,
    flatten: bool = True,
    data_home: str | None = None,
) -> Dataset:
    """Load a classification data set as a regression problem.

    Parameters
    ----------
    name : str
        ``"digits"`` (offline), ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``
        (OpenML through scikit-learn's cache, see ``data_home``).
    classes : sequence or None
        None: every class, one-hot targets. ``(a, b)``: binary, scalar target ``+1`` for
        ``a`` and ``-1`` for ``b``, where ``a`` and ``b`` are labels or groups of labels.
        Three or more labels: those classes, one-hot in the given order.
    n_per_class : int or None
        Training samples kept per class (per original label, also inside a group); None
        keeps all that are not held out.
    seed : int
        Seed of the split and of the subsampling.
    dtype : torch.dtype
        Floating dtype of the tensors (float64 for theory quantities).
    standardize : bool
        Centre and scale each input feature with the training mean and standard deviation
        (features constant on the training set are only centred). Images are first mapped
        to ``[0, 1]``.
    test_size : float or int
        Float in ``[0, 1)``: fraction of each class held out for testing. Int: number of
        test samples per class.
    flatten : bool
        Inputs of shape ``(n, C*H*W)`` (True) or ``(n, C, H, W)`` (False).
    data_home : str or None
        scikit-learn's data cache directory for the OpenML sets.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetUnavailableError
        When an OpenML data set is neither cached nor downloadable (use ``"digits"``).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    key = name.lower()
    standin = key.startswith("standin:")
    if standin:
        key = key.removeprefix("standin:")
        if key not in OPENML_DATASETS:
            raise ValueError(
                f"name: a stand-in exists for {', '.join(OPENML_DATASETS)}; got {name!r}"
            )
    elif key in OPENML_DATASETS and os.environ.get(DATA_ENV, "").strip().lower() == "standin":
        standin = True
    if standin:
        X_all, labels_all = standin_images(key)
        shape = OPENML_DATASETS[key][1]
        key = f"standin:{key}"
    elif key == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        X_all = bunch.data.astype(np.float64) / 16.0
        labels_all = bunch.target.astype(np.int64)
        shape = (1, 8, 8)
    elif key in OPENML_DATASETS:
        X_all, labels_all = _fetch_openml(key, data_home)
        shape = OPENML_DATASETS[key][1]
    else:
        known = ", ".join(["digits", *OPENML_DATASETS, *(f"standin:{k}" for k in OPENML_DATASETS)])
        raise ValueError(f"name must be one of {known}; got {name!r}")

    groups, target = _parse_classes(classes, labels_all)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = _split(labels_all, groups, n_per_class, test_size, rng)

    X_train, X_test = X_all[train_idx], X_all[test_idx]
    mean = std = None
    if standardize:
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std = np.where(std > 1e-12 * max(float(np.abs(X_train).max()), 1.0), std, 1.0)
        X_train = (X_train - mean) / std
        X_test = (X_test - mean) / std

    y_train = _targets(labels_all[train_idx], groups, target)
    y_test = _targets(labels_all[test_idx], groups, target)
    if not flatten:
        X_train = X_train.reshape(-1, *shape)
        X_test = X_test.reshape(-1, *shape)

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return Dataset(
        X_train=t(X_train),
        y_train=t(y_train),
        X_test=t(X_test),
        y_test=t(y_test),
        name=key,
        input_shape=shape,
        target=target,
        classes=tuple(tuple(g) if len(g) > 1 else g[0] for g in groups),
        labels_train=torch.as_tensor(labels_all[train_idx]),
        labels_test=torch.as_tensor(labels_all[test_idx]),
        feature_mean=mean,
        feature_std=std,
    )


def _fetch_openml(key: str, data_home: str | None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import fetch_openml

    openml_name, _ = OPENML_DATASETS[key]
    try:
        X, y = fetch_openml(
            openml_name,
            version=1,
            return_X_y=True,
            as_frame=False,
            data_home=data_home,
            parser="auto",
        )
    except OSError as exc:  # URLError, HTTPError, ConnectionError, TimeoutError
        raise DatasetUnavailableError(
            f"could not fetch {key!r} ({openml_name!r}) from OpenML and it is not in "
            f"scikit-learn's cache (data_home={data_home!r}): {exc}. Without internet use "
            f"load('digits'), which ships with scikit-learn and works offline."
        ) from exc
    X = np.asarray(X, dtype=np.float64) / 255.0
    labels = np.asarray(y).astype(np.int64)
    return X, labels


def standin_images(
    name: str, per_class: int = STANDIN_PER_CLASS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    r"""A locally generated stand-in of an OpenML image set: its shape, not its content.

    Ten classes; class :math:`c` has a smooth random template :math:`T_c` (white noise
    blurred by a separable binomial filter, scaled to :math:`[0, 1]`) and its images are
    :math:`\mathrm{clip}(0.7\,T_c + 0.3\,N + 0.1\,\varepsilon, 0, 1)` with a blurred
    noise image :math:`N` and white noise :math:`\varepsilon`, so the classes overlap but
    can be told apart. Deterministic for given ``(name, per_class, seed)``. Used by
    ``load("standin:<name>")`` and ``COMPANION_DATA=standin``, to run code at the papers'
    sizes offline (e.g. :cite:p:`ma2021linear`'s FashionMNIST, ``(1, 28, 28)``).

    Parameters
    ----------
    name : str
        A key of :data:`OPENML_DATASETS` (its image shape is used).
    per_class : int
        Images per class.
    seed : int
        Seed of templates and noise.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Flattened images ``(10 * per_class, C*H*W)`` in ``[0, 1]`` and integer labels,
        like the OpenML loader.

    Examples
    --------
    >>> from companion.nets.data import standin_images
    >>> X, labels = standin_images("fashion-mnist", per_class=3)
    >>> X.shape, sorted(set(labels.tolist())) == list(range(10)), bool(0 <= X.min() <= X.max() <= 1)
    ((30, 784), True, True)
    """
    if name not in OPENML_DATASETS:
        raise ValueError(f"name must be one of {', '.join(OPENML_DATASETS)}; got {name!r}")
    per_class = check_positive_int(per_class, "per_class")
    seed = check_positive_int(seed, "seed", minimum=0)
    shape = OPENML_DATASETS[name][1]
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    kernel = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

    def blur(a: np.ndarray) -> np.ndarray:  # separable, over the last two axes, twice
        for _ in range(2):
            for axis in (a.ndim - 1, a.ndim - 2):
                pad = [(0, 0)] * a.ndim
                pad[axis] = (2, 2)
                padded, size = np.pad(a, pad), a.shape[axis]
                a = sum(
                    w * np.take(padded, range(k, k + size), axis=axis)
                    for k, w in enumerate(kernel)
                )
        return a

    def unit(a: np.ndarray) -> np.ndarray:  # each image to [0, 1]
        flat = a.reshape(a.shape[0], -1)
        lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
        return ((flat - lo) / np.maximum(hi - lo, 1e-12)).reshape(a.shape)

    templates = unit(blur(rng.standard_normal((10, *shape))))
    labels = np.repeat(np.arange(10, dtype=np.int64), per_class)
    noise = unit(blur(rng.standard_normal((labels.size, *shape))))
    images = 0.7 * templates[labels] + 0.3 * noise
    images += 0.1 * rng.standard_normal(images.shape)
    X = np.clip(images, 0.0, 1.0).reshape(labels.size, -1)
    return X, labels


def _parse_classes(classes, labels: np.ndarray) -> tuple[list[tuple[int, ...]], str]:
    """Groups of labels, one group per output (one-hot) or two groups (+1, -1)."""
    available = set(np.unique(labels).tolist())
    if classes is None:
        return [(int(c),) for c in sorted(available)], "one-hot"
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be None or a sequence of labels, got {classes!r}")
    groups = []
    for entry in classes:
        group = (entry,) if isinstance(entry, numbers.Integral) else tuple(entry)
        for c in group:
            if isinstance(c, bool) or not isinstance(c, numbers.Integral):
                raise TypeError(f"classes must contain integer labels, got {c!r}")
            if int(c) not in available:
                raise ValueError(f"class {c} is not in the data (labels {sorted(available)})")
        groups.append(tuple(int(c) for c in group))
    flat = [c for g in groups for c in g]
    if len(set(flat)) != len(flat):
        raise ValueError(f"classes must not repeat a label, got {classes!r}")
    if len(groups) < 2:
        raise ValueError(f"classes must name at least two classes, got {classes!r}")
    if len(groups) == 2:
        return groups, "pm1"
    if any(len(g) > 1 for g in groups):
        raise ValueError("groups of labels are only allowed in the binary form (a, b)")
    return groups, "one-hot"


def _split(labels, groups, n_per_class, test_size, rng) -> tuple[np.ndarray, np.ndarray]:
    if n_per_class is not None:
        n_per_class = check_positive_int(n_per_class, "n_per_class")
    as_fraction = isinstance(test_size, numbers.Real) and not isinstance(
        test_size, numbers.Integral
    )
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise TypeError(f"test_size must be a float or an int, got {type(test_size).__name__}")
    if as_fraction and not 0.0 <= float(test_size) < 1.0:
        raise ValueError(f"test_size as a fraction must be in [0, 1), got {test_size}")
    if not as_fraction and int(test_size) < 0:
        raise ValueError(f"test_size as a count must be >= 0, got {test_size}")
    train, test = [], []
    for c in sorted(c for g in groups for c in g):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(float(test_size) * len(idx)) if as_fraction else int(test_size)
        pool = idx[n_test:]
        if n_test >= len(idx) or (n_per_class is not None and n_per_class > len(pool)):
            want = n_test + (n_per_class or 1)
            raise ValueError(
                f"class {c} has {len(idx)} samples, fewer than the {want} needed for "
                f"test_size={test_size} and n_per_class={n_per_class}"
            )
        test.append(idx[:n_test])
        train.append(pool if n_per_class is None else pool[:n_per_class])
    train_idx = np.concatenate(train)
    test_idx = np.concatenate(test)
    return train_idx[rng.permutation(len(train_idx))], test_idx[rng.permutation(len(test_idx))]


def _targets(labels: np.ndarray, groups, target: str) -> np.ndarray:
    if target == "pm1":
        return np.where(np.isin(labels, groups[0]), 1.0, -1.0)[:, None]
    order = {g[0]: k for k, g in enumerate(groups)}
    onehot = np.zeros((len(labels), len(groups)))
    onehot[np.arange(len(labels)), [order[int(c)] for c in labels]] = 1.0
    return onehot


# ----------------------------------------------------------------------------------------
# synthetic targets
# ----------------------------------------------------------------------------------------


def synthetic(
    name: str,
    n: int,
    d: int = 1,
    seed: int = 0,
    n_test: int = 1000,
    noise: float = 0.0,
    teacher_width: int = 40,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    r"""Synthetic regression data with a known target :math:`f^*` (:cite:p:`wu2020slides`).

    Inputs are uniform on the unit sphere :math:`\mathbb S^{d-1}` (uniform on
    :math:`[-1, 1]` for the 1-D targets), :math:`\sigma` is the ReLU.

    * ``"single-neuron"``: :math:`f^*(x) = \sigma(x_1)`.
    * ``"circle-neuron"``: :math:`f^*(x) = \mathbb E_{b\sim\pi_2}\,\sigma(b^\top x)` with
      :math:`\pi_2` uniform on the unit circle of the :math:`(x_1, x_2)` plane. Writing
      :math:`b^\top x = r\cos\phi`, :math:`r = \sqrt{x_1^2 + x_2^2}`, the average of
      :math:`\max(0, r\cos\phi)` over :math:`\phi` is :math:`r/\pi`, so
      :math:`f^*(x) = \sqrt{x_1^2 + x_2^2}/\pi` (needs ``d >= 2``).
    * ``"teacher"``: a two-layer teacher :math:`f^*(x) = \frac1{m^*}\sum_{j=1}^{m^*}
      \sigma(b_j^{*\top} x)`, :math:`b_j^*` uniform on the sphere, :math:`m^*` =
      ``teacher_width``.
    * ``"linear"``: :math:`f^*(x) = x_1`.
    * ``"sine"``: 1-D, :math:`f^*(x) = \sin(\pi x)`; ``"abs"``: 1-D, :math:`|x|`.

    Parameters
    ----------
    name : str
        One of :data:`SYNTHETIC_TARGETS`.
    n, n_test : int
        Numbers of training and test samples (``n_test`` may be 0).
    d : int
        Input dimension (must be 1 for the 1-D targets).
    seed : int
        Seed of inputs, teacher and noise.
    noise : float
        Standard deviation of Gaussian noise added to the *training* targets only.
    teacher_width : int
        Number of teacher neurons :math:`m^*`.
    dtype : torch.dtype
        Floating dtype of the tensors.
    """
    if name not in SYNTHETIC_TARGETS:
        raise ValueError(f"name must be one of {', '.join(SYNTHETIC_TARGETS)}; got {name!r}")
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    teacher_width = check_positive_int(teacher_width, "teacher_width")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a real number >= 0, got {noise!r}")
    one_d = name in ("sine", "abs")
    if one_d and d != 1:
        raise ValueError(f"the {name!r} target is one-dimensional: d must be 1, got {d}")
    if name == "circle-neuron" and d < 2:
        raise ValueError(f"the circle neuron needs d >= 2, got d={d}")

    rng = np.random.default_rng(seed)
    teacher = _unit_rows(rng.standard_normal((teacher_width, d))) if name == "teacher" else None

    def inputs(m: int) -> np.ndarray:
        if one_d:
            return rng.uniform(-1.0, 1.0, size=(m, 1))
        return _unit_rows(rng.standard_normal((m, d)))

    def target(x: np.ndarray) -> np.ndarray:
        if name == "single-neuron":
            return np.maximum(x[:, 0], 0.0)
        if name == "circle-neuron":
            return np.hypot(x[:, 0], x[:, 1]) / np.pi
        if name == "teacher":
            return np.maximum(x @ teacher.T, 0.0).mean(axis=1)
        if name == "linear":
            return x[:, 0]
        if name == "sine":
            return np.sin(np.pi * x[:, 0])
        return np.abs(x[:, 0])

    X_train, X_test = inputs(n), inputs(n_test)
    y_train = target(X_train) + float(noise) * rng.standard_normal(n)
    y_test = target(X_test)

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return Dataset(
        X_train=t(X_train),
        y_train=t(y_train[:, None]),
        X_test=t(X_test.reshape(n_test, d)),
        y_test=t(y_test[:, None]),
        name=f"synthetic:{name}",
        input_shape=(d,),
        target="regression",
    )


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)
