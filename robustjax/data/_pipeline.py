"""Batching, splitting and synthetic data for in-memory :class:`Dataset` s."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from robustjax._src import validation
from robustjax._src.types import PRNGKey
from robustjax.data._datasets import Dataset

__all__ = ["synthetic", "batches", "num_batches", "split", "train_test_split", "subset"]


# Host-side helpers run once per configuration: compile them without XLA's expensive passes
# (threefry kernels otherwise take seconds to compile on CPU). Integer/bit-exact results.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_CACHE: dict = {}


def _run_compiled(cache_key, fn, *args):
    compiled = _CACHE.get(cache_key)
    if compiled is None:
        lowered = jax.jit(fn).lower(*args)
        try:
            compiled = lowered.compile(compiler_options=_FAST_COMPILE)
        except Exception:  # pylint: disable=broad-except  # backend without these options
            compiled = lowered.compile()
        if len(_CACHE) >= 64:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[cache_key] = compiled
    return compiled(*args)


def _key_sig(key):
    return (tuple(key.shape), str(key.dtype))


def _as_dataset(ds: Any, name: str = "ds") -> Dataset:
    if isinstance(ds, Dataset):
        return ds
    if isinstance(ds, (tuple, list)) and len(ds) == 2:
        return Dataset(np.asarray(ds[0]), np.asarray(ds[1]))
    raise ValueError(f"`{name}` must be a Dataset (images, labels), got {type(ds).__name__}.")


def _check_dataset(ds: Dataset, name: str = "ds") -> None:
    if np.ndim(ds.images) < 2 or np.ndim(ds.labels) != 1:
        raise ValueError(
            f"`{name}` must hold images [N, ...] and labels [N], got shapes "
            f"{np.shape(ds.images)} and {np.shape(ds.labels)}."
        )
    if np.shape(ds.images)[0] != np.shape(ds.labels)[0]:
        raise ValueError(
            f"`{name}` images and labels must have the same length, got "
            f"{np.shape(ds.images)[0]} and {np.shape(ds.labels)[0]}."
        )


def synthetic(
    key: PRNGKey,
    n: int,
    *,
    shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    noise: float = 0.15,
) -> Dataset:
    """Synthetic labelled images for tests about mechanics (shapes, plumbing), not learning.

    Each class ``k`` has a random template ``t_k ~ U[0.2, 0.8]^shape``; example ``i`` is
    ``clip(t_{y_i} + noise · ε_i, 0, 1)`` with ``ε_i ~ N(0, I)`` and labels drawn uniformly, so
    the task is learnable (classes are separated) yet has no real-world meaning.

    Args:
      key: PRNG key; same key, same data.
      n: number of examples.
      shape: image shape ``(H, W, C)`` (default CIFAR-like ``(32, 32, 3)``).
      num_classes: number of classes ``K``.
      noise: standard deviation of the per-pixel Gaussian noise.

    Returns:
      A :class:`Dataset` with ``images float32 [n, *shape]`` in ``[0, 1]`` and
      ``labels int32 [n]`` in ``[0, K)``.

    Cost: O(n · prod(shape)) on the default device, one transfer to host.
    """
    validation.check_key(key)
    validation.check_positive_int(n, "n")
    validation.check_positive_int(num_classes, "num_classes")
    validation.check_nonnegative(noise, "noise")
    shape = tuple(shape)
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
    ):
        raise ValueError(f"`shape` must be a tuple of positive integers, got {shape!r}.")
    noise = float(noise)

    def make(key):
        k_t, k_y, k_e = jax.random.split(key, 3)
        templates = jax.random.uniform(k_t, (num_classes, *shape), minval=0.2, maxval=0.8)
        labels = jax.random.randint(k_y, (n,), 0, num_classes, dtype=jnp.int32)
        eps = jax.random.normal(k_e, (n, *shape))
        return jnp.clip(templates[labels] + noise * eps, 0.0, 1.0), labels

    if not validation.is_concrete(key):
        images, labels = make(key)
    else:
        images, labels = _run_compiled(
            ("synthetic", n, shape, num_classes, noise, _key_sig(key)), make, key)
    return Dataset(np.asarray(images, np.float32), np.asarray(labels, np.int32))


def num_batches(ds: Any, *, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches :func:`batches` yields for ``ds``.

    Args:
      ds: a :class:`Dataset` (or an ``(images, labels)`` pair), or the number of examples ``N``.
      batch_size: examples per batch.
      drop_remainder: whether the last, smaller batch is dropped.

    Returns:
      ``N // batch_size`` if ``drop_remainder`` else ``ceil(N / batch_size)``.
    """
    validation.check_positive_int(batch_size, "batch_size")
    if isinstance(ds, (int, np.integer)) and not isinstance(ds, bool):
        n = int(ds)
    else:
        n = int(np.shape(_as_dataset(ds).labels)[0])
    return n // batch_size if drop_remainder else -(-n // batch_size)


