r"""Largest Hessian eigenvalue of an inner problem, and the backward step it allows.

Lemma 1 of Chen, Xie, Zhu (ICML 2020, supplementary) writes :math:`\nabla_{x'} z^*` as the Neumann
series :math:`\sum_t B A^t` with :math:`A = I - \eta' H`; it (and the backtracking map ``Q(x')`` of
Lemma 2, whose Jacobian is the truncated series) is a contraction only when
:math:`\eta' \|H\| \le 1`. This module estimates :math:`\|H\|` with Hessian-vector products and
picks or checks :math:`\eta'` from it.
"""

from __future__ import annotations

import warnings
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from robustjax._src import validation
from robustjax._src.types import Array, PRNGKey

__all__ = ["hessian_spectral_norm", "check_backward_learning_rate"]


def hessian_spectral_norm(
    loss_fn: Callable[..., Array],
    z: Array,
    *args,
    key: PRNGKey,
    steps: int = 20,
    unroll: int | bool = 1,
) -> Array:
    r"""Power-iteration estimate of :math:`\|\nabla_z^2 l(z, \ldots)\|_2` for one problem.

    .. math:: v_{k+1} = H v_k / \|H v_k\|, \qquad \hat\lambda = |v_K^\top H v_K|

    ``H`` is symmetric, so the iteration converges to the eigenvalue of largest magnitude (the
    spectral norm, which is what Lemma 1 bounds), at a rate set by the ratio of the two largest
    magnitudes. The Rayleigh quotient is a lower bound on :math:`\|H\|` at every iterate; callers
    that need a safe step divide by it with a margin. Batch with ``jax.vmap``.

    Args:
      loss_fn: scalar ``l(z, *args)``; ``z`` a flat ``[d]`` array.
      z: the point ``[d]`` (e.g. :math:`z^*`).
      *args: further arguments of ``loss_fn`` (e.g. the input ``x'``).
      key: PRNG key of the random start.
      steps: power iterations ``K`` (``>= 1``).
      unroll: unroll factor of the ``lax.fori_loop`` (speed only).

    Returns:
      Scalar estimate of :math:`\|H\|_2`.

    Cost: ``K + 1`` Hessian-vector products (forward-over-reverse), i.e. about ``4(K+1)``
    forward passes of ``loss_fn``.
    """
    validation.check_positive_int(steps, "steps")
    validation.check_key(key, "key")
    z = jnp.asarray(z)
    if z.ndim != 1:
        raise ValueError(f"`z` must be a flat [d] array (vmap over a batch), got shape {z.shape}")
    validation.check_finite(z, "z")
    grad = jax.grad(loss_fn)

    def hvp(v):
        return jax.jvp(lambda u: grad(u, *args), (z,), (v,))[1]

    v0 = jax.random.normal(key, z.shape, z.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(_, v):
        w = hvp(v)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(z.dtype).tiny)

    v = lax.fori_loop(0, steps, body, v0, unroll=unroll)
    return jnp.abs(jnp.vdot(v, hvp(v)))


def check_backward_learning_rate(backward_learning_rate: float | None, hessian_norm: float, *,
                                 margin: float = 0.9, clip: bool = True) -> float:
    r"""The backward step :math:`\eta'` of Lemmas 1–2, checked against :math:`\|H\|`.

    ``backward_learning_rate=None`` returns ``margin / hessian_norm``. A given step with
    :math:`\eta'\|H\| > 1` violates Lemma 1's condition: a ``UserWarning`` says so and, with
    ``clip``, the step is replaced by ``margin / hessian_norm``.

    Args:
      backward_learning_rate: the configured :math:`\eta'`, or ``None``.
      hessian_norm: an estimate of :math:`\max \|H\|` over the problems the step will serve
        (e.g. the maximum of :func:`hessian_spectral_norm` over a batch).
      margin: safety factor ``≤ 1`` for the power-iteration estimate (a lower bound).
      clip: replace a violating step instead of only warning.

    Returns:
      The step to use (Python float).
    """
    hessian_norm = float(hessian_norm)
    if not (hessian_norm > 0 and jnp.isfinite(hessian_norm)):
        raise ValueError(f"`hessian_norm` must be positive and finite, got {hessian_norm!r}")
    if not 0.0 < margin <= 1.0:
        raise ValueError(f"`margin` must be in (0, 1], got {margin!r}.")
    safe = margin / hessian_norm
    if backward_learning_rate is None:
        return safe
    validation.check_positive(backward_learning_rate, "backward_learning_rate")
    product = float(backward_learning_rate) * hessian_norm
    if product > 1.0:
        warnings.warn(
            f"backward_learning_rate={backward_learning_rate:g} times the Hessian norm "
            f"{hessian_norm:.4g} is "
            f"{product:.3g} > 1: Lemma 1's series (and backtracking) need eta'*||H|| <= 1"
            + (f"; using {safe:.4g} instead" if clip else ""), UserWarning, stacklevel=2)
        return safe if clip else float(backward_learning_rate)
    return float(backward_learning_rate)
