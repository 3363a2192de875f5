"""Projected gradient descent (PGD) and its targeted / random-targeted / multi-targeted forms.

The iteration, for an attack loss :math:`L_{att}` that the attacker ascends (see
:mod:`robustjax.attacks._base`), a step rule :math:`U` (an ``optax.GradientTransformation``) and a
step-size schedule :math:`\\eta_t`:

.. math:: x_{t+1} = \\Pi_{B_\\epsilon(x) \\cap [lo, hi]^d}
          \\left(x_t + \\eta_t\\, U(\\nabla_x L_{att}(x_t))\\right)

References:
  Madry et al., *Towards Deep Learning Models Resistant to Adversarial Attacks*, ICLR 2018
  (arXiv:1706.06083), Eqn (2) (sign steps, random start, restarts).
  Qin et al., *Adversarial Robustness through Local Linearization*, NeurIPS 2019
  (arXiv:1907.02610), Sec. 6: Adam step rule, step-size schedule, multi-targeted evaluation.
  Gowal et al., *An Alternative Surrogate Loss for PGD-based Adversarial Testing*, 2019
  (arXiv:1910.09338): multi-targeted attack.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from robustjax import projections as P
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks import _base as B

__all__ = [
    "PGDState",
    "PGD",
    "make_pgd",
    "pgd",
    "pgd_with_trace",
    "PGDTrace",
    "random_targeted",
    "multi_targeted",
]


class PGDState(NamedTuple):
    """State of one PGD run: the iterate ``x [M, ...]``, the step rule's state and the count."""

    x: Array
    opt_state: Any
    count: Array


class PGDTrace(NamedTuple):
    """Result of :func:`pgd_with_trace`: ``x_adv`` like ``x`` and ``losses [steps, N]``."""

    x_adv: Array
    losses: Array


class PGD(NamedTuple):
    """Pure ``(init, update)`` pair returned by :func:`make_pgd`.

    ``init(x_start) -> PGDState``; ``update(state) -> (state, loss [M])`` where ``loss`` is the
    attack loss at the iterate *before* the step.
    """

    init: Any
    update: Any


def make_pgd(
    logits_fn: LogitsFn,
    x_orig: Array,
    y: Array,
    *,
    eps: float,
    norm: str = "linf",
    step_size: Any = 0.01,
    step_rule: Any = None,
    loss: str = "ce",
    target: Array | None = None,
    kappa: float = float("inf"),
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    eot_key: PRNGKey | None = None,
) -> PGD:
    """Build the PGD step as a pure ``(init, update)`` pair (STYLE §3).

    ``x_orig`` and ``y`` (true labels) are the (possibly restart-tiled) batch the iterate lives
    around; with ``target`` (``int [M]``) the step descends the loss of the target instead. With
    ``eot_samples=S`` the model is randomized, ``logits_fn(key, x)``, and step ``t`` averages
    ``S`` fresh draws keyed from ``fold_in(eot_key, t)``. No validation here: the public
    functions validate. Cost of ``update``: ``S`` forward and backward passes of ``logits_fn``
    on ``[M, ...]`` (``S = 1`` without EOT).
    """
    tx = B.step_rule_transform(step_rule, norm)
    lr = B.resolve_step_size(step_size)
    targeted = target is not None
    labels = target if targeted else y
    model = B.eot_logits(B.gradient_model(logits_fn), eot_key, eot_samples)

    def total_loss(x, count):
        per_example = B.attack_loss(
            model(x, count), labels, loss=loss, targeted=targeted, kappa=kappa
        )
        return jnp.sum(per_example), per_example

    grad_fn = jax.grad(total_loss, has_aux=True)

    def init(x_start: Array) -> PGDState:
        return PGDState(x=x_start, opt_state=tx.init(x_start), count=jnp.zeros([], jnp.int32))

    def update(state: PGDState) -> tuple[PGDState, Array]:
        g, per_example = grad_fn(state.x, state.count)
        u, opt_state = tx.update(g, state.opt_state, state.x)
        eta = jnp.asarray(lr(state.count), state.x.dtype)
        x = P.project(state.x + eta * u, x_orig, eps=eps, norm=norm, box=box)
        return PGDState(x=x, opt_state=opt_state, count=state.count + 1), per_example

    return PGD(init=init, update=update)


