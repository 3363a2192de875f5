r"""Adversarial loss of a flow as a line integral (Eqns 4, 7, 13) and its linearisation.

These functions follow the paper's analysis setting: one single-channel image flattened to
``x [d]`` (``d = H·W``, row-major), a scalar score ``f: R^d -> R`` and a *diagonal* flow
``r [d]`` with :math:`r^{(u)} = r^{(v)} = r` (each pixel moves by ``r_i`` along both axes, the
convention of Sec. 2.1 / Prop. 3). Use ``jax.vmap`` for batches.

Inputs. The analysis works with :math:`\|x\|_\infty \le 1`: ``x`` must be finite and lie in
``box``, default ``(-1, 1)`` (``None`` for any finite values); ``r`` must be finite.

Normalisation. The paper defines :math:`\ell_{adv} = (f(\tilde x) - f(x))/2` but Eqn 4 and
Algorithms 1-2 use the integral without the 1/2; we follow Eqn 4:
:math:`\ell_{adv}(x, r) = \int_0^1 \nabla (f\circ g)(zr; x)^\top r\, dz = f(g(r;x)) - f(x)`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike
from robustjax.spatial._warp import warp

__all__ = [
    "warp_diagonal",
    "warp_jacobian_diag",
    "adversarial_loss",
    "adversarial_loss_midpoint",
    "adversarial_loss_linear",
]

ScalarFn = Callable[[Array], Array]


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise ValueError(f"`shape` must be a tuple (H, W), got {shape!r}.")
    V.check_positive_int(shape[0], "shape[0]")
    V.check_positive_int(shape[1], "shape[1]")
    return shape


Box = tuple[float, float] | None
_BOX = (-1.0, 1.0)


def _check_vec(a: Array, name: str, d: int) -> None:
    if jnp.ndim(a) != 1 or jnp.shape(a)[0] != d:
        raise ValueError(f"`{name}` must have shape ({d},) (flattened H*W), got {jnp.shape(a)}.")
    if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
        raise ValueError(f"`{name}` must have a floating dtype, got {jnp.result_type(a)}.")


def _check_x(x, box: Box, d: int) -> Array:
    """The flattened image ``x [d]``: floating, finite and inside ``box``."""
    _check_vec(x, "x", d)
    V.check_images(x, "x", rank=1, box=box)
    return jnp.asarray(x)


def _warp_diagonal(x: Array, r: Array, h: int, w: int) -> Array:
    flow = jnp.stack([r, r], axis=-1).reshape(1, h, w, 2)
    return warp(x.reshape(1, h, w, 1), flow, box=None).reshape(-1)


def warp_diagonal(x: ArrayLike, r: ArrayLike, *, shape: tuple[int, int], box: Box = _BOX) -> Array:
    r""":math:`g(r; x)`: warp a flattened image by the diagonal flow :math:`(\Delta u, \Delta v)
    = (r_i, r_i)` (Eqn 1). ``x, r: [d]`` -> ``[d]``; ``x`` in ``box`` (default ``(-1, 1)``,
    ``None``: any finite values), ``r`` finite. Cost ``O(d)``."""
    h, w = _check_shape(shape)
    x = _check_x(x, box, h * w)
    r = jnp.asarray(r)
    _check_vec(r, "r", h * w)
    V.check_finite(r, "r")
    return _warp_diagonal(x, r, h, w)


def warp_jacobian_diag(x: ArrayLike, r: ArrayLike, *, shape: tuple[int, int],
                       box: Box = _BOX) -> Array:
    r"""Diagonal of the Jacobian :math:`\mathrm{D}g(r; x)` (Sec. 2.2), ``[d]``.

    :math:`\tilde x_i` depends on :math:`r_i` only, so :math:`\mathrm{D}g` is diagonal; its
    diagonal is one forward-mode product with a ones tangent. Derivative convention as in
    :func:`robustjax.spatial.warp` (right derivative on the grid; at ``r = 0`` this is
    ``x[i+1, j] + x[i, j+1] - 2 x[i, j]``, not the ``diag(x)`` the paper uses for
    :math:`\tilde\ell_{adv}`). Linear in ``x``. ``box`` as in :func:`warp_diagonal`.
    Cost ``O(d)``.
    """
    h, w = _check_shape(shape)
    x = _check_x(x, box, h * w)
    r = jnp.asarray(r)
    _check_vec(r, "r", h * w)
    V.check_finite(r, "r")
    return jax.jvp(lambda rr: _warp_diagonal(x, rr, h, w), (r,), (jnp.ones_like(r),))[1]


def adversarial_loss(f: ScalarFn, x: ArrayLike, r: ArrayLike, *, shape: tuple[int, int],
                     box: Box = _BOX) -> Array:
    r"""Exact adversarial loss :math:`\ell_{adv}(x, r) = f(g(r; x)) - f(x)` (Eqn 4 integrated).

    Args:
      f: scalar score of a flattened image, ``[d] -> []``.
      x: ``[d]`` flattened image in ``box``; r: ``[d]`` diagonal flow; shape: ``(H, W)``.
      box: see :func:`warp_diagonal`.

    Returns: scalar. Cost: two evaluations of ``f`` plus one warp.
    """
    return f(warp_diagonal(x, r, shape=shape, box=box)) - f(jnp.asarray(x))


def adversarial_loss_midpoint(
    f: ScalarFn, x: ArrayLike, r: ArrayLike, *, shape: tuple[int, int], num_points: int = 8,
    box: Box = _BOX,
) -> Array:
    r"""Midpoint-rule approximation of the line integral (Eqns 7, 13).

    .. math:: \ell_{adv}(x, r) \approx \frac1n \sum_{i=1}^n
        \nabla f(g(r^{(i)}; x))^\top \mathrm{D}g(r^{(i)}; x)\, r,
        \qquad r^{(i)} = \tfrac{2i - 1}{2n} r

    For the one-hidden-layer network :math:`\nabla f = W^\top \mathrm{diag}(v)\nabla\sigma` this
    is Eqn 7; for a linear one it is Eqn 13. Converges to :func:`adversarial_loss` as
    ``num_points`` grows (error ``O(1/n^2)`` on smooth pieces).

    Args:
      f: scalar score ``[d] -> []``; x, r: ``[d]``; shape: ``(H, W)``;
      num_points: ``n``, number of sub-intervals; box: see :func:`warp_diagonal`.

    Returns: scalar. Cost: ``n`` forward-mode products (``jvp``) of ``f∘g``, ``O(n·fwd)``.
    """
    V.check_positive_int(num_points, "num_points")
    h, w = _check_shape(shape)
    x = _check_x(x, box, h * w)
    r = jnp.asarray(r)
    _check_vec(r, "r", h * w)
    V.check_finite(r, "r")
    fg = lambda rr: f(_warp_diagonal(x, rr, h, w))  # noqa: E731
    zs = (2.0 * jnp.arange(1, num_points + 1) - 1.0) / (2.0 * num_points)
    # d/dz f(g(z r)) = grad(f∘g)(z r) . r  (D g is diagonal, so this is Eqn 7's integrand)
    integrand = jax.vmap(lambda z: jax.jvp(fg, (z * r,), (r,))[1])(zs.astype(r.dtype))
    return jnp.mean(integrand)


def adversarial_loss_linear(f: ScalarFn, x: ArrayLike, r: ArrayLike, *, box: Box = _BOX) -> Array:
    r"""The paper's linear approximation :math:`\tilde\ell_{adv}(x, r) = \nabla f(x)^\top
    \mathrm{diag}(x)\, r` (Sec. 3.1; appendix 6.4 with
    :math:`\mathrm{D}g(0; x) = \mathrm{diag}(x)`).

    For :math:`f(x) = v^\top\sigma(Wx)` this is :math:`\nabla\sigma(Wx)^\top \mathrm{diag}(v) W
    \mathrm{diag}(x) r`, the quantity bounded by Theorem 1 (Theorem 2 for :math:`f = v^\top x`).
    We keep the paper's :math:`\mathrm{D}g(0; x) = \mathrm{diag}(x)` as a definition (it is what
    Theorems 1-2 are stated for), although the derivative of the warp at ``r = 0`` differs (see
    :func:`warp_jacobian_diag`). ``x, r: [d]``, ``x`` in ``box`` (see :func:`warp_diagonal`).
    Returns a scalar; cost one gradient of ``f``.
    """
    x = _check_x(x, box, jnp.shape(x)[0] if jnp.ndim(x) == 1 else -1)
    r = jnp.asarray(r)
    _check_vec(r, "r", x.shape[0])
    V.check_finite(r, "r")
    return jnp.vdot(jax.grad(f)(x), x * r)
