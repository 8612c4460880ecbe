"""companion.nets.data: real data offline (digits), OpenML (monkeypatched), synthetic targets."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from companion.nets import data as cdata
from companion.nets.data import (
    Dataset,
    DatasetUnavailableError,
    as_inputs,
    as_xy,
    load,
    synthetic,
)


def test_digits_binary_pm1_targets_and_standardisation():
    ds = load("digits", classes=(3, 8), n_per_class=40, seed=1)
    assert isinstance(ds, Dataset)
    assert ds.X_train.shape == (80, 64) and ds.y_train.shape == (80, 1)
    assert ds.X_train.dtype == torch.float64 and ds.target == "pm1"
    labels = ds.labels_train.numpy()
    assert np.bincount(labels, minlength=10)[[3, 8]].tolist() == [40, 40]
    # +1 for the first class, -1 for the second
    y = ds.y_train[:, 0].numpy()
    assert np.all(y[labels == 3] == 1.0) and np.all(y[labels == 8] == -1.0)
    # per-feature z-scores on the training set; constant pixels are only centred
    x = ds.X_train.numpy()
    assert np.allclose(x.mean(axis=0), 0.0, atol=1e-12)
    std = x.std(axis=0)
    assert np.all(np.isclose(std, 1.0, atol=1e-12) | np.isclose(std, 0.0, atol=1e-12))
    # the test set uses the training statistics (not its own)
    assert ds.X_test.shape[1] == 64 and ds.y_test.shape[1] == 1


def test_digits_one_hot_all_classes_and_test_split_sizes():
    ds = load("digits", test_size=0.25, seed=0)
    counts = np.bincount(ds.labels_test.numpy())
    full = np.bincount(load_digits().target)
    assert counts.tolist() == [round(0.25 * c) for c in full]
    assert ds.n + len(ds.labels_test) == full.sum()
    y = ds.y_train.numpy()
    assert y.shape == (ds.n, 10) and np.all(y.sum(axis=1) == 1.0)
    assert np.all(y.argmax(axis=1) == ds.labels_train.numpy())


def test_digits_groups_give_a_scalar_target():
    ds = load("digits", classes=((0, 2, 4, 6, 8), (1, 3, 5, 7, 9)), n_per_class=10)
    assert ds.n == 100 and ds.out_dim == 1
    even = ds.labels_train.numpy() % 2 == 0
    assert np.all(ds.y_train[:, 0].numpy() == np.where(even, 1.0, -1.0))


def test_digits_one_hot_subset_order_and_images():
    ds = load("digits", classes=[7, 1, 4], n_per_class=5, flatten=False, test_size=3)
    assert ds.X_train.shape == (15, 1, 8, 8) and ds.X_test.shape == (9, 1, 8, 8)
    order = {7: 0, 1: 1, 4: 2}
    assert all(
        ds.y_train[i].argmax().item() == order[int(c)] for i, c in enumerate(ds.labels_train)
    )


def test_load_is_seeded():
    a, b = load(classes=(0, 1), n_per_class=5, seed=3), load(classes=(0, 1), n_per_class=5, seed=3)
    c = load(classes=(0, 1), n_per_class=5, seed=4)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.X_train, c.X_train)


def test_float32_dtype_and_subset():
    ds = load(classes=(0, 1), n_per_class=5, dtype=torch.float32)
    assert ds.X_train.dtype == torch.float32
    sub = ds.subset(4)
    assert torch.equal(sub.X_train, ds.X_train[:4]) and sub.n == 4
    assert ds.subset(4, seed=0).n == 4
    with pytest.raises(ValueError, match="at most"):
        ds.subset(11)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "imagenet"}, ValueError, "one of"),
        ({"name": 3}, TypeError, "string"),
        ({"classes": (0, 11)}, ValueError, "not in the data"),
        ({"classes": (0, 0)}, ValueError, "repeat"),
        ({"classes": (0,)}, ValueError, "at least two"),
        ({"classes": ("a", 1)}, TypeError, "integer"),
        ({"classes": "01"}, TypeError, "sequence"),
        ({"classes": ((0, 1), 2, 3)}, ValueError, "binary"),
        ({"classes": (0, 1), "n_per_class": 500}, ValueError, "fewer"),
        ({"classes": (0, 1), "n_per_class": 0}, ValueError, "n_per_class"),
        ({"test_size": 1.5}, ValueError, "test_size"),
        ({"test_size": -1}, ValueError, "test_size"),
        ({"test_size": "0.2"}, TypeError, "test_size"),
    ],
)
def test_load_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        load(**kwargs)


@pytest.mark.parametrize(
    "exc",
    [urllib.error.URLError("no network"), OSError("Network is unreachable"), TimeoutError()],
)
def test_openml_offline_names_digits(monkeypatch, exc):
    import sklearn.datasets

    def offline(*args, **kwargs):
        raise exc

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(DatasetUnavailableError, match="digits") as info:
        load("mnist")
    assert info.value.__cause__ is exc
    assert isinstance(info.value, OSError)


def test_openml_path_with_a_fake_download(monkeypatch):
    import sklearn.datasets

    rng = np.random.default_rng(0)
    calls = {}

    def fake(name, **kwargs):
        calls["name"], calls["kwargs"] = name, kwargs
        X = rng.integers(0, 256, size=(60, 3 * 32 * 32)).astype(float)
        y = np.array([str(i % 10) for i in range(60)], dtype=object)
        return X, y

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake)
    ds = load("cifar10", classes=(2, 5), n_per_class=4, test_size=1, flatten=False)
    assert calls["name"] == "CIFAR_10" and calls["kwargs"]["as_frame"] is False
    assert ds.X_train.shape == (8, 3, 32, 32) and ds.X_test.shape == (2, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.in_dim == 3072
    ds = load("fashion-mnist", classes=(0, 1), n_per_class=2, standardize=False, test_size=0)
    assert calls["name"] == "Fashion-MNIST"
    assert 0.0 <= float(ds.X_train.min()) and float(ds.X_train.max()) <= 1.0
    assert ds.X_test.shape[0] == 0


def test_circle_neuron_closed_form_against_the_average_over_the_circle():
    ds = synthetic("circle-neuron", n=50, d=4, seed=2, n_test=0)
    x = ds.X_train.numpy()
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    phi = (np.arange(20000) + 0.5) * 2 * np.pi / 20000  # midpoint rule, periodic: exact-ish
    b = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    brute = np.maximum(x[:, :2] @ b.T, 0.0).mean(axis=1)
    # midpoint rule on a periodic piecewise-smooth integrand: error O(h^2) ~ 1e-8
    assert np.allclose(ds.y_train[:, 0].numpy(), brute, atol=1e-7)


def test_other_synthetic_targets():
    ds = synthetic("single-neuron", n=30, d=5, seed=0, n_test=7)
    x = ds.X_train.numpy()
    assert np.allclose(ds.y_train[:, 0].numpy(), np.maximum(x[:, 0], 0))
    assert ds.X_test.shape == (7, 5) and ds.name == "synthetic:single-neuron"
    lin = synthetic("linear", n=10, d=3, seed=0)
    assert np.allclose(lin.y_train[:, 0].numpy(), lin.X_train[:, 0].numpy())
    sine = synthetic("sine", n=20, seed=0, noise=0.0)
    xs = sine.X_train[:, 0].numpy()
    assert np.all(np.abs(xs) <= 1) and np.allclose(sine.y_train[:, 0].numpy(), np.sin(np.pi * xs))
    ab = synthetic("abs", n=20, seed=0)
    assert np.allclose(ab.y_train[:, 0].numpy(), np.abs(ab.X_train[:, 0].numpy()))
    t1, t2 = synthetic("teacher", 20, d=6, seed=5), synthetic("teacher", 20, d=6, seed=5)
    assert torch.equal(t1.y_train, t2.y_train) and float(t1.y_train.min()) >= 0


def test_synthetic_noise_only_on_training_targets():
    clean = synthetic("linear", n=200, d=3, seed=1, n_test=50)
    noisy = synthetic("linear", n=200, d=3, seed=1, n_test=50, noise=0.5)
    diff = (noisy.y_train - noisy.X_train[:, :1]).numpy()
    assert 0.4 < diff.std() < 0.6  # 200 draws of N(0, 0.25): std within 20% w.h.p.
    assert np.allclose(noisy.y_test[:, 0].numpy(), noisy.X_test[:, 0].numpy())
    assert np.allclose(clean.y_train.numpy(), clean.X_train[:, :1].numpy())


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("gauss", 10), {}, "one of"),
        (("sine", 10), {"d": 2}, "one-dimensional"),
        (("circle-neuron", 10), {"d": 1}, "d >= 2"),
        (("linear", 0), {}, "n must be"),
        (("linear", 5), {"noise": -1.0}, "noise"),
    ],
)
def test_synthetic_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic(*args, **kwargs)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(1, 3))
def test_as_xy_shapes(n, k):
    X = np.ones((n, 4))
    X2, y2 = as_xy((X, np.zeros(n)))
    assert y2.shape == (n, 1) and X2.dtype == torch.float64
    _, y3 = as_xy((X, np.zeros((n, k))), dtype=torch.float32)
    assert y3.shape == (n, k) and y3.dtype == torch.float32


def test_as_xy_and_as_inputs_reject_bad_data():
    with pytest.raises(ValueError, match="NaN"):
        as_xy((np.array([[np.nan, 1.0]]), np.zeros(1)))
    with pytest.raises(ValueError, match="same number"):
        as_xy((np.ones((3, 2)), np.zeros(2)))
    with pytest.raises(TypeError, match="Dataset"):
        as_xy(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        as_xy((np.ones((3, 2)), np.zeros((3, 1, 1))))
    with pytest.raises(ValueError, match="features"):
        as_inputs(np.ones(3))
    with pytest.raises(TypeError, match="real numbers"):
        as_inputs([["a", "b"]])


def test_module_lists_its_targets():
    assert set(cdata.SYNTHETIC_TARGETS) >= {"single-neuron", "circle-neuron", "teacher"}
    assert set(cdata.OPENML_DATASETS) == {"mnist", "fashion-mnist", "cifar10"}


def test_as_xy_keeps_integer_labels_and_casts_only_floating_tensors():
    X = torch.zeros(4, 3, dtype=torch.float32)
    labels = torch.tensor([0, 2, 1, 2])
    X2, y2 = as_xy((X, labels), torch.float64)
    assert X2.dtype == torch.float64 and y2.dtype == torch.int64 and torch.equal(y2, labels)
    assert y2.shape == (4,)  # labels keep their shape
    _, y3 = as_xy((X.numpy(), labels.numpy().astype(np.int32)))
    assert y3.dtype == torch.int64 and torch.equal(y3, labels)
    _, y4 = as_xy((X, labels.float()), torch.float64)
    assert y4.dtype == torch.float64 and y4.shape == (4, 1)  # floating targets: (n, K)
    _, y5 = as_xy((X, np.ones(4, dtype=bool)))
    assert y5.dtype == X.dtype  # booleans are 0/1 floating targets, in the dtype of X
    X6, _ = as_xy((np.arange(8).reshape(4, 2), labels))
    assert X6.dtype == torch.float64  # integer inputs are cast


def test_as_xy_concatenates_a_dataloader_in_order():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (10,), generator=g)
    for data in (DataLoader(TensorDataset(X, labels), batch_size=4), TensorDataset(X, labels)):
        X2, y2 = as_xy(data)
        assert torch.equal(X2, X) and torch.equal(y2, labels)
    with pytest.raises(TypeError, match=r"data.*pairs"):
        as_xy(DataLoader(TensorDataset(X), batch_size=4))
    with pytest.raises(ValueError, match=r"data.*no batches"):
        as_xy(DataLoader(TensorDataset(X, labels), batch_size=4, sampler=[]))


def test_as_xy_and_as_inputs_move_to_a_device():
    X, y = as_xy((np.ones((3, 2)), np.zeros(3)), device="meta")
    assert X.device.type == "meta" and y.device.type == "meta"
    assert as_inputs(np.ones((2, 2)), device="meta").device.type == "meta"
    ds = synthetic("linear", n=4, d=2, n_test=0)
    X, y = as_xy(ds, device="cpu")
    assert X is ds.X_train or torch.equal(X, ds.X_train)
