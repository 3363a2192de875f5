"""Auto-PGD (APGD) and its targeted form APGD-T, the gradient attacks of AutoAttack.

APGD is PGD with momentum whose step size adapts itself from the attack's own progress, so it
has no step-size parameter to mis-tune. Iteration :math:`k` (``P`` projects onto the ε-ball
intersected with the box, ``s`` is ``sign`` for ℓ∞ and ``g/‖g‖₂`` for ℓ2):

.. math::
   z^{(k+1)} &= P\\big(x^{(k)} + \\eta^{(k)} s(\\nabla f(x^{(k)}))\\big) \\\\
   x^{(k+1)} &= P\\big(x^{(k)} + \\alpha (z^{(k+1)} - x^{(k)})
                + (1 - \\alpha)(x^{(k)} - x^{(k-1)})\\big)

with :math:`\\alpha = 0.75` (``1`` at the first step), :math:`\\eta^{(0)} = 2\\epsilon`, and
the best point :math:`x_{max}` (highest loss :math:`f_{max}`) tracked. At the checkpoints
:math:`w_j = \\lceil p_j N_{iter} \\rceil`, :math:`p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + \\max(p_j - p_{j-1} - 0.03, 0.06)`, the step size is halved and the iterate
restarted from :math:`x_{max}` (with its gradient) if

1. :math:`\\sum_{i=w_{j-1}}^{w_j - 1} [f(x^{(i+1)}) > f(x^{(i)})] < \\rho\\,(w_j - w_{j-1})`
   (too few successful steps since the last checkpoint), or
2. the step size was not halved at the last checkpoint and :math:`f_{max}` has not increased
   since then.

Reference: Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks*, ICML 2020 (arXiv:2003.01690), Sec. 3 and Algorithm 1.
Differences from the authors' PyTorch code, all following the paper's text: condition 1 uses
the strict ``<`` of the paper (the code uses ``≤``) and its first window compares with
:math:`f(x^{(0)})` (the code's first comparison is against 0); the random start is uniform in
the ball (the code's ℓ∞ start has ‖δ‖∞ = ε exactly); restarts run batched rather than only on
the points the previous restart did not break (same per-point result: any success counts).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import projections as P
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks import _base as B

__all__ = ["apgd", "apgd_targeted", "apgd_checkpoints", "apgd_with_trace", "APGDTrace"]

APGD_NORMS = ("linf", "l2")
APGD_LOSSES = ("ce", "dlr", "dlr_targeted")
_TINY = 1e-12


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
    """APGD's checkpoints :math:`w_j = \\lceil p_j N_{iter} \\rceil` for ``j >= 1``, ``p_j < 1``.

    :math:`p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + \\max(p_j - p_{j-1} - 0.03, 0.06)`, computed in
    exact integer hundredths (no float rounding at e.g. 0.41·100). A checkpoint ``w`` means "after
    ``w`` iterations": the step-size test runs once the ``w``-th update has been evaluated.
    Repeated values (small ``steps``) are dropped and only ``1 <= w < steps`` is kept.
    For ``steps = 100``: ``(22, 41, 57, 70, 80, 87, 93, 99)``. Cost ``O(1)``.
    """
    V.check_positive_int(steps, "steps")
    prev, cur = 0, 22  # hundredths
    out: list[int] = []
    while cur < 100:
        w = -(-cur * steps // 100)
        if 1 <= w < steps and (not out or w > out[-1]):
            out.append(w)
        prev, cur = cur, cur + max(cur - prev - 3, 6)
    return tuple(out)


def _schedule_arrays(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Static ``is_checkpoint [steps]`` (after iteration ``i``) and window lengths."""
    cps = apgd_checkpoints(steps)
    is_cp = np.zeros((steps,), bool)
    window = np.zeros((steps,), np.float32)
    last = 0
    for w in cps:
        is_cp[w - 1] = True
        window[w - 1] = w - last
        last = w
    return is_cp, window


class _State(NamedTuple):
    x: Array  # current iterate [M, ...]
    x_prev: Array  # previous iterate (momentum)
    grad: Array  # gradient at x
    loss_prev: Array  # f at the last evaluated iterate [M]
    eta: Array  # per-example step size [M]
    x_max: Array  # best (highest-loss) point
    f_max: Array
    grad_max: Array
    x_found: Array  # first misclassified iterate
    success: Array  # bool [M]
    n_inc: Array  # successful increases since the last checkpoint [M]
    f_max_last: Array  # f_max at the last checkpoint
    reduced_last: Array  # bool: halved at the last checkpoint


