"""Small convolutional classifiers for MNIST-sized inputs."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from robustjax.models import _layers


class MnistCNN(nn.Module):
    """Two conv + two fully connected layers: ``[conv k×k → act → pool2]×2 → fc → act → fc``.

    The defaults are the MNIST network of Madry et al. (ICLR 2018): conv 32 5×5 SAME, 2×2 max
    pool, conv 64 5×5 SAME, 2×2 max pool, fc 1024, fc 10 (3,274,634 parameters on 28×28×1).
    Pooling is :func:`max_pool_2x2` (reshape + max: same values as ``nn.max_pool`` and a much
    cheaper gradient on CPU).

    Attributes:
      features: channels of the two conv layers.
      kernel_size: square conv kernel size.
      hidden: width of the first fully connected layer.
      num_classes: number of logits ``K``.
      activation: name in :data:`robustjax.models.ACTIVATIONS`.
      padding: conv padding, ``"SAME"`` or ``"VALID"``.
      mean, std: optional input normalisation (images stay in ``[0, 1]`` outside).

    Input ``[N, H, W, C]``, output ``[N, K]``.
    Cost: O(N · H · W · k² · (C·f₁ + f₁·f₂ / 4)) for the convs plus the dense layers.
    """

    features: Sequence[int] = (32, 64)
    kernel_size: int = 5
    hidden: int = 1024
    num_classes: int = 10
    activation: str = "relu"
    padding: str = "SAME"
    mean: tuple[float, ...] | float | None = None
    std: tuple[float, ...] | float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no batch norm or dropout
        act = _layers.get_activation(self.activation)
        x = _layers.normalize_input(x, self.mean, self.std)
        k = (self.kernel_size, self.kernel_size)
        for f in self.features:
            x = act(nn.Conv(f, k, padding=self.padding)(x))
            x = _layers.max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


#: Madry et al. (2018) MNIST CNN: conv32-5×5, pool, conv64-5×5, pool, fc1024, fc10.
MadryCNN = functools.partial(MnistCNN, features=(32, 64), kernel_size=5, hidden=1024)

#: A few-thousand-parameter CNN for tests.
TinyCNN = functools.partial(MnistCNN, features=(4, 8), kernel_size=3, hidden=16)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) for 28×28 inputs, in its common modern form.

    ``conv 6 5×5 SAME → act → pool2 → conv 16 5×5 VALID → act → pool2 → fc 120 → act → fc 84 →
    act → fc K``. Choices (the original is ambiguous for 28×28 MNIST and predates ReLU): the
    first conv is SAME-padded (= the original's 32×32 input), pooling is 2×2 max (not trainable
    average subsampling), the activation defaults to ReLU (``"tanh"`` is available), and C3 is
    fully connected to S2. 61,706 parameters on 28×28×1.

    Input ``[N, 28, 28, C]`` (or ``32×32``), output ``[N, K]``.
    """

    num_classes: int = 10
    activation: str = "relu"
    mean: tuple[float, ...] | float | None = None
    std: tuple[float, ...] | float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        act = _layers.get_activation(self.activation)
        x = _layers.normalize_input(x, self.mean, self.std)
        x = _layers.max_pool_2x2(act(nn.Conv(6, (5, 5), padding="SAME")(x)))
        x = _layers.max_pool_2x2(act(nn.Conv(16, (5, 5), padding="VALID")(x)))
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(120)(x))
        x = act(nn.Dense(84)(x))
        return nn.Dense(self.num_classes)(x)
