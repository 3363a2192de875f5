"""DCGAN generator / critic / encoder (Tables 1–2) and class-conditional VAEs for ABS, at 32×32.

Architectures of Chen, Xie, Zhu, "On Breaking Deep Generative Model-based Defenses and Beyond"
(ICML 2020), supplementary §C:

* Table 1, discriminator / encoder: ``conv(C,256,4,2,1)`` → ``conv(256,512,4,2,1)`` →
  ``conv(512,1024,4,2,1)`` → ``conv(1024,128,4,1,0)``, each followed by LeakyReLU(0.2), then
  ``FC(d)``.
* Table 2, generator / decoder: ``convT(d,1024,4,1,0)`` → ``convT(1024,512,4,2,1)`` →
  ``convT(512,256,4,2,1)`` (each BatchNorm + ReLU) → ``convT(256,C,4,2,1)`` → Tanh.

The spatial sizes close at 32×32 (1 → 4 → 8 → 16 → 32), so MNIST is zero-padded from 28×28 to
32×32 (:func:`pad_to_32`). Choices (documented and tested): images follow robustjax's ``[0, 1]``
convention, so the generator returns ``(tanh(h) + 1) / 2`` and the critic/encoder map inputs to
``[-1, 1]`` (``2x - 1``) before the first convolution. Padding ``(k-1-p)`` per side in Flax's
``ConvTranspose`` reproduces PyTorch's ``convT(k, s, p)`` output sizes. The ``widths`` fields scale
the channel counts; the ``*Tiny`` variants are for tests.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "ClassConditionalVAE",
    "ClassConditionalVAETiny",
    "DCGANCritic",
    "DCGANCriticTiny",
    "DCGANEncoder",
    "DCGANEncoderTiny",
    "DCGANGenerator",
    "DCGANGeneratorTiny",
    "crop_to_28",
    "generator_lipschitz_inputs",
    "pad_to_32",
]


def pad_to_32(x: jax.Array) -> jax.Array:
    """Zero-pad ``[N, 28, 28, C]`` images to ``[N, 32, 32, C]`` (2 pixels per side)."""
    if x.ndim != 4 or x.shape[1:3] != (28, 28):
        raise ValueError(f"`x` must have shape [N, 28, 28, C], got {tuple(x.shape)}.")
    return jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))


def crop_to_28(x: jax.Array) -> jax.Array:
    """Inverse of :func:`pad_to_32`: ``[N, 32, 32, C] -> [N, 28, 28, C]``."""
    if x.ndim < 3 or x.shape[-3:-1] != (32, 32):
        raise ValueError(f"`x` must have shape [..., 32, 32, C], got {tuple(x.shape)}.")
    return x[..., 2:30, 2:30, :]


class DCGANGenerator(nn.Module):
    """Table 2 generator / decoder: ``z [N, d] -> x [N, 32, 32, channels]`` in ``[0, 1]``.

    Attributes:
      channels: output channels ``C`` (1 for MNIST, 3 for CIFAR-10).
      widths: the three hidden widths (1024, 512, 256 in the paper).
      use_batchnorm: BatchNorm after the hidden transposed convolutions (paper: yes). With
        ``train=True`` call ``apply(..., mutable=["batch_stats"])``.

    Cost: O(N · Σ_l k² · H_l W_l · c_in c_out) multiply-adds.
    """

    channels: int = 1
    widths: Sequence[int] = (1024, 512, 256)
    use_batchnorm: bool = True

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        if z.ndim != 2:
            raise ValueError(f"`z` must have shape [N, d], got {tuple(z.shape)}.")
        h = z[:, None, None, :]
        pads = ("VALID", ((2, 2), (2, 2)), ((2, 2), (2, 2)))
        strides = (1, 2, 2)
        for i, width in enumerate(self.widths):
            h = nn.ConvTranspose(width, (4, 4), strides=(strides[i],) * 2, padding=pads[i],
                                 use_bias=not self.use_batchnorm, name=f"convT{i + 1}")(h)
            if self.use_batchnorm:
                h = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                 name=f"bn{i + 1}")(h)
            h = nn.relu(h)
        h = nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                             name="convT4")(h)
        return 0.5 * (jnp.tanh(h) + 1.0)


class DCGANEncoder(nn.Module):
    """Table 1 encoder: ``x [N, 32, 32, C]`` in ``[0, 1]`` -> ``[N, features]``.

    Attributes:
      features: output size ``d`` of the final ``FC(d)``.
      widths: the four conv widths (256, 512, 1024, 128 in the paper).
      negative_slope: LeakyReLU slope (0.2).

    No normalisation layers (WGAN-GP's gradient penalty is per example). ``train`` is accepted for
    API uniformity and ignored.

    Cost: O(N · Σ_l k² · H_l W_l · c_in c_out) multiply-adds.
    """

    features: int = 8
    widths: Sequence[int] = (256, 512, 1024, 128)
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        if x.ndim != 4 or x.shape[1:3] != (32, 32):
            raise ValueError(f"`x` must have shape [N, 32, 32, C], got {tuple(x.shape)}.")
        h = 2.0 * x - 1.0
        for i, width in enumerate(self.widths):
            last = i == len(self.widths) - 1
            h = nn.Conv(width, (4, 4), strides=(1, 1) if last else (2, 2),
                        padding="VALID" if last else ((1, 1), (1, 1)), name=f"conv{i + 1}")(h)
            h = nn.leaky_relu(h, self.negative_slope)
        return nn.Dense(self.features, name="fc")(h.reshape(h.shape[0], -1))


class DCGANCritic(DCGANEncoder):
    """Table 1 WGAN-GP critic: :class:`DCGANEncoder` with one output, returned as ``[N]``."""

    features: int = 1

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return super().__call__(x, train)[:, 0]


class DCGANGeneratorTiny(DCGANGenerator):
    """Test-size :class:`DCGANGenerator` (widths 16, 8, 4)."""

    widths: Sequence[int] = (16, 8, 4)


class DCGANEncoderTiny(DCGANEncoder):
    """Test-size :class:`DCGANEncoder` (widths 4, 8, 16, 8)."""

    widths: Sequence[int] = (4, 8, 16, 8)


class DCGANCriticTiny(DCGANCritic):
    """Test-size :class:`DCGANCritic` (widths 4, 8, 16, 8)."""

    widths: Sequence[int] = (4, 8, 16, 8)


class _VAE(nn.Module):
    latent_dim: int
    channels: int
    encoder_widths: Sequence[int]
    decoder_widths: Sequence[int]

    def setup(self):
        self.encoder = DCGANEncoder(features=2 * self.latent_dim, widths=self.encoder_widths)
        self.decoder = DCGANGenerator(channels=self.channels, widths=self.decoder_widths,
                                      use_batchnorm=False)

    def encode(self, x):
        h = self.encoder(x)
        return h[:, : self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x, eps):
        mu, logvar = self.encode(x)
        z = mu + jnp.exp(0.5 * logvar) * eps
        return self.decode(z), mu, logvar


class ClassConditionalVAE(nn.Module):
    r"""ABS's class-conditional generative model: one VAE per class, parameters stacked on axis 0.

    Each class ``c`` has an encoder (Table 1 with ``FC(2d)`` for mean and log-variance) and a
    decoder (Table 2 without BatchNorm — choice: ABS decodes single latents per class at inference,
    where batch statistics are meaningless). Parameters have a leading class axis ``[K, ...]``
    (``nn.vmap``), so all classes run as one batched computation.

    Methods (all via ``model.apply(variables, ..., method=...)``):
      * ``encode(x [N, 32, 32, C]) -> (mu, logvar)``, each ``[K, N, d]``;
      * ``decode(z [K, M, d]) -> [K, M, 32, 32, C]`` in ``[0, 1]`` (class ``c`` decodes ``z[c]``);
      * ``__call__(x [N, 32, 32, C], eps [K, N, d] = 0)`` returns
        ``(recon [K, N, 32, 32, C], mu, logvar)``, the reparameterised pass
        :math:`z = \mu + e^{\log\sigma^2/2}\,\epsilon` of every class.

    Attributes:
      num_classes: ``K``.
      latent_dim: ``d`` (8 in ABS).
      channels: image channels.
      encoder_widths, decoder_widths: see :class:`DCGANEncoder` / :class:`DCGANGenerator`.
    """

    num_classes: int = 10
    latent_dim: int = 8
    channels: int = 1
    encoder_widths: Sequence[int] = (256, 512, 1024, 128)
    decoder_widths: Sequence[int] = (1024, 512, 256)

    def setup(self):
        stacked = nn.vmap(
            _VAE,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=0,
            out_axes=0,
            axis_size=self.num_classes,
            methods=["encode", "decode", "__call__"],
        )
        self.vaes = stacked(self.latent_dim, self.channels, tuple(self.encoder_widths),
                            tuple(self.decoder_widths))

    def _broadcast(self, x):
        return jnp.broadcast_to(x, (self.num_classes,) + x.shape)

    def encode(self, x: jax.Array):
        return self.vaes.encode(self._broadcast(x))

    def decode(self, z: jax.Array) -> jax.Array:
        if z.ndim != 3 or z.shape[0] != self.num_classes or z.shape[2] != self.latent_dim:
            raise ValueError(
                f"`z` must have shape [{self.num_classes}, M, {self.latent_dim}], "
                f"got {tuple(z.shape)}."
            )
        return self.vaes.decode(z)

    def __call__(self, x: jax.Array, eps: jax.Array | None = None, train: bool = False):
        del train
        if eps is None:  # the mean pass (also what ``init(key, x, train=False)`` uses)
            eps = jnp.zeros((self.num_classes, x.shape[0], self.latent_dim), x.dtype)
        return self.vaes(self._broadcast(x), eps)


class ClassConditionalVAETiny(ClassConditionalVAE):
    """Test-size :class:`ClassConditionalVAE`."""

    encoder_widths: Sequence[int] = (4, 8, 16, 8)
    decoder_widths: Sequence[int] = (16, 8, 4)


def generator_lipschitz_inputs(variables, *, bn_epsilon: float = 1e-5):
    r"""Kernels and per-layer factors of a :class:`DCGANGenerator` for Theorem 2's bound.

    Returns ``(kernels, scales)`` for :func:`robustjax.implicit.lipschitz_bound`: the four
    transposed-convolution kernels in order, and per layer the eval-mode batch-norm gain
    :math:`\max_c |\gamma_c| / \sqrt{\sigma^2_c + \epsilon}` (1 where there is no batch norm;
    the last layer gets 0.5, the slope bound of ``(tanh + 1) / 2``).

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` of a :class:`DCGANGenerator`.
      bn_epsilon: the batch-norm epsilon (Flax default 1e-5).

    Returns:
      ``(kernels: list of 4 arrays, scales: float32 [4])``.
    """
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    kernels, scales = [], []
    for i in range(1, 5):
        kernels.append(params[f"convT{i}"]["kernel"])
        bn = f"bn{i}"
        if bn in params:
            gain = jnp.abs(params[bn]["scale"]) / jnp.sqrt(stats[bn]["var"] + bn_epsilon)
            scales.append(jnp.max(gain))
        else:
            scales.append(jnp.asarray(0.5 if i == 4 else 1.0))
    return kernels, jnp.stack(scales).astype(jnp.float32)
