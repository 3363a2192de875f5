"""The L2L-DA recurrent attack (Jang et al., ICCV 2019, Eqn (5) and supplementary A.1).

The generator is any pure function, so this module stays free of Flax:
``generator_fn(x, delta, grad, z, y) -> [N, H, W, C]`` with values in ``[-1, 1]`` (a closure over
trained Flax variables in eval mode, for instance).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustjax._src import validation as V
from robustjax.attacks._base import check_eps
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.losses import cross_entropy

__all__ = ["GeneratorFn", "L2LRecurrence", "normalize_gradient", "l2l_recurrence",
           "l2l_perturbation", "l2l_perturbation_steps", "l2l_attack"]

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


class L2LRecurrence(NamedTuple):
    """Everything :func:`l2l_recurrence` computes.

    Attributes:
      delta: ``[N, H, W, C]`` the final perturbation ``δ⁽ᵀ⁾``.
      trajectory: ``[T, N, H, W, C]`` the perturbations ``δ⁽¹⁾ … δ⁽ᵀ⁾``.
      generator_state: the stateful generator's final state (``None`` for a pure generator).
    """

    delta: Array
    trajectory: Array
    generator_state: Any


def l2l_recurrence(
    generator_fn,
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    z: ArrayLike,
    *,
    eps: float,
    steps: int = 5,
    step_fraction: float = 0.5,
    generator_state=None,
    initial_grad: ArrayLike | None = None,
    backprop_steps: int | None = None,
    unroll: bool = True,
) -> L2LRecurrence:
    r"""Run the recurrence :math:`\delta^{(t+1)} = \Pi(\delta^{(t)} + s\,g_\phi(x, y, z,
    \delta^{(t)}, \tilde\nabla\ell(x+\delta^{(t)})))` from :math:`\delta^{(0)} = 0`.

    Differentiable with respect to whatever ``generator_fn`` closes over (the generator's
    parameters), which is what L2L-DA training needs. The input gradient fed to the generator is a
    feature, not a path for second-order terms: it is taken under ``stop_gradient`` (the
    supplement describes it as an input; backpropagating through it would cost a Hessian-vector
    product per step and is not mentioned). The generator's gradient therefore flows through
    ``δ⁽ᵗ⁾`` and the generator's own parameters only.

    Choices (documented, tested): the per-step size is ``s = step_fraction · eps``; Π clamps the
    *cumulative* perturbation to the ℓ∞ ε-ball and then to the image box, so ``x + δ ∈ [0, 1]``
    always.

    Args:
      generator_fn: ``(x, delta, grad, z, y) -> [-1, 1]`` update direction; with
        ``generator_state``, ``(state, x, delta, grad, z, y) -> (update, state)``.
      logits_fn: the classifier under attack.
      x: ``[N, H, W, C]`` images in ``[0, 1]``; y: ``int32 [N]`` true labels; z: ``[N, d]`` codes.
      eps: ℓ∞ radius: a Python number or a scalar array (traced values included, e.g. an ε
        ramp-up inside a jitted training step); steps: T; step_fraction: s / eps.
      generator_state: when not ``None``, ``generator_fn`` is stateful (e.g. batch-norm
        statistics in training) and the state is threaded through the T steps.
      initial_grad: optional ``[N, H, W, C]`` input gradient of the summed cross-entropy at
        ``δ⁽⁰⁾ = 0`` (i.e. at ``x``), when the caller already has it; the first step then skips
        its classifier pass. L2L-DA runs two codes per image, so ``x`` is ``[x; x]`` and this
        gradient can be computed once on ``N`` images and tiled.
      backprop_steps: truncated back-propagation through time: only the last
        ``backprop_steps`` generator applications receive a gradient (``δ`` entering them is
        under ``stop_gradient``). ``None`` (default) back-propagates through all ``T`` steps.
        Saves ``T - backprop_steps`` generator backward passes.
      unroll: trace the T steps as straight-line code (default) instead of a ``lax.scan``.
        Same values and gradients (tested). T is a small static integer, and the XLA CPU
        backend ran the scan's loop body (generator and classifier passes, forward and
        reverse) ~3.6x slower than the same code unrolled (ResNet-20, 16/16/32 generator,
        T = 2); compile time grows linearly with T when unrolled.

    Returns:
      :class:`L2LRecurrence` ``(delta, trajectory, generator_state)``. Cost (classifier forward
      ``F``, generator forward ``G``, per image): forward ``T·(2F + G)`` (``(T-1)·2F + T·G``
      with ``initial_grad``; the input-only backward of the classifier costs about one
      forward); reverse mode adds about ``2G`` per back-propagated step (no classifier term:
      the gradient input is a constant).
    """
    V.check_images(x, "x")
    V.check_batch_match(x, "x", y, "y")
    V.check_labels(y, "y", batch_size=jnp.shape(x)[0])
    V.check_rank(z, "z", 2)
    V.check_batch_match(x, "x", z, "z")
    check_eps(eps)
    V.check_positive_int(steps, "steps")
    V.check_positive(step_fraction, "step_fraction")
    if backprop_steps is not None:
        V.check_positive_int(backprop_steps, "backprop_steps")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    z = jnp.asarray(z)
    if initial_grad is not None:
        initial_grad = jnp.asarray(initial_grad)
        if initial_grad.shape != x.shape:
            raise ValueError(
                f"`initial_grad` must have the shape of `x` {x.shape}, got {initial_grad.shape}.")
    step = step_fraction * eps

    stateful = generator_state is not None

    def advance(delta, gstate, g):
        gn = normalize_gradient(jax.lax.stop_gradient(g))
        if stateful:
            update, gstate = generator_fn(gstate, x, delta, gn, z, y)
        else:
            update = generator_fn(x, delta, gn, z, y)
        delta = jnp.clip(delta + step * update, -eps, eps)
        delta = jnp.clip(x + delta, 0.0, 1.0) - x
        return delta, gstate

    def body(carry, _):
        delta, gstate = carry
        # stop_gradient on the *input*: otherwise reverse mode through the recurrence traces the
        # forward-mode derivative of this gradient (a Hessian-vector product) only to drop it.
        g = _input_gradient(logits_fn, jax.lax.stop_gradient(x + delta), y)
        delta, gstate = advance(delta, gstate, g)
        return (delta, gstate), delta

    def run(carry, length):
        if length <= 0:
            return carry, []
        if unroll:  # T is small and static: straight-line code (see ``unroll``)
            traj = []
            for _ in range(length):
                carry, d = body(carry, None)
                traj.append(d[None])
            return carry, traj
        carry, traj = jax.lax.scan(body, carry, None, length=length)
        return carry, [traj]

    carry = (jnp.zeros_like(x), generator_state)
    trajs = []
    start = 0
    if initial_grad is not None:  # step 0 with the given gradient at x
        carry = advance(carry[0], carry[1], initial_grad)
        trajs.append(carry[0][None])
        start = 1
    frozen = 0 if backprop_steps is None else max(steps - backprop_steps, 0)
    if frozen:  # steps [0, frozen) give the generator no gradient
        carry, t = run(carry, frozen - start)
        trajs += t
        carry = (jax.lax.stop_gradient(carry[0]), carry[1])
    carry, t = run(carry, steps - max(frozen, start))
    trajs += t
    delta, gstate = carry
    traj = jnp.concatenate(trajs, 0) if len(trajs) > 1 else trajs[0]
    return L2LRecurrence(delta=delta, trajectory=traj, generator_state=gstate)


def l2l_perturbation(
    generator_fn: GeneratorFn,
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    z: ArrayLike,
    *,
    eps: float,
    steps: int = 5,
    step_fraction: float = 0.5,
    initial_grad: ArrayLike | None = None,
    backprop_steps: int | None = None,
    unroll: bool = True,
) -> Array:
    r"""The final perturbation :math:`\delta^{(T)}` ``[N, H, W, C]`` of the L2L-DA recurrence.

    A pure ``generator_fn(x, delta, grad, z, y)``; see :func:`l2l_recurrence` for the
    recurrence, the arguments and the cost, :func:`l2l_perturbation_steps` for all T steps.
    """
    return l2l_recurrence(generator_fn, logits_fn, x, y, z, eps=eps, steps=steps,
                          step_fraction=step_fraction, initial_grad=initial_grad,
                          backprop_steps=backprop_steps, unroll=unroll).delta


def l2l_perturbation_steps(
    generator_fn: GeneratorFn,
    logits_fn: LogitsFn,
    x: ArrayLike,
    y: ArrayLike,
    z: ArrayLike,
    *,
    eps: float,
    steps: int = 5,
    step_fraction: float = 0.5,
    initial_grad: ArrayLike | None = None,
    backprop_steps: int | None = None,
    unroll: bool = True,
) -> Array:
    r"""All T perturbations :math:`\delta^{(1)} \dots \delta^{(T)}` ``[T, N, H, W, C]`` of the
    L2L-DA recurrence (the last equals :func:`l2l_perturbation`); see :func:`l2l_recurrence`."""
    return l2l_recurrence(generator_fn, logits_fn, x, y, z, eps=eps, steps=steps,
                          step_fraction=step_fraction, initial_grad=initial_grad,
                          backprop_steps=backprop_steps, unroll=unroll).trajectory


def l2l_attack(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    generator_fn: GeneratorFn,
    eps: float,
    latent_dim: int = 8,
    steps: int = 5,
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
    delta = l2l_perturbation(generator_fn, logits_fn, x, y, z, eps=eps, steps=steps,
                             step_fraction=step_fraction)
    return jax.lax.stop_gradient(jnp.asarray(x) + delta)
