"""Fast gradient (sign) method, ℓ∞ and ℓ2, untargeted and targeted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from robustjax import projections as P
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks import _base as B

__all__ = ["fgsm"]


def fgsm(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    target: ArrayLike | None = None,
    kappa: float = float("inf"),
    box: tuple[float, float] | None = (0.0, 1.0),
    eot_samples: int | None = None,
) -> Array:
    r"""One-step fast gradient attack.

    .. math:: x' = \mathrm{clip}_{box}\left(x + \epsilon\, U(\nabla_x L_{att}(x))\right),
              \quad U = \mathrm{sign} \ (\ell_\infty), \quad U(g) = g / \|g\|_2 \ (\ell_2)

    :math:`L_{att}` is the loss of the true label ``y`` (untargeted) or minus the loss of the
    ``target`` (when given), see :func:`robustjax.attacks.pgd`. Examples with a zero
    gradient are left unchanged (``sign(0) = 0``; the ℓ2 direction is ``0/max(0, 1e-12)``).

    Args:
      logits_fn: model, ``x [N, ...] -> logits [N, K]``.
      key: PRNG key (used only with ``eot_samples``; FGSM is otherwise deterministic).
      x: clean inputs ``float32 [N, H, W, C]`` (or ``[N, D]``) inside ``box``.
      y: ``int32 [N]`` true labels.
      eps: step length / ball radius ``>= 0``.
      norm: ``"linf"`` or ``"l2"``.
      loss: ``"ce"`` or ``"cw"``.
      target: ``None`` (untargeted) or ``int32 [N]`` target labels.
      kappa: confidence of the ``"cw"`` loss (``inf``: unclamped margin).
      box: image domain, ``None`` for none.
      eot_samples: ``None`` for a deterministic ``logits_fn(x)``; an integer ``S`` for a
        randomized ``logits_fn(key, x)``: the gradient averages ``S`` draws keyed from ``key``.

    Returns:
      ``x_adv`` like ``x``, in the ε-ball and the box, wrapped in ``stop_gradient``.

    Cost: one forward and one backward pass (``S`` of each with ``eot_samples``).

    References:
      Goodfellow et al., *Explaining and Harnessing Adversarial Examples*, ICLR 2015
      (arXiv:1412.6572), Eqn (3).
    """
    B.check_eps(eps)
    V.check_choice(norm, "norm", P.NORMS)
    V.check_choice(loss, "loss", B.LOSSES)
    V.check_nonnegative_value(kappa, "kappa")
    num_classes = B.check_attack_inputs(B.check_eot(logits_fn, key, eot_samples), key, x, y,
                                        box=box)
    model = B.eot_logits(logits_fn, key, eot_samples)
    x = jnp.asarray(x)
    y, targeted = B.resolve_target(y, target, num_classes)

    def total(z):
        return jnp.sum(B.attack_loss(model(z, 0), y, loss=loss, targeted=targeted, kappa=kappa))

    g = jax.grad(total)(x)
    tx = optax.scale_by_sign() if norm == "linf" else B.normalize_l2()
    u, _ = tx.update(g, tx.init(g))
    x_adv = x + jnp.asarray(eps, x.dtype) * u
    if box is not None:
        x_adv = P.clip_box(x_adv, *box)
    return jax.lax.stop_gradient(x_adv)