def _permutation(key: PRNGKey, n: int) -> np.ndarray:
    """``jax.random.permutation(key, n)`` on the host (bit-identical, compiled once per n)."""
    return np.asarray(_run_compiled(("perm", n, _key_sig(key)),
                                    lambda k: jax.random.permutation(k, n), key))


def batches(
    key: PRNGKey | None,
    ds: Any,
    *,
    batch_size: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields one epoch of mini-batches, shuffled deterministically by ``key``.

    The order is ``jax.random.permutation(key, N)`` (host NumPy indexing afterwards), so the same
    key gives the same order on every platform; use ``jax.random.fold_in(key, epoch)`` for a new
    order each epoch.

    Args:
      key: PRNG key for the shuffle (may be ``None`` when ``shuffle=False``).
      ds: a :class:`Dataset` or an ``(images, labels)`` pair with ``N`` examples.
      batch_size: examples per batch.
      shuffle: shuffle the order (else the dataset order).
      drop_remainder: drop the last batch if it has fewer than ``batch_size`` examples.

    Yields:
      ``{"image": images[idx], "label": labels[idx]}`` NumPy arrays with leading dimension
      ``batch_size`` (the last may be smaller when ``drop_remainder=False``);
      :func:`num_batches` of them.

    Raises:
      ValueError: ``batch_size`` is not a positive integer, or exceeds ``N`` while
        ``drop_remainder=True`` (the epoch would be empty); ``key`` is not a PRNG key while
        ``shuffle=True``; ``ds`` is malformed.

    Cost: one permutation of ``N`` indices per call, then one gather per batch.
    """
    ds = _as_dataset(ds)
    _check_dataset(ds)
    validation.check_positive_int(batch_size, "batch_size")
    n = int(ds.labels.shape[0])
    if drop_remainder and batch_size > n:
        raise ValueError(
            f"`batch_size` ({batch_size}) exceeds the number of examples ({n}) with "
            "drop_remainder=True: the epoch would be empty."
        )
    if shuffle:
        validation.check_key(key)
        order = _permutation(key, n)
    else:
        order = np.arange(n)
    return _iterate(ds, order, batch_size, num_batches(n, batch_size=batch_size,
                                                      drop_remainder=drop_remainder))


def _iterate(ds: Dataset, order: np.ndarray, batch_size: int, count: int):
    for b in range(count):
        idx = order[b * batch_size:(b + 1) * batch_size]
        yield {"image": ds.images[idx], "label": ds.labels[idx]}


def split(ds: Any, n_first: int) -> tuple[Dataset, Dataset]:
    """Splits ``ds`` into its first ``n_first`` examples and the rest (no shuffling).

    Args:
      ds: a :class:`Dataset` with ``N`` examples.
      n_first: size of the first part, ``0 <= n_first <= N``.

    Returns:
      ``(ds[:n_first], ds[n_first:])`` as two :class:`Dataset` s.
    """
    ds = _as_dataset(ds)
    _check_dataset(ds)
    validation.check_nonnegative_int(n_first, "n_first")
    n = int(ds.labels.shape[0])
    if n_first > n:
        raise ValueError(f"`n_first` must be <= the number of examples ({n}), got {n_first}.")
    return (Dataset(ds.images[:n_first], ds.labels[:n_first]),
            Dataset(ds.images[n_first:], ds.labels[n_first:]))


def subset(ds: Any, indices: Any) -> Dataset:
    """The examples of ``ds`` at ``indices`` (an int array or slice)."""
    ds = _as_dataset(ds)
    if not isinstance(indices, slice):
        indices = np.asarray(indices)
    return Dataset(ds.images[indices], ds.labels[indices])


def train_test_split(
    key: PRNGKey, ds: Any, *, test_size: int | float
) -> tuple[Dataset, Dataset]:
    """Randomly splits ``ds`` into a training and a held-out part.

    Args:
      key: PRNG key for the permutation; same key, same split.
      ds: a :class:`Dataset` with ``N`` examples.
      test_size: number of held-out examples (int, ``0 < test_size < N``) or their fraction
        (float in ``(0, 1)``, rounded to the nearest integer, at least 1).

    Returns:
      ``(train, test)`` :class:`Dataset` s of ``N - n_test`` and ``n_test`` examples, disjoint,
      together a permutation of ``ds``.
    """
    validation.check_key(key)
    ds = _as_dataset(ds)
    _check_dataset(ds)
    n = int(ds.labels.shape[0])
    if isinstance(test_size, float):
        validation.check_probability(test_size, "test_size", closed=False)
        n_test = max(1, int(round(test_size * n)))
    else:
        validation.check_positive_int(test_size, "test_size")
        n_test = int(test_size)
    if n_test >= n:
        raise ValueError(f"`test_size` must leave at least one training example (N={n}), "
                         f"got {test_size}.")
    order = _permutation(key, n)
    return subset(ds, order[n_test:]), subset(ds, order[:n_test])
