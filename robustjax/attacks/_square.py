"""Square Attack: a score-based (query-only, gradient-free) random search, ℓ∞ and ℓ2.

The attacker only queries ``logits_fn`` and minimizes the margin loss
:math:`L(x) = f_y(x) - \\max_{j \\ne y} f_j(x)` by random search: at each query a random
square window of side :math:`s` is perturbed, and the candidate replaces the current point
when it lowers the margin (or is misclassified). The window covers a fraction :math:`p` of the
image, halved at the paper's iteration checkpoints 10, 50, 200, 500, 1000, 2000, 4000, 6000
and 8000 (on a 10,000-query scale; with ``rescale_schedule=True`` the checkpoints are scaled
to ``n_queries`` as in the reference implementation and torchattacks).

* ℓ∞: initialization with vertical stripes of ``±eps`` (one random sign per column and
  channel); the update sets the window, per channel, to ``x_best ± 2 eps`` (random sign),
  then projects onto the ε-ball and the box.
* ℓ2: initialization with a grid of ``h//5``-sized blocks, each a normalized pair of
  concentric-rectangle bumps of opposite signs (the paper's :math:`\\eta` pattern) with a
  random sign per channel; the update moves the perturbation mass of a second random window
  into the first one, adds a fresh :math:`\\eta` pattern there and rescales so that the
  ℓ2-norm budget is used fully; the whole perturbation is renormalized to ``eps``, then
  clipped to the box.

References:
  Andriushchenko, Croce, Flammarion & Hein, *Square Attack: a query-efficient black-box
  adversarial attack via random search*, ECCV 2020 (arXiv:1912.00049), Alg. 1 (random search),
  Alg. 2 (ℓ∞ sampling, stripes init), Alg. 3 and Fig. 2 (ℓ2 sampling, η pattern), Sec. 4
  (schedule of p).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import losses as L
from robustjax import projections as P
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks import _base as B

__all__ = ["SquareInfo", "square", "square_with_info", "square_p_schedule"]

_CHECKPOINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


class SquareInfo(NamedTuple):
    """Result of :func:`square_with_info`.

    Attributes:
      x_adv: ``[N, ...]``: the adversarial point where one was found, else ``x``.
      success: ``bool [N]``: a misclassified point (margin ``<= 0``) was found.
      n_queries: ``int32 [N]``: queries charged to each example (the initial point counts as
        one; an example stops being charged after its first success). At most
        ``restarts · n_queries``.
      margin: ``[N]``: best margin ``f_y - max_{j≠y} f_j`` reached (``<= 0`` on success).
      calls: ``int32 []``: times ``logits_fn`` was evaluated on the batch (the loop stops when
        every example has succeeded).
    """

    x_adv: Array
    success: Array
    n_queries: Array
    margin: Array
    calls: Array


def square_p_schedule(it: int, n_queries: int, p_init: float = 0.8,
                      rescale_schedule: bool = True) -> float:
    """Fraction ``p`` of the image covered by the window at (0-based) iteration ``it``.

    ``p_init`` halved after each of the checkpoints 10, 50, 200, 500, 1000, 2000, 4000, 6000,
    8000 (``p = p_init / 2^j`` for ``it`` in ``(c_{j-1}, c_j]``); with ``rescale_schedule``
    ``it`` is first mapped to ``int(it / n_queries * 10000)``.
    """
    return p_init / 2 ** _phase(it, n_queries, rescale_schedule)


def _phase(it: int, n_queries: int, rescale: bool) -> int:
    if rescale:
        it = int(it / n_queries * 10000)
    return sum(1 for c in _CHECKPOINTS if it > c)


def _side(p: float, h: int, w: int, norm: str) -> int:
    if norm == "linf":
        s = max(int(round(math.sqrt(p * h * w))), 1)
    else:
        s = max(int(round(math.sqrt(p * h * w))), 3)
        if s % 2 == 0:
            s += 1
    return min(s, h, w)


def _eta_rectangles(rows: int, cols: int) -> np.ndarray:
    """Concentric rectangles around the centre, weight ``1/(k+1)^2`` for ring ``k``."""
    out = np.zeros((rows, cols))
    if rows == 0 or cols == 0:
        return out
    rc, cc = rows // 2 + 1, cols // 2 + 1
    r0, c0 = rc - 1, cc - 1
    for k in range(max(rc, cc)):
        out[max(r0, 0):min(r0 + 2 * k + 1, rows), max(c0, 0):min(c0 + 2 * k + 1, cols)] += (
            1.0 / (k + 1) ** 2)
        r0 -= 1
        c0 -= 1
    return out / np.sqrt(np.sum(out ** 2))


def _eta(s: int) -> np.ndarray:
    """The ℓ2 update pattern: two opposite-signed rectangle bumps, unit ℓ2 norm, ``[s, s]``."""
    if s < 2:
        return np.ones((s, s))
    out = np.zeros((s, s))
    out[: s // 2] = _eta_rectangles(s // 2, s)
    out[s // 2:] = -_eta_rectangles(s - s // 2, s)
    return out / np.sqrt(np.sum(out ** 2))


def _window(v: Array, s: Array, size: int) -> Array:
    """Indicator ``[N, size]`` of ``[v, v + s)`` per example."""
    i = jnp.arange(size)
    return (i[None, :] >= v[:, None]) & (i[None, :] < (v + s)[:, None])


def _place(patch: Array, vh: Array, vw: Array, h: int, w: int) -> Array:
    """Put ``patch [N, S, S]`` (zero beyond the used ``s``) at ``(vh, vw)`` of ``[N, h, w]``."""
    smax = patch.shape[-1]

    def one(p, a, b):
        canvas = jnp.zeros((h + smax, w + smax), patch.dtype)
        return jax.lax.dynamic_update_slice(canvas, p, (a, b))[:h, :w]

    return jax.vmap(one)(patch, vh, vw)


def _normalize_l2(d: Array) -> Array:
    n = jnp.sqrt(jnp.sum(d * d, axis=(1, 2, 3), keepdims=True))
    return d / (n + 1e-12)


def _square_impl(logits_fn, key, x, y, *, eps, norm, n_queries, p_init, restarts, box,
                 rescale_schedule):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    squeeze = x.ndim == 3
    if squeeze:
        x = x[..., None]
    shape = x.shape
    n, h, w, c = shape
    dtype = x.dtype

    def query(z):
        return L.margin(logits_fn(z[..., 0] if squeeze else z), y)

    def clip(z):
        return jnp.clip(z, *box) if box is not None else z

    # Static tables: window side and (ℓ2) η pattern for each phase of the p schedule.
    n_phase = len(_CHECKPOINTS) + 1
    sides = [_side(p_init / 2 ** j, h, w, norm) for j in range(n_phase)]
    side_tab = jnp.asarray(sides, jnp.int32)
    thresholds = jnp.asarray(_CHECKPOINTS, jnp.int32)
    smax = max(sides)
    eta_tab = np.zeros((n_phase, smax, smax))
    for j, s in enumerate(sides):
        eta_tab[j, :s, :s] = _eta(s)
    eta_tab = jnp.asarray(eta_tab, dtype)

    def phase(it):
        if rescale_schedule:  # int(it / n_queries * 10000), exactly
            if n_queries * 10000 < 2 ** 31:
                it = (it * 10000) // n_queries
            else:
                it = jnp.floor(it.astype(jnp.float32) / n_queries * 10000).astype(jnp.int32)
        return jnp.sum(it > thresholds)

    def signs(k, shp):
        return jnp.where(jax.random.bernoulli(k, 0.5, shp), 1.0, -1.0).astype(dtype)

    def init_point(k):
        if norm == "linf":
            return clip(x + eps * signs(k, (n, 1, w, c)))
        s0 = max(h // 5, 1)
        sp = (h - s0 * 5) // 2
        starts_h = [sp + i * s0 for i in range(h // s0) if sp + i * s0 + s0 <= h]
        starts_w = [sp + i * s0 for i in range(w // s0) if sp + i * s0 + s0 <= w]
        base = _eta(s0)
        blocks = []
        for a in starts_h:
            for b in starts_w:
                m = np.zeros((2, h, w))
                m[0, a:a + s0, b:b + s0] = base
                m[1, a:a + s0, b:b + s0] = base.T
                blocks.append(m)
        blocks = jnp.asarray(np.stack(blocks, 1), dtype)  # [2, nb, h, w]
        nb = blocks.shape[1]
        k1, k2 = jax.random.split(k)
        tr = jax.random.bernoulli(k1, 0.5, (n, nb))
        pats = jnp.where(tr[:, :, None, None], blocks[1][None], blocks[0][None])  # [n,nb,h,w]
        delta = jnp.einsum("nbhw,nbc->nhwc", pats, signs(k2, (n, nb, c)))
        return clip(x + eps * _normalize_l2(delta))

    def candidate(k, it, x_best):
        j = phase(it)
        s = side_tab[j]
        kh, kw, ks, kh2, kw2, kt = jax.random.split(k, 6)
        vh = jax.random.randint(kh, (n,), 0, h - s + 1)
        vw = jax.random.randint(kw, (n,), 0, w - s + 1)
        m1 = (_window(vh, s, h)[:, :, None] & _window(vw, s, w)[:, None, :])[..., None]
        m1 = m1.astype(dtype)  # [n, h, w, 1]
        if norm == "linf":
            z = x_best + m1 * (2.0 * eps) * signs(ks, (n, 1, 1, c))
            return clip(jnp.clip(z, x - eps, x + eps))
        vh2 = jax.random.randint(kh2, (n,), 0, h - s + 1)
        vw2 = jax.random.randint(kw2, (n,), 0, w - s + 1)
        m2 = (_window(vh2, s, h)[:, :, None] & _window(vw2, s, w)[:, None, :])[..., None]
        m2 = m2.astype(dtype)
        delta = x_best - x
        sq = lambda a: jnp.sum(a * a, axis=(1, 2), keepdims=True)  # noqa: E731  per channel
        norm_w1 = jnp.sqrt(sq(delta * m1))  # [n,1,1,c]
        norm_img = jnp.sqrt(jnp.sum(delta * delta, axis=(1, 2, 3), keepdims=True))  # [n,1,1,1]
        norm_ws = jnp.sqrt(sq(delta * jnp.maximum(m1, m2)))
        pat = eta_tab[j]
        tr = jax.random.bernoulli(kt, 0.5, (n,))
        pat = jnp.where(tr[:, None, None], pat.T[None], pat[None])  # [n, S, S]
        e = _place(pat, vh, vw, h, w)[..., None] * signs(ks, (n, 1, 1, c))
        new = e + delta * m1 / (1e-12 + norm_w1)
        budget = jnp.sqrt(jnp.maximum(eps ** 2 - norm_img ** 2, 0.0) / c + norm_ws ** 2)
        new = new / (1e-12 + jnp.sqrt(sq(new))) * budget
        delta = delta * (1.0 - m2)
        delta = delta * (1.0 - m1) + new * m1
        return clip(x + eps * _normalize_l2(delta))

    def one_restart(r, carry):
        x_adv, success, queries, best_margin, calls = carry
        k_init, kr = jax.random.split(jax.random.fold_in(key, r))
        todo = ~success  # examples this restart attacks (and is charged for)
        x_best = init_point(k_init)
        m_best = query(x_best)
        queries = queries + todo.astype(jnp.int32)
        calls = calls + 1
        active = todo & (m_best > 0)

        def cond(st):
            it, _, _, act, _, _ = st
            return (it < n_queries - 1) & jnp.any(act)

        def body(st):
            it, xb, mb, act, q, cl = st
            xn = candidate(jax.random.fold_in(kr, it), it, xb)
            mn = query(xn)
            better = act & ((mn < mb) | (mn <= 0))
            xb = jnp.where(better[:, None, None, None], xn, xb)
            mb = jnp.where(better, mn, mb)
            q = q + act.astype(jnp.int32)
            return it + 1, xb, mb, act & (mb > 0), q, cl + 1

        st = (jnp.zeros([], jnp.int32), x_best, m_best, active, queries, calls)
        _, x_best, m_best, _, queries, calls = jax.lax.while_loop(cond, body, st)
        won = todo & (m_best <= 0)
        x_adv = jnp.where(won[:, None, None, None], x_best, x_adv)
        best_margin = jnp.where(todo, jnp.minimum(best_margin, m_best), best_margin)
        return x_adv, success | won, queries, best_margin, calls

    carry = (x, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32),
             jnp.full((n,), jnp.inf, dtype), jnp.zeros([], jnp.int32))
    x_adv, success, queries, best_margin, calls = jax.lax.fori_loop(
        0, restarts, one_restart, carry)
    if squeeze:
        x_adv = x_adv[..., 0]
    return SquareInfo(x_adv=jax.lax.stop_gradient(x_adv), success=success, n_queries=queries,
                      margin=best_margin, calls=calls)


def _validate(logits_fn, key, x, y, eps, norm, n_queries, p_init, restarts, box):
    B.check_attack_inputs(logits_fn, key, x, y, box=box)
    V.check_rank(x, "x", (3, 4))
    B.check_eps(eps)
    V.check_choice(norm, "norm", P.NORMS)
    V.check_positive_int(n_queries, "n_queries")
    V.check_positive_int(restarts, "restarts")
    V.check_probability(p_init, "p_init")
    V.check_positive(p_init, "p_init")
    if box is not None and not (len(box) == 2 and float(box[0]) < float(box[1])):
        raise ValueError(f"`box` must be (lo, hi) with lo < hi, got {box!r}.")


def square_with_info(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    rescale_schedule: bool = True,
) -> SquareInfo:
    """Square Attack with its success mask and query counts (see :func:`square`)."""
    _validate(logits_fn, key, x, y, eps, norm, n_queries, p_init, restarts, box)
    return _square_impl(logits_fn, key, x, y, eps=eps, norm=norm, n_queries=n_queries,
                        p_init=p_init, restarts=restarts, box=box,
                        rescale_schedule=rescale_schedule)


def square(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    rescale_schedule: bool = True,
) -> Array:
    """Square Attack (untargeted, margin loss), ℓ∞ or ℓ2; gradient-free.

    Each restart spends at most ``n_queries`` queries per example, the initial point
    included; an example stops (is no longer updated nor charged) at its first success. The
    batch runs in one compiled ``while`` loop (masked updates) that ends when every example
    has succeeded or the budget is spent, so ``logits_fn`` is called at most ``n_queries``
    times per restart. Every candidate is projected onto the ε-ball and the box: the result
    never leaves them. Restart ``r`` draws its randomness from ``fold_in(key, r)`` and attacks
    only the examples not yet broken. The window position is uniform over all positions
    (the reference draws from all but the last one); windows, signs and η orientations are
    drawn per example (the reference shares the window across the batch).

    Args:
      logits_fn: model, ``x [N, H, W, C] -> logits [N, K]``; only queried, never
        differentiated (may be non-differentiable).
      key: PRNG key.
      x: clean images ``float [N, H, W, C]`` (or ``[N, H, W]``) inside ``box``.
      y: ``int [N]`` true labels.
      eps: radius ``>= 0`` of the ℓ∞ / ℓ2 ball.
      norm: ``"linf"`` or ``"l2"``.
      n_queries: query budget per example and restart, the initial point included (paper and
        AutoAttack: 5000).
      p_init: initial fraction of the image covered by the window (paper: 0.8 for ℓ∞ and ℓ2
        in AutoAttack).
      restarts: independent restarts on the still-robust examples.
      box: image domain ``(lo, hi)`` or ``None``.
      rescale_schedule: map the iteration to the 10,000-query scale of the p checkpoints
        (default, as the reference code and torchattacks' ``Square``; AutoAttack's own
        repository uses ``False`` with 5000 queries). See :func:`square_p_schedule`.

    Returns:
      ``x_adv`` with ``x``'s shape, wrapped in ``stop_gradient``: the first misclassified
      point found, or ``x`` where none was found.

    Raises:
      ValueError: bad shapes/labels/pixels, ``x`` not an image batch, ``eps < 0``,
        ``n_queries``/``restarts`` not positive integers, ``p_init`` outside ``(0, 1]``.

    Cost: at most ``restarts · n_queries`` forward passes of ``logits_fn`` on ``[N, ...]``
    (no backward pass) plus ``O(N H W C)`` per query; memory ``O(N H W C)``.
    """
    return square_with_info(
        logits_fn, key, x, y, eps=eps, norm=norm, n_queries=n_queries, p_init=p_init,
        restarts=restarts, box=box, rescale_schedule=rescale_schedule).x_adv
