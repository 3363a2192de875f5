"""Argument validation that raises ``ValueError`` naming the argument.

Shape, rank, dtype and hyperparameter checks run at trace time (they only read static
information). Value checks (NaN, labels out of range, values outside ``[0, 1]``) run only when the
array is concrete, i.e. outside ``jit``; inside ``jit`` they are the caller's duty, as documented
in each public function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "check_rank",
    "check_images",
    "check_labels",
    "check_batch_match",
    "check_finite",
    "check_nonnegative",
    "check_positive",
    "check_positive_int",
    "check_nonnegative_int",
    "check_probability",
    "check_choice",
    "check_key",
]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds concrete values (not a tracer under ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def check_rank(x: Any, name: str, rank: int | Iterable[int]) -> None:
    """Raise unless ``x`` has one of the given ranks."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    ndim = jnp.ndim(x)
    if ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"`{name}` must have rank {want}, got shape {tuple(jnp.shape(x))} (rank {ndim})."
        )


def check_finite(x: Any, name: str) -> None:
    """Raise if a concrete ``x`` contains NaN or infinity (no-op under tracing)."""
    if is_concrete(x):
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"`{name}` contains {bad} non-finite value(s) (NaN or inf).")


def check_images(
    x: Any,
    name: str = "x",
    *,
    rank: int | Iterable[int] = 4,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """Check an image batch: floating dtype, given rank, finite and inside ``box`` when concrete.

    Args:
      x: images, ``[N, H, W, C]`` by default.
      name: argument name used in the error message.
      rank: accepted rank(s).
      box: value range checked on concrete inputs (``None`` skips it).
    """
    check_rank(x, name, rank)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`{name}` must have a floating dtype, got {dtype}.")
    check_finite(x, name)
    if box is not None and is_concrete(x):
        arr = np.asarray(x)
        lo, hi = box
        tol = 1e-5
        if arr.size and (arr.min() < lo - tol or arr.max() > hi + tol):
            raise ValueError(
                f"`{name}` must lie in [{lo}, {hi}], got values in "
                f"[{float(arr.min()):.4g}, {float(arr.max()):.4g}]."
            )


def check_labels(
    y: Any, name: str = "y", *, batch_size: int | None = None, num_classes: int | None = None
) -> None:
    """Check integer labels ``[N]``; range-checked against ``num_classes`` when concrete."""
    check_rank(y, name, 1)
    dtype = jnp.result_type(y)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"`{name}` must have an integer dtype, got {dtype}.")
    if batch_size is not None and jnp.shape(y)[0] != batch_size:
        raise ValueError(
            f"`{name}` must have {batch_size} entries (one per example), got {jnp.shape(y)[0]}."
        )
    if num_classes is not None and is_concrete(y):
        arr = np.asarray(y)
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"`{name}` must be in [0, {num_classes - 1}], got values in "
                f"[{int(arr.min())}, {int(arr.max())}]."
            )


def check_batch_match(a: Any, a_name: str, b: Any, b_name: str) -> None:
    """Raise unless ``a`` and ``b`` share their leading (batch) dimension."""
    if jnp.shape(a)[:1] != jnp.shape(b)[:1]:
        raise ValueError(
            f"`{a_name}` and `{b_name}` must have the same batch size, got "
            f"{jnp.shape(a)[:1]} and {jnp.shape(b)[:1]}."
        )


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"`{name}` must be a static Python number, got a traced value.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
    if math.isnan(v):
        raise ValueError(f"`{name}` must not be NaN.")
    return v


def check_nonnegative(value: Any, name: str) -> None:
    """Raise unless ``value`` is a number ``>= 0``."""
    if _check_number(value, name) < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}.")


def check_positive(value: Any, name: str) -> None:
    """Raise unless ``value`` is a number ``> 0``."""
    if _check_number(value, name) <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value}.")


def check_positive_int(value: Any, name: str) -> None:
    """Raise unless ``value`` is an integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")


def check_nonnegative_int(value: Any, name: str) -> None:
    """Raise unless ``value`` is an integer ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")


def check_probability(value: Any, name: str, *, closed: bool = True) -> None:
    """Raise unless ``value`` is in ``[0, 1]`` (``(0, 1)`` when ``closed=False``)."""
    v = _check_number(value, name)
    ok = (0.0 <= v <= 1.0) if closed else (0.0 < v < 1.0)
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"`{name}` must be in {interval}, got {value}.")


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def check_key(key: Any, name: str = "key") -> None:
    """Raise unless ``key`` is a JAX PRNG key (new-style typed key or legacy ``uint32[2]``)."""
    if isinstance(key, jax.Array) or isinstance(key, jax.core.Tracer):
        dtype = key.dtype
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return
        if dtype == jnp.uint32 and key.shape[-1:] == (2,):
            return
    raise ValueError(
        f"`{name}` must be a JAX PRNG key (e.g. jax.random.key(0)), got {type(key).__name__}"
        f"{getattr(key, 'shape', '')}."
    )
