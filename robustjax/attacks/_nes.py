"""Natural Evolution Strategies (NES) gradient estimation and a black-box CW-style attack."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from robustjax import losses as L
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks import _base as B

__all__ = ["nes_gradient", "nes_attack"]


def nes_gradient(
    loss_fn: Callable[[Array], Array],
    key: PRNGKey,
    x: ArrayLike,
    *,
    num_samples: int = 50,
    sigma: float = 0.1,
) -> Array:
    r"""NES estimate of the per-example gradient of ``loss_fn`` with antithetic Gaussian samples.

    .. math:: \hat\nabla F(x) = \frac{1}{n\sigma} \sum_{i=1}^{n/2}
              \left(F(x + \sigma u_i) - F(x - \sigma u_i)\right) u_i,
              \qquad u_i \sim \mathcal N(0, I)

    i.e. the NES search-distribution gradient of :math:`\mathbb E_{u}[F(x + \sigma u)]` over
    ``n`` samples drawn in ``n/2`` antithetic pairs :math:`(u_i, -u_i)` (each example gets its
    own draws). Only values of ``loss_fn`` are used (black box); the ``n`` perturbed batches are
    evaluated with one ``jax.vmap`` over samples.

    Args:
      loss_fn: per-example black-box loss, ``x [N, ...] -> [N]``.
      key: PRNG key for the Gaussian samples.
      x: point ``[N, ...]``.
      num_samples: ``n``, even and ``>= 2`` (paper 000, App. D: ``n = 50``).
      sigma: search-distribution standard deviation ``> 0`` (App. D: 0.5 for DefenseGAN, 0.1
        for ABS).

    Returns:
      ``[N, ...]`` gradient estimate (``stop_gradient``).

    Cost: ``n`` evaluations of ``loss_fn`` on ``[N, ...]``; memory ``n`` copies of ``x``.

    References:
      Wierstra et al., *Natural Evolution Strategies*, JMLR 2014; Ilyas et al., *Black-box
      Adversarial Attacks with Limited Queries and Information*, ICML 2018 (arXiv:1804.08598),
      Algorithm 1; paper 000 (generative-defense robustness), Appendix D, Eqn (20).
    """
    if not callable(loss_fn):
        raise ValueError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    V.check_key(key, "key")
    V.check_positive_int(num_samples, "num_samples")
    if num_samples % 2:
        raise ValueError(f"`num_samples` must be even (antithetic pairs), got {num_samples}.")
    V.check_positive(sigma, "sigma")
    V.check_rank(x, "x", (1, 2, 3, 4, 5))
    x = jnp.asarray(x)
    half = num_samples // 2
    u = jax.random.normal(key, (half,) + x.shape, x.dtype)
    xs = jnp.concatenate([x[None] + sigma * u, x[None] - sigma * u], axis=0)
    vals = jax.vmap(loss_fn)(xs)  # [n, N]
    if vals.shape != (num_samples, x.shape[0]):
        raise ValueError(
            f"`loss_fn` must map x [N, ...] to per-example losses [N]={x.shape[0]}, got "
            f"{vals.shape[1:]}."
        )
    diff = vals[:half] - vals[half:]  # [n/2, N]
    g = jnp.sum(B.bcast(diff, u) * u, axis=0) / (num_samples * sigma)
    return jax.lax.stop_gradient(g)


def nes_attack(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    steps: int = 200,
    num_samples: int = 50,
    sigma: float = 0.1,
    learning_rate: float = 0.01,
    const: float = 1.0,
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    r"""Black-box CW-style attack whose classifier gradient is estimated by NES.

    Paper 000, Appendix D, Eqn (20): the gradient of the CW objective

    .. math:: \nabla_{x'} \mathcal L(x') \approx \nabla_{x'} \|x' - x\|_2^2
              + \lambda\, \hat\nabla^{NES}_{x'} F(x')

    with :math:`F` the CW margin :func:`robustjax.losses.cw_loss` (confidence ``kappa``) and
    :math:`\lambda` = ``const``. The distance term's gradient is exact (it does not query the
    model); the model is only queried through ``logits_fn`` values. :math:`x'` starts at ``x``
    and takes Adam steps (learning rate ``learning_rate``), clipped to ``box`` after each step.
    Each step uses fresh samples (``fold_in(key, t)``). The successful iterate
    (margin ``< -kappa``) with the smallest ℓ2 distance is returned; **examples never attacked
    successfully are returned unchanged** (as :func:`carlini_wagner_l2`). The paper fixes
    :math:`\lambda` by a binary search; here ``const`` is a fixed hyperparameter (the choice is
    left to the caller).

    Args:
      logits_fn: model (queried for values only), ``x [N, ...] -> logits [N, K]``.
      key: PRNG key for the NES samples.
      x: clean inputs ``[N, ...]`` in ``box``.
      y: ``int32 [N]`` true labels.
      steps: number of updates ``>= 1``.
      num_samples: NES population ``n`` (even; App. D: 50).
      sigma: NES standard deviation (App. D: 0.5 DefenseGAN, 0.1 ABS).
      learning_rate: Adam learning rate ``> 0``.
      const: :math:`\lambda >= 0`, weight of the classification term.
      kappa: CW confidence ``>= 0``.
      target: ``None`` (untargeted) or ``int32 [N]`` target labels.
      box: image domain or ``None``.

    Returns:
      ``x_adv`` like ``x`` (``stop_gradient``).

    Cost: ``steps · (num_samples + 1)`` forward passes, no backward pass through the model.
    """
    V.check_positive_int(steps, "steps")
    V.check_positive_int(num_samples, "num_samples")
    if num_samples % 2:
        raise ValueError(f"`num_samples` must be even (antithetic pairs), got {num_samples}.")
    V.check_positive(sigma, "sigma")
    V.check_positive(learning_rate, "learning_rate")
    V.check_nonnegative(const, "const")
    V.check_nonnegative_value(kappa, "kappa")
    num_classes = B.check_attack_inputs(logits_fn, key, x, y, box=box)
    y, targeted = B.resolve_target(y, target, num_classes)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    n = x.shape[0]
    opt = optax.adam(learning_rate)

    def f(z):
        return L.cw_loss(logits_fn(z), y, kappa=kappa, target=y if targeted else None)

    def step(t, carry):
        xp, opt_state, best_d2, best_x = carry
        score = B.attack_score(logits_fn(xp), y, targeted=targeted)
        d2 = jnp.sum(jnp.reshape(xp - x, (n, -1)) ** 2, axis=-1)
        better = (score < -kappa) & (d2 < best_d2)
        best_d2 = jnp.where(better, d2, best_d2)
        best_x = jnp.where(B.bcast(better, xp), xp, best_x)
        g_nes = nes_gradient(f, jax.random.fold_in(key, t), xp, num_samples=num_samples,
                             sigma=sigma)
        g = 2.0 * (xp - x) + const * g_nes
        upd, opt_state = opt.update(g, opt_state, xp)
        xp = optax.apply_updates(xp, upd)
        if box is not None:
            xp = jnp.clip(xp, box[0], box[1])
        return xp, opt_state, best_d2, best_x

    carry = (x, opt.init(x), jnp.full((n,), jnp.inf, x.dtype), x)
    xp, _, best_d2, best_x = jax.lax.fori_loop(0, steps, step, carry)
    # Check the last iterate too.
    score = B.attack_score(logits_fn(xp), y, targeted=targeted)
    d2 = jnp.sum(jnp.reshape(xp - x, (n, -1)) ** 2, axis=-1)
    better = (score < -kappa) & (d2 < best_d2)
    best_x = jnp.where(B.bcast(better, xp), xp, best_x)
    return jax.lax.stop_gradient(best_x)
