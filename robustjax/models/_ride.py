"""RIDE's reconstruction networks (seed 002, supplementary Table 3) as Flax Linen modules.

Fully convolutional, 3×3 kernels, ``SAME`` padding, stride 1, ReLU after every layer but the
output one, dropout 0.5 after the layers marked in Table 3, no batch norm, and an optional
sigmoid on the output for images in ``[0, 1]`` (the paper's white-box/BPDA setting). Weights
and biases are initialized from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` ("random uniform", the
PyTorch ``Conv2d`` default).

Performance (CPU). The defenders fit one network per image and ``jax.vmap`` over the batch, so
every image has its own conv kernels. A vmapped ``lax.conv`` with per-example kernels lowers to
a grouped convolution, which XLA:CPU runs slowly; ``RideFCN(conv="patches")`` (the default)
computes each 3×3 ``SAME`` convolution as im2col patches (nine shifted slices of the padded
input, concatenated tap-major ``(kh, kw, c_in)``) times the ``[9·c_in, c_out]`` kernel matrix,
which under ``vmap`` is one batched matmul ``'bpk,bko->bpo'`` for all networks. Same parameters
(same names and shapes as ``nn.Conv``) and the same output as ``conv="lax"`` up to float
rounding. Dropout at rate 1/2 takes its keep/drop coins from the bits of random ``uint32`` words
(32 exact fair coins per word, 1/32 of the random-number work of ``jax.random.bernoulli``);
other rates use ``jax.random.bernoulli``.

``make_reconstruction_net(module)`` turns a module into the pure ``(init, apply)`` pair that
``robustjax.defenses`` takes.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.defenses._ride import ReconstructionNet

__all__ = [
    "RideFCN",
    "RIDE_FCN_SPECS",
    "RIDE_CONV_IMPLS",
    "ride_fcn",
    "make_reconstruction_net",
    "patches_conv3x3",
    "coin_dropout_mask",
]

RIDE_CONV_IMPLS = ("patches", "lax")


def _uniform_fan_in(fan_in: int):
    bound = 1.0 / (fan_in**0.5)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def patches_conv3x3(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """3×3, stride 1, ``SAME`` (zero-padded) convolution as im2col patches times a matrix.

    ``out[n, i, j, o] = bias[o] + Σ_{a,b,c} x_pad[n, i+a, j+b, c] · kernel[a, b, c, o]`` (the
    cross-correlation of ``lax.conv`` / ``nn.Conv``). The patches are nine shifted slices of the
    padded input concatenated tap-major, so they match ``kernel.reshape(9·c_in, c_out)``.

    Args:
      x: ``[n, H, W, c_in]``.
      kernel: ``[3, 3, c_in, c_out]`` (HWIO, as ``nn.Conv``).
      bias: ``[c_out]``.

    Returns:
      ``[n, H, W, c_out]``. Cost: one ``[n·H·W, 9·c_in] × [9·c_in, c_out]`` matmul
      (``O(n·H·W·9·c_in·c_out)``) plus a ``9×`` copy of the input; under ``jax.vmap`` over
      per-example kernels a single batched matmul.
    """
    _, h, w, c_in = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate(
        [xp[:, a : a + h, b : b + w, :] for a in range(3) for b in range(3)], axis=-1
    )
    return patches @ kernel.reshape(9 * c_in, kernel.shape[-1]) + bias


def coin_dropout_mask(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Exact i.i.d. Bernoulli(1/2) ``bool`` mask, 32 coins per random ``uint32`` word.

    The last axis (size ``F``) takes its coins from ``ceil(F/32)`` words per leading position:
    coin ``f`` is bit ``f mod 32`` of word ``f // 32``. Threefry bits are uniform, so the coins
    are independent fair coins. Cost: ``prod(shape)/32`` random words.
    """
    f = shape[-1]
    words = -(-f // 32)
    bits = jax.random.bits(key, tuple(shape[:-1]) + (words, 1), jnp.uint32)
    shifts = jnp.arange(32, dtype=jnp.uint32)
    coins = ((bits >> shifts) & jnp.uint32(1)).reshape(tuple(shape[:-1]) + (words * 32,))
    return coins[..., :f] == 1


class _Conv3x3(nn.Module):
    """``nn.Conv(features, (3, 3), padding="SAME")`` with the same parameters, via im2col."""

    features: int
    kernel_init: object
    bias_init: object

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (3, 3, c_in, self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        return patches_conv3x3(x, kernel, bias)


class _Dropout(nn.Module):
    """Inverted dropout; rate 1/2 draws its mask with :func:`coin_dropout_mask`."""

    rate: float

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        rng = self.make_rng("dropout")
        if self.rate == 0.5:
            keep = coin_dropout_mask(rng, x.shape)
        else:
            keep = jax.random.bernoulli(rng, 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class RideFCN(nn.Module):
    """RIDE reconstruction FCN ``[n, H, W, C] -> [n, H, W, out_channels or C]``.

    Attributes:
      features: width of the hidden conv layers (16 for MNIST, 32 otherwise).
      num_layers: number of conv layers including the output layer ``convn``.
      dropout_layers: 1-based indices of the conv layers followed (after ReLU) by dropout.
      dropout_rate: dropout ratio (0.5).
      out_channels: output channels; ``None`` means the input's.
      sigmoid: sigmoid on the output (images in ``[0, 1]``); ``False`` for mean-0 inputs.
      conv: ``"patches"`` (default; im2col + matmul, fast under ``vmap`` on CPU) or ``"lax"``
        (``nn.Conv``); same parameters and, up to rounding, the same function.

    Call ``module.apply(variables, z, train=...)``; ``train=True`` enables dropout (rng name
    ``"dropout"``). Cost: ``O(n·H·W·9·Σ c_in·c_out)`` per forward pass.
    """

    features: int = 32
    num_layers: int = 8
    dropout_layers: Sequence[int] = (4, 5, 6)
    dropout_rate: float = 0.5
    out_channels: int | None = None
    sigmoid: bool = True
    conv: str = "patches"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.conv not in RIDE_CONV_IMPLS:
            raise ValueError(f"`conv` must be one of {RIDE_CONV_IMPLS}, got {self.conv!r}.")
        out_c = self.out_channels or x.shape[-1]
        for i in range(1, self.num_layers + 1):
            last = i == self.num_layers
            c_in = x.shape[-1]
            feats = out_c if last else self.features
            name = "convn" if last else f"conv{i}"
            init_w, init_b = _uniform_fan_in(9 * c_in), _uniform_fan_in(9 * c_in)
            if self.conv == "patches":
                x = _Conv3x3(feats, init_w, init_b, name=name)(x)
            else:
                x = nn.Conv(feats, (3, 3), padding="SAME", kernel_init=init_w,
                            bias_init=init_b, name=name)(x)
            if last:
                break
            x = nn.relu(x)
            if i in tuple(self.dropout_layers):
                x = _Dropout(self.dropout_rate, name=f"dropout{i}")(x, deterministic=not train)
        return nn.sigmoid(x) if self.sigmoid else x


#: Table 3: (features, num_layers, dropout_layers) per dataset; "tiny" is for tests.
RIDE_FCN_SPECS = {
    "mnist": (16, 4, (2, 3)),
    "cifar10": (32, 5, (2, 3)),
    "imagenet": (32, 8, (4, 5, 6)),
    "tiny": (4, 3, (2,)),
}


def ride_fcn(
    dataset: str = "imagenet", *, sigmoid: bool = True, dropout: bool = True,
    conv: str = "patches",
) -> RideFCN:
    """The Table 3 reconstruction network for ``dataset`` in ``RIDE_FCN_SPECS``.

    ``dropout=False`` drops the dropout layers (the "without dropout" ablation, Fig. 5a/8);
    ``conv`` picks the convolution implementation (see :class:`RideFCN`).
    """
    if dataset not in RIDE_FCN_SPECS:
        raise ValueError(f"`dataset` must be one of {tuple(RIDE_FCN_SPECS)}, got {dataset!r}.")
    features, num_layers, drop = RIDE_FCN_SPECS[dataset]
    return RideFCN(
        features=features,
        num_layers=num_layers,
        dropout_layers=drop if dropout else (),
        sigmoid=sigmoid,
        conv=conv,
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
