"""Argument validation that raises ``ValueError`` naming the argument.

Shape, rank, dtype, layout and static-hyperparameter checks run at trace time (they only read
static information) and raise ``ValueError`` at once. Value checks (NaN, labels out of range,
pixels outside the box, a negative traced hyperparameter) run eagerly when the array is concrete;
on a traced array they become :func:`jax.experimental.checkify.debug_check` calls, which compile
away in a plain ``jax.jit`` and raise the same message as a ``ValueError``
(``checkify.JaxRuntimeError``) when the function runs under :func:`checked` (or the user's own
``checkify.checkify(...)`` followed by ``err.throw()``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = [
    "checked",
    "is_concrete",
    "traced_check",
    "check_rank",
    "check_images",
    "check_labels",
    "check_batch_match",
    "check_finite",
    "check_nonnegative",
    "check_nonnegative_value",
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


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def traced_check(pred: Any, message: str, **values: Any) -> None:
    """A value check on traced arrays: a no-op under plain ``jit``, an error under :func:`checked`.

    ``message`` is formatted with ``values`` (``str.format`` fields) when the check fails.
    """
    checkify.debug_check(jnp.all(pred), message, **values)


def checked(fn: Any, **jit_kwargs: Any) -> Any:
    """Run ``fn`` with robustjax's value checks active under tracing (the checked mode).

    Returns ``jax.jit(checkify.checkify(fn))`` wrapped to raise on the first failed check: a
    ``ValueError`` (``jax.experimental.checkify.JaxRuntimeError``) with the same message the eager
    check gives, naming the argument (labels out of range, NaN, pixels outside the box, a negative
    traced ε, ...). Trace-time errors (shapes, layout, dtypes, static hyperparameters) raise as
    usual. Cost: the checks' reductions (one pass over each checked input) plus one host
    transfer of the error state per call.

    Args:
      fn: any function of arrays that calls robustjax (it may already be jitted).
      **jit_kwargs: forwarded to :func:`jax.jit` (e.g. ``static_argnames``).

    Example::

        safe = robustjax.checked(lambda k, x, y: attacks.pgd(logits_fn, k, x, y, eps=0.3))
        x_adv = safe(key, x, y)
    """
    if not callable(fn):
        raise ValueError(f"`fn` must be callable, got {type(fn).__name__}.")
    inner = jax.jit(checkify.checkify(fn, errors=checkify.user_checks), **jit_kwargs)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        err, out = inner(*args, **kwargs)
        err.throw()
        return out

    return wrapper


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
    elif jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        finite = jnp.isfinite(x)
        traced_check(
            finite,
            _escape(f"`{name}` contains ") + "{bad}" + " non-finite value(s) (NaN or inf).",
            bad=jnp.sum(~finite),
        )


def check_images(
    x: Any,
    name: str = "x",
    *,
    rank: int | Iterable[int] = 4,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """Check an image batch: floating dtype, rank, NHWC layout, non-empty, finite, inside ``box``.

    Args:
      x: images, ``[N, H, W, C]`` by default (``[H, W, C]`` for per-example functions).
      name: argument name used in the error message.
      rank: accepted rank(s). For rank 4 (and rank 3) the layout is checked: a channel count
        larger than the height or the width is refused as not NHWC (e.g. NCHW input).
      box: value range (``None`` skips it). Checked eagerly on concrete input, in the checked
        mode (:func:`checked`) on traced input.
    """
    check_rank(x, name, rank)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`{name}` must have a floating dtype, got {dtype}.")
    shape = tuple(jnp.shape(x))
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if len(shape) == 4 or (len(shape) == 3 and 4 not in ranks):
        h, w, c = shape[-3:]
        if c > h or c > w:
            raise ValueError(
                f"`{name}` must be NHWC (channels last), got shape {shape}: its channel count "
                f"{c} is larger than its height {h} or width {w} (NCHW input? transpose it "
                "with x.transpose(0, 2, 3, 1))."
            )
    if len(shape) == 4 and shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {shape}).")
    check_finite(x, name)
    if box is not None:
        lo, hi = box
        tol = 1e-5
        if is_concrete(x):
            arr = np.asarray(x)
            if arr.size and (arr.min() < lo - tol or arr.max() > hi + tol):
                raise ValueError(
                    f"`{name}` must lie in [{lo}, {hi}], got values in "
                    f"[{float(arr.min()):.4g}, {float(arr.max()):.4g}]."
                )
        elif shape and all(shape):
            traced_check(
                (jnp.min(x) >= lo - tol) & (jnp.max(x) <= hi + tol),
                _escape(f"`{name}` must lie in [{lo}, {hi}], got values in [")
                + "{lo}, {hi}].",
                lo=jnp.min(x),
                hi=jnp.max(x),
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
    elif num_classes is not None and jnp.size(y):
        traced_check(
            (jnp.min(y) >= 0) & (jnp.max(y) < num_classes),
            _escape(f"`{name}` must be in [0, {num_classes - 1}], got values in [")
            + "{lo}, {hi}].",
            lo=jnp.min(y),
            hi=jnp.max(y),
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
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {np.shape(value)}.")
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


def check_nonnegative_value(value: Any, name: str, *, scalar: bool = True) -> None:
    """A hyperparameter users sweep (ε, τ, κ, a TV weight): a number or a JAX/NumPy array
    (``scalar=False`` allows any shape, e.g. per-example ε), ``>= 0`` and not NaN.

    Concrete values are checked at once; traced values (``jax.vmap`` over ε, a jitted ε ramp)
    in the checked mode (:func:`checked`).
    """
    if isinstance(value, (jax.Array, np.ndarray)):
        if scalar and np.ndim(value) != 0:
            raise ValueError(f"`{name}` must be a scalar, got shape {np.shape(value)}.")
        if not jnp.issubdtype(jnp.result_type(value), jnp.number) or jnp.issubdtype(
            jnp.result_type(value), jnp.complexfloating
        ):
            raise ValueError(f"`{name}` must be real, got dtype {jnp.result_type(value)}.")
        if is_concrete(value):
            arr = np.asarray(value)
            if np.any(np.isnan(arr)):
                raise ValueError(f"`{name}` must not be NaN.")
            if np.any(arr < 0):
                raise ValueError(f"`{name}` must be >= 0, got {arr.min() if arr.ndim else arr}.")
        else:
            traced_check(
                jnp.all(value >= 0),  # False for NaN too
                _escape(f"`{name}` must be >= 0 and not NaN, got ") + "{v}.",
                v=jnp.min(value),
            )
        return
    check_nonnegative(value, name)


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
