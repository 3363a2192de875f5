"""The L2L-DA attack generator ``g_φ`` (Jang et al., ICCV 2019, supplementary A.1).

The generator maps ``(x, δ⁽ᵗ⁾, ∇̃ℓ, z, y)`` to an update direction in ``[-1, 1]``:

``x̃ = [x; δ; ∇̃]`` (3C channels) – ccat(tile(z̃)) – conv(64,3,1) – LReLU – [skip₁] – ccat(tile(z̃)) –
conv(64,4,2) – CondBN(y) – LReLU – [skip₂] – ccat(tile(z̃)) – conv(128,4,2) – LReLU –
deconv(64,4,2) – CondBN(y) – ReLU – ccat(skip₂) – deconv(64,4,2) – CondBN(y) – ReLU –
ccat(skip₁) – conv(C,3,1) – tanh,

with ``z̃`` = two dense ReLU layers of width d applied to ``z ~ N(0, I_d)`` and LeakyReLU slope 0.2.
The label ``y`` enters **only** through the class-conditional batch norms (CondBN: batch norm
without affine terms followed by a per-class scale γ_y and shift β_y).

Choices where the supplement is silent (documented and tested):
* strided convolutions use padding 1 (as the supplement says); the transposed convolutions use
  ``SAME`` padding so that each exactly doubles the spatial size. ``H`` and ``W`` must therefore
  be divisible by 4 (28 and 32 are).
* CondBN starts with γ = 1, β = 0 for every class, so at initialisation the output does not
  depend on ``y``; training makes it class dependent.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ConditionalBatchNorm", "L2LGenerator", "L2LGeneratorTiny"]


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are looked up per class (Dumoulin et al. 2017)."""

    num_classes: int
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, y, *, train: bool):
        feats = x.shape[-1]
        h = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                         momentum=self.momentum, epsilon=self.epsilon)(x)
        gamma = self.param("gamma", nn.initializers.ones, (self.num_classes, feats))
        beta = self.param("beta", nn.initializers.zeros, (self.num_classes, feats))
        g = jnp.take(gamma, y, axis=0)[:, None, None, :]
        b = jnp.take(beta, y, axis=0)[:, None, None, :]
        return h * g + b


def _tile(v, like):
    n, h, w, _ = like.shape
    return jnp.broadcast_to(v[:, None, None, :], (n, h, w, v.shape[-1]))


class L2LGenerator(nn.Module):
    """Recurrent attack generator ``g_φ(x, y, z, δ, ∇̃) -> [-1, 1]^{N×H×W×C}``.

    Attributes:
      num_classes: number of classes (rows of the CondBN tables).
      latent_dim: ``d``, size of ``z`` and of the two dense layers (8 in the paper).
      features: filters of the (first, second, third) convolution: (64, 64, 128) in the paper.

    Call: ``apply(variables, x, delta, grad, z, y, train=...)`` with ``x, delta, grad``
    ``[N, H, W, C]``, ``z`` ``[N, d]``, ``y`` ``int32 [N]``. Returns ``[N, H, W, C]`` in
    ``[-1, 1]``. Cost: one forward pass of ~``H·W·(9·(3C+d)·f₁ + 4·f₁·f₂ + ...)`` MACs.
    """

    num_classes: int = 10
    latent_dim: int = 8
    features: tuple[int, int, int] = (64, 64, 128)

    @nn.compact
    def __call__(self, x, delta, grad, z, y, *, train: bool = False) -> Any:
        n, h, w, c = x.shape
        if h % 4 or w % 4:
            raise ValueError(f"`x` height and width must be divisible by 4, got {(h, w)}.")
        f1, f2, f3 = self.features
        lrelu = lambda v: nn.leaky_relu(v, 0.2)  # noqa: E731
        zt = nn.relu(nn.Dense(self.latent_dim, name="z_fc1")(z))
        zt = nn.relu(nn.Dense(self.latent_dim, name="z_fc2")(zt))
        h0 = jnp.concatenate([x, delta, grad], axis=-1)
        h0 = jnp.concatenate([h0, _tile(zt, h0)], axis=-1)
        skip1 = lrelu(nn.Conv(f1, (3, 3), (1, 1), padding=1, name="conv1")(h0))
        h1 = jnp.concatenate([skip1, _tile(zt, skip1)], axis=-1)
        h1 = nn.Conv(f2, (4, 4), (2, 2), padding=1, name="conv2")(h1)
        skip2 = lrelu(ConditionalBatchNorm(self.num_classes, name="cbn2")(h1, y, train=train))
        h2 = jnp.concatenate([skip2, _tile(zt, skip2)], axis=-1)
        h2 = lrelu(nn.Conv(f3, (4, 4), (2, 2), padding=1, name="conv3")(h2))
        u1 = nn.ConvTranspose(f2, (4, 4), (2, 2), padding="SAME", name="deconv1")(h2)
        u1 = nn.relu(ConditionalBatchNorm(self.num_classes, name="cbn_up1")(u1, y, train=train))
        u1 = jnp.concatenate([u1, skip2], axis=-1)
        u2 = nn.ConvTranspose(f1, (4, 4), (2, 2), padding="SAME", name="deconv2")(u1)
        u2 = nn.relu(ConditionalBatchNorm(self.num_classes, name="cbn_up2")(u2, y, train=train))
        u2 = jnp.concatenate([u2, skip1], axis=-1)
        out = nn.Conv(c, (3, 3), (1, 1), padding=1, name="conv_out")(u2)
        return jnp.tanh(out)


def L2LGeneratorTiny(num_classes: int = 10, latent_dim: int = 4) -> L2LGenerator:  # noqa: N802
    """A narrow generator for tests (same topology, features (8, 8, 16))."""
    return L2LGenerator(num_classes=num_classes, latent_dim=latent_dim, features=(8, 8, 16))


def _self_check():  # pragma: no cover - manual use
    g = L2LGeneratorTiny()
    x = jnp.zeros((2, 28, 28, 1))
    z = jnp.zeros((2, 4))
    y = jnp.zeros((2,), jnp.int32)
    v = g.init(jax.random.key(0), x, x, x, z, y)
    return g.apply(v, x, x, x, z, y).shape
