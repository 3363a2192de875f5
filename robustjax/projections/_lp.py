"""Projections onto ℓ∞ / ℓ2 balls and the image box, and random starts in a ball.

All functions act per example on ``[N, ...]`` arrays: norms are taken over every axis but the
first. Cost: ``O(size of x)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, PRNGKey

__all__ = [
    "NORMS",
    "per_example_norm",
    "clip_box",
    "project_linf",
    "project_l2",
    "project",
    "random_in_ball",
    "random_start",
]

NORMS = ("linf", "l2")
_TINY = 1e-12


def _bcast(v: Array, like: Array) -> Array:
    return jnp.reshape(v, v.shape + (1,) * (like.ndim - v.ndim))


def per_example_norm(x: ArrayLike, *, norm: str) -> Array:
    """ℓ∞ or ℓ2 norm of each example of ``x [N, ...]``; returns ``[N]``."""
    V.check_choice(norm, "norm", NORMS)
    x = jnp.asarray(x)
    flat = jnp.reshape(x, (x.shape[0], -1))
    if norm == "linf":
        return jnp.max(jnp.abs(flat), axis=-1)
    return jnp.sqrt(jnp.sum(flat * flat, axis=-1))


def clip_box(x: ArrayLike, lo: float = 0.0, hi: float = 1.0) -> Array:
    """Clip to the box ``[lo, hi]`` (the image domain by default)."""
    return jnp.clip(x, lo, hi)


def project_linf(x: ArrayLike, x_orig: ArrayLike, eps: float | ArrayLike) -> Array:
    r"""Project ``x`` onto :math:`\{x' : \|x' - x_{orig}\|_\infty \le \epsilon\}` (per example).

    ``eps`` is a scalar or a per-example ``[N]`` array.
    """
    x, x_orig = jnp.asarray(x), jnp.asarray(x_orig)
    eps = jnp.asarray(eps, x.dtype)
    if eps.ndim:
        eps = _bcast(eps, x)
    return x_orig + jnp.clip(x - x_orig, -eps, eps)


def project_l2(x: ArrayLike, x_orig: ArrayLike, eps: float | ArrayLike) -> Array:
    r"""Project ``x`` onto :math:`\{x' : \|x' - x_{orig}\|_2 \le \epsilon\}` (per example)."""
    x, x_orig = jnp.asarray(x), jnp.asarray(x_orig)
    delta = x - x_orig
    n = per_example_norm(delta, norm="l2")
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), n.shape)
    scale = jnp.minimum(1.0, eps / jnp.maximum(n, _TINY))
    return x_orig + delta * _bcast(scale, delta)


def project(
    x: ArrayLike,
    x_orig: ArrayLike,
    *,
    eps: float | ArrayLike,
    norm: str = "linf",
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    """Project onto the ε-ball around ``x_orig`` intersected with ``box``.

    For ℓ∞ the intersection of a ball and a box is a box, so clipping after projecting is the
    exact Euclidean projection. For ℓ2 the composition ball→box is feasible (the box clip only
    moves each coordinate towards ``x_orig``, which lies in the box, and so cannot increase the
    distance to it) but is not the exact Euclidean projection onto the intersection; this is the
    standard choice in PGD.
    """
    V.check_choice(norm, "norm", NORMS)
    if not isinstance(eps, jax.Array):
        V.check_nonnegative(eps, "eps")
    out = project_linf(x, x_orig, eps) if norm == "linf" else project_l2(x, x_orig, eps)
    if box is not None:
        out = clip_box(out, *box)
    return out


def random_in_ball(key: PRNGKey, shape: tuple[int, ...], *, eps: float | ArrayLike,
                   norm: str = "linf", dtype=jnp.float32) -> Array:
    """Sample perturbations uniformly from the ε-ball, one per example of ``shape = (N, ...)``.

    ℓ∞: i.i.d. uniform in ``[-eps, eps]``. ℓ2: uniform in the ball's volume — a Gaussian
    direction normalised, times radius ``eps * u**(1/d)`` with ``d = prod(shape[1:])``.
    """
    V.check_choice(norm, "norm", NORMS)
    if not isinstance(eps, jax.Array):
        V.check_nonnegative(eps, "eps")
    eps_arr = jnp.asarray(eps, dtype)
    if norm == "linf":
        u = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
        return u * (_bcast(eps_arr, u) if eps_arr.ndim else eps_arr)
    kd, kr = jax.random.split(key)
    g = jax.random.normal(kd, shape, dtype)
    g = g / _bcast(jnp.maximum(per_example_norm(g, norm="l2"), _TINY), g)
    d = 1
    for s in shape[1:]:
        d *= s
    r = jax.random.uniform(kr, (shape[0],), dtype) ** (1.0 / d)
    r = r * jnp.broadcast_to(eps_arr, r.shape)
    return g * _bcast(r, g)


def random_start(key: PRNGKey, x_orig: ArrayLike, *, eps: float | ArrayLike,
                 norm: str = "linf", box: tuple[float, float] | None = (0.0, 1.0)) -> Array:
    """``x_orig`` plus a uniform random point of the ε-ball, clipped to ``box``."""
    x_orig = jnp.asarray(x_orig)
    delta = random_in_ball(key, x_orig.shape, eps=eps, norm=norm, dtype=x_orig.dtype)
    out = x_orig + delta
    return clip_box(out, *box) if box is not None else out