def resolve_unroll(unroll: int | bool | None) -> int | bool:
    """The loop unroll factor: ``unroll`` if given, else ``1`` (a rolled loop).

    Until 0.1 a convolutional model on CPU was fully unrolled (≤ 100 steps), because XLA:CPU ran
    the step 2-3x slower inside a ``while`` loop. The cause was the convolutions' input gradient
    (a reversed kernel with swapped feature dimensions, which XLA:CPU runs with a generic kernel
    inside loop bodies; JAX issue #12868); :func:`robustjax.attacks._base.gradient_model` now
    writes that gradient in canonical form, and the rolled loop runs at the unrolled speed with
    half the compile time or less (``experiments/benchmarks/unroll.py``, Madry MNIST CNN, batch
    64: PGD-40 1.68 s rolled vs 1.65 s unrolled per call, first result 2.9 s vs 10.9 s).
    """
    return 1 if unroll is None else unroll


def _fully_unrolled(unroll: int | bool, steps: int) -> bool:
    return unroll is True or (not isinstance(unroll, bool) and unroll >= steps)


def run_steps(update: Any, state: Any, steps: int, unroll: int | bool, *, trace: bool = False):
    """Apply ``update(state) -> (state, per_example)`` ``steps`` times.

    A full unroll is a Python loop (``lax.fori_loop``/``scan`` keep a ``while`` loop for a
    single step, which XLA:CPU runs slower); otherwise ``fori_loop`` (or ``scan`` when
    ``trace``, stacking the per-example values to ``[steps, ...]``). Returns
    ``(state, trace or None)``.
    """
    if _fully_unrolled(unroll, steps):
        outs = []
        for _ in range(steps):
            state, out = update(state)
            outs.append(out)
        return state, (jnp.stack(outs) if trace else None)
    if trace:
        return jax.lax.scan(lambda s, _: update(s), state, None, length=steps, unroll=unroll)
    return jax.lax.fori_loop(0, steps, lambda _, s: update(s)[0], state, unroll=unroll), None


def _check_common(eps, steps, norm, loss, restarts, random_start, step_size, kappa):
    B.check_eps(eps)
    V.check_positive_int(steps, "steps")
    V.check_choice(norm, "norm", P.NORMS)
    V.check_choice(loss, "loss", B.LOSSES)
    V.check_positive_int(restarts, "restarts")
    if restarts > 1 and not random_start:
        raise ValueError(
            f"`restarts` > 1 needs `random_start=True` (got restarts={restarts}); without a "
            "random start every restart is identical."
        )
    if step_size is not None and not callable(step_size):
        B.check_nonnegative_scalar(step_size, "step_size")
    V.check_nonnegative_value(kappa, "kappa")


def _run(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: Array,
    labels: Array,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: Any,
    step_rule: Any,
    loss: str,
    targeted: bool,
    kappa: float,
    random_start: bool,
    restarts: int,
    box: tuple[float, float] | None,
    trace: bool,
    unroll: int | bool | None,
    eot_samples: int | None = None,
) -> tuple[Array, Array | None]:
    """PGD with ``restarts`` runs folded into the batch; keeps, per example, the best run.

    ``x [N, ...]``, ``labels [N]`` (true labels, or targets when ``targeted``). Returns
    ``(x_adv [N, ...], trace [steps, N] or None)``.
    """
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    n = x.shape[0]
    if step_size is None:
        step_size = 2.5 * eps / steps
    if random_start:
        keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(restarts))
        delta = jax.vmap(
            lambda k: P.random_in_ball(k, x.shape, eps=eps, norm=norm, dtype=x.dtype)
        )(keys)
        x_start = x[None] + delta
        if box is not None:
            x_start = P.clip_box(x_start, *box)
    else:
        x_start = x[None]
    # Fold the restarts into the batch: [R, N, ...] -> [R*N, ...].
    x_tiled = jnp.broadcast_to(x[None], (restarts,) + x.shape)
    x_tiled = x_tiled.reshape((restarts * n,) + x.shape[1:])
    y_tiled = jnp.tile(labels, restarts)
    x_start = x_start.reshape((restarts * n,) + x.shape[1:])

    eot_key = jax.random.fold_in(key, restarts + 1) if eot_samples is not None else None
    unroll = resolve_unroll(unroll)
    attack = make_pgd(
        logits_fn, x_tiled, y_tiled, eps=eps, norm=norm, step_size=step_size,
        step_rule=step_rule, loss=loss, target=y_tiled if targeted else None, kappa=kappa,
        box=box, eot_samples=eot_samples, eot_key=eot_key,
    )
    state, losses = run_steps(attack.update, attack.init(x_start), steps, unroll, trace=trace)
    x_all = state.x
    if restarts == 1:
        return x_all, losses
    final_logits = B.eot_logits(logits_fn, eot_key, eot_samples)(x_all, steps)
    scores = B.attack_score(final_logits, y_tiled, targeted=targeted).reshape(restarts, n)
    best = jnp.argmin(scores, axis=0)  # [N]
    x_all = x_all.reshape((restarts, n) + x.shape[1:])
    x_best = jnp.take_along_axis(x_all, B.bcast(best[None], x_all), axis=0)[0]
    if losses is not None:
        losses = losses.reshape(steps, restarts, n)
        losses = jnp.take_along_axis(losses, best[None, None, :], axis=1)[:, 0]
    return x_best, losses


