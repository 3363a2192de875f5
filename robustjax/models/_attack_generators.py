"""Generator (and discriminator) networks of the AdvGAN and GAP attack baselines.

Both papers use the image-to-image ResNet generator of Johnson et al. (2016) —
``c7s1-k, d2k, d4k, R4k × B, u2k, uk, c7s1-C`` — and differ in width, normalisation and output:

* **AdvGAN** (Xiao et al., IJCAI 2018, §3 and appendix): ``k = 8``, ``B = 4`` residual blocks,
  instance norm, ReLU, ``tanh`` output; a ``C8–C16–C32–FC`` discriminator with instance norm
  and LeakyReLU(0.2) (:class:`AdvGANDiscriminator`).
* **GAP** (Poursaeed et al., CVPR 2018, §3.2): the same ResNet generator with ``k = 64`` and
  ``B = 6`` (ImageNet); batch norm in the original. Its raw (unbounded) output is rescaled to the
  ε-ball by the attack (:func:`robustjax.attacks.gap_perturbation`), so the net ends linearly.

Choices (documented): both use instance norm (no running statistics, so the attack is a pure
function of ``x`` and does not depend on the other examples of a batch); the two down-sampling
convolutions use ``k = 3, s = 2``, padding 1, and the up-sampling transposed convolutions
``k = 3, s = 2`` with ``SAME`` padding so that ``H, W`` divisible by 4 are restored exactly.
The widths ``features`` / ``num_blocks`` are attributes; the defaults are the papers' MNIST /
CIFAR sizes for AdvGAN and a 32-wide, 4-block GAP (GAP's 64/6 is for 224×224 ImageNet).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["ResnetGenerator", "AdvGANGenerator", "GAPGenerator", "AdvGANDiscriminator"]


def _inorm(name=None):
    return nn.InstanceNorm(use_scale=True, use_bias=True, name=name)


class _ResBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(_inorm()(nn.Conv(self.features, (3, 3), padding=1)(x)))
        h = _inorm()(nn.Conv(self.features, (3, 3), padding=1)(h))
        return x + h


class ResnetGenerator(nn.Module):
    """Johnson-style ResNet image-to-image generator ``[N, H, W, C] -> [N, H, W, C]``.

    Attributes:
      features: ``k`` (width of the first convolution; doubled by each down-sampling).
      num_blocks: ``B`` residual blocks at ``H/4 × W/4``.
      output: ``"tanh"`` (values in ``[-1, 1]``) or ``"linear"``.

    ``H`` and ``W`` must be divisible by 4. ``train`` is accepted and ignored (instance norm).
    Cost: ``O(H·W·k²·(49/… + B·18))`` MACs per image, dominated by the residual blocks.
    """

    features: int = 8
    num_blocks: int = 4
    output: str = "tanh"

    @nn.compact
    def __call__(self, x, *, train: bool = False) -> Any:
        del train
        n, h, w, c = x.shape
        if h % 4 or w % 4:
            raise ValueError(f"`x` height and width must be divisible by 4, got {(h, w)}.")
        if self.output not in ("tanh", "linear"):
            raise ValueError(f"`output` must be 'tanh' or 'linear', got {self.output!r}.")
        k = self.features
        v = nn.relu(_inorm()(nn.Conv(k, (7, 7), padding=3)(x)))
        v = nn.relu(_inorm()(nn.Conv(2 * k, (3, 3), (2, 2), padding=1)(v)))
        v = nn.relu(_inorm()(nn.Conv(4 * k, (3, 3), (2, 2), padding=1)(v)))
        for _ in range(self.num_blocks):
            v = _ResBlock(4 * k)(v)
        v = nn.relu(_inorm()(nn.ConvTranspose(2 * k, (3, 3), (2, 2), padding="SAME")(v)))
        v = nn.relu(_inorm()(nn.ConvTranspose(k, (3, 3), (2, 2), padding="SAME")(v)))
        out = nn.Conv(c, (7, 7), padding=3)(v)
        return jnp.tanh(out) if self.output == "tanh" else out


def AdvGANGenerator(features: int = 8, num_blocks: int = 4) -> ResnetGenerator:  # noqa: N802
    """AdvGAN's generator (Xiao et al. 2018): ResNet generator, ``tanh`` output in ``[-1, 1]``."""
    return ResnetGenerator(features=features, num_blocks=num_blocks, output="tanh")


def GAPGenerator(features: int = 32, num_blocks: int = 4) -> ResnetGenerator:  # noqa: N802
    """GAP's image-dependent generator (Poursaeed et al. 2018): ResNet generator, linear output
    (the attack rescales it to the ε-ball)."""
    return ResnetGenerator(features=features, num_blocks=num_blocks, output="linear")


class AdvGANDiscriminator(nn.Module):
    """AdvGAN's discriminator ``C8–C16–C32–FC``: ``[N, H, W, C] -> [N]`` real-vs-fake logits.

    ``Ck`` = 4×4 convolution with stride 2 and ``k`` filters, instance norm (not on the first),
    LeakyReLU(0.2). Cost ``O(H·W·16·(C·8 + 8·16/4 + 16·32/16))`` MACs per image.
    """

    features: int = 8

    @nn.compact
    def __call__(self, x, *, train: bool = False) -> Any:
        del train
        k = self.features
        v = nn.leaky_relu(nn.Conv(k, (4, 4), (2, 2), padding=1)(x), 0.2)
        v = nn.leaky_relu(_inorm()(nn.Conv(2 * k, (4, 4), (2, 2), padding=1)(v)), 0.2)
        v = nn.leaky_relu(_inorm()(nn.Conv(4 * k, (4, 4), (2, 2), padding=1)(v)), 0.2)
        return nn.Dense(1)(v.reshape(v.shape[0], -1))[:, 0]
