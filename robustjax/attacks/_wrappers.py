"""Wrappers that make non-differentiable or randomized defenses attackable.

* :func:`bpda` — Backward Pass Differentiable Approximation: forward through the real
  (possibly non-differentiable) function, backward through an approximation.
* :func:`eot` — Expectation over Transformation: average a randomized function over draws.

Both return plain functions, so they compose with every gradient attack of this package.

References:
  Athalye, Carlini & Wagner, *Obfuscated Gradients Give a False Sense of Security*, ICML 2018
  (arXiv:1802.00420), Sec. 4.1 (BPDA) and 4.3 (EOT).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, PRNGKey

__all__ = ["bpda", "eot"]


def bpda(
    forward: Callable[[Array], Array],
    backward: Callable[[Array], Array] | None = None,
) -> Callable[[Array], Array]:
    r"""Wrap ``forward`` so its value is exact and its gradient is an approximation's.

    .. math:: f_{bpda}(x) = f(x), \qquad
              \frac{\partial f_{bpda}}{\partial x}\Big|_x = \frac{\partial g}{\partial x}\Big|_x

    With ``backward=None`` the approximation is the identity :math:`g(x) = x`: the VJP passes
    the cotangent through unchanged (``forward`` must then preserve shape and dtype). Otherwise
    the VJP is that of the differentiable ``backward`` at the same input. Implemented with
    ``jax.custom_vjp``; works under ``jit``/``vmap``/``grad``. ``forward`` may contain
    non-differentiable operations (rounding, median, an inner optimisation): it is never
    differentiated.

    Args:
      forward: the real preprocessing/defense, ``x -> x'`` (any shapes).
      backward: differentiable approximation with the same signature, or ``None`` (identity).

    Returns:
      ``f(x)`` with the custom VJP. Cost: one call of ``forward`` forward; backward one VJP of
      ``backward`` (a forward and backward pass of it), or nothing for the identity.
    """
    if not callable(forward):
        raise ValueError(f"`forward` must be callable, got {type(forward).__name__}.")
    if backward is not None and not callable(backward):
        raise ValueError(f"`backward` must be callable or None, got {type(backward).__name__}.")

    @jax.custom_vjp
    def f(x):
        return forward(x)

    def f_fwd(x):
        return forward(x), x

    def f_bwd(x, ct):
        if backward is None:
            if jnp.shape(ct) != jnp.shape(x):
                raise ValueError(
                    "bpda with backward=None needs `forward` to preserve shape, got "
                    f"{jnp.shape(x)} -> {jnp.shape(ct)}."
                )
            return (jnp.asarray(ct, jnp.result_type(x)),)
        _, vjp = jax.vjp(backward, x)
        return vjp(ct)

    f.defvjp(f_fwd, f_bwd)
    return f


def eot(
    fn: Callable[[PRNGKey, Array], Array], *, num_samples: int
) -> Callable[[PRNGKey, Array], Array]:
    r"""Expectation over Transformation: average a randomized function over ``num_samples`` draws.

    .. math:: \bar f(k, x) = \frac{1}{S} \sum_{s=1}^{S} f(k_s, x), \qquad
              k_s = \mathrm{fold\_in}(k, s)

    The gradient of :math:`\bar f` is the Monte-Carlo EOT gradient
    :math:`\mathbb{E}_t[\nabla_x f(t, x)]`. Draws are evaluated with ``jax.vmap`` (batched, no
    Python loop), so ``fn`` must be vmappable over its key.

    **To attack a randomized model, do not bind a key here**: pass the key-taking model to the
    attack with ``eot_samples`` (``attacks.pgd(randomized_logits, key, x, y, eps=...,
    eot_samples=10)``, likewise ``apgd`` and ``evaluation.autoattack(version="rand")``), which
    draws ``S`` fresh samples at every step. Binding one key
    (``lambda x: eot(fn, num_samples=S)(key, x)``) makes every step reuse the same ``S`` draws,
    a sample-average approximation that overfits those draws. This wrapper is for losses and
    measures outside the attacks (e.g. an EOT estimate of accuracy). Combine with :func:`bpda`
    inside ``fn`` for randomized *and* non-differentiable defenses.

    Args:
      fn: ``fn(key, x) -> array`` (e.g. logits ``[N, K]`` of a randomized defense).
      num_samples: number of draws ``S >= 1``.

    Returns:
      ``(key, x) -> mean_s fn(k_s, x)``. Cost: ``S`` evaluations of ``fn`` (and of its
      gradient under differentiation), memory ``S`` times ``fn``'s.
    """
    if not callable(fn):
        raise ValueError(f"`fn` must be callable, got {type(fn).__name__}.")
    V.check_positive_int(num_samples, "num_samples")

    def averaged(key: PRNGKey, x: Array) -> Array:
        V.check_key(key, "key")
        keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(num_samples))
        outs = jax.vmap(lambda k: fn(k, x))(keys)
        return jax.tree.map(lambda o: jnp.mean(o, axis=0), outs)

    return averaged
