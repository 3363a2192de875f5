r"""Lower-bound attacks against spatial flows (Algorithms 1-2, Theorems 1-2, appendix 6.6).

Setting (the paper's): a flattened single-channel input ``x [d]`` (``d = H·W``) with
:math:`\|x\|_\infty \le 1`, a diagonal flow ``r [d]`` (:math:`r^{(u)} = r^{(v)} = r`) with
:math:`\|Mr\| \le \epsilon` and :math:`M^{-1}` from :func:`robustjax.spatial.tv_factors`
(pseudo-inverse by default: zero-mean flows; see that module for why). The networks are

* linear (Algorithm 2): :math:`f(x) = v^\top x`;
* one hidden layer (Algorithm 1): :math:`f(x) = v^\top \sigma(Wx + b)` (the paper has ``b = 0``).

K classes (appendix 6.6): pass ``v`` of shape ``[K, ·]`` and the class ``y`` the input is
meant to have; at every outer iteration the binary problem is solved for
:math:`v_{y^*} - v_{y}` with :math:`y^* = \arg\max_{y' \ne y}` logit at the current
adversarial input (the initial pair is the one with the largest Theorem 1/2 value).

The attained loss is the exact :math:`\ell_{adv}(x_*, r_*) = f(g(r_*; x_*)) - f(x_*)` (Eqn 4);
``history[k]`` logs it after outer iteration ``k`` (``history`` has ``steps + 1`` entries,
the first for the Theorem initialisation). The iterates are not guaranteed to increase the loss,
so the best pair seen is returned.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike
from robustjax.spatial._adv_loss import warp_diagonal
from robustjax.spatial._adv_loss import warp_jacobian_diag
from robustjax.spatial._flow import tv_factors

__all__ = [
    "InitPair",
    "LowerBoundResult",
    "theorem2_init",
    "theorem1_init",
    "linear_lower_bound",
    "one_hidden_lower_bound",
]

_TINY = 1e-12


class LowerBoundResult(NamedTuple):
    """Result of a lower-bound attack.

    Attributes:
      x: ``[d]`` the input :math:`x_*` (:math:`\\|x_*\\|_\\infty \\le 1`).
      r: ``[d]`` the diagonal flow :math:`r_*` (:math:`\\|Mr_*\\| = \\epsilon`).
      loss: scalar, exact :math:`\\ell_{adv}(x_*, r_*) = f(g(r_*; x_*)) - f(x_*)`.
      history: ``[steps + 1]`` exact loss after each outer iteration (index 0: initialisation).
      init_linear: scalar, Theorem 1/2 value :math:`\\epsilon\\|M^{-1}\\cdots\\|`, i.e.
        :math:`\\tilde\\ell_{adv}` at the initial pair.
      other: int32 scalar, the class :math:`y^*` used last (``-1`` for binary ``v``).
    """

    x: Array
    r: Array
    loss: Array
    history: Array
    init_linear: Array
    other: Array


class InitPair(NamedTuple):
    """A Theorem 1/2 initialisation: ``x [d]``, ``r [d]`` and its linearised value (scalar)."""

    x: Array
    r: Array
    value: Array


def _pi_inf(z: Array) -> Array:
    return z / jnp.maximum(jnp.max(jnp.abs(z)), _TINY)


def _flow_step(h: Array, m_inv: Array, eps: float) -> Array:
    """:math:`\\epsilon M^{-1}\\pi_2(M^{-1}h)`, the maximiser of :math:`h^\\top r` on
    ``||Mr|| <= eps``."""
    q = m_inv @ h
    return eps * (m_inv @ (q / jnp.maximum(jnp.linalg.norm(q), _TINY)))


def _check_shape(shape) -> None:
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise ValueError(f"`shape` must be a tuple (H, W), got {shape!r}.")
    V.check_positive_int(shape[0], "shape[0]")
    V.check_positive_int(shape[1], "shape[1]")


def _check_common(eps, steps, num_points, shape, unroll=1) -> None:
    V.check_nonnegative_value(eps, "eps")
    V.check_positive_int(steps, "steps")
    V.check_positive_int(num_points, "num_points")
    _check_shape(shape)
    if not isinstance(unroll, bool):
        V.check_positive_int(unroll, "unroll")


def _check_weights(a, name: str) -> Array:
    if not jnp.issubdtype(jnp.result_type(a), jnp.number):
        raise ValueError(f"`{name}` must be a real array, got dtype {jnp.result_type(a)}.")
    V.check_finite(a, name)
    return jnp.asarray(a, jnp.float32)


def _midpoints(num_points: int, dtype) -> Array:
    return ((2.0 * jnp.arange(1, num_points + 1) - 1.0) / (2.0 * num_points)).astype(dtype)


def theorem2_init(v: ArrayLike, *, shape: tuple[int, int], eps: float,
                  ridge: float = 0.0) -> InitPair:
    r"""Theorem 2 initialisation for a linear classifier :math:`f(x) = v^\top x`.

    :math:`v^*` = primary eigenvector of :math:`\mathrm{diag}(v) M^{-2} \mathrm{diag}(v)`,
    :math:`x_* = \pi_\infty(v^*)`, :math:`r_* = \epsilon M^{-1}\pi_2(M^{-1}\mathrm{diag}(v)x_*)`
    (Eqn 12), attaining :math:`\tilde\ell_{adv}(x_*, r_*) = v^\top\mathrm{diag}(x_*) r_* =
    \epsilon\|M^{-1}\mathrm{diag}(v)x_*\|`.

    Args:
      v: ``[d]`` weights; shape: ``(H, W)`` with ``H·W = d``; eps: flow budget;
      ridge: see :func:`robustjax.spatial.tv_factors`.

    Returns:
      :class:`InitPair` ``(x_* [d], r_* [d], value [])``. Cost ``O(d^3)`` (one ``eigh``).
    """
    _check_shape(shape)
    V.check_nonnegative_value(eps, "eps")
    fac = tv_factors(*shape, ridge=ridge)
    v = _check_weights(v, "v")
    V.check_rank(v, "v", 1)
    if v.shape[0] != shape[0] * shape[1]:
        raise ValueError(f"`v` must have shape (H*W,) = ({shape[0] * shape[1]},), got {v.shape}.")
    a = v[:, None] * fac.gram_inv * v[None, :]
    _, vecs = jnp.linalg.eigh(a)
    x = _pi_inf(vecs[:, -1])
    q = fac.m_inv @ (v * x)
    r = _flow_step(v * x, fac.m_inv, eps)
    return InitPair(x, r, eps * jnp.linalg.norm(q))


def _independent_rows(w: Array, rtol: float = 1e-6) -> Array:
    """Greedy mask of linearly independent rows of ``w [h, d]`` (at most ``d`` rows).

    The diagonal of ``R`` in a (non-pivoted) QR of ``w^T`` is the norm of each row's component
    orthogonal to the previous rows, so a nonzero ``|R_jj|`` marks a row independent of the
    earlier ones (greedy selection in row order).
    """
    h, d = w.shape
    k = min(h, d)
    _, rr = jnp.linalg.qr(w[:k].T)
    diag = jnp.abs(jnp.diag(rr))
    keep = diag > rtol * jnp.maximum(jnp.max(diag), _TINY)
    return jnp.zeros((h,), bool).at[:k].set(keep)


def theorem1_init(w: ArrayLike, v: ArrayLike, *, shape: tuple[int, int], eps: float,
                  b: ArrayLike | None = None,
                  activation: Callable[[Array], Array] = jax.nn.relu,
                  ridge: float = 0.0) -> InitPair:
    r"""Theorem 1 initialisation for :math:`f(x) = v^\top\sigma(Wx + b)`.

    :math:`W_d` is a set of independent rows of ``W`` (greedy, see below; the paper assumes
    ``rank W = d``, which needs ``h >= d`` -- with fewer hidden units we take ``rank W`` rows),
    :math:`x_* = \pi_\infty(W_d^{+}\mathbf 1)` so that :math:`W_d x_* > 0` (those units active
    when ``b = 0``), :math:`q = \mathrm{diag}(x_*) W^\top\mathrm{diag}(v)\nabla\sigma(Wx_*+b)`,
    :math:`r_* = \epsilon M^{-1}\pi_2(M^{-1}q)` (Eqn 6), value :math:`\epsilon\|M^{-1}q\|`.

    Args:
      w: ``[h, d]``; v: ``[h]``; b: ``[h]`` or None; activation: elementwise :math:`\sigma`.

    Returns:
      :class:`InitPair` ``(x_* [d], r_* [d], value [])``. Cost ``O(h·d·min(h, d) + d^2)``.
    """
    _check_shape(shape)
    V.check_nonnegative_value(eps, "eps")
    fac = tv_factors(*shape, ridge=ridge)
    w = _check_weights(w, "w")
    v = _check_weights(v, "v")
    V.check_rank(w, "w", 2)
    V.check_rank(v, "v", 1)
    if w.shape[1] != shape[0] * shape[1] or v.shape[0] != w.shape[0]:
        raise ValueError(f"`w` must be [h, H*W] and `v` [h], got {w.shape} and {v.shape}.")
    b = jnp.zeros(w.shape[0], w.dtype) if b is None else _check_weights(b, "b")
    mask = _independent_rows(w)
    ws = jnp.where(mask[:, None], w, 0.0)
    x0 = jnp.linalg.pinv(ws) @ mask.astype(w.dtype)
    x = _pi_inf(x0)
    dsig = _act_grad(activation, w @ x + b)
    q = x * (w.T @ (v * dsig))
    r = _flow_step(q, fac.m_inv, eps)
    return InitPair(x, r, eps * jnp.linalg.norm(fac.m_inv @ q))


def _act_grad(activation: Callable[[Array], Array], pre: Array) -> Array:
    return jax.vmap(jax.grad(lambda t: activation(t)))(pre)


def _linear_iterate(vpair: Array, x: Array, r: Array, *, shape, eps, m_inv, num_points,
                    x_steps, unroll=1) -> tuple[Array, Array]:
    """One outer iteration of Algorithm 2: sign update of x, then Eqn 14 for r."""
    zs = _midpoints(num_points, r.dtype)

    def mid_obj(xx):  # Eqn 13 (times n), linear in x
        dg = jax.vmap(lambda z: warp_jacobian_diag(xx, z * r, shape=shape))(zs)
        return jnp.sum(dg @ (vpair * r))

    def x_body(_, xx):
        alpha = jax.grad(mid_obj)(xx)
        return jnp.where(alpha >= 0, 1.0, -1.0).astype(xx.dtype)

    x = jax.lax.fori_loop(0, x_steps, x_body, x, unroll=unroll)
    dg = jax.vmap(lambda z: warp_jacobian_diag(x, z * r, shape=shape))(zs)
    h = jnp.sum(dg, axis=0) * vpair
    return x, _flow_step(h, m_inv, eps)


def _hidden_iterate(w, b, vpair, activation, x, r, *, shape, eps, m_inv, num_points,
                    x_steps, unroll=1) -> tuple[Array, Array]:
    """One outer iteration of Algorithm 1: alternating sign updates of x, then Eqn 8 for r."""
    zs = _midpoints(num_points, r.dtype)

    def sig_grads(xx):
        pre = jax.vmap(lambda z: w @ warp_diagonal(xx, z * r, shape=shape) + b)(zs)
        return jax.vmap(lambda p: _act_grad(activation, p))(pre)  # [n, h]

    def mid_obj(xx, dsig):  # Eqn 7 (times n) with the activation pattern frozen
        dg = jax.vmap(lambda z: warp_jacobian_diag(xx, z * r, shape=shape))(zs)  # [n, d]
        coef = (dsig * vpair) @ w  # [n, d] rows: W^T diag(v) grad sigma
        return jnp.sum(coef * dg * r)

    def x_body(_, xx):
        alpha = jax.grad(mid_obj)(xx, jax.lax.stop_gradient(sig_grads(xx)))
        return jnp.where(alpha >= 0, 1.0, -1.0).astype(xx.dtype)

    x = jax.lax.fori_loop(0, x_steps, x_body, x, unroll=unroll)
    dsig = sig_grads(x)
    dg = jax.vmap(lambda z: warp_jacobian_diag(x, z * r, shape=shape))(zs)
    h = jnp.sum(dg * ((dsig * vpair) @ w), axis=0)
    return x, _flow_step(h, m_inv, eps)


def _run(score, init_pairs, iterate, v, label, *, steps, multiclass, unroll=1):
    """Shared driver: choose the initial pair, iterate, keep the best (exact) loss."""
    if multiclass:
        k = v.shape[0]
        others = jnp.arange(k)
        xs, rs, vals = jax.vmap(lambda o: init_pairs(v[o] - v[label]))(others)
        vals = jnp.where(others == label, -jnp.inf, vals)
        o0 = jnp.argmax(vals)
        x, r, val0 = xs[o0], rs[o0], vals[o0]
    else:
        o0 = jnp.asarray(-1)
        x, r, val0 = init_pairs(v)

    def pair(o):
        return v[o] - v[label] if multiclass else v

    def loss_of(x, r, o):
        vp = pair(o)
        return score(vp, r, x) - score(vp, jnp.zeros_like(r), x)

    def pick_other(x, r, o):
        if not multiclass:
            return o
        logits = jax.vmap(lambda vv: score(vv, r, x))(v)
        logits = jnp.where(jnp.arange(v.shape[0]) == label, -jnp.inf, logits)
        return jnp.argmax(logits).astype(jnp.int32)

    o0 = jnp.asarray(o0, jnp.int32)
    loss0 = loss_of(x, r, o0)

    def body(carry, _):
        x, r, o, best = carry
        o = pick_other(x, r, o)
        x, r = iterate(pair(o), x, r)
        loss = loss_of(x, r, o)
        better = loss > best[3]
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                            (x, r, o, loss), best)
        return (x, r, o, best), loss

    (_, _, _, best), hist = jax.lax.scan(body, (x, r, o0, (x, r, o0, loss0)), None,
                                         length=steps, unroll=unroll)
    bx, br, bo, bl = best
    return LowerBoundResult(bx, br, bl, jnp.concatenate([loss0[None], hist]), val0, bo)


def _check_label(v: Array, y, name="v") -> bool:
    """``y`` is required (and checked to be an int scalar in ``[0, K)``) when ``v`` is
    ``[K, ...]``; refused for a binary ``v``."""
    if v.ndim == 2:
        if y is None:
            raise ValueError(f"`y` (the true class) is required when `{name}` has shape [K, ...].")
        check_class(y, v.shape[0])
        return True
    if y is not None:
        raise ValueError(f"`y` is only used with K-class `{name}` [K, ...], got shape {v.shape}.")
    return False


def check_class(y, num_classes: int, name: str = "y") -> None:
    """An integer scalar class in ``[0, num_classes)`` (traced values in the checked mode)."""
    if isinstance(y, bool) or jnp.ndim(y) != 0:
        raise ValueError(f"`{name}` must be an integer scalar (one class), got {y!r}.")
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        raise ValueError(f"`{name}` must be an integer class, got dtype {jnp.result_type(y)}.")
    if V.is_concrete(y):
        if not 0 <= int(y) < num_classes:
            raise ValueError(f"`{name}` must be in [0, {num_classes - 1}], got {int(y)}.")
    else:
        V.traced_check((y >= 0) & (y < num_classes),
                       f"`{name}` must be in [0, {num_classes - 1}], got {{y}}.", y=y)


def linear_lower_bound(
    v: ArrayLike,
    *,
    shape: tuple[int, int],
    eps: float,
    y: int | ArrayLike | None = None,
    steps: int = 20,
    x_steps: int = 1,
    num_points: int = 8,
    ridge: float = 0.0,
    unroll: int | bool = 1,
) -> LowerBoundResult:
    r"""Algorithm 2: lower-bound attack on a linear classifier :math:`f(x) = v^\top x`.

    Initialise with Theorem 2 (:func:`theorem2_init`), then alternate ``steps`` times:
    ``x_steps`` sign updates :math:`x \leftarrow \mathrm{sign}(\alpha)` where :math:`\alpha` is
    the coefficient of ``x`` in the midpoint sum (Eqn 13; it is linear in ``x``), then
    :math:`r \leftarrow \epsilon M^{-1}\pi_2(M^{-1}\sum_i \mathrm{D}g(r^{(i)}; x)\,v)` (Eqn 14).

    Args:
      v: ``[d]`` weights (binary), or ``[K, d]`` class weights (appendix 6.6; needs ``y``).
      shape: ``(H, W)`` with ``H·W = d``. eps: flow budget :math:`\|Mr\| \le \epsilon`.
      y: class of the benign input, an int in ``[0, K)`` (K-class only).
      steps: outer iterations; x_steps: sign updates per outer iteration (the x-subproblem
        with ``r`` fixed is solved exactly by one update for a linear ``f``);
      num_points: ``n`` of the midpoint rule; ridge: see :func:`robustjax.spatial.tv_factors`.
      unroll: unroll factor of the outer ``lax.scan`` and the x-update loop (speed only).

    Returns:
      :class:`LowerBoundResult`. Cost ``O(d^3)`` once (init), then
      ``O(steps·(x_steps+1)·n·d + steps·d^2)``.
    """
    _check_common(eps, steps, num_points, shape, unroll)
    V.check_positive_int(x_steps, "x_steps")
    V.check_rank(v, "v", (1, 2))
    v = _check_weights(v, "v")
    multiclass = _check_label(v, y)
    d = shape[0] * shape[1]
    if v.shape[-1] != d:
        raise ValueError(f"`v` must have last dimension H*W = {d}, got {v.shape}.")
    m_inv = tv_factors(*shape, ridge=ridge).m_inv

    def score(vp, r, x):
        return jnp.vdot(vp, warp_diagonal(x, r, shape=shape))

    def init_pairs(vp):
        return theorem2_init(vp, shape=shape, eps=eps, ridge=ridge)

    def iterate(vp, x, r):
        return _linear_iterate(vp, x, r, shape=shape, eps=eps, m_inv=m_inv,
                               num_points=num_points, x_steps=x_steps, unroll=unroll)

    lab = None if y is None else jnp.asarray(y, jnp.int32)
    return _run(score, init_pairs, iterate, v, lab, steps=steps, multiclass=multiclass,
                unroll=unroll)


def one_hidden_lower_bound(
    w: ArrayLike,
    v: ArrayLike,
    *,
    shape: tuple[int, int],
    eps: float,
    b: ArrayLike | None = None,
    y: int | ArrayLike | None = None,
    activation: Callable[[Array], Array] = jax.nn.relu,
    steps: int = 20,
    x_steps: int = 3,
    num_points: int = 8,
    ridge: float = 0.0,
    unroll: int | bool = 1,
) -> LowerBoundResult:
    r"""Algorithm 1: lower-bound attack on :math:`f(x) = v^\top\sigma(Wx + b)`.

    Initialise with Theorem 1 (:func:`theorem1_init`), then alternate ``steps`` times:
    ``x_steps`` updates :math:`x \leftarrow \mathrm{sign}(\alpha)`, :math:`\alpha` the coefficient
    of ``x`` in Eqn 7 with :math:`\nabla\sigma(Wg(r^{(i)}; x) + b)` recomputed from the current
    ``x`` and then frozen (the paper's alternation), then the Eqn 8 update
    :math:`r \leftarrow \epsilon M^{-1}\pi_2(M^{-1}\sum_i \mathrm{D}g(r^{(i)}; x) W^\top
    \mathrm{diag}(v)\nabla\sigma(Wg(r^{(i)}; x) + b))`.

    Args:
      w: ``[h, d]`` first-layer weights; v: ``[h]`` (binary) or ``[K, h]`` (K classes, needs
        ``y``) second-layer weights; b: ``[h]`` hidden bias or None (the output bias
        cancels in :math:`\ell_{adv}`); activation: elementwise :math:`\sigma` (its derivative
        is taken with ``jax.grad``; ReLU: 0 at 0).
      shape, eps, y, steps, x_steps, num_points, ridge, unroll: as in
        :func:`linear_lower_bound`.

    Returns:
      :class:`LowerBoundResult`. Cost ``O(d^3)`` once, then
      ``O(steps·(x_steps+1)·n·h·d + steps·d^2)``.
    """
    _check_common(eps, steps, num_points, shape, unroll)
    V.check_positive_int(x_steps, "x_steps")
    V.check_rank(w, "w", 2)
    V.check_rank(v, "v", (1, 2))
    w = _check_weights(w, "w")
    v = _check_weights(v, "v")
    d = shape[0] * shape[1]
    if w.shape[1] != d:
        raise ValueError(f"`w` must have shape [h, H*W = {d}], got {w.shape}.")
    if v.shape[-1] != w.shape[0]:
        raise ValueError(f"`v` must have last dimension h = {w.shape[0]}, got {v.shape}.")
    multiclass = _check_label(v, y)
    b = jnp.zeros(w.shape[0], w.dtype) if b is None else _check_weights(b, "b")
    m_inv = tv_factors(*shape, ridge=ridge).m_inv

    def score(vp, r, x):
        return jnp.vdot(vp, activation(w @ warp_diagonal(x, r, shape=shape) + b))

    def init_pairs(vp):
        return theorem1_init(w, vp, shape=shape, eps=eps, b=b, activation=activation,
                             ridge=ridge)

    def iterate(vp, x, r):
        return _hidden_iterate(w, b, vp, activation, x, r, shape=shape, eps=eps, m_inv=m_inv,
                               num_points=num_points, x_steps=x_steps, unroll=unroll)

    lab = None if y is None else jnp.asarray(y, jnp.int32)
    return _run(score, init_pairs, iterate, v, lab, steps=steps, multiclass=multiclass,
                unroll=unroll)