_DOC_ARGS = """
    Args:
      logits_fn: model, ``x [N, ...] -> logits [N, K]``. Must act on examples independently
        (no batch-norm in training mode): restarts/targets are folded into its batch.
      key: PRNG key for the random start(s).
      x: clean inputs ``float32 [N, H, W, C]`` (or ``[N, D]``) inside ``box``.
      y: ``int32 [N]`` true labels.
      eps: ball radius, ``>= 0``: a Python number, or a scalar array — traced values are
        allowed, so an ε ramp-up inside a jitted training step does not recompile (see
        ``robustjax.objectives.adversarial_objective(eps_schedule=...)``).
      norm: ``"linf"`` or ``"l2"``.
      steps: number of iterations ``T >= 1``.
      step_size: float or optax schedule ``count -> eta_t`` (e.g.
        ``optax.piecewise_constant_schedule(0.1, {100: 0.1, 150: 0.1})``: 0.1, then 0.01 from
        step 100, 0.001 from step 150, as in Qin et al.); ``None`` picks
        ``2.5 * eps / steps`` (Madry et al.).
      step_rule: ``"sign"`` (ℓ∞ default), ``"normalized"`` (ℓ2 default, ``g/||g||_2`` per
        example), ``"adam"`` (``optax.scale_by_adam()``, Qin et al.) or any
        ``optax.GradientTransformation`` applied to the ascent gradient.
      loss: ``"ce"`` (cross-entropy) or ``"cw"`` (logit margin, clamped at ``-kappa``).
      target: ``None`` (untargeted: ascend the loss of the true ``y``) or ``int32 [N]`` target
        labels: descend the loss of ``target`` instead (a targeted attack).
      kappa: confidence of the ``"cw"`` loss; the default ``inf`` is the unclamped margin.
      random_start: start from a uniform random point of the ε-ball (clipped to ``box``).
      restarts: number of random starts ``R``, run batched (folded into the batch); per
        example the run with the lowest final margin score is kept.
      box: image domain ``(lo, hi)``; ``None`` for no box.
      eot_samples: ``None`` for a deterministic ``logits_fn(x)``; an integer ``S`` for a
        randomized model ``logits_fn(key, x)``: every step averages ``S`` fresh draws (EOT; keys
        folded from ``key`` and the step), and restarts are ranked on ``S`` further draws.
      unroll: unroll factor of the step loop (a speed knob; results are identical).
        ``None`` (default): a rolled loop (:func:`resolve_unroll`).
"""


def pgd(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    step_size: Any = None,
    step_rule: Any = None,
    loss: str = "ce",
    target: ArrayLike | None = None,
    kappa: float = float("inf"),
    random_start: bool = True,
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    unroll: int | bool | None = None,
) -> Array:
    """Projected gradient descent attack (ℓ∞ / ℓ2), optionally targeted and with restarts.

    .. math:: x_{t+1} = \\Pi_{B_\\epsilon(x) \\cap [0,1]^d}(x_t + \\eta_t U(\\nabla_x L_{att}(x_t)))

    The result never leaves the ε-ball around ``x`` nor ``box`` (every iterate is projected;
    ℓ2 uses ball-then-box, see :func:`robustjax.projections.project`). The final iterate of
    each run is returned (no best-iterate tracking within a run). With ``restarts > 1`` the
    runs are folded into one batch of ``R·N`` and, per example, the run whose final
    true-class margin (targeted: target margin) is lowest is kept; restart ``r`` uses
    ``fold_in(key, r)``, so restart 0 is the single-restart run.
    {args}
    Returns:
      ``x_adv`` with ``x``'s shape, wrapped in ``stop_gradient``.

    Raises:
      ValueError: on ``eps < 0``, ``steps < 1``, unknown ``norm``/``loss``/``step_rule``, wrong
        ranks, ``len(y) != len(x)``, concrete labels outside ``[0, K)``.

    Cost: ``O(R · T · (fwd + bwd))`` on a batch of ``N``; memory ``O(R · N)`` activations.
    """
    x_adv, _ = _pgd_impl(
        logits_fn, key, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size,
        step_rule=step_rule, loss=loss, target=target, kappa=kappa,
        random_start=random_start, restarts=restarts, box=box, trace=False, unroll=unroll,
        eot_samples=eot_samples,
    )
    return x_adv