class APGDTrace(NamedTuple):
    """Per-iteration record of :func:`apgd_with_trace` (rows = iterations ``0..steps-1``).

    ``loss [T, N]``: :math:`f(x^{(i+1)})`; ``eta [T, N]``: step size after iteration ``i``'s
    checkpoint test; ``f_max [T, N]``; ``loss0 [N]``: :math:`f(x^{(0)})`; ``checkpoints``:
    :func:`apgd_checkpoints`.
    """

    loss: Array
    eta: Array
    f_max: Array
    loss0: Array
    checkpoints: tuple[int, ...]


def _direction(g: Array, norm: str) -> Array:
    if norm == "linf":
        return jnp.sign(g)
    n = P.per_example_norm(g, norm="l2")
    return g / B.bcast(n + _TINY, g)


def _core(value_and_grad, x_orig, y, x_start, eps, *, norm, steps, rho, alpha, box, trace,
          unroll):
    """One batched APGD run from ``x_start``. ``value_and_grad(x, i) -> (loss, logits, grad)``.

    Returns ``(state, (loss, eta, f_max) per iteration or None, loss0)``.
    """
    is_cp, window = _schedule_arrays(steps)
    m = x_orig.shape[0]
    eps_arr = jnp.asarray(eps, x_orig.dtype)

    def project(v):
        return P.project(v, x_orig, eps=eps_arr, norm=norm, box=box)

    loss0, logits0, g0 = value_and_grad(x_start, 0)
    mis0 = jnp.argmax(logits0, axis=-1) != y
    state = _State(
        x=x_start, x_prev=x_start, grad=g0, loss_prev=loss0,
        eta=jnp.full((m,), 2.0, x_orig.dtype) * eps_arr,
        x_max=x_start, f_max=loss0, grad_max=g0, x_found=x_start, success=mis0,
        n_inc=jnp.zeros((m,), jnp.float32), f_max_last=loss0,
        reduced_last=jnp.ones((m,), bool),  # condition 2 needs a previous checkpoint
    )

    def step(s: _State, xs):
        i, cp, win = xs
        a = jnp.where(i == 0, 1.0, alpha).astype(x_orig.dtype)
        eta = B.bcast(s.eta, s.x)
        z = project(s.x + eta * _direction(s.grad, norm))
        x_new = project(s.x + a * (z - s.x) + (1.0 - a) * (s.x - s.x_prev))
        loss, logits, g = value_and_grad(x_new, i + 1)
        mis = jnp.argmax(logits, axis=-1) != y
        first = mis & ~s.success
        x_found = jnp.where(B.bcast(first, x_new), x_new, s.x_found)
        success = s.success | mis
        n_inc = s.n_inc + (loss > s.loss_prev).astype(jnp.float32)
        better = loss > s.f_max
        x_max = jnp.where(B.bcast(better, x_new), x_new, s.x_max)
        grad_max = jnp.where(B.bcast(better, g), g, s.grad_max)
        f_max = jnp.where(better, loss, s.f_max)
        # Checkpoint test (a no-op where `cp` is False).
        cond1 = n_inc < rho * win
        cond2 = (~s.reduced_last) & (s.f_max_last >= f_max)
        reduce = cp & (cond1 | cond2)
        new_eta = jnp.where(reduce, s.eta * 0.5, s.eta)
        r = B.bcast(reduce, x_new)
        s = _State(
            x=jnp.where(r, x_max, x_new), x_prev=s.x, grad=jnp.where(r, grad_max, g),
            loss_prev=loss, eta=new_eta, x_max=x_max, f_max=f_max, grad_max=grad_max,
            x_found=x_found, success=success,
            n_inc=jnp.where(cp, 0.0, n_inc),
            f_max_last=jnp.where(cp, f_max, s.f_max_last),
            reduced_last=jnp.where(cp, reduce, s.reduced_last),
        )
        return s, ((loss, new_eta, f_max) if trace else None)

    is_cp_a, window_a = jnp.asarray(is_cp), jnp.asarray(window)
    rolled = unroll is False or (not isinstance(unroll, bool) and unroll == 1)
    if trace or not rolled:
        xs = (jnp.arange(steps), is_cp_a, window_a)
        state, tr = jax.lax.scan(step, state, xs, unroll=unroll)
        return state, tr, loss0

    # Early exit: a point's result is frozen at its first misclassified iterate, so once every
    # point of the batch is misclassified the remaining iterations cannot change the output.
    def cond(carry):
        i, s = carry
        return (i < steps) & ~jnp.all(s.success)

    def body(carry):
        i, s = carry
        s, _ = step(s, (i, is_cp_a[i], window_a[i]))
        return i + 1, s

    _, state = jax.lax.while_loop(cond, body, (jnp.zeros([], jnp.int32), state))
    return state, None, loss0


