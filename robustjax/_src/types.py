"""Type aliases and protocols shared across robustjax.

The core layer speaks in arrays and in models given as functions:

* images are ``float32 [N, H, W, C]`` in ``[0, 1]``; labels are ``int32 [N]``;
* a model is a :data:`LogitsFn`, ``x -> logits [N, K]`` (normalisation lives inside it);
* randomness is an explicit :data:`PRNGKey` argument.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PRNGKey = jax.Array
PyTree = Any
Shape = tuple[int, ...]

#: ``logits_fn(x [N, H, W, C]) -> logits [N, K]``.
LogitsFn = Callable[[Array], Array]

#: Per-example loss ``loss_fn(logits [N, K], labels [N]) -> [N]``.
LossFn = Callable[[Array, Array], Array]

#: ``project_fn(x, x_orig) -> x`` projecting ``x`` back onto the feasible set around ``x_orig``.
ProjectFn = Callable[[Array, Array], Array]


class AttackFn(Protocol):
    """An attack with its hyperparameters bound: ``(logits_fn, key, x, y) -> x_adv``."""

    def __call__(self, logits_fn: LogitsFn, key: PRNGKey, x: Array, y: Array) -> Array:
        ...


class BoundAttack(Protocol):
    """An attack bound to a model too: ``(key, x, y) -> x_adv`` (used by evaluation suites)."""

    def __call__(self, key: PRNGKey, x: Array, y: Array) -> Array:
        ...