pgd.__doc__ = pgd.__doc__.replace("{args}", _DOC_ARGS)


def pgd_with_trace(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    step_size: Any = None,
    step_rule: Any = None,
    loss: str = "ce",
    target: ArrayLike | None = None,
    kappa: float = float("inf"),
    random_start: bool = True,
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    unroll: int | bool | None = None,
) -> PGDTrace:
    """:func:`pgd` that also returns the per-step attack loss, for gradient-masking checks.

    Same arguments as :func:`pgd`; returns ``PGDTrace(x_adv, losses)``: ``x_adv`` as :func:`pgd`
    (same key → same ``x_adv``), and ``losses [steps, N]``: ``trace[t]`` is the attack loss :math:`L_{att}` (the quantity being
    ascended; with ``target`` minus the target loss) at iterate ``t`` before its step, for the
    run kept per example. Uses ``lax.scan``. Cost as :func:`pgd`.
    """
    x_adv, losses = _pgd_impl(
        logits_fn, key, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size,
        step_rule=step_rule, loss=loss, target=target, kappa=kappa,
        random_start=random_start, restarts=restarts, box=box, trace=True, unroll=unroll,
        eot_samples=eot_samples,
    )
    return PGDTrace(x_adv, jax.lax.stop_gradient(losses))


def _pgd_impl(logits_fn, key, x, y, *, eps, norm, steps, step_size, step_rule, loss, target,
              kappa, random_start, restarts, box, trace, unroll, eot_samples=None):
    _check_common(eps, steps, norm, loss, restarts, random_start, step_size, kappa)
    if unroll is not None and not isinstance(unroll, bool):
        V.check_positive_int(unroll, "unroll")
    B.step_rule_transform(step_rule, norm)  # validates the name
    k = B.check_attack_inputs(B.check_eot(logits_fn, key, eot_samples), key, x, y, box=box)
    if target is not None:
        V.check_labels(target, "target", batch_size=jnp.shape(x)[0], num_classes=k)
    x_adv, losses = _run(
        logits_fn, key, x, y if target is None else target, eps=eps, norm=norm, steps=steps,
        step_size=step_size, step_rule=step_rule, loss=loss, targeted=target is not None,
        kappa=kappa, random_start=random_start, restarts=restarts, box=box, trace=trace,
        unroll=unroll, eot_samples=eot_samples,
    )
    return jax.lax.stop_gradient(x_adv), losses


def random_targeted(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    step_size: Any = None,
    step_rule: Any = None,
    loss: str = "ce",
    kappa: float = float("inf"),
    random_start: bool = True,
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    unroll: int | bool | None = None,
) -> Array:
    """Targeted PGD towards a uniformly drawn wrong class per example.

    The target is ``t = (y + s) mod K`` with ``s`` uniform in ``{1, …, K−1}`` (drawn from
    ``fold_in(key, 1)``, the PGD start from ``fold_in(key, 0)``). ``y`` are the *true* labels.
    Other arguments (``eot_samples`` for a randomized ``logits_fn(key, x)`` included) as
    :func:`pgd`. Returns ``x_adv`` (``stop_gradient``).

    Cost: as :func:`pgd`.
    """
    _check_common(eps, steps, norm, loss, restarts, random_start, step_size, kappa)
    k = B.check_attack_inputs(B.check_eot(logits_fn, key, eot_samples), key, x, y, box=box)
    if k < 2:
        raise ValueError(f"`logits_fn` must output K >= 2 classes for a targeted attack, got {k}.")
    y = jnp.asarray(y)
    shift = jax.random.randint(jax.random.fold_in(key, 1), y.shape, 1, k, dtype=y.dtype)
    target = (y + shift) % k
    x_adv, _ = _pgd_impl(
        logits_fn, jax.random.fold_in(key, 0), x, y, eps=eps, norm=norm, steps=steps,
        step_size=step_size, step_rule=step_rule, loss=loss, target=target, kappa=kappa,
        random_start=random_start, restarts=restarts, box=box, trace=False, unroll=unroll,
        eot_samples=eot_samples,
    )
    return x_adv


