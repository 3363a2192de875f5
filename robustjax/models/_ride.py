"""RIDE's reconstruction networks (seed 002, supplementary Table 3) as Flax Linen modules.

Fully convolutional, 3×3 kernels, ``SAME`` padding, stride 1, ReLU after every layer but the
output one, dropout 0.5 after the layers marked in Table 3, no batch norm, and an optional
sigmoid on the output for images in ``[0, 1]`` (the paper's white-box/BPDA setting). Weights
and biases are initialized from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` ("random uniform", the
PyTorch ``Conv2d`` default).

``make_reconstruction_net(module)`` turns a module into the pure ``(init, apply)`` pair that
``robustjax.defenses`` takes.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.defenses._ride import ReconstructionNet

__all__ = ["RideFCN", "RIDE_FCN_SPECS", "ride_fcn", "make_reconstruction_net"]


def _uniform_fan_in(fan_in: int):
    bound = 1.0 / (fan_in**0.5)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class RideFCN(nn.Module):
    """RIDE reconstruction FCN ``[n, H, W, C] -> [n, H, W, out_channels or C]``.

    Attributes:
      features: width of the hidden conv layers (16 for MNIST, 32 otherwise).
      num_layers: number of conv layers including the output layer ``convn``.
      dropout_layers: 1-based indices of the conv layers followed (after ReLU) by dropout.
      dropout_rate: dropout ratio (0.5).
      out_channels: output channels; ``None`` means the input's.
      sigmoid: sigmoid on the output (images in ``[0, 1]``); ``False`` for mean-0 inputs.

    Call ``module.apply(variables, z, train=...)``; ``train=True`` enables dropout (rng name
    ``"dropout"``). Cost: ``O(n·H·W·9·Σ c_in·c_out)`` per forward pass.
    """

    features: int = 32
    num_layers: int = 8
    dropout_layers: Sequence[int] = (4, 5, 6)
    dropout_rate: float = 0.5
    out_channels: int | None = None
    sigmoid: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        out_c = self.out_channels or x.shape[-1]
        for i in range(1, self.num_layers + 1):
            last = i == self.num_layers
            c_in = x.shape[-1]
            feats = out_c if last else self.features
            x = nn.Conv(
                feats,
                (3, 3),
                padding="SAME",
                kernel_init=_uniform_fan_in(9 * c_in),
                bias_init=_uniform_fan_in(9 * c_in),
                name="convn" if last else f"conv{i}",
            )(x)
            if last:
                break
            x = nn.relu(x)
            if i in tuple(self.dropout_layers):
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.sigmoid(x) if self.sigmoid else x


#: Table 3: (features, num_layers, dropout_layers) per dataset; "tiny" is for tests.
RIDE_FCN_SPECS = {
    "mnist": (16, 4, (2, 3)),
    "cifar10": (32, 5, (2, 3)),
    "imagenet": (32, 8, (4, 5, 6)),
    "tiny": (4, 3, (2,)),
}


def ride_fcn(dataset: str = "imagenet", *, sigmoid: bool = True, dropout: bool = True) -> RideFCN:
    """The Table 3 reconstruction network for ``dataset`` in ``RIDE_FCN_SPECS``.

    ``dropout=False`` drops the dropout layers (the "without dropout" ablation, Fig. 5a/8).
    """
    if dataset not in RIDE_FCN_SPECS:
        raise ValueError(f"`dataset` must be one of {tuple(RIDE_FCN_SPECS)}, got {dataset!r}.")
    features, num_layers, drop = RIDE_FCN_SPECS[dataset]
    return RideFCN(
        features=features,
        num_layers=num_layers,
        dropout_layers=drop if dropout else (),
        sigmoid=sigmoid,
    )


def make_reconstruction_net(module: nn.Module) -> ReconstructionNet:
    """Wrap a Flax module ``module.apply(v, z, train=...)`` as a :class:`ReconstructionNet`.

    ``init(key, x [H, W, C]) -> params`` and ``apply(params, z [n, H, W, C], key, train)``;
    ``key`` is the dropout rng.
    """

    def init(key, x):
        return module.init({"params": key}, jnp.asarray(x)[None], train=False)["params"]

    def apply(params, z, key, train):
        return module.apply({"params": params}, z, train=train, rngs={"dropout": key})

    return ReconstructionNet(init, apply)
