"""Bilinear flow warping (Eqn 1 of the spatial-robustness paper; Xiao et al. 2018, Eqn 1).

Flow convention (used everywhere in :mod:`robustjax.spatial`): ``flow[..., 0]`` is the
**horizontal** displacement :math:`\\Delta u` (along the width / column axis) and
``flow[..., 1]`` the **vertical** displacement :math:`\\Delta v` (along the height / row axis),
both in pixels. Output pixel ``(i, j)`` samples the input at ``(i + Δv, j + Δu)``: the flow goes
from the adversarial image back to the benign one, as in the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike

__all__ = ["warp"]


def _check_flow(x: Array, flow: Array) -> None:
    V.check_rank(flow, "flow", 4)
    if flow.shape[:3] != x.shape[:3] or flow.shape[3] != 2:
        raise ValueError(
            f"`flow` must have shape {x.shape[:3] + (2,)} ([N, H, W, 2] matching `x`), "
            f"got {flow.shape}."
        )
    if not jnp.issubdtype(flow.dtype, jnp.floating):
        raise ValueError(f"`flow` must have a floating dtype, got {flow.dtype}.")
    V.check_finite(flow, "flow")


def _warp_flat(x: Array, flow: Array) -> Array:
    """``x [N, H, W, C]``, ``flow [N, H, W, 2]`` -> ``[N, H, W, C]`` by one flat gather.

    The image is zero-padded (1 pixel before, 2 after each spatial axis) and flattened, so the
    four bilinear taps of every output pixel are ``idx, idx + 1, idx + Wp, idx + Wp + 1`` in one
    ``take_along_axis`` without bounds masks. Sampling coordinates are clamped to ``[-1, H]``
    (``[-1, W]``) first: beyond that every tap is padding, so the value (0) is unchanged, and
    the clamp has zero derivative there, as the true derivative. The backward pass w.r.t. the
    flow reuses the gathered taps (no scatter); only the gradient w.r.t. ``x`` scatter-adds.
    """
    n, h, w, c = x.shape
    hp, wp = h + 3, w + 3
    xp = jnp.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0))).reshape(n, hp * wp, c)
    rows = jnp.arange(h, dtype=flow.dtype)[None, :, None] + flow[..., 1]
    cols = jnp.arange(w, dtype=flow.dtype)[None, None, :] + flow[..., 0]
    # jnp.where (not clip) keeps the derivative 1 exactly at the clamp points.
    rows = jnp.where(rows < -1, -1.0, jnp.where(rows > h, float(h), rows)).astype(flow.dtype)
    cols = jnp.where(cols < -1, -1.0, jnp.where(cols > w, float(w), cols)).astype(flow.dtype)
    r0 = jnp.floor(rows)
    c0 = jnp.floor(cols)
    a = (rows - r0).reshape(n, h * w, 1)  # fractional parts carry the gradient w.r.t. the flow
    b = (cols - c0).reshape(n, h * w, 1)
    idx = ((r0.astype(jnp.int32) + 1) * wp + c0.astype(jnp.int32) + 1).reshape(n, h * w)
    idx4 = jnp.concatenate([idx, idx + 1, idx + wp, idx + wp + 1], axis=1)[..., None]
    taps = jnp.take_along_axis(xp, idx4, axis=1, mode="promise_in_bounds")
    t00, t01, t10, t11 = jnp.split(taps, 4, axis=1)
    top = t00 + b * (t01 - t00)
    bot = t10 + b * (t11 - t10)
    return (top + a * (bot - top)).reshape(n, h, w, c)


def warp(
    x: ArrayLike, flow: ArrayLike, *, box: tuple[float, float] | None = (0.0, 1.0)
) -> Array:
    r"""Warp images by a per-pixel flow field with bilinear interpolation (Eqn 1).

    .. math::
        \tilde x_i = \sum_{j \in \mathcal N(i)} x_j
        \max(0, 1 - |\tilde u_i + \Delta u_i - u_j|)\,\max(0, 1 - |\tilde v_i + \Delta v_i - v_j|)

    where :math:`\mathcal N(i)` are the four integer neighbours of the sampling point. Neighbours
    outside the image contribute zero (zero padding). Zero flow is the identity and an integer
    flow shifts exactly.

    Gradients. The result is linear in ``x``. W.r.t. ``flow`` it is piecewise bilinear; off the
    integer grid the derivative is the paper's (Jaderberg et al. 2015) sub-gradient
    :math:`\partial w_j/\partial u = -\operatorname{sign}(u - u_j)` for :math:`|u - u_j| < 1`.
    (The cases printed after Eqn 4 of the paper carry the opposite sign; we use the true
    derivative so that the line integral of Eqn 4 equals :math:`f(\tilde x) - f(x)`.) On the
    integer grid we return the one-sided (right) derivative, ``x[k+1] - x[k]`` along each axis,
    an element of the Clarke sub-differential.

    Args:
      x: images ``[N, H, W, C]`` (NHWC) in ``box``.
      flow: ``[N, H, W, 2]`` finite displacements in pixels, ``flow[..., 0]`` horizontal
        (columns), ``flow[..., 1]`` vertical (rows).
      box: the value range of ``x`` (checked; ``None`` for any finite values).

    Returns:
      Warped images ``[N, H, W, C]``, same dtype as ``x``.

    Implementation: one flat gather of the four taps from a zero-padded copy of ``x`` (a form
    XLA:CPU runs well, about 3x faster than per-example 2-D indexing with bounds masks).

    Cost: ``O(N·H·W·C)`` (one gather of ``4·H·W`` taps per example); backward w.r.t. the flow
    the same (it reuses the taps), w.r.t. ``x`` a scatter-add.

    References:
      Xiao et al., *Spatially Transformed Adversarial Examples*, ICLR 2018, Eqn 1;
      *Provable defenses against spatially transformed adversarial inputs*, Eqn 1.
    """
    if box is not None and not (isinstance(box, (tuple, list)) and len(box) == 2):
        raise ValueError(f"`box` must be a pair (lo, hi) or None, got {box!r}.")
    V.check_images(x, "x", box=box)
    x = jnp.asarray(x)
    flow = jnp.asarray(flow)
    _check_flow(x, flow)
    flow = flow.astype(x.dtype)
    return _warp_flat(x, flow)