def _validate(logits_fn, key, x, y, *, eps, norm, steps, loss, restarts, target, rho, alpha,
              box, eot_samples, unroll):
    B.check_eps(eps)
    V.check_choice(norm, "norm", APGD_NORMS)
    V.check_positive_int(steps, "steps")
    V.check_choice(loss, "loss", APGD_LOSSES)
    V.check_positive_int(restarts, "restarts")
    V.check_probability(rho, "rho")
    V.check_probability(alpha, "alpha")
    if not alpha > 0:
        raise ValueError(f"`alpha` must be in (0, 1], got {alpha!r}.")
    if eot_samples is not None:
        V.check_positive_int(eot_samples, "eot_samples")
    if not (isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1)):
        raise ValueError(f"`unroll` must be a positive int or a bool, got {unroll!r}.")
    fn = logits_fn
    if eot_samples is not None:
        if not callable(logits_fn):
            raise ValueError(f"`logits_fn` must be callable, got {type(logits_fn).__name__}.")
        V.check_key(key, "key")
        fn = lambda v: logits_fn(key, v)  # noqa: E731  (shape check only)
    k = B.check_attack_inputs(fn, key, x, y, box=box)
    if loss == "dlr" and k < 3:
        raise ValueError(f"`loss`='dlr' needs K >= 3 classes, got {k}.")
    if loss == "dlr_targeted":
        if k < 4:
            raise ValueError(f"`loss`='dlr_targeted' needs K >= 4 classes, got {k}.")
        if target is None:
            raise ValueError("`target` is required with loss='dlr_targeted'.")
    if target is not None:
        if loss == "dlr":
            raise ValueError("`target` was given with the untargeted loss 'dlr'; use "
                             "loss='dlr_targeted' (or 'ce' for targeted cross-entropy).")
        V.check_labels(target, "target", batch_size=jnp.shape(x)[0], num_classes=k)
    return k


def _apgd_batched(logits_fn, key, x, y, *, eps, norm, steps, loss, restarts, target, rho,
                  alpha, box, eot_samples, trace, unroll, starts=None):
    """Restarts folded into the batch. Returns ``(x_adv, success [N], f_max [N], trace)``.

    ``starts``: optional random-start offsets ``[R, N, ...]`` (default: drawn from ``key``)."""
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    n = x.shape[0]
    logits_fn = B.gradient_model(logits_fn)
    tile = lambda a: jnp.tile(a, (restarts,) + (1,) * (a.ndim - 1))  # noqa: E731
    x_t, y_t = tile(x), tile(y)
    t_t = None if target is None else tile(jnp.asarray(target))
    if loss == "ce" and target is not None:
        # Targeted cross-entropy: ascend -CE(z, t); success is still checked on the true y.
        def per_example(logits):
            return -B.attack_loss(logits, t_t, loss="ce", targeted=False)
    else:
        def per_example(logits):
            return B.attack_loss(logits, y_t, loss=loss, targeted=False, target=t_t)

    k_start, k_eot = jax.random.split(key)
    if eot_samples is None:
        def f(v, i):
            del i
            logits = logits_fn(v)
            l = per_example(logits)
            return jnp.sum(l), (l, logits)
    else:
        def f(v, i):
            ki = jax.random.fold_in(k_eot, i)
            keys = jax.vmap(lambda s: jax.random.fold_in(ki, s))(jnp.arange(eot_samples))
            logits_s = jax.vmap(lambda kk: logits_fn(kk, v))(keys)  # [S, M, K]
            l = jnp.mean(jax.vmap(per_example)(logits_s), axis=0)
            return jnp.sum(l), (l, jnp.mean(logits_s, axis=0))
    grad_fn = jax.grad(f, has_aux=True)

    def value_and_grad(v, i):
        g, (l, logits) = grad_fn(v, i)
        return l, logits, g

    if starts is None:
        starts = _random_starts(k_start, x.shape, eps=eps, norm=norm, dtype=x.dtype,
                                restarts=restarts)
    x_start = (x[None] + starts).reshape(x_t.shape)
    if box is not None:
        x_start = P.clip_box(x_start, *box)
    state, tr, loss0 = _core(value_and_grad, x_t, y_t, x_start, eps, norm=norm, steps=steps,
                             rho=rho, alpha=alpha, box=box, trace=trace, unroll=unroll)
    out = jnp.where(B.bcast(state.success, state.x_found), state.x_found, state.x_max)
    succ = state.success.reshape(restarts, n)
    fmax = state.f_max.reshape(restarts, n)
    # Per example: the first restart that succeeded, else the one with the highest loss.
    pick = _first_success(succ, fmax)
    out = out.reshape((restarts, n) + x.shape[1:])
    x_adv = jnp.take_along_axis(out, B.bcast(pick[None], out), axis=0)[0]
    success = jnp.any(succ, axis=0)
    f_best = jnp.take_along_axis(fmax, pick[None], axis=0)[0]
    if trace:
        sel = lambda a: jnp.take_along_axis(  # noqa: E731
            a.reshape(steps, restarts, n), pick[None, None], axis=1)[:, 0]
        tr = APGDTrace(loss=sel(tr[0]), eta=sel(tr[1]), f_max=sel(tr[2]),
                       loss0=jnp.take_along_axis(loss0.reshape(restarts, n), pick[None],
                                                 axis=0)[0],
                       checkpoints=apgd_checkpoints(steps))
    return jax.lax.stop_gradient(x_adv), success, f_best, tr


