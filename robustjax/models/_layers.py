"""Small building blocks shared by the classifiers: pooling, activations, input normalisation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["max_pool_2x2", "get_activation", "normalize_input", "ACTIVATIONS"]

#: Activation names accepted by every classifier's ``activation`` field.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "softplus": nn.softplus,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "swish": nn.swish,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "leaky_relu": nn.leaky_relu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`).

    Raises:
      ValueError: unknown ``name`` (the message names the ``activation`` argument).
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {tuple(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[name]


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max pooling with stride 2 and VALID padding, as a reshape plus ``max``.

    Equivalent in value to ``flax.linen.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")``
    (an odd trailing row/column is dropped), but its gradient is a cheap elementwise mask
    instead of XLA's ``select_and_scatter``, which is slow on CPU. Where a window has tied
    maxima the gradient is split between the tied entries (``jnp.max``'s rule) instead of going
    to one of them; the two agree wherever the maximum is unique.

    Args:
      x: ``[..., H, W, C]`` (typically ``[N, H, W, C]``).

    Returns:
      ``[..., H // 2, W // 2, C]``.

    Cost: O(size of x), one pass.
    """
    if x.ndim < 3:
        raise ValueError(f"`x` must have rank >= 3 ([..., H, W, C]), got shape {x.shape}.")
    *lead, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[..., : 2 * h2, : 2 * w2, :]
    x = x.reshape(*lead, h2, 2, w2, 2, c)
    return jnp.max(x, axis=(-4, -2))


def normalize_input(
    x: jax.Array, mean: Sequence[float] | float | None, std: Sequence[float] | float | None
) -> jax.Array:
    """``(x - mean) / std`` per channel; ``None`` skips the corresponding step.

    Images stay in ``[0, 1]`` outside the model (so ε-balls and clipping are in pixel units);
    models normalise internally.
    """
    if mean is not None:
        x = x - jnp.asarray(mean, x.dtype)
    if std is not None:
        x = x / jnp.asarray(std, x.dtype)
    return x
