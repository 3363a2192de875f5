"""Multi-layer perceptron with one hidden layer."""

from __future__ import annotations

import flax.linen as nn
import jax

from robustjax.models import _layers


class MLP(nn.Module):
    """``x -> flatten -> Dense(hidden) -> activation -> Dense(num_classes)``.

    The one-hidden-layer network of the spatial-certification paper (512 hidden ReLUs on MNIST),
    whose two weight matrices the SDP/spectral/Frobenius bounds use; parameters are named
    ``Dense_0`` (hidden) and ``Dense_1`` (output).

    Attributes:
      hidden: hidden width.
      num_classes: number of logits ``K``.
      activation: name in :data:`robustjax.models.ACTIVATIONS`.
      mean: optional per-channel mean subtracted from the ``[0, 1]`` input.
      std: optional per-channel standard deviation dividing it.

    Input ``[N, H, W, C]`` (any trailing shape; flattened), output logits ``[N, K]``.
    Cost: O(N · (D · hidden + hidden · K)) with ``D = H·W·C``.
    """

    hidden: int = 512
    num_classes: int = 10
    activation: str = "relu"
    mean: tuple[float, ...] | float | None = None
    std: tuple[float, ...] | float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no batch norm or dropout
        act = _layers.get_activation(self.activation)
        x = _layers.normalize_input(x, self.mean, self.std)
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)
