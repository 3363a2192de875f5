"""Linear solvers for implicit differentiation: ``solve(matvec, b) -> u`` with ``matvec(u) ≈ b``.

Every solver takes the linear operator as a function (``matvec``, usually a Hessian-vector or
vector-Jacobian product) and a right-hand side ``b`` (any pytree of arrays) and returns ``u`` with
the structure of ``b``. Hyperparameters are keyword-only; bind them with :func:`functools.partial`
to obtain the ``solve`` argument of :func:`robustjax.implicit.custom_root`.

References:
  Chen, Xie, Zhu, "On Breaking Deep Generative Model-based Defenses and Beyond", ICML 2020,
  supplementary Lemma 1 (Neumann series of the inverse Hessian).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from robustjax._src import validation
from robustjax._src.types import PyTree

__all__ = ["solve_cg", "solve_neumann", "solve_normal_cg"]

MatVec = Callable[[PyTree], PyTree]


def _tree_add_scaled(a: PyTree, b: PyTree, s) -> PyTree:
    return jax.tree.map(lambda u, v: u + s * v, a, b)


def _tree_vdot(a: PyTree, b: PyTree):
    leaves = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.vdot(u, v), a, b))
    return sum(leaves)


def _ridged(matvec: MatVec, ridge: float) -> MatVec:
    if ridge == 0.0:
        return matvec
    return lambda u: _tree_add_scaled(matvec(u), u, ridge)


def solve_cg(
    matvec: MatVec,
    b: PyTree,
    *,
    maxiter: int | None = None,
    tol: float = 1e-6,
    ridge: float = 0.0,
    init: PyTree | None = None,
) -> PyTree:
    r"""Conjugate gradient for a symmetric positive (semi-)definite operator.

    Solves :math:`(M + \rho I) u = b`. Use it when ``matvec`` is a Hessian-vector product of a
    (locally) convex inner loss. The ridge :math:`\rho \ge 0` (damping) regularises the
    ill-conditioned or indefinite Hessians found at unconverged inner solutions.

    Args:
      matvec: ``u -> M u`` for a symmetric ``M``.
      b: right-hand side, any pytree of float arrays.
      maxiter: maximum CG iterations (``None``: ``10 * dim``, the SciPy default).
      tol: relative residual tolerance.
      ridge: damping :math:`\rho`.
      init: initial guess (zeros by default).

    Returns:
      ``u`` with the structure of ``b``.

    Cost: ``maxiter`` calls of ``matvec`` (each one Hessian-vector product, ~2 backward passes).
    """
    validation.check_nonnegative(ridge, "ridge")
    validation.check_positive(tol, "tol")
    if maxiter is not None:
        validation.check_positive_int(maxiter, "maxiter")
    u, _ = jax.scipy.sparse.linalg.cg(_ridged(matvec, ridge), b, x0=init, tol=tol, atol=0.0,
                                      maxiter=maxiter)
    return u


def solve_normal_cg(
    matvec: MatVec,
    b: PyTree,
    *,
    maxiter: int | None = None,
    tol: float = 1e-6,
    ridge: float = 0.0,
) -> PyTree:
    r"""CG on the normal equations :math:`(M^\top M + \rho I) u = M^\top b` (any square ``M``).

    Robust to indefinite (non-convex) Jacobians at the price of squaring the condition number.

    Args:
      matvec: ``u -> M u``.
      b: right-hand side (pytree).
      maxiter: maximum CG iterations.
      tol: relative residual tolerance.
      ridge: damping :math:`\rho`.

    Returns:
      ``u`` with the structure of ``b``.

    Cost: ``maxiter`` calls of ``matvec`` and of its transpose.
    """
    transpose = jax.linear_transpose(matvec, b)
    rmatvec = lambda v: transpose(v)[0]  # noqa: E731
    normal = lambda u: rmatvec(matvec(u))  # noqa: E731
    return solve_cg(normal, rmatvec(b), maxiter=maxiter, tol=tol, ridge=ridge)


def solve_neumann(
    matvec: MatVec,
    b: PyTree,
    *,
    steps: int = 10,
    learning_rate: float = 0.1,
    ridge: float = 0.0,
    unroll: int | bool = 1,
) -> PyTree:
    r"""Truncated Neumann series (Lemma 1): :math:`M^{-1}b \approx \eta\sum_{t<T'}(I-\eta M)^t b`.

    With ``M`` the Hessian :math:`H` of the inner loss at :math:`z^*`, ``A = I - ηH`` and the
    result fed through :math:`-\nabla^2_{xz} l`, this is the paper's
    :math:`\nabla_{x'} z^* \approx \sum_{t<T'} B A^t` (Lemma 1, Eqns 3–4). It converges when
    :math:`\eta\|M\| \le 1` and ``M`` is positive definite; the error of the truncation is
    :math:`(I-\eta M)^{T'} M^{-1} b`. ``steps=T'`` counts the terms ``t = 0 .. T'-1``.

    Args:
      matvec: ``u -> M u``.
      b: right-hand side (pytree).
      steps: number of terms ``T'`` (``>= 1``).
      learning_rate: the step :math:`\eta'` (``> 0``).
      ridge: damping added to ``M``.
      unroll: unroll factor of the ``lax.fori_loop`` (speed only).

    Returns:
      ``u`` with the structure of ``b``.

    Cost: ``steps`` calls of ``matvec``.
    """
    validation.check_positive_int(steps, "steps")
    validation.check_positive(learning_rate, "learning_rate")
    validation.check_nonnegative(ridge, "ridge")
    mv = _ridged(matvec, ridge)

    def body(_, carry):
        term, acc = carry  # term = A^t b, acc = sum_{s<=t} A^s b
        term = _tree_add_scaled(term, mv(term), -learning_rate)
        return term, jax.tree.map(jnp.add, acc, term)

    _, acc = lax.fori_loop(0, steps - 1, body, (b, b), unroll=unroll)
    return jax.tree.map(lambda a: learning_rate * a, acc)
