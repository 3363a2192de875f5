r"""Upper bounds on the spatial adversarial loss of a one-hidden-layer network (Sec. 4.1, 6.7).

For :math:`f(x) = v^\top\sigma(Wx)` with :math:`\nabla\sigma \in [0, 1]`, flows with
:math:`\|Mr\| \le \epsilon` (so :math:`|r_i| \le \epsilon\lambda_i`, Prop. 2) and
:math:`|\mathrm{D}g_{ii}| \le \kappa`,

.. math:: \ell_{adv}(x, r) \le \kappa\,\epsilon \max_{\|s\|_\infty, \|t\|_\infty \le 1}
    s^\top \mathrm{diag}(v) W \mathrm{diag}(\lambda) t
    = \tfrac{\kappa}{2}\,\epsilon \max_{\|z\|_\infty \le 1} z^\top P z
    \le \tfrac{\kappa}{2}\,\epsilon\, \mathrm{SDP}(P),

:math:`P = \begin{bmatrix} 0 & A \\ A^\top & 0\end{bmatrix}`,
:math:`A = \mathrm{diag}(v) W \mathrm{diag}(\lambda)`. The paper uses :math:`\kappa = 2`
(images in ``[0, 1]``: each axis' partial derivative of the warp is a difference of two pixels,
in ``[-1, 1]``, and a diagonal flow moves along both axes); for inputs with
:math:`\|x\|_\infty \le 1` as in the lower-bound attacks, :math:`\kappa = 4`.

**What is certified.** :math:`M^\top M` is singular on constant flows (a translation has zero
total variation), so every bound here, like Prop. 2's box, holds for **zero-mean flows** with
:math:`\|Mr\| \le \epsilon`; a translation is outside the certified set. **Units:** the
library's :math:`\|Mr\|` is Eqn 2's :math:`\ell_{diff}` (:math:`M^\top M = 2S`,
:func:`robustjax.spatial.tv_gram`), so the library's :math:`\epsilon` is :math:`\sqrt 2`
times the paper's for the same set of flows (the paper's Prop. 1 matrix is :math:`S`).

Bounds: :func:`sdp_dual_bound` (SDP relaxation, Sec. 4.1), :func:`box_bound` (norm bounds via
the AABB of Prop. 2), :func:`ellipsoid_bound` (norm bounds via the ellipsoid itself), and the
paper's literal forms :func:`frobenius_bound` / :func:`spectral_bound`
(:math:`\epsilon\|W\|\|v\|`, which are *not* valid flow bounds: no flow factor).

The SDP value :math:`\max \mathrm{tr}(ZP)` s.t. :math:`\mathrm{diag}(Z) \le 1, Z \succeq 0` is
computed host-side with cvxpy (:func:`sdp_bound`); the differentiable training regulariser is the
dual bound (:func:`sdp_dual_bound`), valid for every ``c`` (weak duality).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike

__all__ = [
    "DualCertificate",
    "SDPSolution",
    "frobenius_bound",
    "spectral_bound",
    "box_bound",
    "ellipsoid_bound",
    "linear_upper_bound",
    "sdp_matrix",
    "pairwise_sdp_matrices",
    "sdp_bound",
    "multiclass_sdp_bound",
    "sdp_dual_bound",
    "dual_init",
    "optimize_dual",
    "optimize_dual_bm",
]


class SDPSolution(NamedTuple):
    """Result of :func:`sdp_bound` / :func:`multiclass_sdp_bound` (host-side).

    Attributes:
      value: the SDP value (Python float).
      info: a dict of solver details (see the function).
    """

    value: float
    info: dict


class DualCertificate(NamedTuple):
    """Result of :func:`optimize_dual` / :func:`optimize_dual_bm`.

    Attributes:
      c: ``[n]`` dual multipliers (gradient-stopped).
      bound: scalar :func:`sdp_dual_bound` at ``c``.
    """

    c: Array
    bound: Array


def _weights(a, name: str, rank=None) -> Array:
    """A finite real weight array (NaN/inf raise naming ``name``)."""
    if rank is not None:
        V.check_rank(a, name, rank)
    if not jnp.issubdtype(jnp.result_type(a), jnp.number):
        raise ValueError(f"`{name}` must be a real array, got dtype {jnp.result_type(a)}.")
    V.check_finite(a, name)
    return jnp.asarray(a)


def frobenius_bound(w: ArrayLike, v: ArrayLike, *, eps: float) -> Array:
    r"""Frobenius bound :math:`\epsilon\|W\|_F\|v\|_2` (appendix, "naive bounds"; Raghunathan
    et al. 2018's Fro-NN regulariser). Differentiable in ``w [h, d]``, ``v [h]``. Scalar.

    Note: this is the paper's literal form, the pixel-perturbation bound reused as is; it
    carries no flow factor (:math:`\lambda` or :math:`\rho`, :math:`\kappa`) and is not a
    proven bound on the spatial :math:`\ell_{adv}` -- :func:`box_bound` and
    :func:`ellipsoid_bound` are. ``eps`` is in the paper's units. Always :math:`\ge`
    :func:`spectral_bound`. Cost ``O(h·d)``.
    """
    V.check_nonnegative_value(eps, "eps")
    return eps * jnp.linalg.norm(_weights(w, "w")) * jnp.linalg.norm(_weights(v, "v"))


def spectral_bound(w: ArrayLike, v: ArrayLike, *, eps: float) -> Array:
    r"""Spectral bound :math:`\epsilon\|W\|_2\|v\|_2` (appendix, "naive bounds"). Scalar,
    differentiable (through the top singular value). Same caveat as :func:`frobenius_bound`.
    Cost ``O(h·d·min(h, d))``.
    """
    V.check_nonnegative_value(eps, "eps")
    return (eps * jnp.linalg.norm(_weights(w, "w", 2), ord=2)
            * jnp.linalg.norm(_weights(v, "v")))


def box_bound(w: ArrayLike, v: ArrayLike, lam: ArrayLike, *, eps: float, norm: str = "fro",
              jacobian_bound: float = 2.0) -> Array:
    r"""Valid norm bound through the AABB of Prop. 2 (a box around the flow ellipsoid):

    .. math:: \ell_{adv} \le \kappa\,\epsilon\,\sqrt d\,
        \|W\mathrm{diag}(\lambda)\|\,\|v\|_2

    (:math:`\|\cdot\|` Frobenius or spectral): :math:`\ell_{adv} \le \kappa\epsilon\max
    s^\top\mathrm{diag}(v)W\mathrm{diag}(\lambda)t` over :math:`|s|, |t| \le 1` (module
    docstring) and :math:`\|s \odot v\|_2 \le \|v\|_2`, :math:`\|t\|_2 \le \sqrt d`.
    Certifies zero-mean flows with :math:`\|Mr\| \le \epsilon` (library units, see
    :func:`robustjax.spatial.ellipsoid_radius`). ``w [h, d]``, ``v [h]``, ``lam [d]``; scalar.
    Cost ``O(h·d)`` (fro) or one SVD (spectral).
    """
    V.check_nonnegative_value(eps, "eps")
    V.check_nonnegative_value(jacobian_bound, "jacobian_bound")
    V.check_choice(norm, "norm", ("fro", "spectral"))
    w = _weights(w, "w", 2)
    v = _weights(v, "v")
    wl = w * _weights(lam, "lam", 1)[None, :]
    nw = jnp.linalg.norm(wl) if norm == "fro" else jnp.linalg.norm(wl, ord=2)
    return (jacobian_bound * eps * jnp.sqrt(w.shape[1]) * nw
            * jnp.linalg.norm(jnp.asarray(v)))


def ellipsoid_bound(w: ArrayLike, v: ArrayLike, radius: float, *, eps: float,
                    norm: str = "fro", jacobian_bound: float = 2.0) -> Array:
    r"""Valid norm bound through the flow ellipsoid itself (no bounding box):

    .. math:: \ell_{adv} \le \kappa\,\epsilon\,\rho\,\|W\|\,\|v\|_2

    with :math:`\rho` = :func:`robustjax.spatial.ellipsoid_radius` (:math:`\max\|r\|_2` over
    :math:`\|Mr\| \le 1`, zero-mean flows). Proof: :math:`\ell_{adv} = \int_0^1
    (W^\top\mathrm{diag}(\nabla\sigma) v)^\top \mathrm{D}g\, r\,dz` with
    :math:`\nabla\sigma \in [0, 1]^h` and :math:`|\mathrm{D}g_{ii}| \le \kappa`, so
    :math:`\ell_{adv} \le \|W\|_2\|v\|_2\,\kappa\|r\|_2` (and
    :math:`\|W\|_2 \le \|W\|_F`). Not ordered with :func:`box_bound` in general (the box
    puts :math:`\lambda` inside the norm), but :math:`\rho \le \|\lambda\|_2 \le \sqrt d
    \max_i\lambda_i`, and on MNIST-sized grids it is several times tighter. Certifies
    zero-mean flows with :math:`\|Mr\| \le \epsilon` (library
    units). ``w [h, d]``, ``v [h]``; scalar. Cost ``O(h·d)`` (fro) or one SVD (spectral).
    """
    V.check_nonnegative_value(eps, "eps")
    V.check_nonnegative_value(jacobian_bound, "jacobian_bound")
    V.check_nonnegative_value(radius, "radius")
    V.check_choice(norm, "norm", ("fro", "spectral"))
    w = _weights(w, "w", 2)
    v = _weights(v, "v")
    nw = jnp.linalg.norm(w) if norm == "fro" else jnp.linalg.norm(w, ord=2)
    return jacobian_bound * eps * radius * nw * jnp.linalg.norm(jnp.asarray(v))


def linear_upper_bound(v: ArrayLike, lam: ArrayLike, *, eps: float,
                       jacobian_bound: float = 2.0) -> Array:
    r"""Exact bound for a linear classifier (Eqn 16): :math:`\kappa\epsilon\|v \odot \lambda\|_1`
    (:math:`\kappa = 2` in the paper). ``v, lam: [d]``; scalar. Cost ``O(d)``."""
    V.check_nonnegative_value(eps, "eps")
    V.check_nonnegative_value(jacobian_bound, "jacobian_bound")
    return jacobian_bound * eps * jnp.sum(jnp.abs(_weights(v, "v") * _weights(lam, "lam")))


def sdp_matrix(w: ArrayLike, v: ArrayLike, lam: ArrayLike) -> Array:
    r""":math:`P = \begin{bmatrix} 0 & \mathrm{diag}(v)W\mathrm{diag}(\lambda) \\
    \mathrm{diag}(\lambda)W^\top\mathrm{diag}(v) & 0\end{bmatrix}` (Sec. 4.1), ``[h+d, h+d]``.

    Args: w ``[h, d]``, v ``[h]``, lam ``[d]`` (from :func:`robustjax.spatial.aabb_radii`).
    Differentiable in all three. Cost ``O((h+d)^2)``.
    """
    w = _weights(w, "w", 2)
    v = _weights(v, "v", 1)
    lam = _weights(lam, "lam", 1)
    if v.shape[0] != w.shape[0] or lam.shape[0] != w.shape[1]:
        raise ValueError(f"`v` must be [h] and `lam` [d] for `w` [h, d] = {w.shape}, got "
                         f"{v.shape} and {lam.shape}.")
    a = v[:, None] * w * lam[None, :]
    h, d = w.shape
    top = jnp.concatenate([jnp.zeros((h, h), a.dtype), a], axis=1)
    bot = jnp.concatenate([a.T, jnp.zeros((d, d), a.dtype)], axis=1)
    return jnp.concatenate([top, bot], axis=0)


def pairwise_sdp_matrices(w: ArrayLike, v: ArrayLike, lam: ArrayLike) -> Array:
    r"""Multi-class :math:`P^{ij}` of appendix 6.7 built from :math:`v_i - v_j`.

    Args: w ``[h, d]``, v ``[K, h]`` (second layer, one row per class), lam ``[d]``.

    Returns: ``[K, K, h+d, h+d]`` (``P^{ii} = 0``). Cost ``O(K^2 (h+d)^2)`` memory.
    """
    v = _weights(v, "v", 2)
    diff = v[:, None, :] - v[None, :, :]
    return jax.vmap(jax.vmap(lambda dv: sdp_matrix(w, dv, lam)))(diff)


def sdp_bound(p: ArrayLike, *, solver: str = "SCS", **solver_kwargs: Any) -> SDPSolution:
    r"""Solve the SDP relaxation :math:`\max \mathrm{tr}(ZP)` s.t. :math:`\mathrm{diag}(Z) \le 1,
    Z \succeq 0` (Sec. 4.1) with cvxpy, on the host.

    The spatial loss bound is :math:`\tfrac{\kappa}{2}\epsilon\cdot` ``value`` (module docstring;
    :math:`\epsilon \cdot` ``value`` in the paper). SCS is the default: an interior-point solver
    (CLARABEL) ran out of memory at ``n = 300`` on a 24 GiB machine. SCS is a first-order method;
    tighten ``eps_abs``/``eps_rel`` for accurate small problems.

    Args:
      p: symmetric ``[n, n]`` (e.g. :func:`sdp_matrix`); not traced (host-side only).
      solver: a cvxpy solver name.
      **solver_kwargs: passed to ``problem.solve``.

    Returns:
      :class:`SDPSolution` ``(value, info)`` with ``info = {"status", "solver", "solve_time",
      "z" [n, n], "dual" [n]}``; ``dual`` holds the multipliers ``c >= 0`` of ``diag(Z) <= 1``, so
      :func:`sdp_dual_bound` ``(p, dual)`` is a certificate close to ``value``.

    Cost: one SDP with an ``n x n`` PSD variable (SCS: ``O(n^3)`` per iteration).
    """
    import cvxpy as cp  # optional, host-side dependency

    if isinstance(p, jax.core.Tracer):
        raise ValueError("`p` must be a concrete array: sdp_bound runs on the host (no jit).")
    pm = np.asarray(p, dtype=np.float64)
    if pm.ndim != 2 or pm.shape[0] != pm.shape[1]:
        raise ValueError(f"`p` must be a square matrix, got shape {pm.shape}.")
    V.check_finite(pm, "p")
    pm = 0.5 * (pm + pm.T)
    n = pm.shape[0]
    z = cp.Variable((n, n), symmetric=True)
    cons = [z >> 0, cp.diag(z) <= 1]
    prob = cp.Problem(cp.Maximize(cp.trace(pm @ z)), cons)
    t0 = time.perf_counter()
    prob.solve(solver=solver, **solver_kwargs)
    info = {
        "status": prob.status,
        "solver": solver,
        "solve_time": time.perf_counter() - t0,
        "z": None if z.value is None else np.asarray(z.value),
        "dual": None if cons[1].dual_value is None else np.asarray(cons[1].dual_value),
    }
    return SDPSolution(float(prob.value), info)


def multiclass_sdp_bound(w: ArrayLike, v: ArrayLike, lam: ArrayLike, y: int, *,
                         solver: str = "SCS", **solver_kwargs: Any) -> SDPSolution:
    r"""Appendix 6.7: :math:`\max_{i \ne y} q^{iy}` with :math:`q^{iy} = \mathrm{SDP}(P^{iy})`
    (class ``i`` "+" against the true class ``y`` "-"). Host-side; ``K - 1`` SDPs.

    Args: w ``[h, d]``, v ``[K, h]``, lam ``[d]``; y: the true class, an int in ``[0, K)``.

    Returns :class:`SDPSolution` ``(value, info)`` with ``info["per_class"]`` the ``K`` values
    (``-inf`` at ``y``) and ``info["argmax"]``.
    """
    for name, a in (("w", w), ("v", v), ("lam", lam), ("y", y)):
        if isinstance(a, jax.core.Tracer):
            raise ValueError(f"`{name}` must be concrete: multiclass_sdp_bound runs on the host "
                             "(no jit).")
    v = np.asarray(_weights(v, "v", 2))
    k = v.shape[0]
    from robustjax.certify._lower_bounds import check_class

    check_class(y, k)
    y = int(y)
    vals = np.full(k, -np.inf)
    infos = {}
    for i in range(k):
        if i == y:
            continue
        p = sdp_matrix(w, v[i] - v[y], lam)
        vals[i], infos[i] = sdp_bound(p, solver=solver, **solver_kwargs)
    best = int(np.argmax(vals))
    return SDPSolution(float(vals[best]), {"per_class": vals, "argmax": best, "infos": infos})


def sdp_dual_bound(p: ArrayLike, c: ArrayLike, *, temperature: float = 0.0) -> Array:
    r"""Dual (certificate) bound on the SDP value, differentiable in ``p`` and ``c``.

    .. math:: \mathrm{SDP}(P) \le n \max(\lambda_{max}(P - \mathrm{diag}(c)), 0)
        + \textstyle\sum_i \max(c_i, 0)

    valid for every ``c`` (for feasible ``Z``: :math:`\mathrm{tr}(Z) \le n` and
    :math:`0 \le Z_{ii} \le 1`; with the inequality :math:`\mathrm{diag}(Z) \le 1` only the
    positive part of ``c`` may enter). Equality at the optimal multipliers (strong duality).
    With ``temperature > 0`` :math:`\lambda_{max}` is replaced by the smooth upper bound
    :math:`T\log\sum_k e^{\lambda_k/T}` (still a valid bound). This is the SDP-NN regulariser of
    Raghunathan et al. (2018) adapted to Sec. 4.1.

    Args:
      p: ``[..., n, n]`` symmetric; c: ``[..., n]``.

    Returns: ``[...]``. Cost ``O(n^3)`` (one ``eigh``) per matrix.
    """
    V.check_nonnegative(temperature, "temperature")
    p = _weights(p, "p")
    c = _weights(c, "c")
    if p.ndim < 2 or p.shape[-1] != p.shape[-2] or c.shape[-1:] != p.shape[-1:]:
        raise ValueError(f"`p` must be [..., n, n] and `c` [..., n], got {p.shape} and {c.shape}.")
    n = p.shape[-1]
    eig = jnp.linalg.eigvalsh(p - c[..., :, None] * jnp.eye(n, dtype=p.dtype))
    if temperature > 0:
        top = temperature * jax.nn.logsumexp(eig / temperature, axis=-1)
    else:
        top = eig[..., -1]
    return n * jnp.maximum(top, 0.0) + jnp.sum(jnp.maximum(c, 0.0), axis=-1)


def dual_init(p: ArrayLike) -> Array:
    r"""Closed-form dual point: the better of ``c = λ_max(P)·1`` (bound ``n λ_max(P)``) and the
    Gershgorin row sums ``c_i = Σ_j |P_ij|`` (bound ``Σ_ij |P_ij|``), per matrix. (The paper's
    ``c = diag(P)`` is zero for the block matrix of Sec. 4.1.) ``[..., n, n] -> [..., n]``.
    """
    p = _weights(p, "p")
    if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"`p` must be [..., n, n], got {p.shape}.")
    n = p.shape[-1]
    lmax = jnp.maximum(jnp.linalg.eigvalsh(p)[..., -1], 0.0)
    c1 = jnp.broadcast_to(lmax[..., None], p.shape[:-1])
    c2 = jnp.sum(jnp.abs(p), axis=-1)
    use1 = (n * lmax <= jnp.sum(c2, axis=-1))[..., None]
    return jnp.where(use1, c1, c2)


def optimize_dual(p: ArrayLike, c0: ArrayLike | None = None, *, steps: int = 200,
                  learning_rate: float = 0.05, temperature: float = 0.0,
                  unroll: int | bool = 1) -> DualCertificate:
    r"""Minimise :func:`sdp_dual_bound` over ``c`` by Adam (cosine-decayed step), from
    :func:`dual_init` unless ``c0`` is given; keeps the best iterate.

    The step is relative: ``learning_rate`` times the scale of ``c0``. Gradients do not flow
    through the optimisation (``c`` is returned under ``stop_gradient``); by Danskin's theorem
    :func:`sdp_dual_bound` ``(p, c)`` at the returned ``c`` gives the regulariser's gradient
    w.r.t. ``p``.

    Args:
      p: ``[n, n]`` (``vmap`` for stacks); c0: ``[n]`` or None; steps: Adam steps.
      unroll: unroll factor of the ``lax.scan`` (speed only).

    Returns:
      :class:`DualCertificate` ``(c [n], bound [])``. Cost ``O(steps·n^3)``.
    """
    V.check_positive_int(steps, "steps")
    V.check_positive(learning_rate, "learning_rate")
    p = jax.lax.stop_gradient(_weights(p, "p", 2))
    c0 = dual_init(p) if c0 is None else _weights(c0, "c0", 1).astype(p.dtype)
    scale = jnp.maximum(jnp.max(jnp.abs(c0)), 1e-12)
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    fn = lambda cc: sdp_dual_bound(p, cc * scale, temperature=temperature)  # noqa: E731

    def body(carry, _):
        u, st, best_u, best_v = carry
        val, g = jax.value_and_grad(fn)(u)
        better = val < best_v
        best_u = jnp.where(better, u, best_u)
        best_v = jnp.where(better, val, best_v)
        upd, st = opt.update(g, st, u)
        return (optax.apply_updates(u, upd), st, best_u, best_v), None

    u0 = c0 / scale
    carry = (u0, opt.init(u0), u0, jnp.asarray(jnp.inf, p.dtype))
    (u, _, best_u, best_v), _ = jax.lax.scan(body, carry, None, length=steps, unroll=unroll)
    last = fn(u)
    best_u = jnp.where(last < best_v, u, best_u)
    best_v = jnp.minimum(last, best_v)
    return DualCertificate(jax.lax.stop_gradient(best_u * scale), jax.lax.stop_gradient(best_v))


def optimize_dual_bm(p: ArrayLike, key: Array, *, split: int | None = None, rank: int = 16,
                     steps: int = 200, unroll: int | bool = 1) -> DualCertificate:
    r"""Dual point for :func:`sdp_dual_bound` from a low-rank (Burer-Monteiro) primal solution.

    Solves the primal :math:`\max \mathrm{tr}(ZP)`, :math:`\mathrm{diag}(Z) \le 1`,
    :math:`Z = VV^\top` with :math:`V \in \mathbb R^{n\times k}` (unit rows) by block
    coordinate ascent, then reads off the multipliers :math:`c_i = \|(PV)_i\|` (the
    stationarity condition :math:`(P - \mathrm{diag}(c))V = 0`) and certifies them with one
    exact ``eigvalsh``:

    .. math:: \mathrm{SDP}(P) \le n\,\lambda_{max}(P - \mathrm{diag}(c))^+ + \textstyle\sum_i c_i

    (weak duality: valid for any ``V``; tight as ``V`` converges, where
    :math:`\lambda_{max} \to 0`). Updates: with ``split = h`` and the bipartite matrix of
    :func:`sdp_matrix` (zero diagonal blocks), alternately :math:`S \leftarrow
    \mathrm{rownorm}(AT)`, :math:`T \leftarrow \mathrm{rownorm}(A^\top S)` -- each an exact
    block maximisation (two ``[h, d] x [d, k]`` matmuls per step). With ``split=None`` (any
    symmetric ``P``), the shifted Jacobi step :math:`V \leftarrow \mathrm{rownorm}((P +
    \sigma I)V)` with the Gershgorin bound :math:`\sigma = \max_i\sum_j|P_{ij}|`, monotone
    but slower. ``rank`` :math:`k \ge \sqrt{2n}` avoids spurious local optima generically
    (Boumal et al. 2016); in practice 16 sufficed for ``n = 300``.

    Certificate: with ``split=None`` one exact ``eigvalsh`` of size ``n``. With ``split = h``
    no eigensolve: the multipliers are shifted by the smallest :math:`\mu` on a geometric grid
    for which a Cholesky factorisation of the ``min(h, d)``-sized Schur complement proves
    :math:`\lambda_{max}(P - \mathrm{diag}(c + \mu)) \le 0` (cost ``O(h^2 d)`` instead of
    ``O(n^3)``); the bound is then :math:`\sum_i c_i + n\mu` and equals
    :func:`sdp_dual_bound` at the returned ``c``.

    Much faster and tighter than :func:`optimize_dual` (which needs an ``eigh`` per Adam step):
    at ``n = 300`` 200 steps here are a few matmuls plus one ``eigh``. Why no Lanczos for the
    final :math:`\lambda_{max}`: a Ritz value underestimates it, so the result would not be a
    certificate; one ``eigvalsh`` is exact up to rounding.

    Args:
      p: ``[n, n]`` symmetric (``vmap`` for stacks; ``key`` may then be shared).
      key: PRNG key for the random initial ``V``.
      split: ``h`` for the block matrix of :func:`sdp_matrix` (``P[:h, :h] = P[h:, h:] = 0``),
        or None for a general ``P``.
      rank: columns ``k`` of ``V``. steps: ascent steps.
      unroll: unroll factor of the ascent ``lax.fori_loop`` (speed only).

    Returns:
      :class:`DualCertificate` ``(c [n], bound [])`` under ``stop_gradient`` (Danskin: differentiate
      :func:`sdp_dual_bound` ``(p, c)`` for the gradient w.r.t. ``p``).

    Cost: ``O(steps·h·d·k)`` plus ``O(h²d)`` Cholesky tests (``split = h``);
    ``O(steps·n²·k)`` plus one ``O(n³)`` ``eigvalsh`` (``split=None``).
    """
    V.check_key(key, "key")
    V.check_positive_int(rank, "rank")
    V.check_positive_int(steps, "steps")
    p = jax.lax.stop_gradient(_weights(p, "p", 2))
    n = p.shape[-1]
    if split is not None:
        split = int(split)
        if not 0 < split < n:
            raise ValueError(f"`split` must be in [1, {n - 1}] or None, got {split}.")

    def rownorm(z):
        nz = jnp.linalg.norm(z, axis=1, keepdims=True)
        return jnp.where(nz > 0, z / jnp.where(nz > 0, nz, 1.0), 0.0)

    v0 = rownorm(jax.random.normal(key, (n, rank), p.dtype))
    if split is not None:
        a = p[:split, split:]

        def body(_, t):
            return rownorm(a.T @ rownorm(a @ t))

        t = jax.lax.fori_loop(0, steps, body, v0[split:], unroll=unroll)
        vv = jnp.concatenate([rownorm(a @ t), t])
    else:
        sigma = jnp.max(jnp.sum(jnp.abs(p), axis=1))
        vv = jax.lax.fori_loop(0, steps, lambda _, z: rownorm(p @ z + sigma * z), v0,
                               unroll=unroll)
    c = jnp.linalg.norm(p @ vv, axis=1)
    if split is None:
        bound = sdp_dual_bound(p, c)
        return DualCertificate(jax.lax.stop_gradient(c), jax.lax.stop_gradient(bound))
    c, bound = _schur_certificate(p[:split, split:], c[:split], c[split:])
    return DualCertificate(jax.lax.stop_gradient(c), jax.lax.stop_gradient(bound))


def _schur_certificate(a: Array, cs: Array, ct: Array, *, num_shifts: int = 8,
                       rel_shift: float = 1e-4) -> tuple[Array, Array]:
    r"""Certify :math:`\lambda_{max}(P - \mathrm{diag}(c)) \le \mu` for the block matrix
    :math:`P = [[0, A], [A^\top, 0]]` without an eigensolve of size ``h + d``.

    :math:`\mu I - P + \mathrm{diag}(c) \succ 0` iff (with :math:`\mu + c_t > 0`) the Schur
    complement :math:`\mathrm{diag}(\mu + c_s) - A\,\mathrm{diag}(\mu + c_t)^{-1}A^\top`
    (``[h, h]``; the smaller block is used) is positive definite, i.e. its Cholesky
    factorisation succeeds. Tries ``μ_k = μ_0·4^k`` (``μ_0 = rel_shift·Σc/n``) and keeps the
    smallest certified one (``while_loop``); returns ``c + μ`` (for which :math:`\lambda_{max} \le 0`) and the
    bound :math:`\sum_i c_i + n\mu`. Falls back to the Gershgorin shift (always valid) if no
    ``μ_k`` certifies. Cost ``O(h^2 d + h^3)`` per tried shift.
    """
    if a.shape[0] > a.shape[1]:  # Schur complement onto the smaller block
        a, cs, ct = a.T, ct, cs
        flip = True
    else:
        flip = False
    n = cs.shape[0] + ct.shape[0]
    csum = jnp.sum(cs) + jnp.sum(ct)
    mu0 = jnp.maximum(rel_shift * csum / n, 1e-12)
    mus = mu0 * 4.0 ** jnp.arange(num_shifts, dtype=a.dtype)

    def ok(mu):
        s = jnp.diag(mu + cs) - (a / (mu + ct)[None, :]) @ a.T
        chol = jnp.linalg.cholesky(0.5 * (s + s.T))
        return jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.diagonal(chol) > 0)

    # smallest certified shift first; stops at the first success (usually k = 0 or 1)
    k = jax.lax.while_loop(lambda k: (k < num_shifts) & ~ok(mus[jnp.minimum(k, num_shifts - 1)]),
                           lambda k: k + 1, jnp.asarray(0))
    gersh = jnp.maximum(jnp.max(jnp.sum(jnp.abs(a), 1) - cs),
                        jnp.max(jnp.sum(jnp.abs(a), 0) - ct))
    mu = jnp.where(k < num_shifts, mus[jnp.minimum(k, num_shifts - 1)],
                   jnp.maximum(gersh, 0.0))
    cs, ct = cs + mu, ct + mu
    if flip:
        cs, ct = ct, cs
    c = jnp.concatenate([cs, ct])
    return c, jnp.sum(c)
