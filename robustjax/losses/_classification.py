"""Per-example classification losses used by attacks and training objectives.

Every function maps ``logits [N, K]`` (and labels ``int32 [N]``) to a ``[N]`` array; callers
reduce. All are jit/vmap/grad friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike

__all__ = ["cross_entropy", "margin", "cw_loss", "hinge", "trades_kl"]


def _check(logits: ArrayLike, labels: ArrayLike) -> None:
    V.check_rank(logits, "logits", 2)
    V.check_labels(labels, "labels", batch_size=jnp.shape(logits)[0],
                   num_classes=jnp.shape(logits)[1])


def cross_entropy(logits: ArrayLike, labels: ArrayLike) -> Array:
    r"""Softmax cross-entropy per example, accurate for tiny losses.

    .. math:: \ell(z, y) = -z_y + \log \sum_j e^{z_j}
              = \operatorname{softplus}\big(\log \sum_{j \ne y} e^{z_j - z_y}\big)

    The second form is the one computed. The textbook ``logsumexp(z) - z_y`` cancels
    catastrophically on confidently classified inputs: in float32 it is exactly ``0`` (and so
    is its gradient) once the true loss drops below ~6e-8, which freezes attacks at δ = 0 and
    makes γ(ε, x) of the local-linearity paper vanish there. ``softplus(a) = log1p(eᵃ)`` keeps
    full relative precision down to the smallest normal float (``log1p`` of a tiny argument),
    so loss and gradient stay informative wherever the float32 logits are. Pinned against a
    float64 reference on saturated logits in ``tests/core/losses_test.py``.

    Args:
      logits: ``[N, K]`` with ``K ≥ 2``.
      labels: ``int32 [N]`` in ``[0, K)``.

    Returns:
      ``[N]`` losses. Cost: ``O(NK)``.
    """
    _check(logits, labels)
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    zy = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    others = jnp.arange(logits.shape[-1])[None, :] != labels[:, None]
    lse_others = jax.nn.logsumexp(logits - zy, axis=-1, where=others)
    return jax.nn.softplus(lse_others)


def margin(logits: ArrayLike, labels: ArrayLike) -> Array:
    r"""Logit margin of the labelled class over the best other class.

    .. math:: m(z, y) = z_y - \max_{j \ne y} z_j

    Positive iff the example is classified as ``labels``. Returns ``[N]``.
    """
    _check(logits, labels)
    logits = jnp.asarray(logits)
    k = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, k, dtype=bool)
    zy = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
    return zy - other


def cw_loss(
    logits: ArrayLike, labels: ArrayLike, *, kappa: float = 0.0, targeted: bool = False
) -> Array:
    r"""Carlini–Wagner objective :math:`f` (to be *minimised* by the attacker).

    Untargeted (``labels`` = true class :math:`y`):

    .. math:: f = \max(z_y - \max_{j \ne y} z_j, -\kappa)

    Targeted (``labels`` = target class :math:`t`):

    .. math:: f = \max(\max_{j \ne t} z_j - z_t, -\kappa)

    ``f <= 0`` iff the attack succeeded; ``kappa >= 0`` asks for confidence.

    Returns:
      ``[N]``.

    References:
      Carlini & Wagner, *Towards Evaluating the Robustness of Neural Networks*, 2017
      (arXiv:1608.04644), objective :math:`f_6`.
    """
    V.check_nonnegative(kappa, "kappa")
    m = margin(logits, labels)
    f = -m if targeted else m
    return jnp.maximum(f, -kappa)


def hinge(logits: ArrayLike, labels: ArrayLike, *, delta: float = 1.0) -> Array:
    r"""Multi-class hinge loss :math:`\max(0, \Delta - (z_y - \max_{j\ne y} z_j))`, ``[N]``."""
    V.check_nonnegative(delta, "delta")
    return jax.nn.relu(delta - margin(logits, labels))


def trades_kl(logits_adv: ArrayLike, logits_nat: ArrayLike) -> Array:
    r"""TRADES robustness term :math:`\mathrm{KL}(p_{nat} \,\|\, p_{adv})` per example.

    .. math:: \sum_k p_k(x) \left(\log p_k(x) - \log p_k(x')\right)

    Args:
      logits_adv: ``[N, K]`` logits at the perturbed input :math:`x'`.
      logits_nat: ``[N, K]`` logits at the natural input :math:`x`.

    Returns:
      ``[N]``, non-negative.

    References:
      Zhang et al., *TRADES*, ICML 2019 (arXiv:1901.08573), Eqn (5).
    """
    V.check_rank(logits_adv, "logits_adv", 2)
    V.check_rank(logits_nat, "logits_nat", 2)
    if jnp.shape(logits_adv) != jnp.shape(logits_nat):
        raise ValueError(
            "`logits_adv` and `logits_nat` must have the same shape, got "
            f"{jnp.shape(logits_adv)} and {jnp.shape(logits_nat)}."
        )
    logp_nat = jax.nn.log_softmax(jnp.asarray(logits_nat), axis=-1)
    logp_adv = jax.nn.log_softmax(jnp.asarray(logits_adv), axis=-1)
    return jnp.sum(jnp.exp(logp_nat) * (logp_nat - logp_adv), axis=-1)
