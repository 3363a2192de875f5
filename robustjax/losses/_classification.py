"""Per-example classification losses used by attacks and training objectives.

Every function maps ``logits [N, K]`` (and labels ``y``, ``int32 [N]``) to a ``[N]`` array; callers
reduce. All are jit/vmap/grad friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike

__all__ = ["cross_entropy", "margin", "cw_loss", "dlr_loss", "dlr_targeted_loss", "hinge",
           "trades_kl"]


def _check(logits: ArrayLike, y: ArrayLike, name: str = "y") -> None:
    V.check_rank(logits, "logits", 2)
    V.check_finite(logits, "logits")
    V.check_labels(y, name, batch_size=jnp.shape(logits)[0],
                   num_classes=jnp.shape(logits)[1])


def cross_entropy(logits: ArrayLike, y: ArrayLike) -> Array:
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
      y: ``int32 [N]`` in ``[0, K)``.

    Returns:
      ``[N]`` losses. Cost: ``O(NK)``.
    """
    _check(logits, y)
    logits = jnp.asarray(logits)
    y = jnp.asarray(y)
    zy = jnp.take_along_axis(logits, y[:, None], axis=-1)
    others = jnp.arange(logits.shape[-1])[None, :] != y[:, None]
    lse_others = jax.nn.logsumexp(logits - zy, axis=-1, where=others)
    return jax.nn.softplus(lse_others)


def margin(logits: ArrayLike, y: ArrayLike) -> Array:
    r"""Logit margin of the labelled class over the best other class.

    .. math:: m(z, y) = z_y - \max_{j \ne y} z_j

    Positive iff the example is classified as ``y``. Returns ``[N]``.
    """
    _check(logits, y)
    logits = jnp.asarray(logits)
    k = logits.shape[-1]
    onehot = jax.nn.one_hot(y, k, dtype=bool)
    zy = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
    return zy - other


def cw_loss(
    logits: ArrayLike, y: ArrayLike, *, kappa: float = 0.0, target: ArrayLike | None = None
) -> Array:
    r"""Carlini–Wagner objective :math:`f` (to be *minimised* by the attacker).

    Untargeted (``target=None``; ``y`` = true class :math:`y`):

    .. math:: f = \max(z_y - \max_{j \ne y} z_j, -\kappa)

    Targeted (``target`` = target class :math:`t`, ``int [N]``):

    .. math:: f = \max(\max_{j \ne t} z_j - z_t, -\kappa)

    ``f <= 0`` iff the attack succeeded; ``kappa >= 0`` asks for confidence.

    Returns:
      ``[N]``.

    References:
      Carlini & Wagner, *Towards Evaluating the Robustness of Neural Networks*, 2017
      (arXiv:1608.04644), objective :math:`f_6`.
    """
    V.check_nonnegative_value(kappa, "kappa")
    _check(logits, y)
    if target is None:
        f = margin(logits, y)
    else:
        _check(logits, target, "target")
        f = -margin(logits, target)
    return jnp.maximum(f, -kappa)


_DLR_TINY = 1e-12


def dlr_loss(logits: ArrayLike, y: ArrayLike) -> Array:
    r"""Difference-of-Logits-Ratio loss (untargeted), ascended by APGD-DLR.

    With :math:`\pi` the permutation sorting :math:`z` in decreasing order,

    .. math:: \mathrm{DLR}(z, y) = -\frac{z_y - \max_{j \ne y} z_j}
              {z_{\pi_1} - z_{\pi_3} + 10^{-12}}

    Invariant to shifting and (positively) rescaling the logits, so it does not saturate on
    confidently classified points or on models whose logits are scaled up (a common form of
    gradient masking). Positive iff ``y`` is not the top class.

    Args:
      logits: ``[N, K]`` with ``K ≥ 3``.
      y: ``int32 [N]`` true labels in ``[0, K)``.

    Returns:
      ``[N]``. Cost: ``O(NK)`` (a top-3 per row).

    References:
      Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks*, ICML 2020 (arXiv:2003.01690), Eqn (5).
    """
    _check(logits, y)
    logits = jnp.asarray(logits)
    if logits.shape[-1] < 3:
        raise ValueError(f"`logits` must have K >= 3 classes for the DLR loss, got "
                         f"{logits.shape[-1]}.")
    top = jax.lax.top_k(logits, 3)[0]
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + _DLR_TINY)


def dlr_targeted_loss(logits: ArrayLike, y: ArrayLike, *, target: ArrayLike) -> Array:
    r"""Targeted Difference-of-Logits-Ratio loss, ascended by APGD-T.

    .. math:: \mathrm{DLR}_t(z, y) = -\frac{z_y - z_t}
              {z_{\pi_1} - (z_{\pi_3} + z_{\pi_4})/2 + 10^{-12}}

    with :math:`\pi` sorting :math:`z` in decreasing order. Ascending it raises the target
    logit :math:`z_t` above the true one :math:`z_y`.

    Args:
      logits: ``[N, K]`` with ``K ≥ 4``.
      y: ``int32 [N]`` true labels.
      target: ``int32 [N]`` target labels.

    Returns:
      ``[N]``. Cost: ``O(NK)``.

    References:
      Croce & Hein, ICML 2020 (arXiv:2003.01690), Eqn (6).
    """
    _check(logits, y)
    V.check_labels(target, "target", batch_size=jnp.shape(logits)[0],
                   num_classes=jnp.shape(logits)[1])
    logits = jnp.asarray(logits)
    if logits.shape[-1] < 4:
        raise ValueError(f"`logits` must have K >= 4 classes for the targeted DLR loss, got "
                         f"{logits.shape[-1]}.")
    zy = jnp.take_along_axis(logits, jnp.asarray(y)[:, None], axis=-1)[:, 0]
    zt = jnp.take_along_axis(logits, jnp.asarray(target)[:, None], axis=-1)[:, 0]
    top = jax.lax.top_k(logits, 4)[0]
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_TINY)


def hinge(logits: ArrayLike, y: ArrayLike, *, delta: float = 1.0) -> Array:
    r"""Multi-class hinge loss :math:`\max(0, \Delta - (z_y - \max_{j\ne y} z_j))`, ``[N]``."""
    V.check_nonnegative(delta, "delta")
    return jax.nn.relu(delta - margin(logits, y))


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
