"""Training state: a Flax ``TrainState`` that also carries batch-norm statistics."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from robustjax._src import validation
from robustjax._src.types import PRNGKey, PyTree


class TrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` plus ``batch_stats``.

    Attributes:
        step: int32 scalar, number of optimizer updates applied so far.
        apply_fn: ``model.apply`` (static, not a pytree leaf).
        params: the trainable parameters (``variables["params"]``).
        tx: the optax transformation (static).
        opt_state: the optimizer state.
        batch_stats: running batch-norm statistics (``variables["batch_stats"]``); an empty dict
            for models without batch norm.
    """

    batch_stats: PyTree = None

    def variables(self, params: PyTree | None = None) -> dict[str, PyTree]:
        """The Flax variables dict ``{"params": ..., "batch_stats": ...}`` (eval mode).

        Args:
            params: parameters to use instead of ``self.params`` (e.g. the ones being
                differentiated inside an objective).

        Returns:
            A dict accepted by ``apply_fn``; ``batch_stats`` is omitted when empty.
        """
        variables = {"params": self.params if params is None else params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


@functools.partial(jax.jit, static_argnums=0)
def _jit_init(model, rngs, x):
    return model.init(rngs, x, train=False)


def create_train_state(
    model: Any,
    key: PRNGKey,
    input_shape: Sequence[int],
    tx: optax.GradientTransformation,
) -> TrainState:
    """Initialise a Flax classifier (Linen or NNX) and wrap it in a :class:`TrainState`.

    An NNX module is adapted by :func:`robustjax.models.as_model` (its current parameters and
    batch statistics become the state; ``key`` only seeds dropout); a Linen module without a
    ``train`` argument is called without it.

    The model is initialised with ``model.init({"params": k1, "dropout": k2}, zeros(input_shape),
    train=False)``, following the ``robustjax.models`` convention that every classifier takes a
    ``train`` keyword.

    Args:
        model: a Flax Linen module ``apply(variables, x [N, H, W, C], train=...) -> [N, K]``.
        key: PRNG key for the initialisation.
        input_shape: shape of a dummy input batch, e.g. ``(1, 28, 28, 1)``.
        tx: the optax optimizer.

    Returns:
        A :class:`TrainState` at ``step == 0`` (``batch_stats == {}`` without batch norm).

    Cost: one forward pass at ``input_shape``.
    """
    validation.check_key(key)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) < 2 or any(s <= 0 for s in input_shape):
        raise ValueError(
            f"`input_shape` must be a batch shape like (1, H, W, C), got {input_shape}."
        )
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(f"`tx` must be an optax.GradientTransformation, got {type(tx)}.")
    from robustjax.models._adapt import as_model

    model = as_model(model)  # Linen (with or without `train`) or NNX; anything else: ValueError
    params_key, dropout_key = jax.random.split(key)
    rngs = {"params": params_key, "dropout": dropout_key}
    x = jnp.zeros(input_shape, jnp.float32)
    # One compiled initialisation instead of op-by-op dispatch, cached per (model, shape) when
    # the module is hashable (Linen modules with hashable attributes are).
    try:
        hash(model)
    except TypeError:
        variables = jax.jit(lambda r, z: model.init(r, z, train=False))(rngs, x)
    else:
        variables = _jit_init(model, rngs, x)
    variables = dict(variables)
    if "params" not in variables:
        raise ValueError("`model` has no parameters (its variables lack a 'params' collection).")
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )
