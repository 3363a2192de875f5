r"""Theorem 2 of Chen, Xie, Zhu (ICML 2020, supplementary §B): the :math:`\omega^L` Lipschitz bound.

For a network built from ReLU, transposed convolutions, max-pooling and fully connected layers whose
weights satisfy :math:`\sum_{i,j} |w^l_{ij}| \le \omega` in every one of its :math:`L` linear
layers,

.. math::
   \|G(z) - G(\tilde z)\|_2 \le \omega^L \|z - \tilde z\|_2 .

ReLU, LeakyReLU (slope ≤ 1), tanh, sigmoid and max-pooling are 1-Lipschitz and do not count as
layers; biases cancel in differences. The bound also holds for strided convolutions and for
convolutions with zero padding: per input/output channel pair the operator norm of a (transposed,
strided, padded) convolution is at most the ℓ1 norm of its kernel (Young's inequality; zero
insertion and padding are isometries, subsampling and cropping are contractions), and summing over
channel pairs gives :math:`\sum|w|`. Eval-mode batch normalisation is not covered by the theorem;
pass its per-layer factor :math:`\max_c |\gamma_c| / \sqrt{\sigma^2_c + \epsilon}` in ``scales``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from robustjax._src import validation
from robustjax._src.types import Array, ArrayLike

__all__ = ["layer_omegas", "lipschitz_bound"]


def layer_omegas(kernels: Sequence[ArrayLike]) -> Array:
    r"""Per-layer :math:`\omega_l = \sum_{i,j} |w^l_{ij}|` (sum of absolute kernel entries).

    Args:
      kernels: the weight arrays of the ``L`` linear layers, any shapes (dense ``[in, out]``,
        convolution ``[kh, kw, in, out]``, ...). Biases must not be included.

    Returns:
      ``float32 [L]``.

    Cost: O(number of weights).
    """
    if len(kernels) == 0:
        raise ValueError("`kernels` must contain at least one weight array.")
    for k in kernels:
        validation.check_finite(k, "kernels")
    return jnp.stack([jnp.sum(jnp.abs(jnp.asarray(k, jnp.float32))) for k in kernels])


def lipschitz_bound(
    kernels: Sequence[ArrayLike],
    *,
    scales: Sequence[float] | ArrayLike | None = None,
    per_layer: bool = False,
) -> Array:
    r"""Theorem 2's Lipschitz constant :math:`\omega^L` of a ReLU/deconv/max-pool/dense network.

    .. math::
       \omega = \max_l \sum_{i,j} |w^l_{ij}|, \qquad \mathrm{Lip}(G) \le \omega^L

    With ``per_layer=True`` returns the tighter (still valid, same proof)
    :math:`\prod_l \omega_l`.

    Args:
      kernels: weights of the ``L`` linear layers (see :func:`layer_omegas`).
      scales: optional ``[L]`` extra per-layer factors (e.g. eval-mode batch-norm gains; not part
        of the theorem), multiplied into :math:`\omega_l`.
      per_layer: product of per-layer constants instead of :math:`(\max_l \omega_l)^L`.

    Returns:
      A float32 scalar.

    Cost: O(number of weights).
    """
    omegas = layer_omegas(kernels)
    if scales is not None:
        scales = jnp.asarray(scales, jnp.float32)
        if scales.shape != omegas.shape:
            raise ValueError(
                f"`scales` must have shape {omegas.shape} (one per kernel), got {scales.shape}."
            )
        omegas = omegas * jnp.abs(scales)
    if per_layer:
        return jnp.prod(omegas)
    return jnp.max(omegas) ** omegas.shape[0]
