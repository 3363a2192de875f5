"""Tests of robustjax.data batching, splitting and synthetic data."""

import jax
import numpy as np
import pytest

from robustjax import data


def _ds(n=23):
    images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)
    return data.Dataset(images / n, np.arange(n, dtype=np.int32) % 10)


def _order(key, ds, **kw):
    return np.concatenate([b["label"] for b in data.batches(key, ds, **kw)])


def test_batches_shapes_and_pairing():
    ds = _ds()
    out = list(data.batches(jax.random.key(0), ds, batch_size=5))
    assert len(out) == 4 == data.num_batches(ds, batch_size=5)
    for b in out:
        assert set(b) == {"image", "label"}
        assert b["image"].shape == (5, 2, 2, 1) and b["label"].shape == (5,)
        assert isinstance(b["image"], np.ndarray) and b["image"].dtype == np.float32
        # each image still belongs to its own label
        idx = np.rint(b["image"][:, 0, 0, 0] * 23).astype(int)
        np.testing.assert_array_equal(idx % 10, b["label"])


def test_batches_deterministic_by_key():
    ds = _ds(50)
    big = data.Dataset(ds.images, np.arange(50, dtype=np.int32))
    a = _order(jax.random.key(3), big, batch_size=10)
    b = _order(jax.random.key(3), big, batch_size=10)
    c = _order(jax.random.key(4), big, batch_size=10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.sort(a), np.arange(50))  # a permutation, no repeats
    np.testing.assert_array_equal(a, np.asarray(jax.random.permutation(jax.random.key(3), 50)))
    plain = _order(None, big, batch_size=10, shuffle=False)
    np.testing.assert_array_equal(plain, np.arange(50))


def test_drop_remainder():
    ds = _ds(23)
    kept = list(data.batches(jax.random.key(0), ds, batch_size=5, drop_remainder=False))
    assert [len(b["label"]) for b in kept] == [5, 5, 5, 5, 3]
    assert data.num_batches(ds, batch_size=5, drop_remainder=False) == 5
    assert data.num_batches(23, batch_size=5) == 4
    labels = np.concatenate([b["image"][:, 0, 0, 0] for b in kept])
    assert len(np.unique(labels)) == 23
    dropped = list(data.batches(jax.random.key(0), ds, batch_size=5))
    assert sum(len(b["label"]) for b in dropped) == 20


@pytest.mark.parametrize("kwargs, arg", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(batch_size=100), "batch_size"),
    (dict(batch_size=4, key=None), "key"),
])
def test_batches_bad_arguments(kwargs, arg):
    key = kwargs.pop("key", jax.random.key(0))
    with pytest.raises(ValueError, match=f"`{arg}`"):
        data.batches(key, _ds(), **kwargs)


def test_batches_bad_dataset():
    with pytest.raises(ValueError, match="`ds`"):
        data.batches(jax.random.key(0), (np.zeros((4, 2, 2, 1)), np.zeros(3, np.int32)),
                     batch_size=2)


def test_split_and_train_test_split():
    ds = _ds(20)
    a, b = data.split(ds, 7)
    assert a.num_examples == 7 and b.num_examples == 13
    np.testing.assert_array_equal(np.concatenate([a.images, b.images]), ds.images)
    with pytest.raises(ValueError, match="`n_first`"):
        data.split(ds, 21)
    tr, te = data.train_test_split(jax.random.key(1), ds, test_size=0.25)
    assert tr.num_examples == 15 and te.num_examples == 5
    ids = np.concatenate([tr.images[:, 0, 0, 0], te.images[:, 0, 0, 0]])
    np.testing.assert_allclose(np.sort(ids), ds.images[:, 0, 0, 0])
    tr2, te2 = data.train_test_split(jax.random.key(1), ds, test_size=5)
    np.testing.assert_array_equal(te.images, te2.images)
    with pytest.raises(ValueError, match="`test_size`"):
        data.train_test_split(jax.random.key(1), ds, test_size=20)


def test_synthetic():
    ds = data.synthetic(jax.random.key(0), 64)
    assert ds.images.shape == (64, 32, 32, 3) and ds.images.dtype == np.float32
    assert ds.labels.shape == (64,) and ds.labels.dtype == np.int32
    assert ds.images.min() >= 0 and ds.images.max() <= 1 and ds.labels.max() < 10
    again = data.synthetic(jax.random.key(0), 64)
    np.testing.assert_array_equal(ds.images, again.images)
    other = data.synthetic(jax.random.key(1), 64)
    assert not np.array_equal(ds.images, other.images)
    small = data.synthetic(jax.random.key(2), 40, shape=(8, 8, 1), num_classes=3)
    assert small.images.shape == (40, 8, 8, 1) and set(small.labels) <= {0, 1, 2}
    # classes are separable: nearest class mean recovers the label
    cent = np.stack([small.images[small.labels == c].mean(0) for c in range(3)])
    pred = ((small.images[:, None] - cent[None]) ** 2).sum((2, 3, 4)).argmin(1)
    assert (pred == small.labels).mean() > 0.95
    with pytest.raises(ValueError, match="`n`"):
        data.synthetic(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="`shape`"):
        data.synthetic(jax.random.key(0), 4, shape=(0, 3))
