"""Mode-seeking diversity term (Mao et al., CVPR 2019) as used by L2L-DA."""

from __future__ import annotations

import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike

__all__ = ["mode_seeking_diversity"]


def mode_seeking_diversity(
    delta1: ArrayLike, delta2: ArrayLike, z1: ArrayLike, z2: ArrayLike, *, eps: float = 1e-5
) -> Array:
    r"""Perturbation distance from two latent codes over the codes' distance, per example.

    .. math:: d(x) = \frac{\operatorname{mean}|\delta(x, z_1) - \delta(x, z_2)|}
                          {\operatorname{mean}|z_1 - z_2| + \epsilon}

    The L2L-DA generator *maximises* classification loss :math:`+\lambda d`. Mean absolute
    differences (ℓ1 per element) follow the mode-seeking GAN's formulation.

    Args:
      delta1, delta2: ``[N, ...]`` perturbations produced from codes ``z1``, ``z2``.
      z1, z2: ``[N, d]`` latent codes.
      eps: stabiliser of the denominator.

    Returns:
      ``[N]`` non-negative ratios. Cost ``O(size of delta)``.
    """
    V.check_nonnegative(eps, "eps")
    d1, d2 = jnp.asarray(delta1), jnp.asarray(delta2)
    if d1.shape != d2.shape:
        raise ValueError(f"`delta1` and `delta2` must match, got {d1.shape} and {d2.shape}.")
    a, b = jnp.asarray(z1), jnp.asarray(z2)
    if a.shape != b.shape or a.shape[:1] != d1.shape[:1]:
        raise ValueError(
            f"`z1`, `z2` must be [N, d] with N={d1.shape[0]}, got {a.shape} and {b.shape}.")
    num = jnp.mean(jnp.abs(d1 - d2).reshape(d1.shape[0], -1), axis=-1)
    den = jnp.mean(jnp.abs(a - b).reshape(a.shape[0], -1), axis=-1)
    return num / (den + eps)