def _first_success(success: Array, loss: Array) -> Array:
    """Per example (axis 1 of ``[G, N]``): the first run that misclassified, else the run with
    the highest loss. ``int [N]``."""
    return jnp.where(jnp.any(success, axis=0), jnp.argmax(success, axis=0),
                     jnp.argmax(loss, axis=0))


def _random_starts(k_start, shape, *, eps, norm, dtype, restarts):
    """``[R, N, ...]``: restart ``r`` draws from ``fold_in(k_start, r)``."""
    return jax.vmap(lambda r: P.random_in_ball(
        jax.random.fold_in(k_start, r), shape, eps=eps, norm=norm, dtype=dtype))(
            jnp.arange(restarts))


_DOC_ARGS = """
    Args:
      logits_fn: model ``x [N, ...] -> logits [N, K]``, acting on examples independently
        (restarts are folded into its batch). With ``eot_samples`` it is a *randomized* model
        ``logits_fn(key, x) -> logits`` instead (see ``eot_samples``).
      key: PRNG key (random starts; EOT draws).
      x: clean inputs ``float32 [N, H, W, C]`` (or ``[N, D]``) inside ``box``.
      y: ``int32 [N]`` **true** labels (success = misclassified w.r.t. ``y``).
      eps: ball radius ``>= 0`` (a Python number or a scalar array, traced values allowed).
      norm: ``"linf"`` or ``"l2"`` (ℓ1 APGD needs the authors' sparse step, not implemented).
      steps: iterations ``N_iter`` (default 100, as in AutoAttack); cost is ``steps + 1``
        gradient evaluations per restart.
      loss: ``"ce"`` (cross-entropy; with ``target``: targeted, ascends ``-CE(z, t)``),
        ``"dlr"`` (untargeted DLR, :func:`robustjax.losses.dlr_loss`, ``K >= 3``) or
        ``"dlr_targeted"`` (:func:`robustjax.losses.dlr_targeted_loss`, needs ``target``,
        ``K >= 4``).
      restarts: random starts ``R``, run batched; per example the first restart that
        misclassified, else the one with the highest loss, is kept. Restart ``r`` starts from
        ``fold_in(split(key)[0], r)``.
      target: ``int32 [N]`` target classes for the targeted losses, else ``None``.
      rho: ``ρ`` of condition 1 (default 0.75).
      alpha: momentum ``α`` (default 0.75; the first step uses 1).
      box: image domain ``(lo, hi)`` or ``None``.
      eot_samples: ``None`` for a deterministic ``logits_fn``; an integer ``S`` for a randomized
        ``logits_fn(key, x)``: every loss/gradient evaluation averages ``S`` draws (EOT) with
        keys ``fold_in(fold_in(split(key)[1], i), s)`` — fresh draws at every iteration ``i``;
        the success test uses the argmax of the mean logits.
      unroll: unroll factor of the ``lax.scan`` over iterations (speed only).
"""