def multi_targeted(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    step_size: Any = None,
    step_rule: Any = None,
    loss: str = "cw",
    kappa: float = float("inf"),
    random_start: bool = True,
    restarts: int = 1,
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
    unroll: int | bool | None = None,
) -> Array:
    """Multi-targeted PGD: one targeted run per wrong class, keeping the per-example worst case.

    For each shift ``s = 1..K−1`` a targeted PGD towards ``t_s = (y + s) mod K`` is run; all
    ``(K−1)·R`` runs are folded into a single batch of ``(K−1)·R·N`` examples (no Python loop
    over targets). Per example, the candidate with the lowest *true-class* margin
    :math:`z_y - \\max_{j \\ne y} z_j` is returned, so any successful target makes the example
    misclassified. ``y`` are the true labels. Default loss ``"cw"`` (the target margin), as in
    Gowal et al. / Qin et al. Other arguments (``unroll``, and ``eot_samples`` for a randomized
    ``logits_fn(key, x)``) as :func:`pgd`; the random start of target ``s``, restart ``r`` uses
    ``fold_in(fold_in(key, s), r)``.

    Returns:
      ``x_adv`` like ``x`` (``stop_gradient``).

    Cost: ``O((K−1) · R · T · (fwd + bwd))``; memory ``O((K−1) · R · N)`` activations.
    """
    _check_common(eps, steps, norm, loss, restarts, random_start, step_size, kappa)
    k = B.check_attack_inputs(B.check_eot(logits_fn, key, eot_samples), key, x, y, box=box)
    eot_key = jax.random.fold_in(key, k + 1) if eot_samples is not None else None
    model = B.eot_logits(logits_fn, eot_key, eot_samples)
    if k < 2:
        raise ValueError(f"`logits_fn` must output K >= 2 classes for a targeted attack, got {k}.")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    n = x.shape[0]
    shifts = jnp.arange(1, k, dtype=y.dtype)  # [K-1]
    targets = (y[None, :] + shifts[:, None]) % k  # [K-1, N]
    # Each target gets its own random start: fold the shift into the key, then the targets
    # into the batch (one PGD call on (K-1)*N examples).
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(shifts)
    if random_start:
        if step_size is None:
            step_size = 2.5 * eps / steps
        x_rep = jnp.broadcast_to(x[None], (k - 1,) + x.shape).reshape(((k - 1) * n,) + x.shape[1:])
        # Different random start per target (keys differ), built batched with vmap.
        delta = jax.vmap(
            lambda kk: jax.vmap(
                lambda r: P.random_in_ball(
                    jax.random.fold_in(kk, r), x.shape, eps=eps, norm=norm, dtype=x.dtype
                )
            )(jnp.arange(restarts))
        )(keys)  # [K-1, R, N, ...]
        delta = jnp.swapaxes(delta, 0, 1).reshape((restarts, (k - 1) * n) + x.shape[1:])
        x_start = x_rep[None] + delta
        if box is not None:
            x_start = P.clip_box(x_start, *box)
        x_start = x_start.reshape((restarts * (k - 1) * n,) + x.shape[1:])
        big_x = jnp.broadcast_to(x_rep[None], (restarts,) + x_rep.shape).reshape(x_start.shape)
        big_t = jnp.tile(targets.reshape(-1), restarts)
        attack = make_pgd(
            logits_fn, big_x, big_t, eps=eps, norm=norm, step_size=step_size,
            step_rule=step_rule, loss=loss, target=big_t, kappa=kappa, box=box,
            eot_samples=eot_samples, eot_key=eot_key,
        )
        state, _ = run_steps(attack.update, attack.init(x_start), steps,
                             resolve_unroll(unroll))
        x_all = state.x
        m = restarts * (k - 1)
    else:
        x_rep = jnp.broadcast_to(x[None], (k - 1,) + x.shape).reshape(((k - 1) * n,) + x.shape[1:])
        x_all, _ = _run(
            logits_fn, key, x_rep, targets.reshape(-1), eps=eps, norm=norm, steps=steps,
            step_size=step_size, step_rule=step_rule, loss=loss, targeted=True, kappa=kappa,
            random_start=False, restarts=1, box=box, trace=False, unroll=unroll,
            eot_samples=eot_samples,
        )
        m = k - 1
    y_all = jnp.tile(y, m)
    scores = B.attack_score(model(x_all, steps), y_all, targeted=False).reshape(m, n)
    best = jnp.argmin(scores, axis=0)
    x_all = x_all.reshape((m, n) + x.shape[1:])
    x_best = jnp.take_along_axis(x_all, B.bcast(best[None], x_all), axis=0)[0]
    return jax.lax.stop_gradient(x_best)
