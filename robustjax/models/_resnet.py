"""CIFAR-style residual networks (3×3 stem, basic blocks, batch norm)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import _layers

# He-normal with fan_out, as torchvision / the CIFAR reference implementations initialise convs.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    # PyTorch conventions (momentum 0.1 there = 0.9 here, eps 1e-5).
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    """Post-activation basic block (He et al., 2016): ``act(bn(conv(act(bn(conv x)))) + s(x))``.

    Attributes:
      features: output channels.
      strides: stride of the first conv (1 or 2).
      shortcut: ``"projection"`` (1×1 conv + BN when the shape changes; "option B") or
        ``"pad"`` (stride-2 subsampling and zero-padded channels; "option A", parameter-free,
        used by He et al. for CIFAR).
      activation: name in :data:`robustjax.models.ACTIVATIONS`.
    """

    features: int
    strides: int = 1
    shortcut: str = "projection"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = _layers.get_activation(self.activation)
        s = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), s, padding=1, use_bias=False, kernel_init=_conv_init)(x)
        y = act(_batch_norm(train)(y))
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init)(y)
        y = _batch_norm(train)(y)
        residual = x
        if self.strides != 1 or x.shape[-1] != self.features:
            if self.shortcut == "projection":
                residual = nn.Conv(self.features, (1, 1), s, use_bias=False,
                                   kernel_init=_conv_init, name="shortcut_conv")(x)
                residual = _batch_norm(train, name="shortcut_bn")(residual)
            elif self.shortcut == "pad":
                residual = x[..., :: self.strides, :: self.strides, :]
                extra = self.features - x.shape[-1]
                if extra < 0:
                    raise ValueError("`shortcut`='pad' cannot reduce the number of channels.")
                pad = [(0, 0)] * (residual.ndim - 1) + [(extra // 2, extra - extra // 2)]
                residual = jnp.pad(residual, pad)
            else:
                raise ValueError(
                    f"`shortcut` must be one of ('projection', 'pad'), got {self.shortcut!r}.")
        return act(y + residual)


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3×3 stem conv + BN + act, stages of :class:`BasicBlock`, global average
    pooling, dense classifier.

    Stage ``i`` has ``stage_sizes[i]`` blocks of ``widths[i]`` channels; every stage after the
    first halves the resolution in its first block. Batch norm uses batch statistics and updates
    ``batch_stats`` when ``train=True`` (call ``apply(..., mutable=["batch_stats"])``), running
    averages otherwise.

    Attributes:
      stage_sizes: blocks per stage.
      widths: channels per stage (the stem has ``widths[0]``).
      num_classes: number of logits ``K``.
      shortcut: see :class:`BasicBlock`.
      activation: name in :data:`robustjax.models.ACTIVATIONS`.
      mean, std: optional input normalisation.

    Input ``[N, H, W, C]``, output ``[N, K]``.
    Cost: O(N · H · W · Σ_stages blocks · 18 · width² / 4^stage).
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    num_classes: int = 10
    shortcut: str = "projection"
    activation: str = "relu"
    mean: tuple[float, ...] | float | None = None
    std: tuple[float, ...] | float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if len(self.stage_sizes) != len(self.widths):
            raise ValueError(
                f"`stage_sizes` and `widths` must have the same length, got {self.stage_sizes} "
                f"and {self.widths}.")
        act = _layers.get_activation(self.activation)
        x = _layers.normalize_input(x, self.mean, self.std)
        x = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False, kernel_init=_conv_init)(x)
        x = act(_batch_norm(train)(x))
        for i, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(n):
                strides = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(w, strides, self.shortcut, self.activation)(x, train)
        x = jnp.mean(x, axis=(-3, -2))
        return nn.Dense(self.num_classes)(x)


#: ResNet-18 for CIFAR (3×3 stem, no max pool; 11,173,962 parameters for 10 classes).
ResNet18 = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), shortcut="projection")

#: ResNet-20 of He et al. (2016) for CIFAR: 3 stages × 3 blocks, 16/32/64 channels, option-A
#: (zero-padding) shortcuts; 269,722 parameters ("0.27M").
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), widths=(16, 32, 64), shortcut="pad")

#: Two one-block stages of 4/8 channels, for tests.
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1), widths=(4, 8), shortcut="projection")