def apgd(
    logits_fn: LogitsFn | Callable[[PRNGKey, Array], Array],
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    target: ArrayLike | None = None,
    rho: float = 0.75,
    alpha: float = 0.75,
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    unroll: int | bool = 1,
) -> Array:
    """Auto-PGD (Croce & Hein, ICML 2020): momentum PGD with the self-adapting step size.

    See the module docstring for the iteration and the checkpoint rule
    (:func:`apgd_checkpoints`). Per example the result is the first iterate that was
    misclassified, else the iterate with the highest loss :math:`x_{max}`; it never leaves the
    ε-ball around ``x`` nor ``box``. Pure: compiles under ``jax.jit`` (the loop is a
    ``lax.scan`` whose checkpoint schedule is a static boolean array) and batches under
    ``jax.vmap``; step sizes are per example.
    {args}
    Returns:
      ``x_adv`` like ``x`` (``stop_gradient``).

    Raises:
      ValueError: ``eps < 0``, unknown ``norm``/``loss``, ``steps``/``restarts`` < 1,
        ``rho``/``alpha`` outside ``(0, 1]``, a targeted loss without ``target`` (or ``target``
        with ``"dlr"``), too few classes for DLR, wrong shapes, pixels outside ``box``, labels
        outside ``[0, K)``.

    Cost: ``R · (steps + 1) · S · (fwd + bwd)`` on ``N`` examples (``S = eot_samples or 1``);
    memory ``O(R · S · N)`` activations plus 6 copies of the batch (iterate, previous iterate,
    gradient, best point, its gradient, first success).
    """
    _validate(logits_fn, key, x, y, eps=eps, norm=norm, steps=steps, loss=loss,
              restarts=restarts, target=target, rho=rho, alpha=alpha, box=box,
              eot_samples=eot_samples, unroll=unroll)
    return _apgd_batched(logits_fn, key, x, y, eps=eps, norm=norm, steps=steps, loss=loss,
                         restarts=restarts, target=target, rho=rho, alpha=alpha, box=box,
                         eot_samples=eot_samples, trace=False, unroll=unroll)[0]


apgd.__doc__ = apgd.__doc__.replace("{args}", _DOC_ARGS)


def apgd_with_trace(
    logits_fn: Any,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    target: ArrayLike | None = None,
    rho: float = 0.75,
    alpha: float = 0.75,
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    unroll: int | bool = 1,
) -> tuple[Array, Array, APGDTrace]:
    """:func:`apgd` that also returns ``success [N]`` and the :class:`APGDTrace` of the kept run.

    Same arguments, same ``x_adv`` for the same key. For masking checks (the trace's loss
    should increase) and for testing the step-size schedule. Cost as :func:`apgd`.
    """
    _validate(logits_fn, key, x, y, eps=eps, norm=norm, steps=steps, loss=loss,
              restarts=restarts, target=target, rho=rho, alpha=alpha, box=box,
              eot_samples=eot_samples, unroll=unroll)
    x_adv, success, _, tr = _apgd_batched(
        logits_fn, key, x, y, eps=eps, norm=norm, steps=steps, loss=loss, restarts=restarts,
        target=target, rho=rho, alpha=alpha, box=box, eot_samples=eot_samples, trace=True,
        unroll=unroll)
    return x_adv, success, tr


def top_targets(logits: Array, y: Array, n_target_classes: int) -> Array:
    """``int32 [n_target_classes, N]``: the wrong classes ranked by ``logits`` (highest first)."""
    masked = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return jnp.transpose(jax.lax.top_k(masked, n_target_classes)[1]).astype(jnp.int32)


