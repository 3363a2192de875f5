"""Pure training and evaluation steps built from an objective."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from robustjax.training._objectives import Objective
from robustjax.training._objectives import apply_model
from robustjax.training._objectives import resolve_loss

TrainStep = Callable[[Any, dict, jax.Array], tuple[Any, dict]]
EvalStep = Callable[[Any, dict], dict]


def _with_index(batch: dict, axis_name: str | None) -> dict:
    """Add ``batch["index"]``, the global position of each example, unless present."""
    if "index" in batch:
        return batch
    n = jnp.shape(batch["image"])[0]
    offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * n
    return {**batch, "index": offset + jnp.arange(n, dtype=jnp.int32)}


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
        raise ValueError('`batch` must be a dict with keys "image" and "label".')


def make_train_step(objective: Objective, *, axis_name: str | None = None) -> TrainStep:
    r"""Build a pure ``train_step(state, batch, key) -> (state, metrics)``.

    The step folds the state's step counter into the key (``fold_in(key, state.step)``), so one
    base key can be passed at every step; it adds ``batch["index"]`` (global example positions,
    see :func:`~robustjax.training.example_keys`), evaluates ``objective`` with
    ``jax.value_and_grad(..., has_aux=True)`` and applies the optimizer:

    .. math:: \theta_{t+1} = \theta_t + \mathrm{tx}(\nabla_\theta L(\theta_t))

    With ``axis_name`` (the ``pmap`` path) the step is meant to run inside ``jax.pmap(...,
    axis_name=axis_name)`` on a per-device shard: gradients, metrics and batch statistics are
    averaged with ``lax.pmean`` (per-device batch norm, as in the Flax ImageNet example) and
    the example indices are offset by ``axis_index * local_batch``. Under a sharded ``jax.jit``
    leave ``axis_name=None``: the step is written for the global batch and XLA inserts the
    collectives.

    Args:
        objective: ``objective(params, state, batch, key) -> (loss, (batch_stats, metrics))``.
        axis_name: static; name of the mapped axis when run under ``pmap``.

    Returns:
        ``train_step(state, batch, key) -> (new_state, metrics)``, pure and jit-able; ``metrics``
        is the objective's dict of scalars.

    Cost: one objective evaluation with its gradient, plus one all-reduce of the gradients when
    data parallel.
    """
    if not callable(objective):
        raise ValueError(f"`objective` must be callable, got {type(objective).__name__}.")
    if axis_name is not None and not isinstance(axis_name, str):
        raise ValueError(f"`axis_name` must be a string or None, got {axis_name!r}.")

    def train_step(state, batch, key):
        _check_batch(batch)
        step_key = jax.random.fold_in(key, state.step)
        batch = _with_index(batch, axis_name)

        def loss_fn(params):
            return objective(params, state, batch, step_key)

        (loss, (new_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        metrics = dict(metrics)
        metrics.setdefault("loss", loss)
        # 1.0 iff the optimised loss and every gradient are finite (fit stops otherwise, before
        # the bad update is checkpointed); fit drops it from the logged metrics.
        finite = jnp.isfinite(loss)
        for g in jax.tree_util.tree_leaves(grads):
            finite &= jnp.all(jnp.isfinite(g))
        metrics["_finite"] = finite.astype(jnp.float32)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)
            new_stats = jax.lax.pmean(new_stats, axis_name)
        new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
        return new_state, metrics

    return train_step


def make_eval_step(
    *, loss: str | Callable = "ce", axis_name: str | None = None
) -> EvalStep:
    """Build ``eval_step(state, batch) -> metrics`` (eval mode: running statistics, no dropout).

    ``batch`` may carry ``"mask"`` (``float32 [N]``, 1 for real examples, 0 for padding) so
    that a last, padded batch can be evaluated at a fixed shape.

    Args:
        loss: ``"ce"``, ``"hinge"`` or a per-example callable ``(logits, labels) -> [N]``.
        axis_name: static; under ``pmap``, sums are ``lax.psum``-ed over this axis.

    Returns:
        ``eval_step(state, batch) -> {"loss", "accuracy", "count"}``: masked means over the
        (global) batch and the number of real examples. Combine batches weighting by
        ``count``.

    Cost: one forward pass.
    """
    loss_fn = resolve_loss(loss)

    def eval_step(state, batch):
        _check_batch(batch)
        x, y = batch["image"], batch["label"]
        mask = batch.get("mask")
        if mask is None:
            mask = jnp.ones(jnp.shape(y), jnp.float32)
        logits, _ = apply_model(state, state.params, x, train=False)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
        sums = {
            "loss": jnp.sum(loss_fn(logits, y) * mask),
            "accuracy": jnp.sum(correct * mask),
            "count": jnp.sum(mask),
        }
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        count = jnp.maximum(sums["count"], 1.0)
        return {"loss": sums["loss"] / count, "accuracy": sums["accuracy"] / count,
                "count": sums["count"]}

    return eval_step
