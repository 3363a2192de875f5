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
  "padding 1" in the usual (PyTorch ``ConvTranspose2d(k=4, s=2, p=1)``) sense, i.e. explicit
  padding ``k - 1 - p = 2`` of the dilated input, so that each exactly doubles the spatial size.
  ``H`` and ``W`` must therefore be divisible by 4 (28, 32 and 64 are).
* CondBN starts with γ = 1, β = 0 for every class, so at initialisation the output does not
  depend on ``y``; training makes it class dependent.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


# Exact re-expressions of the two stride-2, 4×4 layers as stride-1 convolutions. XLA's CPU
# backend runs strided and transposed (input-dilated) convolutions, and the input-dilated
# convolutions that their backward passes produce, far slower than plain stride-1 ones; the
# phase (space-to-depth / depth-to-space) forms below compute the same function with the same
# parameters (kernel ``[4, 4, Cin, Cout]`` as ``nn.Conv`` / ``nn.ConvTranspose``) and only
# stride-1 convolutions, forward and backward.
_TAPS = np.array([[0, 2, 4], [4, 1, 3]])  # deconv output phase r, window offset u -> tap (4: 0)
_IA = np.broadcast_to(_TAPS.T[:, None, :, None], (3, 3, 2, 2))
_IB = np.broadcast_to(_TAPS.T[None, :, None, :], (3, 3, 2, 2))
_DN = ("NHWC", "HWIO", "NHWC")


def conv4x4_s2_phase(x, kernel):
    """``nn.Conv(k=4, s=2, padding=1)`` as space-to-depth + a 2×2 stride-1 VALID conv."""
    n, h, w, c = x.shape
    o = kernel.shape[-1]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h2, w2 = (h + 2) // 2, (w + 2) // 2
    xs = xp.reshape(n, h2, 2, w2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h2, w2, 4 * c)
    ks = kernel.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, o)
    return jax.lax.conv_general_dilated(xs, ks, (1, 1), "VALID", dimension_numbers=_DN)


def deconv4x4_s2_phase(x, kernel):
    """``nn.ConvTranspose(k=4, s=2, padding=2)`` as a 3×3 stride-1 conv to 4 phases +
    depth-to-space."""
    n, h, w, c = x.shape
    o = kernel.shape[-1]
    kp = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    k3 = kp[_IA, _IB].transpose(0, 1, 4, 2, 3, 5).reshape(3, 3, c, 4 * o)
    y = jax.lax.conv_general_dilated(x, k3, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)
    return y.reshape(n, h, w, 2, 2, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, o)


class _Stride2(nn.Module):
    """4×4 stride-2 conv (``transpose=False``, padding 1) or transposed conv (``True``)."""

    features: int
    transpose: bool = False
    impl: str = "phase"

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (4, 4, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.impl == "phase":
            fn = deconv4x4_s2_phase if self.transpose else conv4x4_s2_phase
            return fn(x, kernel) + bias
        if self.transpose:
            y = jax.lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)),
                                       dimension_numbers=_DN)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                             dimension_numbers=_DN)
        return y + bias


def _tile(v, like):
    n, h, w, _ = like.shape
    return jnp.broadcast_to(v[:, None, None, :], (n, h, w, v.shape[-1]))


class L2LGenerator(nn.Module):
    """Recurrent attack generator ``g_φ(x, y, z, δ, ∇̃) -> [-1, 1]^{N×H×W×C}``.

    Attributes:
      num_classes: number of classes (rows of the CondBN tables).
      latent_dim: ``d``, size of ``z`` and of the two dense layers (8 in the paper).
      features: filters of the (first, second, third) convolution: (64, 64, 128) in the paper.
      conv_impl: ``"lax"`` computes the 4×4 stride-2 convolutions and transposed
        convolutions with ``lax.conv_general_dilated`` / ``lax.conv_transpose``; ``"phase"``
        as stride-1 convolutions on space-to-depth / depth-to-space phases; ``"auto"``
        (default) picks ``"phase"`` on the CPU backend and ``"lax"`` elsewhere (GPU/TPU run
        strided and transposed convolutions natively). Same parameters, same function
        (tested). Measured on a shared 2-core CPU, paper generator, 32×32×3, batch 16:
        forward 0.46 s (lax) vs 0.52 s (phase), forward+backward 10.8 s (lax) vs 3.3 s
        (phase) — training is dominated by the backward pass; an older measurement found
        "phase" slower for a whole iteration with a 16/16/32 generator, so measure with
        ``experiments/benchmarks/l2lda.py`` when it matters.

    Call: ``apply(variables, x, delta, grad, z, y, train=...)`` with ``x, delta, grad``
    ``[N, H, W, C]``, ``z`` ``[N, d]``, ``y`` ``int32 [N]``. Returns ``[N, H, W, C]`` in
    ``[-1, 1]``. Cost: one forward pass of ~``H·W·(9·(3C+d)·f₁ + 4·f₁·f₂ + ...)`` MACs.
    """

    num_classes: int = 10
    latent_dim: int = 8
    features: tuple[int, int, int] = (64, 64, 128)
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, delta, grad, z, y, *, train: bool = False) -> Any:
        n, h, w, c = x.shape
        if h % 4 or w % 4:
            raise ValueError(f"`x` height and width must be divisible by 4, got {(h, w)}.")
        if self.conv_impl not in ("phase", "lax", "auto"):
            raise ValueError(
                f"`conv_impl` must be 'phase', 'lax' or 'auto', got {self.conv_impl!r}.")
        impl = self.conv_impl
        if impl == "auto":
            impl = "phase" if jax.default_backend() == "cpu" else "lax"
        f1, f2, f3 = self.features
        s2 = functools.partial(_Stride2, impl=impl)
        lrelu = lambda v: nn.leaky_relu(v, 0.2)  # noqa: E731
        zt = nn.relu(nn.Dense(self.latent_dim, name="z_fc1")(z))
        zt = nn.relu(nn.Dense(self.latent_dim, name="z_fc2")(zt))
        h0 = jnp.concatenate([x, delta, grad], axis=-1)
        h0 = jnp.concatenate([h0, _tile(zt, h0)], axis=-1)
        skip1 = lrelu(nn.Conv(f1, (3, 3), (1, 1), padding=1, name="conv1")(h0))
        h1 = jnp.concatenate([skip1, _tile(zt, skip1)], axis=-1)
        h1 = s2(f2, name="conv2")(h1)
        skip2 = lrelu(ConditionalBatchNorm(self.num_classes, name="cbn2")(h1, y, train=train))
        h2 = jnp.concatenate([skip2, _tile(zt, skip2)], axis=-1)
        h2 = lrelu(s2(f3, name="conv3")(h2))
        u1 = s2(f2, transpose=True, name="deconv1")(h2)
        u1 = nn.relu(ConditionalBatchNorm(self.num_classes, name="cbn_up1")(u1, y, train=train))
        u1 = jnp.concatenate([u1, skip2], axis=-1)
        u2 = s2(f1, transpose=True, name="deconv2")(u1)
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