def apgd_targeted(
    logits_fn: LogitsFn | Callable[[PRNGKey, Array], Array],
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    n_target_classes: int = 9,
    restarts: int = 1,
    rho: float = 0.75,
    alpha: float = 0.75,
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    unroll: int | bool = 1,
) -> Array:
    """APGD-T: APGD with the targeted DLR loss towards each of the top wrong classes.

    The targets are the ``n_target_classes`` classes other than ``y`` with the highest clean
    logits (AutoAttack: 9, i.e. all wrong classes on a 10-class problem), ranked once on the
    clean ``x``. Target ``j`` runs :func:`apgd` with ``loss="dlr_targeted"``, key
    ``fold_in(key, j)``; all targets (and restarts) are folded into one batch of
    ``n_target_classes · R · N``. Per example the first target (in rank order) whose run
    misclassified is kept, else the run with the highest targeted loss.

    Args:
      n_target_classes: ``1 <= n_target_classes <= K − 1``; ``K >= 4``.
      eot_samples: as :func:`apgd` (the clean ranking then uses the mean of ``S`` draws).
      Others: as :func:`apgd`.

    Returns:
      ``x_adv`` like ``x`` (``stop_gradient``).

    Cost: ``n_target_classes · R · (steps + 1) · (fwd + bwd)`` plus one forward pass; memory
    ``n_target_classes`` times :func:`apgd`'s.

    References:
      Croce & Hein, ICML 2020 (arXiv:2003.01690), Sec. 4 (APGD-T, top-9 targets).
    """
    k = _validate(logits_fn, key, x, y, eps=eps, norm=norm, steps=steps,
                  loss="dlr_targeted", restarts=restarts, target=y, rho=rho, alpha=alpha,
                  box=box, eot_samples=eot_samples, unroll=unroll)
    V.check_positive_int(n_target_classes, "n_target_classes")
    if n_target_classes > k - 1:
        raise ValueError(f"`n_target_classes` must be <= K - 1 = {k - 1}, got "
                         f"{n_target_classes}.")
    return _apgd_targeted(logits_fn, key, x, y, eps=eps, norm=norm, steps=steps,
                          n_target_classes=n_target_classes, restarts=restarts, rho=rho,
                          alpha=alpha, box=box, eot_samples=eot_samples, unroll=unroll)[0]


def _apgd_targeted(logits_fn, key, x, y, *, eps, norm, steps, n_target_classes, restarts, rho,
                   alpha, box, eot_samples, unroll):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    nt = n_target_classes
    if eot_samples is None:
        clean = logits_fn(x)
    else:
        keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(key, -1 & 0x7FFFFFFF),
                                                     s))(jnp.arange(eot_samples))
        clean = jnp.mean(jax.vmap(lambda kk: logits_fn(kk, x))(keys), axis=0)
    targets = top_targets(jax.lax.stop_gradient(clean), y, nt)  # [T, N]
    # One key per target.
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(nt))
    if eot_samples is None:
        # The targets folded into the batch ([N·T] rows, point-major, so that a batch sharded
        # over devices stays sharded row-contiguously): one rolled loop that is not vmapped, so
        # it can stop early and needs no per-iteration select over the whole state (a vmapped
        # while loop's cost). Target j keeps its own random starts.
        n = x.shape[0]
        starts = jax.vmap(lambda kj: _random_starts(
            jax.random.split(kj)[0], x.shape, eps=eps, norm=norm, dtype=x.dtype,
            restarts=restarts))(keys)  # [T, R, N, ...]
        starts = jnp.moveaxis(starts, 0, 2).reshape((restarts, n * nt) + x.shape[1:])
        rep = lambda a: jnp.repeat(a, nt, axis=0)  # noqa: E731  [N, ...] -> [N·T, ...]
        x_a, s, f, _ = _apgd_batched(
            logits_fn, key, rep(x), rep(y), eps=eps, norm=norm, steps=steps,
            loss="dlr_targeted", restarts=restarts, target=jnp.transpose(targets).reshape(-1),
            rho=rho, alpha=alpha, box=box, eot_samples=None, trace=False, unroll=unroll,
            starts=starts)
        x_all = jnp.swapaxes(x_a.reshape((n, nt) + x.shape[1:]), 0, 1)  # [T, N, ...]
        s_all, f_all = s.reshape(n, nt).T, f.reshape(n, nt).T
    else:
        # With EOT each target draws its own noise: the targets run as a vmap (one program).
        def one(kj, tj):
            x_a, s, f, _ = _apgd_batched(
                logits_fn, kj, x, y, eps=eps, norm=norm, steps=steps, loss="dlr_targeted",
                restarts=restarts, target=tj, rho=rho, alpha=alpha, box=box,
                eot_samples=eot_samples, trace=False, unroll=unroll)
            return x_a, s, f

        x_all, s_all, f_all = jax.vmap(one)(keys, targets)  # [T, N, ...], [T, N], [T, N]
    pick = _first_success(s_all, f_all)
    x_adv = jnp.take_along_axis(x_all, B.bcast(pick[None], x_all), axis=0)[0]
    return jax.lax.stop_gradient(x_adv), jnp.any(s_all, axis=0)
