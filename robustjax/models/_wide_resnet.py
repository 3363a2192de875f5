"""Wide residual networks (Zagoruyko & Komodakis, 2016)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import _layers
from robustjax.models._resnet import _batch_norm
from robustjax.models._resnet import _conv_init


class WideBlock(nn.Module):
    """Pre-activation wide block: ``conv(drop(act(bn(conv(act(bn x)))))) + s(x)``.

    When the shape changes, the shortcut ``s`` is a 1×1 conv applied to ``act(bn(x))`` (as in the
    reference implementation); otherwise it is the identity on ``x``.
    """

    features: int
    strides: int = 1
    activation: str = "relu"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = _layers.get_activation(self.activation)
        s = (self.strides, self.strides)
        o = act(_batch_norm(train)(x))
        y = nn.Conv(self.features, (3, 3), s, padding=1, use_bias=False, kernel_init=_conv_init)(o)
        y = act(_batch_norm(train)(y))
        if self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), s, use_bias=False, kernel_init=_conv_init,
                        name="shortcut_conv")(o)
        return x + y


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: 3×3 stem (16 channels), three stages of ``(depth − 4) / 6``
    pre-activation :class:`WideBlock` s with ``16·width``, ``32·width``, ``64·width`` channels
    (strides 1, 2, 2), final BN + act, global average pooling, dense classifier.

    WRN-28-10 has 36,479,194 parameters ("36.5M", Zagoruyko & Komodakis 2016, Table 1);
    ``activation="softplus"`` gives the smooth networks of Qin et al. (2019, LLR, e.g. the
    WRN-28-8 of their Table F2). Dropout (rng name ``"dropout"``) sits between the two convs of
    each block and is active only with ``train=True``.

    Attributes:
      depth: total depth, ``6n + 4``.
      width: widening factor ``k``.
      num_classes: number of logits ``K``.
      activation: name in :data:`robustjax.models.ACTIVATIONS` (``"relu"`` or ``"softplus"``).
      dropout_rate: dropout probability inside blocks (0 disables it).
      mean, std: optional input normalisation.

    Input ``[N, H, W, C]``, output ``[N, K]``.
    Cost: O(N · H · W · n · 18 · (16k)²) multiply-adds per stage (each stage costs about the same).
    """

    depth: int = 28
    width: int = 10
    num_classes: int = 10
    activation: str = "relu"
    dropout_rate: float = 0.0
    mean: tuple[float, ...] | float | None = None
    std: tuple[float, ...] | float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if (not isinstance(self.depth, int) or self.depth < 10 or (self.depth - 4) % 6 != 0):
            raise ValueError(f"`depth` must be 6n + 4 with n >= 1, got {self.depth!r}.")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"`width` must be an integer >= 1, got {self.width!r}.")
        act = _layers.get_activation(self.activation)
        n = (self.depth - 4) // 6
        x = _layers.normalize_input(x, self.mean, self.std)
        x = nn.Conv(16, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init)(x)
        for i, w in enumerate((16 * self.width, 32 * self.width, 64 * self.width)):
            for j in range(n):
                strides = 2 if (i > 0 and j == 0) else 1
                x = WideBlock(w, strides, self.activation, self.dropout_rate)(x, train)
        x = act(_batch_norm(train)(x))
        x = jnp.mean(x, axis=(-3, -2))
        return nn.Dense(self.num_classes)(x)


#: WRN-28-10 (36.5M parameters).
WideResNet28_10 = functools.partial(WideResNet, depth=28, width=10)

#: WRN-10-1 (one block per stage, 16/32/64 channels), for tests.
WideResNetTiny = functools.partial(WideResNet, depth=10, width=1)
