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


def _warp_one(img: Array, flow: Array) -> Array:
    """``img [H, W, C]``, ``flow [H, W, 2]`` -> ``[H, W, C]``."""
    h, w, _ = img.shape
    rows = jnp.arange(h, dtype=flow.dtype)[:, None] + flow[..., 1]
    cols = jnp.arange(w, dtype=flow.dtype)[None, :] + flow[..., 0]
    r0 = jnp.floor(rows)
    c0 = jnp.floor(cols)
    a = (rows - r0)[..., None]  # fractional parts carry the gradient w.r.t. the flow
    b = (cols - c0)[..., None]
    r0 = r0.astype(jnp.int32)
    c0 = c0.astype(jnp.int32)

    def tap(ri: Array, ci: Array) -> Array:
        inside = (ri >= 0) & (ri < h) & (ci >= 0) & (ci < w)
        vals = img[jnp.clip(ri, 0, h - 1), jnp.clip(ci, 0, w - 1)]
        return jnp.where(inside[..., None], vals, jnp.zeros((), img.dtype))

    return (
        (1 - a) * (1 - b) * tap(r0, c0)
        + (1 - a) * b * tap(r0, c0 + 1)
        + a * (1 - b) * tap(r0 + 1, c0)
        + a * b * tap(r0 + 1, c0 + 1)
    )


def warp(x: ArrayLike, flow: ArrayLike) -> Array:
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
      x: images ``[N, H, W, C]`` (any real values; not range-checked).
      flow: ``[N, H, W, 2]`` displacements in pixels, ``flow[..., 0]`` horizontal (columns),
        ``flow[..., 1]`` vertical (rows).

    Returns:
      Warped images ``[N, H, W, C]``, same dtype as ``x``.

    Cost: ``O(N·H·W·C)`` (four gathers); backward the same plus a scatter-add for ``x``.

    References:
      Xiao et al., *Spatially Transformed Adversarial Examples*, ICLR 2018, Eqn 1;
      *Provable defenses against spatially transformed adversarial inputs*, Eqn 1.
    """
    V.check_images(x, "x", box=None)
    x = jnp.asarray(x)
    flow = jnp.asarray(flow)
    _check_flow(x, flow)
    flow = flow.astype(x.dtype)
    return jax.vmap(_warp_one)(x, flow)
