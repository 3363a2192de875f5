"""The L2L-DA recurrent attack (Jang et al., ICCV 2019, Eqn (5) and supplementary A.1).

The generator is any pure function, so this module stays free of Flax:
``generator_fn(x, delta, grad, z, y) -> [N, H, W, C]`` with values in ``[-1, 1]`` (a closure over
trained Flax variables in eval mode, for instance).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.losses import cross_entropy

__all__ = ["GeneratorFn", "normalize_gradient", "l2l_perturbation", "l2l_attack"]

#: ``generator_fn(x, delta, grad, z, y) -> [N, H, W, C]`` in ``[-1, 1]``.
GeneratorFn = Callable[[Array, Array, Array, Array, Array], Array]


def normalize_gradient(g: ArrayLike, *, eps: float = 1e-12) -> Array:
    r"""Divide each ``(H, W)`` matrix of ``g [N, H, W, C]`` by its Frobenius norm (supp. A.1).

    .. math:: \tilde\nabla_{n,:,:,c} = \nabla_{n,:,:,c} / \|\nabla_{n,:,:,c}\|_F
    """
    g = jnp.asarray(g)
    V.check_rank(g, "g", 4)
    norm = jnp.sqrt(jnp.sum(g * g, axis=(1, 2), keepdims=True))
    return g / jnp.maximum(norm, eps)


def _input_gradient(logits_fn: LogitsFn, x_adv: Array, y: Array) -> Array:
    return jax.grad(lambda v: jnp.sum(cross_entropy(logits_fn(v), y)))(x_adv)


def l2l_perturbation(
    generator_fn: GeneratorFn,
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    z: ArrayLike,
    *,
    eps: float,
    num_steps: int = 5,
    step_fraction: float = 0.5,
    return_all: bool = False,
    generator_state=None,
):
    r"""Run the recurrence :math:`\delta^{(t+1)} = \Pi(\delta^{(t)} + s\,g_\phi(x, y, z, \delta^{(t)},
    \tilde\nabla\ell(x+\delta^{(t)})))` from :math:`\delta^{(0)} = 0` and return :math:`\delta^{(T)}`.

    Differentiable with respect to whatever ``generator_fn`` closes over (the generator's
    parameters), which is what L2L-DA training needs. The input gradient fed to the generator is a
    feature, not a path for second-order terms: it is taken under ``stop_gradient`` (the
    supplement describes it as an input; backpropagating through it would cost a Hessian-vector
    product per step and is not mentioned).

    Choices (documented, tested): the per-step size is ``s = step_fraction · eps``; Π clamps the
    *cumulative* perturbation to the ℓ∞ ε-ball and then to the image box, so ``x + δ ∈ [0, 1]``
    always.

    Args:
      generator_fn: ``(x, delta, grad, z, y) -> [-1, 1]`` update direction.
      logits_fn: the classifier under attack.
      x: ``[N, H, W, C]`` images in ``[0, 1]``; y: ``int32 [N]`` true labels; z: ``[N, d]`` codes.
      eps: ℓ∞ radius; num_steps: T; step_fraction: s / eps.
      return_all: also return the ``[T, N, H, W, C]`` trajectory.
      generator_state: when not ``None``, ``generator_fn`` is stateful,
        ``(state, x, delta, grad, z, y) -> (update, state)`` (e.g. batch-norm statistics in
        training), the state is threaded through the T steps and returned last.

    Returns:
      ``delta [N, H, W, C]`` (then the trajectory when ``return_all``, then the final generator
      state when ``generator_state`` is given). Cost:
      ``T · (classifier fwd+bwd + generator fwd)``.
    """
    V.check_images(x, "x")
    V.check_batch_match(x, "x", y, "y")
    V.check_labels(y, "y", batch_size=jnp.shape(x)[0])
    V.check_rank(z, "z", 2)
    V.check_batch_match(x, "x", z, "z")
    V.check_nonnegative(eps, "eps")
    V.check_positive_int(num_steps, "num_steps")
    V.check_positive(step_fraction, "step_fraction")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    z = jnp.asarray(z)
    step = step_fraction * eps

    stateful = generator_state is not None

    def body(carry, _):
        delta, gstate = carry
        g = jax.lax.stop_gradient(_input_gradient(logits_fn, x + delta, y))
        if stateful:
            update, gstate = generator_fn(gstate, x, delta, normalize_gradient(g), z, y)
        else:
            update = generator_fn(x, delta, normalize_gradient(g), z, y)
        delta = jnp.clip(delta + step * update, -eps, eps)
        delta = jnp.clip(x + delta, 0.0, 1.0) - x
        return (delta, gstate), delta

    (delta, gstate), traj = jax.lax.scan(
        body, (jnp.zeros_like(x), generator_state), None, length=num_steps)
    out = (delta,)
    if return_all:
        out += (traj,)
    if stateful:
        out += (gstate,)
    return out if len(out) > 1 else delta


def l2l_attack(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    generator_fn: GeneratorFn,
    eps: float,
    latent_dim: int = 8,
    num_steps: int = 5,
    step_fraction: float = 0.5,
) -> Array:
    """A trained L2L-DA generator used as an attack: ``x_adv = x + δ⁽ᵀ⁾`` with ``z ~ N(0, I)``.

    Bind ``generator_fn`` (and the other hyperparameters) with ``functools.partial`` to get the
    library's ``(logits_fn, key, x, y) -> x_adv`` attack signature. Returns
    ``stop_gradient(x_adv)`` ``[N, H, W, C]``; never leaves the ε-ball nor ``[0, 1]``.
    """
    V.check_key(key)
    V.check_positive_int(latent_dim, "latent_dim")
    z = jax.random.normal(key, (jnp.shape(x)[0], latent_dim), jnp.float32)
    delta = l2l_perturbation(generator_fn, logits_fn, x, y, z, eps=eps, num_steps=num_steps,
                             step_fraction=step_fraction)
    return jax.lax.stop_gradient(jnp.asarray(x) + delta)
