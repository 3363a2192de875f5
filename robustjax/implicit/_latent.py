r"""Latent projection ``z*(x) = argmin_z l(z, x)`` with a selectable gradient mode.

Generative defenses (DefenseGAN, ABS) classify :math:`F(G(z^*(x')))` where :math:`z^*` minimises an
inner loss :math:`l_G(z; x')` such as :math:`\|G(z) - x'\|^2` by gradient descent. An attack needs
:math:`\nabla_{x'} z^*`; the modes below are the alternatives studied by Chen, Xie, Zhu
("On Breaking Deep Generative Model-based Defenses and Beyond", ICML 2020):

* ``"implicit"`` — exact implicit function theorem (Eqn 1 of the supplementary):
  :math:`\nabla_{x'} z^* = -\nabla^2_{x'z} l\, H^{-1}`, solved with CG on Hessian-vector products
  (with an optional ridge for unconverged, ill-conditioned Hessians).
* ``"neumann"`` — Lemma 1 truncated at :math:`T'` terms: :math:`\sum_{t<T'} B A^t`,
  :math:`A = I - \eta' H`, :math:`B = -\eta' \nabla^2_{x'z} l`.
* ``"backtrack"`` — Lemma 2: from a warm start :math:`z^0_{new} = \mathrm{sg}(z^*)` run :math:`T'`
  plain gradient steps :math:`q(z) = z - \eta' \nabla_z l(z; x')` and backpropagate through these
  only (:math:`Q(x')`). By Theorem 1 its gradient tends to the implicit one as :math:`T'` grows.
* ``"unrolled"`` — backpropagation through every step of the inner solver (memory O(steps)).
* ``"bpda"`` — the latent carries no gradient (:math:`\mathrm{sg}(z^*)`); at the reconstruction
  level BPDA replaces :math:`\partial G(z^*)/\partial x'` by the identity, see
  :func:`reconstruction_bpda`.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from robustjax._src import validation
from robustjax._src.types import Array, ArrayLike, PyTree
from robustjax.implicit._custom_root import custom_root
from robustjax.implicit._linear_solve import solve_cg, solve_neumann

__all__ = ["MODES", "descend", "latent_projection", "reconstruction_bpda"]

MODES = ("implicit", "neumann", "backtrack", "unrolled", "bpda")

InnerLoss = Callable[..., Array]


def descend(
    loss_fn: InnerLoss,
    z0: PyTree,
    *args,
    optimizer: optax.GradientTransformation,
    steps: int,
    unroll: int | bool = 1,
) -> PyTree:
    """Run ``steps`` optimizer steps on ``loss_fn(z, *args)`` from ``z0`` (``lax.scan``).

    Differentiable end to end (the scan stores every iterate for reverse mode).

    Args:
      loss_fn: scalar loss ``loss_fn(z, *args)``.
      z0: initial point (pytree).
      *args: further arguments of ``loss_fn``.
      optimizer: an optax gradient transformation (the step rule).
      steps: number of steps (``>= 0``).
      unroll: unroll factor of the ``lax.scan`` (speed only).

    Returns:
      The final iterate.

    Cost: O(steps · (fwd + bwd of loss_fn)).
    """
    validation.check_nonnegative_int(steps, "steps")
    grad_fn = jax.grad(loss_fn)

    def body(carry, _):
        z, state = carry
        updates, state = optimizer.update(grad_fn(z, *args), state, z)
        return (optax.apply_updates(z, updates), state), None

    (z, _), _ = lax.scan(body, (z0, optimizer.init(z0)), None, length=steps, unroll=unroll)
    return z


def latent_projection(
    inner_loss: InnerLoss,
    z0: PyTree,
    x: ArrayLike,
    *,
    steps: int,
    learning_rate: float = 0.1,
    mode: str = "implicit",
    optimizer: optax.GradientTransformation | None = None,
    backward_steps: int = 10,
    backward_learning_rate: float | None = None,
    cg_maxiter: int | None = 100,
    cg_tol: float = 1e-6,
    ridge: float = 0.0,
    unroll: int | bool = 1,
) -> PyTree:
    r"""Minimise ``inner_loss(z, x)`` over ``z`` from ``z0``; return ``z*`` with a chosen gradient.

    .. math::
       z^*(x) = \arg\min_z\, l(z, x)

    The forward pass runs ``steps`` steps of ``optimizer`` (default plain gradient descent with
    step ``learning_rate``). The gradient of the result with respect to ``x`` (and to any arrays
    ``inner_loss`` closes over, which are hoisted with :func:`jax.closure_convert`) depends on
    ``mode`` (see the module docstring). ``z0`` never receives a gradient except in
    ``"unrolled"`` mode.

    Choices (documented, tested): in ``"backtrack"`` mode the returned *value* is :math:`Q(x')`,
    i.e. ``backward_steps`` further plain gradient steps of size ``backward_learning_rate`` from
    :math:`\mathrm{sg}(z^*)` (so it is at least as good a minimiser for a small enough step). In
    ``"neumann"`` mode the Lemma 1 series uses ``backward_steps`` terms
    (:math:`t = 0..T'-1`) and step ``backward_learning_rate``; both default it to
    ``learning_rate``. Lemma 1 needs :math:`\eta'\|H\| \le 1`.

    ``inner_loss`` sees one problem; batch by ``jax.vmap`` or by writing a loss that sums
    independent per-example terms (the solution is then the same per example, and the Hessian is
    block diagonal).

    Args:
      inner_loss: scalar ``l(z, x)``; ``z`` has the structure of ``z0``.
      z0: initial latent, e.g. ``[d]`` or ``[R, d]`` (pytree of float arrays).
      x: the input the latent is fitted to (any shape ``inner_loss`` accepts; finite).
      steps: inner solver steps ``L`` (``>= 1``).
      learning_rate: inner step size, used when ``optimizer`` is ``None``.
      mode: one of ``"implicit"``, ``"neumann"``, ``"backtrack"``, ``"unrolled"``, ``"bpda"``.
      optimizer: inner step rule (optax); overrides ``learning_rate``.
      backward_steps: :math:`T'` for ``"neumann"`` and ``"backtrack"``.
      backward_learning_rate: :math:`\eta'` for ``"neumann"`` and ``"backtrack"`` (default
        ``learning_rate``).
      cg_maxiter: CG iterations for ``"implicit"``.
      cg_tol: CG relative tolerance for ``"implicit"``.
      ridge: damping added to the Hessian in ``"implicit"``/``"neumann"``.
      unroll: unroll factor of the inner solver's ``lax.scan`` (speed only).

    Returns:
      ``z*`` with the structure of ``z0``.

    Cost: forward O(L·(fwd+bwd of l)). Backward: implicit O(cg_maxiter) Hessian-vector products;
    neumann O(T') HVPs; backtrack O(T'·(fwd+bwd)) forward and its reverse (second order);
    unrolled O(L) second-order reverse passes and O(L) memory; bpda free.
    """
    validation.check_choice(mode, "mode", MODES)
    validation.check_positive_int(steps, "steps")
    validation.check_positive(learning_rate, "learning_rate")
    validation.check_positive_int(backward_steps, "backward_steps")
    if backward_learning_rate is None:
        backward_learning_rate = learning_rate
    validation.check_positive(backward_learning_rate, "backward_learning_rate")
    validation.check_nonnegative(ridge, "ridge")
    if not isinstance(unroll, bool):
        validation.check_positive_int(unroll, "unroll")
    if not callable(inner_loss):
        raise ValueError(f"`inner_loss` must be callable, got {type(inner_loss).__name__}.")
    if optimizer is None:
        optimizer = optax.sgd(learning_rate)

    validation.check_finite(x, "x")
    for leaf in jax.tree.leaves(z0):
        validation.check_finite(leaf, "z0")
    x = jnp.asarray(x)
    loss, consts = jax.closure_convert(inner_loss, z0, x)
    solve_fwd = functools.partial(descend, loss, optimizer=optimizer, steps=steps, unroll=unroll)

    if mode == "unrolled":
        return solve_fwd(z0, x, *consts)
    if mode == "bpda":
        return lax.stop_gradient(solve_fwd(z0, x, *consts))
    if mode == "backtrack":
        z_warm = lax.stop_gradient(solve_fwd(z0, x, *consts))
        return descend(loss, z_warm, x, *consts, optimizer=optax.sgd(backward_learning_rate),
                       steps=backward_steps, unroll=unroll)
    if mode == "implicit":
        solve = functools.partial(solve_cg, maxiter=cg_maxiter, tol=cg_tol, ridge=ridge)
    else:  # neumann
        solve = functools.partial(solve_neumann, steps=backward_steps,
                                  learning_rate=backward_learning_rate, ridge=ridge,
                                  unroll=unroll)
    root = custom_root(jax.grad(loss), solve=solve)(solve_fwd)
    return root(z0, x, *consts)


def reconstruction_bpda(x: ArrayLike, x_rec: ArrayLike) -> Array:
    r"""Straight-through reconstruction: value ``x_rec``, Jacobian in ``x`` the identity.

    .. math::
       \tilde x = x + \mathrm{sg}(x_{rec} - x)

    This is the BPDA approximation :math:`\partial G(z^*)/\partial x' \approx I` of Athalye et al.
    used as baseline in Chen, Xie, Zhu (supplementary §D, Eqn 21).

    Args:
      x: inputs, any shape.
      x_rec: reconstructions, same shape.

    Returns:
      Array equal to ``x_rec`` whose gradient flows to ``x`` unchanged.
    """
    validation.check_finite(x, "x")
    validation.check_finite(x_rec, "x_rec")
    if jnp.shape(x) != jnp.shape(x_rec):
        raise ValueError(f"`x_rec` must have the shape of `x` {jnp.shape(x)}, got "
                         f"{jnp.shape(x_rec)}.")
    x = jnp.asarray(x)
    return x + lax.stop_gradient(jnp.asarray(x_rec) - x)
