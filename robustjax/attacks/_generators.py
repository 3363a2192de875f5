"""Generator-based attacks: AdvGAN, GAP and the one-step L2L* generator, as library attacks.

Each takes a trained generator as a pure closure (e.g. a Flax ``apply`` bound to variables), so
this module does not depend on Flax. The attacks are image dependent and feed-forward: one
generator pass (AdvGAN, GAP) or one classifier gradient plus one generator pass (L2L*).
Bind the closure and the hyperparameters with ``functools.partial`` (or
:func:`robustjax.evaluation.bind_attack`) to get ``(logits_fn, key, x, y) -> x_adv``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks._l2l import GeneratorFn, l2l_attack

__all__ = [
    "ImageGeneratorFn",
    "advgan_perturbation",
    "gap_perturbation",
    "advgan_attack",
    "gap_attack",
    "l2l_star_attack",
]

#: ``generator_fn(x [N, H, W, C]) -> [N, H, W, C]``.
ImageGeneratorFn = Callable[[Array], Array]


def _box(x: Array, delta: Array) -> Array:
    return jnp.clip(x + delta, 0.0, 1.0) - x


def advgan_perturbation(generator_fn: ImageGeneratorFn, x: ArrayLike, *, eps: float) -> Array:
    r"""AdvGAN perturbation :math:`\delta = \mathrm{clip}_{[0,1]}(x + \epsilon\,G(x)) - x`.

    ``G`` ends in ``tanh`` so :math:`\|\epsilon G(x)\|_\infty \le \epsilon`. Choice (documented):
    AdvGAN (Xiao et al. 2018, Eq. (4)) bounds the perturbation with a hinge loss on its norm
    and clips it for the ℓ∞ MNIST/CIFAR challenges; here the ε-scaled ``tanh`` enforces the
    ℓ∞ bound exactly (the hinge term stays in the training loss). Differentiable in what
    ``generator_fn`` closes over. Returns ``[N, H, W, C]``. Cost: one generator forward pass.
    """
    V.check_images(x, "x")
    V.check_nonnegative(eps, "eps")
    x = jnp.asarray(x)
    return _box(x, eps * jnp.clip(generator_fn(x), -1.0, 1.0))


def gap_perturbation(generator_fn: ImageGeneratorFn, x: ArrayLike, *, eps: float,
                     tiny: float = 1e-12) -> Array:
    r"""GAP image-dependent perturbation scaled to the ε-ball (Poursaeed et al. 2018, §3.2).

    .. math:: \delta = \mathrm{clip}_{[0,1]}\Big(x + \frac{\epsilon\,G(x)}{\|G(x)\|_\infty}\Big) - x

    (per-image ℓ∞ norm, so every unclipped perturbation lies *on* the ε-sphere as in GAP's
    "scaling to a fixed norm"). Returns ``[N, H, W, C]``. Cost: one generator forward pass.
    """
    V.check_images(x, "x")
    V.check_nonnegative(eps, "eps")
    x = jnp.asarray(x)
    g = generator_fn(x)
    norm = jnp.max(jnp.abs(g).reshape(g.shape[0], -1), axis=-1)
    return _box(x, eps * g / jnp.maximum(norm, tiny)[:, None, None, None])


def advgan_attack(logits_fn: LogitsFn, key: PRNGKey, x: ArrayLike, y: ArrayLike, *,
                  generator_fn: ImageGeneratorFn, eps: float) -> Array:
    """AdvGAN attack with a generator trained against ``logits_fn`` (semi-white-box: the
    classifier is only used during the generator's training, not here).

    Returns ``stop_gradient(x + δ)`` ``[N, H, W, C]`` within the ε-ball and ``[0, 1]``;
    ``key`` is unused (deterministic). Cost: one generator forward pass.
    """
    del logits_fn
    V.check_key(key)
    V.check_batch_match(x, "x", y, "y")
    delta = advgan_perturbation(generator_fn, x, eps=eps)
    return jax.lax.stop_gradient(jnp.asarray(x) + delta)


def gap_attack(logits_fn: LogitsFn, key: PRNGKey, x: ArrayLike, y: ArrayLike, *,
               generator_fn: ImageGeneratorFn, eps: float) -> Array:
    """GAP (image-dependent, non-targeted) attack with a generator trained against
    ``logits_fn``. Returns ``stop_gradient(x + δ)``; ``key`` is unused. Cost: one generator
    forward pass."""
    del logits_fn
    V.check_key(key)
    V.check_batch_match(x, "x", y, "y")
    delta = gap_perturbation(generator_fn, x, eps=eps)
    return jax.lax.stop_gradient(jnp.asarray(x) + delta)


def l2l_star_attack(logits_fn: LogitsFn, key: PRNGKey, x: ArrayLike, y: ArrayLike, *,
                    generator_fn: GeneratorFn, eps: float, latent_dim: int = 8) -> Array:
    r"""The one-step L2L* attack (Chen et al. 2018, "learning to attack"): no recurrence, no
    diversity, :math:`\delta = \Pi(\epsilon\, g(x, y, z, 0, \tilde\nabla\ell(x)))`.

    Equal to :func:`robustjax.attacks.l2l_attack` with ``steps=1, step_fraction=1``.
    Cost: one classifier fwd+bwd and one generator forward pass.
    """
    return l2l_attack(logits_fn, key, x, y, generator_fn=generator_fn, eps=eps,
                      latent_dim=latent_dim, steps=1, step_fraction=1.0)
