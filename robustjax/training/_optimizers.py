"""Optimizers with learning-rate schedules and weight decay (optax)."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import optax

from robustjax._src import validation

_SCHEDULES = ("constant", "cosine", "linear", "piecewise")


def _decay_mask(params):
    """Weight decay applies to kernels (rank >= 2), not to biases or batch-norm scales."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_schedule(
    learning_rate: float,
    schedule: str | Callable = "constant",
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_boundaries: Sequence[float] = (0.5, 0.75),
    decay_factor: float = 0.1,
) -> optax.Schedule | float:
    r"""A learning-rate schedule.

    * ``"constant"``: :math:`\eta`.
    * ``"cosine"``: :math:`\eta\,\tfrac12(1 + \cos(\pi t / T))` (after a linear warmup).
    * ``"linear"``: linear decay from :math:`\eta` to 0 at ``total_steps``.
    * ``"piecewise"``: multiply by ``decay_factor`` at each fraction of ``total_steps`` in
      ``decay_boundaries`` (Madry et al.'s and most CIFAR recipes).
    * a callable ``step -> lr`` is returned unchanged.

    Args:
        learning_rate: peak learning rate :math:`\eta`.
        schedule: one of the names above or an optax schedule.
        total_steps: number of training steps :math:`T` (required except for ``"constant"``).
        warmup_steps: linear warmup from 0 (all schedules but callables).
        decay_boundaries: fractions of ``total_steps`` for ``"piecewise"``.
        decay_factor: factor applied at each boundary.

    Returns:
        A float (constant, no warmup) or an ``optax.Schedule``.
    """
    if callable(schedule):
        return schedule
    validation.check_positive(learning_rate, "learning_rate")
    validation.check_choice(schedule, "schedule", _SCHEDULES)
    validation.check_nonnegative_int(warmup_steps, "warmup_steps")
    if schedule != "constant":
        if total_steps is None:
            raise ValueError(f"`total_steps` is required for schedule={schedule!r}.")
        validation.check_positive_int(total_steps, "total_steps")
    if schedule == "constant":
        main = optax.constant_schedule(learning_rate) if warmup_steps else learning_rate
    elif schedule == "cosine":
        main = optax.cosine_decay_schedule(learning_rate, max(total_steps - warmup_steps, 1))
    elif schedule == "linear":
        main = optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1))
    else:
        for b in decay_boundaries:
            validation.check_probability(b, "decay_boundaries")
        validation.check_positive(decay_factor, "decay_factor")
        main = optax.piecewise_constant_schedule(
            learning_rate,
            {int(b * total_steps) - warmup_steps: decay_factor for b in decay_boundaries},
        )
    if not warmup_steps:
        return main
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def make_optimizer(
    name: str = "sgd",
    *,
    learning_rate: float | Callable = 0.1,
    schedule: str | Callable = "constant",
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_boundaries: Sequence[float] = (0.5, 0.75),
    decay_factor: float = 0.1,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""An optax optimizer with a schedule and weight decay.

    * ``"sgd"``: SGD with (heavy-ball or Nesterov) ``momentum`` (0 disables it) and coupled L2
      weight decay, :math:`g \leftarrow g + \lambda\theta`.
    * ``"adam"``: Adam with the same coupled L2 decay.
    * ``"adamw"``: AdamW (decoupled decay, Loshchilov & Hutter, arXiv:1711.05101).

    Weight decay applies only to parameters of rank ≥ 2 (kernels), not to biases or
    batch-norm scales/offsets.

    Args:
        name: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        learning_rate: peak learning rate, or an optax schedule (then ``schedule`` is ignored).
        schedule: see :func:`make_schedule`.
        total_steps, warmup_steps, decay_boundaries, decay_factor: see :func:`make_schedule`.
        weight_decay: :math:`\lambda \ge 0`.
        momentum: SGD momentum in ``[0, 1)``.
        nesterov: Nesterov momentum for SGD.

    Returns:
        ``optax.GradientTransformation``.
    """
    validation.check_choice(name, "name", ("sgd", "adam", "adamw"))
    validation.check_nonnegative(weight_decay, "weight_decay")
    lr = learning_rate if callable(learning_rate) else make_schedule(
        learning_rate, schedule, total_steps=total_steps, warmup_steps=warmup_steps,
        decay_boundaries=decay_boundaries, decay_factor=decay_factor,
    )
    if name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay, mask=_decay_mask)
    if name == "sgd":
        validation.check_nonnegative(momentum, "momentum")
        if momentum >= 1:
            raise ValueError(f"`momentum` must be < 1, got {momentum}.")
        base = optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
    else:
        base = optax.adam(lr)
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=_decay_mask), base)
    return base
