r"""Flow magnitude: total variation of a flow field and its matrix form (Eqn 2, Props. 1-2).

Neighbourhood and boundary (one choice for every function here): the 4-neighbourhood
(top, bottom, left, right) with **replicate** padding -- a boundary pixel's missing neighbour is
the pixel itself, so it adds no variation. This is what the proof of Prop. 1 assumes (a top-row
pixel has :math:`(I - M^{(t)})_{ii} = 0`) and it makes a constant flow (a translation) have zero
variation, hence :math:`M^\top M` is singular with the constants as its null space.

Matrix form. With the paper's convention :math:`r^{(u)} = r^{(v)} = r \in \mathbb R^d`
(``d = H·W``, pixels in row-major order), Eqn 2 reads
:math:`\ell_{diff}(r)^2 = 2\, r^\top S r` with :math:`S = \sum_{i\in\{t,b,l,r\}}
(I - M^{(i)})^\top (I - M^{(i)})` (Prop. 1). To make Eqn 3, :math:`\ell_{diff}(r) = \|Mr\|`,
hold exactly we define :math:`M^\top M := 2S` and :math:`M := (2S)^{1/2}`, the symmetric PSD
square root ("a square matrix of the same rank", appendix 6.2).

Inverse. Theorems 1-2 and Prop. 2 use :math:`M^{-1}`, which does not exist. We use, by default
(``ridge=0``), the Moore-Penrose pseudo-inverse: it restricts the attacker to flows orthogonal to
the constants (zero-mean flows), the only subspace on which :math:`\{r : \|Mr\| \le \epsilon\}`
is bounded (a constant flow has zero variation, so without the restriction the suprema are
infinite). With ``ridge = rho > 0`` we instead use :math:`M^\top M + \rho I` (a flow-magnitude
with a small :math:`\ell_2` term), which is invertible. Both choices keep Prop. 2 exact for the
set they describe.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike

__all__ = [
    "FLOW_LOSS_FORMS",
    "flow_loss",
    "neighbour_matrices",
    "tv_gram",
    "TVFactors",
    "tv_factors",
    "aabb_radii",
    "ellipsoid_radius",
]

FLOW_LOSS_FORMS = ("paper", "stadv", "stadv_pixel")


def _safe_sqrt(s: Array) -> Array:
    """``sqrt`` with a zero (sub-)gradient at 0 instead of infinity."""
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def _neighbour_sq_diffs(flow: Array) -> Array:
    """Squared flow differences to the 4 neighbours, replicate padding: ``[N, H, W]`` summed.

    Each horizontal / vertical edge difference is computed once and added to both of its end
    pixels; a missing (replicated) neighbour contributes 0. Cheaper under XLA:CPU than padding
    with ``mode="edge"`` and differencing four shifted copies.
    """
    n, h, w, k = flow.shape
    total = jnp.zeros((n, h, w), flow.dtype)
    zc = jnp.zeros((n, h, 1), flow.dtype)
    zr = jnp.zeros((n, 1, w), flow.dtype)
    for ch in range(k):
        z = flow[..., ch]
        dh = z[:, :, 1:] - z[:, :, :-1]
        dv = z[:, 1:, :] - z[:, :-1, :]
        dh = dh * dh
        dv = dv * dv
        total = (total + jnp.concatenate([zc, dh], 2) + jnp.concatenate([dh, zc], 2)
                 + jnp.concatenate([zr, dv], 1) + jnp.concatenate([dv, zr], 1))
    return total


def _neighbour_edge_sq(flow: Array) -> tuple[Array, Array]:
    """Squared flow differences over the horizontal and vertical grid edges (both channels
    summed): ``([N, H, W-1], [N, H-1, W])``. Each undirected edge once."""
    dh = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    dv = flow[:, 1:, :, :] - flow[:, :-1, :, :]
    return jnp.sum(dh * dh, axis=-1), jnp.sum(dv * dv, axis=-1)


def flow_loss(flow: ArrayLike, *, form: str = "paper", smoothing: float = 0.0) -> Array:
    r"""Smoothness (total variation) of a flow field, per example.

    ``form="paper"`` (Eqn 2 of the spatial-robustness paper, one square root over the field):

    .. math:: \ell_{diff}(r) = \sqrt{\textstyle\sum_i \sum_{j \in \mathcal N(i)}
        (\Delta u_i - \Delta u_j)^2 + (\Delta v_i - \Delta v_j)^2}

    ``form="stadv"`` (Xiao et al. 2018, Eqn 4: one square root **per neighbour pair**):

    .. math:: \mathcal L_{flow}(r) = \sum_i \sum_{j \in \mathcal N(i)}
        \sqrt{(\Delta u_i - \Delta u_j)^2 + (\Delta v_i - \Delta v_j)^2}

    ``form="stadv_pixel"`` (one square root **per pixel**, the form this library called
    "stadv" until issue 16; about 0.55x Xiao's value on MNIST flows, so its ``tau`` is not Xiao's):

    .. math:: \sum_i \sqrt{\textstyle\sum_{j \in \mathcal N(i)}
        (\Delta u_i - \Delta u_j)^2 + (\Delta v_i - \Delta v_j)^2}

    All use the 4-neighbourhood with replicate padding (a missing neighbour is the pixel itself
    and adds nothing); each undirected edge is counted from both of its ends, as the sums are
    written. Public stAdv implementations differ in the neighbourhood (e.g. diagonal neighbours
    with symmetric padding); we keep the paper's 4-neighbourhood for every form. With
    ``smoothing = 0`` a square root has a zero sub-gradient at 0 (no :math:`\sqrt{\cdot +
    \epsilon}` offset), so a zero flow has loss exactly 0. With ``smoothing = δ > 0`` each
    square root becomes the smooth (Huber-like) :math:`\sqrt{s + \delta^2} - \delta \le
    \sqrt{s}`, still 0 at a zero flow; this removes the cone-shaped kinks that stall
    quasi-Newton methods (see :func:`robustjax.attacks.stadv`).

    Args:
      flow: ``[N, H, W, 2]`` (``[..., 0]`` horizontal, ``[..., 1]`` vertical), pixels.
      form: ``"paper"``, ``"stadv"`` or ``"stadv_pixel"``.
      smoothing: ``δ >= 0`` (pixels), see above.

    Returns:
      ``[N]``.

    Cost: ``O(N·H·W)``.
    """
    V.check_choice(form, "form", FLOW_LOSS_FORMS)
    V.check_nonnegative(smoothing, "smoothing")
    V.check_rank(flow, "flow", 4)
    flow = jnp.asarray(flow)
    if flow.shape[-1] != 2:
        raise ValueError(f"`flow` must have shape [N, H, W, 2], got {flow.shape}.")
    if not jnp.issubdtype(flow.dtype, jnp.floating):
        raise ValueError(f"`flow` must have a floating dtype, got {flow.dtype}.")
    V.check_finite(flow, "flow")
    if smoothing > 0:
        root = lambda s: jnp.sqrt(s + smoothing**2) - smoothing  # noqa: E731
    else:
        root = _safe_sqrt
    if form == "stadv":
        eh, ev = _neighbour_edge_sq(flow)
        # every undirected edge appears in the sum of both of its end pixels
        return 2.0 * (jnp.sum(root(eh), axis=(1, 2)) + jnp.sum(root(ev), axis=(1, 2)))
    sq = _neighbour_sq_diffs(flow)
    if form == "paper":
        return root(jnp.sum(sq, axis=(1, 2)))
    return jnp.sum(root(sq), axis=(1, 2))


def _check_hw(height: int, width: int) -> None:
    V.check_positive_int(height, "height")
    V.check_positive_int(width, "width")


@functools.lru_cache(maxsize=16)
def _neighbour_np(height: int, width: int) -> tuple[np.ndarray, ...]:
    d = height * width
    idx = np.arange(d).reshape(height, width)
    out = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):  # top, bottom, left, right
        rr = np.clip(np.arange(height)[:, None] + dr, 0, height - 1)
        cc = np.clip(np.arange(width)[None, :] + dc, 0, width - 1)
        j = idx[rr + 0 * cc, cc + 0 * rr].reshape(-1)
        m = np.zeros((d, d))
        m[np.arange(d), j] = 1.0
        out.append(m)
    return tuple(out)


def neighbour_matrices(height: int, width: int) -> tuple[Array, Array, Array, Array]:
    r"""Neighbour matrices :math:`M^{(t)}, M^{(b)}, M^{(l)}, M^{(r)}` (Sec. 2.1), each ``[d, d]``.

    Row ``i`` is the one-hot encoding of pixel ``i``'s top / bottom / left / right neighbour
    (row-major pixel order, ``d = height·width``); on the boundary the missing neighbour is the
    pixel itself (replicate padding). Built on the host (static sizes); ``O(d^2)`` memory.
    """
    _check_hw(height, width)
    return tuple(jnp.asarray(m, jnp.float32) for m in _neighbour_np(height, width))


@functools.lru_cache(maxsize=16)
def _gram_np(height: int, width: int) -> np.ndarray:
    d = height * width
    eye = np.eye(d)
    s = sum((eye - m).T @ (eye - m) for m in _neighbour_np(height, width))
    return 2.0 * s


def tv_gram(height: int, width: int) -> Array:
    r""":math:`M^\top M = 2\sum_{i \in \{t,b,l,r\}} (I - M^{(i)})^\top (I - M^{(i)})`, ``[d, d]``.

    The factor 2 (Prop. 1: :math:`\ell_{diff}(r) = \sqrt{2 r^\top S r}`) is folded in so that
    :math:`\ell_{diff}(r) = \|Mr\|` (Eqn 3) under :math:`r^{(u)} = r^{(v)} = r`. Equals four times
    the grid-graph Laplacian; PSD, singular (null space: constant flows).
    """
    _check_hw(height, width)
    return jnp.asarray(_gram_np(height, width), jnp.float32)


class TVFactors(NamedTuple):
    """Factors of the flow-magnitude quadratic form (all float32).

    Attributes:
      m: ``[d, d]`` symmetric :math:`M = (M^\\top M)^{1/2}` (with the ridge, if any).
      m_inv: ``[d, d]`` :math:`M^{-1}` (pseudo-inverse when ``ridge == 0``).
      gram_inv: ``[d, d]`` :math:`(M^\\top M)^{-1}` (pseudo-inverse when ``ridge == 0``).
      lam: ``[d]`` AABB radii :math:`\\lambda_i = \\sqrt{((M^\\top M)^{-1})_{ii}}` (Prop. 2).
    """

    m: Array
    m_inv: Array
    gram_inv: Array
    lam: Array


@functools.lru_cache(maxsize=16)
def _factors_np(height: int, width: int, ridge: float) -> tuple[np.ndarray, ...]:
    g = _gram_np(height, width) + ridge * np.eye(height * width)
    w, u = np.linalg.eigh(g)
    tol = max(ridge, 0.0) + 1e-9 * max(float(w.max()), 1.0)
    keep = w > (tol if ridge == 0 else 0.0)
    w = np.where(keep, w, 0.0)
    sq = np.sqrt(w)
    inv_sq = np.where(keep, 1.0 / np.where(keep, sq, 1.0), 0.0)
    m = (u * sq) @ u.T
    m_inv = (u * inv_sq) @ u.T
    gram_inv = (u * inv_sq**2) @ u.T
    lam = np.sqrt(np.clip(np.diag(gram_inv), 0.0, None))
    return m, m_inv, gram_inv, lam


def tv_factors(height: int, width: int, *, ridge: float = 0.0) -> TVFactors:
    r""":math:`M`, :math:`M^{-1}`, :math:`(M^\top M)^{-1}` and the AABB radii :math:`\lambda`.

    ``ridge = 0`` uses pseudo-inverses (zero-mean flows, see the module docstring);
    ``ridge > 0`` uses :math:`M^\top M + \rho I`. Computed once per ``(height, width, ridge)`` on
    the host by an eigendecomposition in float64 (``O(d^3)``, ``d = height·width``; about a
    second for 28x28) and cached; the results are constants under ``jit``.
    """
    _check_hw(height, width)
    V.check_nonnegative(ridge, "ridge")
    return TVFactors(*(jnp.asarray(a, jnp.float32)
                       for a in _factors_np(int(height), int(width), float(ridge))))


def aabb_radii(height: int, width: int, *, ridge: float = 0.0) -> Array:
    r"""AABB radii :math:`\lambda` of Prop. 2, ``[d]``.

    The axis-aligned bounding box of :math:`\{r : \|Mr\| \le \epsilon\}` is
    :math:`[-\epsilon\lambda_i, \epsilon\lambda_i]` with :math:`\lambda_i^2 =
    ((M^\top M)^{-1})_{ii}`; with ``ridge=0`` the set is restricted to zero-mean flows and the
    pseudo-inverse is used (the box is exact for that set). See :func:`tv_factors`.
    """
    return tv_factors(height, width, ridge=ridge).lam


def ellipsoid_radius(height: int, width: int, *, ridge: float = 0.0) -> float:
    r"""Largest :math:`\|r\|_2` on the flow ellipsoid :math:`\{r : \|Mr\| \le 1\}`:
    :math:`\rho = \|M^{-1}\|_2 = 1/\sqrt{\mu_{min}}`, :math:`\mu_{min}` the smallest
    (nonzero, with ``ridge=0``) eigenvalue of :math:`M^\top M`.

    With ``ridge = 0`` this covers zero-mean flows only (a constant flow, a translation, has
    :math:`\|Mr\| = 0` and unbounded norm). Library units: :math:`\|Mr\|` is Eqn 2's
    :math:`\ell_{diff}` (:func:`tv_gram`), so the same set is :math:`\epsilon/\sqrt 2` in the
    paper's units when the paper's :math:`M^\top M = S` (Prop. 1 without the factor 2).

    :math:`\rho\epsilon \le \epsilon\|\lambda\|_2` (the AABB's diagonal, Prop. 2), since
    :math:`\|\lambda\|_2^2 = \mathrm{tr}((M^\top M)^{-1}) \ge 1/\mu_{min}`; bounds that use
    the ellipsoid instead of its bounding box are therefore tighter (see
    :func:`robustjax.certify.ellipsoid_bound`). Python float; cost: one cached ``eigh``
    (:func:`tv_factors`).
    """
    _check_hw(height, width)
    V.check_nonnegative(ridge, "ridge")
    g = _gram_np(int(height), int(width)) + float(ridge) * np.eye(height * width)
    w = np.linalg.eigvalsh(g)
    tol = 1e-9 * max(float(w.max()), 1.0)
    return float(1.0 / np.sqrt(w[w > tol].min()))
