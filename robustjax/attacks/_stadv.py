r"""stAdv: spatially transformed adversarial examples (Xiao et al., ICLR 2018).

The attacker optimises a per-pixel flow ``f [N, H, W, 2]`` and returns ``warp(x, f)``:

.. math:: f^* = \arg\min_f \; \mathcal L_{adv}(x, f) + \tau\, \mathcal L_{flow}(f)

with the Carlini-Wagner margin loss :math:`\mathcal L_{adv}` (:func:`robustjax.losses.cw_loss`,
confidence :math:`\kappa`, untargeted or targeted) of the warped image and Xiao et al.'s flow
loss (their Eqn 4: one square root per neighbour pair, :func:`robustjax.spatial.flow_loss`,
``form="stadv"``), by default with a small Huber-like smoothing of each square root
(``smoothing=0.1`` pixel; ``smoothing=0`` gives the exact loss). ``tau`` is therefore in Xiao's
units (``tau = 0.05`` is their setting); ``flow_form="stadv_pixel"`` selects the per-pixel root
used here before issue 16 (about 0.55x the per-pair value, so the same ``tau`` is weaker).

Optimisers. ``"lbfgs"`` (the paper's choice) runs :func:`optax.lbfgs` with a line search,
**one independent L-BFGS per example** (``jax.vmap`` over the batch): a single L-BFGS on the
batch-summed objective would couple the examples through the shared line-search step and
curvature pairs, so results would depend on the batch composition. Under ``vmap`` the inner
line-search loops run until every example's line search has finished. ``"adam"`` runs Adam on
the batch-summed objective; Adam is elementwise, so the examples stay independent.

Line search. The objective is only piecewise smooth (bilinear interpolation has kinks wherever a
displacement crosses an integer, and a zero flow sits exactly on them), so the strong-Wolfe zoom
line search often returns tiny steps; the default is an Armijo backtracking line search
(``linesearch="backtracking"``), which made more progress per iteration in our runs on MNIST
(``"zoom"`` is available). Expect L-BFGS to need on the order of a hundred iterations; Adam with
step 0.01 is a cheaper alternative for adversarial training.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from robustjax._src import validation as V
from robustjax.attacks import _base as B
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.losses import cw_loss
from robustjax.spatial import flow_loss
from robustjax.spatial import warp  # noqa: E402

__all__ = ["stadv", "stadv_flow", "stadv_tau_sweep", "StadvResult", "StadvSweep"]

OPTIMIZERS = ("lbfgs", "adam")
LINESEARCHES = ("backtracking", "zoom")


def _check(logits_fn, key, x, y, tau, steps, optimizer, kappa, learning_rate, init_std,
           memory_size, linesearch, smoothing, flow_form="stadv") -> int:
    if not callable(logits_fn):
        raise ValueError("`logits_fn` must be callable.")
    V.check_key(key, "key")
    k = B.check_attack_inputs(logits_fn, key, x, y)
    V.check_rank(x, "x", 4)
    V.check_nonnegative_value(tau, "tau")
    V.check_positive_int(steps, "steps")
    V.check_choice(optimizer, "optimizer", OPTIMIZERS)
    V.check_nonnegative_value(kappa, "kappa")
    V.check_positive(learning_rate, "learning_rate")
    V.check_nonnegative(init_std, "init_std")
    V.check_positive_int(memory_size, "memory_size")
    V.check_choice(linesearch, "linesearch", LINESEARCHES)
    V.check_nonnegative(smoothing, "smoothing")
    V.check_choice(flow_form, "flow_form", ("stadv", "stadv_pixel"))
    return k


def _objective(logits_fn: LogitsFn, x: Array, y: Array, tau: Array, kappa: float,
               targeted: bool, smoothing: float = 0.0,
               flow_form: str = "stadv") -> Callable[[Array], Array]:
    """Per-example objective ``flow [N, H, W, 2] -> [N]``."""

    def obj(flow):
        logits = logits_fn(warp(x, flow))
        return (cw_loss(logits, y, kappa=kappa, target=y if targeted else None)
                + tau * flow_loss(flow, form=flow_form, smoothing=smoothing))

    return obj


def _best_tracker(logits_fn, x, y, targeted: bool, flow_form: str):
    """``score(flow [N, ...]) -> (success [N], flow loss [N])`` for keeping the best iterate."""

    def score(flow):
        pred = jnp.argmax(logits_fn(warp(x, flow)), axis=-1)
        ok = (pred == y) if targeted else (pred != y)
        return ok, flow_loss(flow, form=flow_form)

    return score


def _keep(best, f, score):
    """Update ``(best_flow, best_size)`` with ``f`` where it succeeds with a smaller flow."""
    bf, bs = best
    ok, size = score(f)
    better = ok & (size < bs)
    mask = better.reshape(better.shape + (1,) * (f.ndim - better.ndim))
    return jnp.where(mask, f, bf), jnp.where(better, size, bs)


def _finish(f, best):
    bf, bs = best
    found = jnp.isfinite(bs)
    return jnp.where(found.reshape(found.shape + (1,) * (f.ndim - found.ndim)), bf, f)


def _run_lbfgs(obj_one, f0: Array, steps: int, memory_size: int, linesearch: str,
               score_one=None) -> Array:
    if linesearch == "zoom":
        ls = optax.scale_by_zoom_linesearch(max_linesearch_steps=20)
    else:
        ls = optax.scale_by_backtracking_linesearch(max_backtracking_steps=20, store_grad=True)
    opt = optax.lbfgs(memory_size=memory_size, linesearch=ls)
    vg = optax.value_and_grad_from_state(obj_one)

    def body(_, carry):
        f, st, best = carry
        val, g = vg(f, state=st)
        upd, st = opt.update(g, st, f, value=val, grad=g, value_fn=obj_one)
        f = optax.apply_updates(f, upd)
        if score_one is not None:
            best = _keep(best, f, score_one)
        return f, st, best

    best0 = (f0, jnp.asarray(jnp.inf, f0.dtype))
    f, _, best = jax.lax.fori_loop(0, steps, body, (f0, opt.init(f0), best0))
    return f if score_one is None else _finish(f, best)


def _stadv_impl(logits_fn, key, x, y, tau, *, steps, optimizer, kappa, targeted, learning_rate,
                init_std, memory_size, linesearch, smoothing, flow_form="stadv",
                keep_best=False) -> Array:
    n, h, w, _ = x.shape
    f0 = init_std * jax.random.normal(key, (n, h, w, 2), x.dtype)
    if optimizer == "lbfgs":

        def one(xi, yi, fi):
            obj = _objective(logits_fn, xi[None], yi[None], tau, kappa, targeted, smoothing,
                             flow_form)
            score_one = None
            if keep_best:
                sc = _best_tracker(logits_fn, xi[None], yi[None], targeted, flow_form)
                score_one = lambda ff: tuple(a[0] for a in sc(ff[None]))  # noqa: E731
            return _run_lbfgs(lambda ff: obj(ff[None])[0], fi, steps, memory_size, linesearch,
                              score_one)

        flow = jax.vmap(one)(x, y, f0)
    else:
        obj = _objective(logits_fn, x, y, tau, kappa, targeted, smoothing, flow_form)
        total = lambda ff: jnp.sum(obj(ff))  # noqa: E731  examples stay independent
        opt = optax.adam(learning_rate)
        score = _best_tracker(logits_fn, x, y, targeted, flow_form) if keep_best else None

        def body(_, carry):
            f, st, best = carry
            g = jax.grad(total)(f)
            upd, st = opt.update(g, st, f)
            f = optax.apply_updates(f, upd)
            if score is not None:
                best = _keep(best, f, score)
            return f, st, best

        best0 = (f0, jnp.full((n,), jnp.inf, x.dtype))
        flow, _, best = jax.lax.fori_loop(0, steps, body, (f0, opt.init(f0), best0))
        if keep_best:
            flow = _finish(flow, best)
    return jax.lax.stop_gradient(flow)


def stadv_flow(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    tau: float = 0.05,
    steps: int = 50,
    optimizer: str = "lbfgs",
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    learning_rate: float = 0.01,
    init_std: float = 0.0,
    memory_size: int = 10,
    linesearch: str = "backtracking",
    smoothing: float = 0.1,
    flow_form: str = "stadv",
    keep_best: bool = False,
) -> StadvResult:
    r"""stAdv returning both the adversarial images and the flow.

    Args:
      logits_fn: model, ``[N, H, W, C] -> [N, K]``.
      key: PRNG key (used only when ``init_std > 0``: Gaussian initial flow).
      x: images ``[N, H, W, C]`` in ``[0, 1]``; y: ``int32 [N]`` true labels.
      tau: weight :math:`\tau` of the flow loss (0.05 in Xiao et al.).
      steps: optimiser iterations (L-BFGS iterations each include a line search of up to 20
        objective evaluations).
      optimizer: ``"lbfgs"`` (per-example, see module docstring) or ``"adam"``.
      kappa: CW confidence :math:`\kappa \ge 0`; target: ``None`` (untargeted) or
        ``int32 [N]`` target labels.
      learning_rate: Adam step size (ignored by L-BFGS); init_std: std of the initial flow.
      memory_size: L-BFGS history length.
      linesearch: L-BFGS line search, ``"backtracking"`` (Armijo) or ``"zoom"`` (strong Wolfe).
      smoothing: Huber-like smoothing ``δ`` (pixels) of each per-pixel square root in
        :math:`\mathcal L_{flow}` (:func:`robustjax.spatial.flow_loss`); ``0`` is the exact
        stAdv loss. Without it every pixel's root is a cone at zero variation and L-BFGS
        stalls from a zero flow (observed on MNIST: no progress in 15 iterations).
      flow_form: ``"stadv"`` (Xiao et al. Eqn 4, one root per neighbour pair) or
        ``"stadv_pixel"`` (one root per pixel); see :func:`robustjax.spatial.flow_loss`.
      keep_best: return, per example, the successful iterate with the smallest (unsmoothed)
        flow loss, if any iterate succeeded (else the last one), as Carlini-Wagner-style
        attacks do. With ``kappa = 0`` the minimiser of the objective lies *on* the decision
        boundary, so the last iterate lands on either side of it by chance (measured: about
        half of the digits); evaluation should use ``keep_best=True``. Costs one extra forward
        pass per iteration.

    Returns:
      ``(x_adv [N, H, W, C], flow [N, H, W, 2])``, both under ``stop_gradient``. The warped
      image stays in ``[0, 1]`` (bilinear interpolation with zero padding is a convex
      combination of pixels and 0).

    Cost: ``O(steps·(fwd+bwd))`` for Adam; ``O(steps·L·(fwd+bwd))`` for L-BFGS with ``L`` line
    search evaluations per step (typically 1-3).

    References:
      Xiao et al., *Spatially Transformed Adversarial Examples*, ICLR 2018, Eqns 1-4.
    """
    k = _check(logits_fn, key, x, y, tau, steps, optimizer, kappa, learning_rate, init_std,
               memory_size, linesearch, smoothing, flow_form)
    x = jnp.asarray(x)
    y, targeted = B.resolve_target(y, target, k)
    flow = _stadv_impl(logits_fn, key, x, y, jnp.asarray(tau, x.dtype),
                       steps=steps, optimizer=optimizer, kappa=kappa, targeted=targeted,
                       learning_rate=learning_rate, init_std=init_std,
                       memory_size=memory_size, linesearch=linesearch,
                       smoothing=smoothing, flow_form=flow_form, keep_best=keep_best)
    return StadvResult(jax.lax.stop_gradient(warp(x, flow)), flow)


def stadv(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    tau: float = 0.05,
    steps: int = 50,
    optimizer: str = "lbfgs",
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    learning_rate: float = 0.01,
    init_std: float = 0.0,
    memory_size: int = 10,
    linesearch: str = "backtracking",
    smoothing: float = 0.1,
    flow_form: str = "stadv",
    keep_best: bool = False,
) -> Array:
    r"""stAdv flow attack (Xiao et al. 2018): ``x_adv = warp(x, f*)`` with
    :math:`f^* = \arg\min_f \mathcal L_{adv} + \tau\mathcal L_{flow}`.

    Arguments as in :func:`stadv_flow`. Returns ``stop_gradient(x_adv)`` ``[N, H, W, C]``.
    """
    return stadv_flow(logits_fn, key, x, y, tau=tau, steps=steps, optimizer=optimizer,
                      kappa=kappa, target=target, learning_rate=learning_rate,
                      init_std=init_std, memory_size=memory_size,
                      linesearch=linesearch, smoothing=smoothing, flow_form=flow_form,
                      keep_best=keep_best)[0]


class StadvResult(NamedTuple):
    """Result of :func:`stadv_flow`: ``x_adv [N, H, W, C]`` (``stop_gradient``) and the flow
    ``[N, H, W, 2]``."""

    x_adv: Array
    flow: Array


class StadvSweep(NamedTuple):
    """Result of :func:`stadv_tau_sweep` (``T`` values of tau).

    Attributes:
      taus: ``[T]``; x_adv: ``[T, N, H, W, C]``; flow: ``[T, N, H, W, 2]``;
      flow_loss: ``[T, N]`` Xiao's flow loss (``form="stadv"``, per neighbour pair, unsmoothed);
      success: ``bool [T, N]`` (untargeted: prediction != y; targeted: prediction == y).
    """

    taus: Array
    x_adv: Array
    flow: Array
    flow_loss: Array
    success: Array


def stadv_tau_sweep(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    taus: Sequence[float] = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5),
    steps: int = 50,
    optimizer: str = "lbfgs",
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    learning_rate: float = 0.01,
    init_std: float = 0.0,
    memory_size: int = 10,
    linesearch: str = "backtracking",
    smoothing: float = 0.1,
    flow_form: str = "stadv",
    keep_best: bool = False,
) -> StadvSweep:
    r"""Run stAdv for several :math:`\tau` (the x-axis of Fig. 6 of the spatial-robustness
    paper). ``tau`` is traced inside, so the attack compiles once for the whole sweep; the
    sweep runs sequentially (``lax.map``). The same ``key`` is used for every ``tau``.

    Returns :class:`StadvSweep`. Cost ``T`` times :func:`stadv`.
    """
    taus = tuple(float(t) for t in taus)
    if not taus:
        raise ValueError("`taus` must be a non-empty sequence.")
    for t in taus:
        V.check_nonnegative(t, "taus")
    k = _check(logits_fn, key, x, y, 0.0, steps, optimizer, kappa, learning_rate, init_std,
               memory_size, linesearch, smoothing, flow_form)
    x = jnp.asarray(x)
    y, targeted = B.resolve_target(y, target, k)
    tarr = jnp.asarray(taus, x.dtype)

    def one(t):
        f = _stadv_impl(logits_fn, key, x, y, t, steps=steps, optimizer=optimizer,
                        kappa=kappa, targeted=targeted, learning_rate=learning_rate,
                        init_std=init_std, memory_size=memory_size, linesearch=linesearch,
                        smoothing=smoothing, flow_form=flow_form, keep_best=keep_best)
        xa = warp(x, f)
        pred = jnp.argmax(logits_fn(xa), axis=-1)
        ok = (pred == y) if targeted else (pred != y)
        return xa, f, flow_loss(f, form="stadv"), ok

    xa, f, fl, ok = jax.lax.map(one, tarr)
    return StadvSweep(tarr, jax.lax.stop_gradient(xa), f, fl, ok)
