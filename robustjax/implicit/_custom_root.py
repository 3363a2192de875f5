r"""Implicit differentiation of root and fixed-point solvers (jaxopt's contract, no dependency).

A solver ``solver(init, *args) -> sol`` whose output satisfies ``optimality_fn(sol, *args) == 0``
is differentiated with the implicit function theorem: for :math:`F(z^*(\theta), \theta) = 0`,

.. math::
   \partial_\theta z^* = -(\partial_z F)^{-1} \partial_\theta F,

so a vector-Jacobian product needs one linear solve with :math:`(\partial_z F)^\top` (for
``F = ∇_z l`` this is the Hessian of the inner loss, Eqn 1 of the supplementary of Chen, Xie,
Zhu, ICML 2020) and one VJP of ``F`` with respect to the arguments. ``init`` receives no gradient.
Arrays the solution depends on must be passed as ``*args`` (not closed over) to get gradients.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustjax._src.types import PyTree
from robustjax.implicit._linear_solve import solve_cg

__all__ = ["custom_fixed_point", "custom_root", "root_vjp"]

Solve = Callable[[Callable[[PyTree], PyTree], PyTree], PyTree]


def _zero_cotangent(x: Any) -> Any:
    def leaf(a):
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return jnp.zeros_like(a)
        return np.zeros(a.shape, dtype=jax.dtypes.float0)

    return jax.tree.map(leaf, x)


def root_vjp(
    optimality_fn: Callable[..., PyTree],
    sol: PyTree,
    args: tuple,
    cotangent: PyTree,
    *,
    solve: Solve = solve_cg,
) -> tuple:
    r"""VJP of a root ``sol`` of ``optimality_fn(sol, *args) = 0`` with respect to ``args``.

    Solves :math:`(\partial_z F)^\top u = -\bar z` with ``solve`` and returns
    :math:`(\partial_{\theta} F)^\top u` for every argument.

    Args:
      optimality_fn: ``F(sol, *args) -> pytree`` with the structure of ``sol``.
      sol: the root :math:`z^*` (pytree).
      args: tuple of the arguments ``F`` depends on.
      cotangent: :math:`\bar z`, same structure as ``sol``.
      solve: linear solver ``solve(matvec, b) -> u`` (e.g. :func:`solve_cg`, :func:`solve_neumann`).

    Returns:
      A tuple with one cotangent per element of ``args``.

    Cost: one linear solve (``solve``'s iterations × one VJP of ``F`` in ``sol``) plus one VJP of
    ``F`` in ``args``.
    """
    _, vjp_sol = jax.vjp(lambda s: optimality_fn(s, *args), sol)
    matvec = lambda u: vjp_sol(u)[0]  # noqa: E731  (∂_z F)^T u
    rhs = jax.tree.map(jnp.negative, cotangent)
    u = solve(matvec, rhs)
    _, vjp_args = jax.vjp(lambda *a: optimality_fn(sol, *a), *args)
    return vjp_args(u)


def custom_root(
    optimality_fn: Callable[..., PyTree],
    *,
    solve: Solve = solve_cg,
) -> Callable[[Callable[..., PyTree]], Callable[..., PyTree]]:
    """Decorator adding implicit differentiation to ``solver(init, *args) -> sol``.

    The decorated solver computes the same forward value; its reverse-mode derivative with respect
    to ``args`` is :func:`root_vjp` (exact up to ``solve``), and ``init`` gets a zero cotangent.
    Works under ``jit`` and ``vmap``. Only positional arguments are supported (bind static
    configuration with :func:`functools.partial` before decorating).

    Args:
      optimality_fn: ``F(sol, *args)``, zero at the solution (e.g. ``jax.grad(inner_loss)``).
      solve: linear solver used in the backward pass.

    Returns:
      A decorator.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from robustjax.implicit import custom_root
      >>> loss = lambda z, x: 0.5 * jnp.sum((z - 2 * x) ** 2)
      >>> @custom_root(jax.grad(loss))
      ... def argmin(z0, x):
      ...     return 2 * x  # any solver; the gradient comes from the optimality condition
      >>> float(jax.grad(lambda x: argmin(jnp.zeros(()), x))(1.0))
      2.0
    """

    def decorator(solver: Callable[..., PyTree]) -> Callable[..., PyTree]:
        @jax.custom_vjp
        def wrapped(init, *args):
            return solver(init, *args)

        def fwd(init, *args):
            sol = solver(init, *args)
            return sol, (sol, init, args)

        def bwd(res, cotangent):
            sol, init, args = res
            grads = root_vjp(optimality_fn, sol, args, cotangent, solve=solve)
            return (_zero_cotangent(init),) + tuple(grads)

        wrapped.defvjp(fwd, bwd)

        @functools.wraps(solver)
        def call(init, *args):
            return wrapped(init, *args)

        return call

    return decorator


def custom_fixed_point(
    fixed_point_fn: Callable[..., PyTree],
    *,
    solve: Solve = solve_cg,
) -> Callable[[Callable[..., PyTree]], Callable[..., PyTree]]:
    """Decorator for solvers of ``sol = fixed_point_fn(sol, *args)``.

    Equivalent to :func:`custom_root` with ``F(z, *a) = fixed_point_fn(z, *a) - z``. For a gradient
    step ``T(z) = z - η∇l(z)``, ``∂_z F = -ηH`` is symmetric and negative definite; pass a solver
    that handles it (:func:`solve_normal_cg`, or :func:`solve_cg` after flipping the sign through
    ``optimality_fn``) — CG on a negative definite operator also converges in exact arithmetic.

    Args:
      fixed_point_fn: ``T(sol, *args) -> sol``.
      solve: linear solver used in the backward pass.

    Returns:
      A decorator.
    """

    def optimality_fn(sol, *args):
        return jax.tree.map(jnp.subtract, fixed_point_fn(sol, *args), sol)

    return custom_root(optimality_fn, solve=solve)
