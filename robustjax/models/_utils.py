"""Helpers turning a Flax classifier into robustjax's ``logits_fn``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax._src import validation
from robustjax._src.types import LogitsFn, PRNGKey, PyTree

__all__ = ["init_model", "make_logits_fn", "count_params"]


def _full_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
    ):
        raise ValueError(f"`input_shape` must be a tuple of positive integers, got {shape!r}.")
    return (1, *shape) if len(shape) == 3 else shape


# Initialisation runs once, so compile it without XLA's expensive passes: on CPU the threefry
# random-number kernels otherwise take ~1 s each to compile (about 10x slower overall). Values
# agree with the default compilation to about one ulp.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_INIT_CACHE: dict = {}


def _compiled_init(init, cache_key, *args):
    try:
        compiled = _INIT_CACHE.get(cache_key)
    except TypeError:  # unhashable model field
        cache_key, compiled = None, None
    if compiled is None:
        lowered = jax.jit(init).lower(*args)
        try:
            compiled = lowered.compile(compiler_options=_FAST_COMPILE)
        except Exception:  # pylint: disable=broad-except  # backend without these options
            compiled = lowered.compile()
        if cache_key is not None:
            if len(_INIT_CACHE) >= 32:
                _INIT_CACHE.pop(next(iter(_INIT_CACHE)))
            _INIT_CACHE[cache_key] = compiled
    return compiled(*args)


def init_model(
    model: nn.Module, key: PRNGKey, input_shape: Sequence[int], *, jit: bool = True
) -> dict[str, PyTree]:
    """Initialises ``model``'s variables for inputs of shape ``input_shape``.

    Args:
      model: a Flax Linen classifier ``model.apply(variables, x, train=False)``.
      key: PRNG key; same key, same variables. Also seeds the ``"dropout"`` stream.
      input_shape: ``(N, H, W, C)``, or ``(H, W, C)`` (a batch of one is used). Only the shape
        matters; the batch size does not change the variables.
      jit: compile the initialisation as one program (without XLA's expensive optimisation
        passes, which only slow down compiling a function that runs once; compiled programs are
        cached per model and shape). ``False`` runs it op by op.

    Returns:
      A dict with ``"params"`` and, for models with batch norm, ``"batch_stats"``
      (running means 0, variances 1).

    Cost: one forward pass on zeros.
    """
    validation.check_key(key)
    shape = _full_shape(input_shape)
    params_key, dropout_key = jax.random.split(key)

    def init(pk, dk):
        return model.init({"params": pk, "dropout": dk}, jnp.zeros(shape, jnp.float32),
                          train=False)

    if jit and validation.is_concrete(params_key):
        key_aval = (params_key.shape, str(params_key.dtype))
        return dict(_compiled_init(init, (model, shape, key_aval), params_key, dropout_key))
    return dict(init(params_key, dropout_key))


def make_logits_fn(model: Any, variables: PyTree | None = None, *,
                   train: bool = False) -> LogitsFn:
    """The ``logits_fn(x [N, H, W, C]) -> [N, K]`` of ``model`` with ``variables``.

    ``model`` is a Flax Linen module (with or without a ``train`` argument) or a Flax NNX module
    (see :func:`robustjax.models.as_model`); for an NNX module ``variables`` defaults to its
    current state. **Evaluate and attack in eval mode** (the default ``train=False``): batch
    norm uses its running statistics and dropout is off, so the function is deterministic and
    per-example (vmap-able). ``train=True`` normalises with the statistics of the batch being
    attacked (examples interact, statistics are not updated) and is rarely what an evaluation
    wants. The function closes over ``variables`` (pass new ones by calling this again, or
    close over them yourself inside a traced function).
    """
    from robustjax.models._adapt import as_model

    model = as_model(model)
    if variables is None:
        if not hasattr(model, "params"):
            raise ValueError("`variables` is required for a Linen model (only an NNX module "
                             "carries its own state).")
        variables = model.init()

    def logits_fn(x: jax.Array) -> jax.Array:
        if train:
            out = model.apply(variables, x, train=True, mutable=["batch_stats"])
            return out[0] if isinstance(out, tuple) else out
        return model.apply(variables, x, train=False)

    return logits_fn


def count_params(variables: PyTree) -> int:
    """Number of trainable scalars: the leaves of ``variables["params"]`` (or of ``variables``
    itself when it has no ``"params"`` entry). Works on ``jax.eval_shape`` outputs too."""
    tree: Any = variables
    if isinstance(variables, dict) or hasattr(variables, "keys"):
        if "params" in variables:
            tree = variables["params"]
    return int(sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(tree)))
