"""FAB: the Fast Adaptive Boundary attack, untargeted and targeted (FAB-T, as in AutoAttack).

FAB looks for a *minimally distorted* adversarial example. At the iterate :math:`x^{(i)}` it
linearizes the decision boundary between the true class :math:`y` and a class :math:`s`
(the target in FAB-T; in the untargeted form the class whose linearized boundary is closest),

.. math:: \\pi_s(z) = \\{z : f_s(x^{(i)}) - f_y(x^{(i)}) +
          \\langle \\nabla (f_s - f_y)(x^{(i)}), z - x^{(i)} \\rangle = 0\\},

projects both the iterate and the original point onto :math:`\\pi_s \\cap [lo, hi]^d` in the
attacked ℓp norm (:func:`fab_projection`, exact), and moves to a convex combination of the two
projections, extrapolated by :math:`\\eta` and biased towards the original point by
:math:`\\alpha = \\min(\\|\\delta^{(i)}\\| / (\\|\\delta^{(i)}\\| + \\|\\delta_{orig}\\|),
\\alpha_{max})`:

.. math:: x^{(i+1)} = \\Pi_{box}\\big((1-\\alpha)(x^{(i)} + \\eta\\,\\delta^{(i)})
          + \\alpha\\,(x_{orig} + \\eta\\,\\delta_{orig})\\big).

When :math:`x^{(i+1)}` is adversarial it is recorded if it is the closest found so far, and
the iterate steps back towards the original point, :math:`x^{(i+1)} \\leftarrow x_{orig} +
\\beta (x^{(i+1)} - x_{orig})`. Restarts ``r >= 1`` start from a random point at distance
``eps / 2`` (ℓ∞: scaled uniform noise, ℓ2: scaled Gaussian noise).

References:
  Croce & Hein, *Minimally distorted adversarial examples with a fast adaptive boundary
  attack*, ICML 2020 (arXiv:1907.02044), Alg. 1, Sec. 3.1 (projection), 3.2 (biased step,
  extrapolation η, backward step β), Sec. 3.3 (random restarts).
  Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of diverse
  parameter-free attacks*, ICML 2020 (arXiv:2003.01690), Sec. 4: FAB-T (targeted FAB over the
  top-9 classes, one restart each) as a member of AutoAttack.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustjax import projections as P
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks import _base as B

__all__ = ["FABInfo", "fab", "fab_with_info", "fab_projection"]

_BIG = 1e10


# ---------------------------------------------------------------------------------------------
# Projection onto a hyperplane intersected with a box.
# ---------------------------------------------------------------------------------------------


def _water_level(weights: Array, caps: Array, target: Array) -> tuple[Array, Array]:
    """Smallest ``lam >= 0`` with ``G(lam) = sum_i weights_i * min(lam, caps_i) >= target``.

    ``weights, caps [M, D] >= 0``, ``target [M] >= 0``. ``G`` is piecewise linear, concave and
    non-decreasing with breakpoints at the caps; sorting the caps gives ``G`` at every
    breakpoint from two cumulative sums, the segment holding the solution is the number of
    breakpoints where ``G < target``, and on it ``G`` is linear. Returns ``(lam [M],
    feasible [M])``; where ``G(max caps) < target`` (the hyperplane misses the box) ``lam`` is
    ``max caps`` (the box corner closest to the hyperplane). Cost ``O(D log D)`` per row.
    """
    d = weights.shape[-1]
    order = jnp.argsort(caps, axis=-1)
    cs = jnp.take_along_axis(caps, order, axis=-1)
    ws = jnp.take_along_axis(weights, order, axis=-1)
    cum_wc = jnp.cumsum(ws * cs, axis=-1)  # sum over capped coordinates of w_i * cap_i
    cum_w = jnp.cumsum(ws, axis=-1)
    total = cum_w[:, -1:]
    g_at = cum_wc + cs * (total - cum_w)  # G(cs_k)
    k = jnp.sum(g_at < target[:, None], axis=-1)  # [M] in [0, D]
    feasible = k < d
    km1 = jnp.clip(k - 1, 0, d - 1)[:, None]
    a_prev = jnp.where(k > 0, jnp.take_along_axis(cum_wc, km1, -1)[:, 0], 0.0)
    w_prev = total[:, 0] - jnp.where(k > 0, jnp.take_along_axis(cum_w, km1, -1)[:, 0], 0.0)
    lam = (target - a_prev) / jnp.where(w_prev > 0, w_prev, 1.0)
    lam = jnp.where(w_prev > 0, lam, 0.0)
    lo_seg = jnp.where(k > 0, jnp.take_along_axis(cs, km1, -1)[:, 0], 0.0)
    hi_seg = jnp.take_along_axis(cs, jnp.clip(k, 0, d - 1)[:, None], -1)[:, 0]
    lam = jnp.clip(lam, lo_seg, hi_seg)  # guards against rounding at the breakpoints
    lam = jnp.where(feasible, lam, cs[:, -1])
    return jnp.maximum(lam, 0.0), feasible


def fab_projection(
    t: ArrayLike,
    w: ArrayLike,
    b: ArrayLike,
    *,
    norm: str = "linf",
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    """Minimal ℓp step from ``t`` onto the hyperplane ``<w, z> = b`` inside the box.

    .. math:: \\delta^* = \\arg\\min_\\delta \\|\\delta\\|_p \\ \\text{s.t.}\\
              \\langle w, t + \\delta\\rangle = b,\\ lo \\le t + \\delta \\le hi

    Exact for ``p = ∞`` and ``p = 2``. After orienting ``w`` so that the step must lower
    ``<w, z>`` by ``c = |<w, t> - b|``, both problems reduce to one scalar equation: ℓ∞:
    ``δ_i = -sign(w_i) min(ρ, u_i)`` with ``u_i`` the room to the box in that direction and
    ``Σ |w_i| min(ρ, u_i) = c``; ℓ2 (KKT): ``δ_i = -w_i min(λ, u_i / |w_i|)`` with
    ``Σ w_i² min(λ, u_i/|w_i|) = c``. The monotone piecewise-linear equation is solved
    exactly by sorting its breakpoints (vectorized, no bisection loop). When the hyperplane
    does not meet the box, the step goes to the box corner closest to it (the largest feasible
    decrease). ``t`` must lie in the box.

    Args:
      t: points ``[M, D]``.
      w: hyperplane normals ``[M, D]``.
      b: offsets ``[M]``.
      norm: ``"linf"`` or ``"l2"``.
      box: ``(lo, hi)`` or ``None`` (no box: the closed form ``c w / ||w||``-type step).

    Returns:
      ``δ [M, D]``; coordinates with ``w_i = 0`` are 0.

    Cost: ``O(M D log D)`` (one sort per row).
    """
    V.check_choice(norm, "norm", P.NORMS)
    t = jnp.asarray(t)
    w = jnp.asarray(w, t.dtype)
    b = jnp.asarray(b, t.dtype)
    V.check_rank(t, "t", 2)
    V.check_rank(w, "w", 2)
    V.check_rank(b, "b", 1)
    if w.shape != t.shape or b.shape[0] != t.shape[0]:
        raise ValueError(
            f"`t` and `w` must both be [M, D] and `b` [M], got {t.shape}, {w.shape}, {b.shape}.")
    c = jnp.sum(w * t, axis=-1) - b
    sgn = jnp.where(c >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sgn[:, None]
    c = c * sgn  # >= 0: the step must lower <w, z> by c
    nz = w != 0
    aw = jnp.abs(w)
    if box is None:
        if norm == "linf":
            lam = c / jnp.maximum(jnp.sum(aw, -1), 1e-30)
            return -jnp.sign(w) * lam[:, None]
        lam = c / jnp.maximum(jnp.sum(w * w, -1), 1e-30)
        return -w * lam[:, None]
    lo, hi = box
    room = jnp.where(w > 0, t - lo, hi - t)  # how far z_i may move in the decreasing direction
    room = jnp.where(nz, jnp.maximum(room, 0.0), 0.0)
    if norm == "linf":
        lam, _ = _water_level(aw, room, c)
        return -jnp.sign(w) * jnp.minimum(lam[:, None], room)
    caps = jnp.where(nz, room / jnp.where(nz, aw, 1.0), 0.0)
    lam, _ = _water_level(w * w, caps, c)
    return -w * jnp.minimum(lam[:, None], caps)


# ---------------------------------------------------------------------------------------------
# The attack.
# ---------------------------------------------------------------------------------------------


class FABInfo(NamedTuple):
    """Result of :func:`fab_with_info`.

    Attributes:
      x_adv: ``[N, ...]``: the closest adversarial point found within ``eps`` where one was
        found, else ``x``.
      success: ``bool [N]``: an adversarial point within ``eps`` was found (points already
        misclassified at ``x`` count as not attacked: ``False``, ``x_adv = x``).
      distance: ``[N]``: ℓp distance of ``x_adv`` to ``x`` (``inf`` where no success).
    """

    x_adv: Array
    success: Array
    distance: Array


def _flat_norm(d: Array, norm: str) -> Array:
    d = d.reshape(d.shape[0], -1)
    if norm == "linf":
        return jnp.max(jnp.abs(d), axis=-1)
    return jnp.sqrt(jnp.sum(d * d, axis=-1))


def _dual_norm(g: Array, norm: str) -> Array:
    # g [..., D]: ℓ1 for the ℓ∞ attack, ℓ2 for the ℓ2 attack.
    if norm == "linf":
        return jnp.sum(jnp.abs(g), axis=-1)
    return jnp.sqrt(jnp.sum(g * g, axis=-1))


def _random_start(key, x0, eps, norm, box):
    """Restart start point: ``x0 + (eps/2) t / ||t||`` (ℓ∞: t ~ U[-1,1]^d, ℓ2: t ~ N(0, I))."""
    flat = x0.reshape(x0.shape[0], -1)
    if norm == "linf":
        t = jax.random.uniform(key, flat.shape, flat.dtype, -1.0, 1.0)
    else:
        t = jax.random.normal(key, flat.shape, flat.dtype)
    t = t / jnp.maximum(_flat_norm(t, norm), 1e-12)[:, None]
    x1 = flat + 0.5 * eps * t
    if box is not None:
        x1 = jnp.clip(x1, *box)
    return x1


def _fab_impl(logits_fn, key, x, y, *, eps, norm, steps, n_target_classes, restarts, targeted,
              alpha_max, eta, beta, box):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    shape = x.shape
    n = shape[0]
    x0 = x.reshape(n, -1)
    dtype = x0.dtype

    model = B.gradient_model(logits_fn)

    def logits_flat(z):
        return model(z.reshape(shape))

    clean = logits_flat(x0)
    k = clean.shape[-1]
    correct = jnp.argmax(clean, -1) == y
    # Targets of FAB-T: the 2nd, 3rd, ... most likely classes at the clean point.
    ranked = jnp.argsort(-clean, axis=-1)  # [N, K], descending
    n_targets = n_target_classes if targeted else 1
    n_runs = n_targets * restarts
    onehot_y = jax.nn.one_hot(y, k, dtype=dtype)
    rows = jnp.arange(n)

    def diffs(z, target):
        """Logit differences ``df [N, S]`` and their gradients ``dg [N, S, D]``."""
        if targeted:
            oh = jax.nn.one_hot(target, k, dtype=dtype) - onehot_y

            def f(zz):
                lz = logits_flat(zz)
                return jnp.sum(lz * oh, -1), lz

            (df, _), vjp = jax.vjp(f, z)
            (dg,) = vjp((jnp.ones_like(df), jnp.zeros((n, k), dtype)))
            return df[:, None], dg[:, None, :]
        lz, vjp = jax.vjp(logits_flat, z)
        eye = jnp.eye(k, dtype=dtype)
        jac = jax.vmap(lambda e: vjp(jnp.broadcast_to(e, (n, k)))[0])(eye)  # [K, N, D]
        jac = jnp.swapaxes(jac, 0, 1)  # [N, K, D]
        df = lz - lz[rows, y][:, None]
        dg = jac - jac[rows, y][:, None, :]
        df = jnp.where(onehot_y > 0, _BIG, df)  # never project onto the true class
        return df, dg

    def step(carry, target):
        x1, best, best_d = carry
        df, dg = diffs(x1, target)
        dist = jnp.abs(df) / (_dual_norm(dg, norm) + 1e-12)  # distance to each linearized bd.
        s = jnp.argmin(dist, axis=-1)
        wv = dg[rows, s]  # [N, D]
        bv = jnp.sum(wv * x1, -1) - df[rows, s]
        d = fab_projection(jnp.concatenate([x1, x0]), jnp.concatenate([wv, wv]),
                           jnp.concatenate([bv, bv]), norm=norm, box=box)
        d1, d2 = d[:n], d[n:]
        a1 = jnp.maximum(_flat_norm(d1, norm), 1e-8)
        a2 = jnp.maximum(_flat_norm(d2, norm), 1e-8)
        alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
        x1 = (x1 + eta * d1) * (1.0 - alpha) + (x0 + eta * d2) * alpha
        if box is not None:
            x1 = jnp.clip(x1, *box)
        is_adv = jnp.argmax(logits_flat(x1), -1) != y
        t = _flat_norm(x1 - x0, norm)
        better = is_adv & (t < best_d)
        best = jnp.where(better[:, None], x1, best)
        best_d = jnp.where(better, t, best_d)
        x1 = jnp.where(is_adv[:, None], x0 + beta * (x1 - x0), x1)
        return x1, best, best_d

    def one_run(run, out):
        x_out, found, dist_out = out
        target = ranked[:, 2 + run // restarts - 1] if targeted else y
        restart = run % restarts
        x_start = jax.lax.cond(
            restart > 0,
            lambda: _random_start(jax.random.fold_in(key, run), x0, eps, norm, box),
            lambda: x0,
        )
        carry = (x_start, x0, jnp.full((n,), jnp.inf, dtype))
        _, best, best_d = jax.lax.fori_loop(0, steps, lambda _, c: step(c, target), carry)
        new = correct & ~found & (best_d <= eps)
        x_out = jnp.where(new[:, None], best, x_out)
        dist_out = jnp.where(new, best_d, dist_out)
        return x_out, found | new, dist_out

    def cond(state):
        run, (_, found, _) = state
        return (run < n_runs) & jnp.any(correct & ~found)

    def body(state):
        run, out = state
        return run + 1, one_run(run, out)

    init = (jnp.zeros([], jnp.int32), (x0, jnp.zeros((n,), bool), jnp.full((n,), jnp.inf, dtype)))
    _, (x_out, found, dist_out) = jax.lax.while_loop(cond, body, init)
    x_out = jax.lax.stop_gradient(x_out.reshape(shape))
    return FABInfo(x_adv=x_out, success=found, distance=dist_out)


def _validate(logits_fn, key, x, y, eps, norm, steps, n_target_classes, restarts,
              alpha_max, eta, beta, box):
    targeted = n_target_classes is not None
    k = B.check_attack_inputs(logits_fn, key, x, y, box=box)
    B.check_eps(eps)
    V.check_choice(norm, "norm", P.NORMS)
    V.check_positive_int(steps, "steps")
    V.check_positive_int(restarts, "restarts")
    if targeted:
        V.check_positive_int(n_target_classes, "n_target_classes")
    if targeted and n_target_classes > k - 1:
        raise ValueError(
            f"`n_target_classes` must be <= K - 1 = {k - 1} (targets are the 2nd..(n+1)-th most "
            f"likely classes), got {n_target_classes}.")
    V.check_probability(alpha_max, "alpha_max")
    V.check_positive(eta, "eta")
    V.check_probability(beta, "beta")
    if restarts > 1 and not isinstance(eps, jax.Array) and not math.isfinite(float(eps)):
        raise ValueError("`eps` must be finite when `restarts` > 1 (random starts lie at eps/2).")
    if box is not None and not (len(box) == 2 and float(box[0]) < float(box[1])):
        raise ValueError(f"`box` must be (lo, hi) with lo < hi, got {box!r}.")


_DOC_ARGS = """
    Args:
      logits_fn: model, ``x [N, ...] -> logits [N, K]``, acting on examples independently.
      key: PRNG key (random starts of restarts ``r >= 1``; restart ``r`` of target ``j`` uses
        ``fold_in(key, j * restarts + r)``).
      x: clean inputs ``float [N, ...]`` inside ``box``.
      y: ``int [N]`` true labels.
      eps: radius ``>= 0`` of the threat model (``inf`` allowed for ``restarts == 1``): a point
        counts as found only when its ℓp distance to ``x`` is ``<= eps``.
      norm: ``"linf"`` or ``"l2"``.
      steps: iterations per run (100 in the paper and in AutoAttack).
      n_target_classes: FAB-T (the default, as in AutoAttack's standard version) runs once per
        target, the 2nd, ..., ``(n+1)``-th most likely classes at ``x`` (AutoAttack: 9);
        ``None`` runs untargeted FAB (the closest of the ``K - 1`` linearized boundaries at
        each step; ``K`` backward passes).
      restarts: runs per target (untargeted: runs); restart 0 starts at ``x``, the others at a
        random point at distance ``eps/2``.
      alpha_max: cap on the bias towards the original point (paper: 0.1).
      eta: extrapolation factor of the projection step (paper: 1.05).
      beta: backward-step factor after a success (paper: 0.9).
      box: image domain ``(lo, hi)`` or ``None``.
"""


def fab_with_info(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    n_target_classes: int | None = 9,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> FABInfo:
    """FAB / FAB-T with its success mask and distances (see :func:`fab`)."""
    _validate(logits_fn, key, x, y, eps, norm, steps, n_target_classes, restarts,
              alpha_max, eta, beta, box)
    targeted = n_target_classes is not None
    return _fab_impl(logits_fn, key, x, y, eps=eps, norm=norm, steps=steps,
                     n_target_classes=n_target_classes or 1, restarts=restarts,
                     targeted=targeted,
                     alpha_max=alpha_max, eta=eta, beta=beta, box=box)


def fab(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    n_target_classes: int | None = 9,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    """Fast Adaptive Boundary attack (FAB-T by default, as in AutoAttack), ℓ∞ or ℓ2.

    Runs ``n_target_classes × restarts`` FAB runs (targeted) or ``restarts`` runs
    (``n_target_classes=None``: untargeted) of ``steps`` steps in one compiled ``while`` loop over runs that stops as
    soon as every correctly classified point has an adversarial point within ``eps``. Within a
    run the closest adversarial iterate is kept; per point the result of the *first* run that
    succeeds within ``eps`` is returned (as in the reference implementation, which attacks only
    the points still robust), so a point's result does not depend on the rest of the batch.
    The result lies in the ε-ball and the box; points misclassified at ``x`` and points with
    no success are returned unchanged.
    {args}
    Returns:
      ``x_adv`` with ``x``'s shape, wrapped in ``stop_gradient``.

    Raises:
      ValueError: bad shapes/labels/pixels (see :func:`robustjax.attacks.pgd`), ``eps < 0``,
        ``steps``/``restarts``/``n_target_classes`` not positive integers,
        ``n_target_classes > K - 1``, ``alpha_max``/``beta`` outside ``[0, 1]``, ``eta <= 0``.

    Cost: per step, targeted: 2 forward + 1 backward pass of ``logits_fn`` on ``[N, ...]``
    (the second forward checks the new iterate) plus two projections, ``O(N D log D)``;
    untargeted: 2 forward + ``K`` backward passes (one per class row of the Jacobian) and
    ``O(N K D)`` memory for it. Total at most ``n_target_classes · restarts · steps`` steps
    (targeted), ``restarts · steps`` (untargeted), plus one forward pass; fewer when every
    point is broken early.
    """
    return fab_with_info(
        logits_fn, key, x, y, eps=eps, norm=norm, steps=steps,
        n_target_classes=n_target_classes, restarts=restarts,
        alpha_max=alpha_max, eta=eta, beta=beta, box=box).x_adv


fab.__doc__ = fab.__doc__.replace("{args}", _DOC_ARGS)
