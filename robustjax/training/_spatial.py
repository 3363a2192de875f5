r"""Training objectives for spatial (flow) robustness of one-hidden-layer networks.

The variants of Sec. 4.2 / appendix 6.8 ("implementation details") of *Provable defenses
against spatially transformed adversarial inputs*:

* ``f_fro``: hinge loss + :math:`\lambda(\|W\|_F + \|V\|_F)` (:math:`\lambda = 0.08`);
* ``f_spe``: hinge loss + :math:`\lambda(\|W\|_2 + \|V\|_2)` (:math:`\lambda = 0.09`);
* ``f_sdp``: task loss + the SDP-dual bound of Sec. 4.1 / 6.7, differentiable in the weights,
  with the dual variables trained jointly (as SDP-NN of Raghunathan et al. 2018);
* ``f_at``: cross-entropy + :math:`\lambda_r`-weighted cross-entropy on stAdv examples
  (:math:`\lambda_r = 0.3`, flow weight :math:`\tau = 0.05`).

(``f_nt`` is :func:`robustjax.training.standard_objective`; ``f_stn`` is that objective with the
hinge loss on :class:`robustjax.models.STNClassifier`.)

Multi-class choice. The paper writes :math:`\|v\|_2` for a binary output vector; for the
``[h, K]`` output layer we use the Frobenius norm in the Frobenius variant and the spectral norm
in the spectral variant. Parameters follow :class:`robustjax.models.MLP`: ``Dense_0`` (hidden,
kernel ``[d, h]`` so :math:`W` = kernel transposed) and ``Dense_1`` (output, kernel ``[h, K]``
so :math:`V` = kernel transposed, ``[K, h]``). ``prefix`` selects a sub-tree (e.g.
``("classifier",)`` for the STN classifier head).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import certify
from robustjax._src import validation as V
from robustjax._src.types import Array, PyTree
from robustjax.training._objectives import Objective
from robustjax.training._objectives import apply_model
from robustjax.training._objectives import resolve_loss

__all__ = [
    "mlp_weights",
    "norm_regularizer",
    "norm_regularized_objective",
    "pair_indices",
    "pairwise_dual_bounds",
    "init_sdp_dual",
    "sdp_regularizer",
    "sdp_dual_objective",
    "spatial_adversarial_objective",
    "DUAL_KEY",
]

#: Key of the SDP dual variables inside ``params`` (see :func:`init_sdp_dual`).
DUAL_KEY = "sdp_dual"
NORMS = ("fro", "spectral")


def _model_params(params: PyTree) -> PyTree:
    if isinstance(params, dict) or hasattr(params, "keys"):
        return {k: v for k, v in params.items() if k != DUAL_KEY}
    return params


def mlp_weights(params: PyTree, *, prefix: Sequence[str] = ()) -> tuple[Array, Array, Array]:
    r"""``(W [h, d], b [h], V [K, h])`` of a one-hidden-layer MLP's parameters.

    ``params[*prefix]["Dense_0"]`` is the hidden layer and ``["Dense_1"]`` the output layer
    (Flax kernels are ``[in, out]`` and are transposed here). Cost ``O(1)`` (views).
    """
    p = params
    for k in prefix:
        p = p[k]
    if "Dense_0" not in p or "Dense_1" not in p:
        raise ValueError("`params` must hold 'Dense_0' and 'Dense_1' (a one-hidden-layer MLP) "
                         f"under prefix {tuple(prefix)}.")
    return p["Dense_0"]["kernel"].T, p["Dense_0"]["bias"], p["Dense_1"]["kernel"].T


def _spectral_power(m: Array, iters: int) -> Array:
    """Largest singular value by ``iters`` power iterations on ``m^T m`` (singular vectors under
    ``stop_gradient``; the value ``u^T m v`` then has Danskin's gradient ``u v^T``). An estimate
    from below. Cost ``O(iters·h·d)``."""
    mg = jax.lax.stop_gradient(m)

    def body(_, x):
        y = mg.T @ (mg @ x)
        return y / jnp.maximum(jnp.linalg.norm(y), 1e-30)

    x0 = jnp.ones((m.shape[1],), m.dtype) / jnp.sqrt(m.shape[1])
    x = jax.lax.stop_gradient(jax.lax.fori_loop(0, iters, body, x0))
    y = mg @ x
    u = jax.lax.stop_gradient(y / jnp.maximum(jnp.linalg.norm(y), 1e-30))
    return jnp.vdot(u, m @ x)


def norm_regularizer(params: PyTree, *, norm: str = "fro", prefix: Sequence[str] = (),
                     spectral_iters: int = 0) -> Array:
    r""":math:`\|W\| + \|V\|` with ``norm="fro"`` (Frobenius, Fro-NN) or ``"spectral"`` (largest
    singular value; differentiable through an SVD, or with ``spectral_iters > 0`` estimated by
    that many power iterations -- much cheaper on a CPU for 784x500). Scalar. Cost ``O(hd)``
    (fro) or ``O(hd·min(h, d))`` (spectral; ``O(spectral_iters·hd)`` with power iterations)."""
    V.check_choice(norm, "norm", NORMS)
    V.check_nonnegative(spectral_iters, "spectral_iters")
    w, _, v = mlp_weights(params, prefix=prefix)
    if norm == "spectral" and spectral_iters > 0:
        return _spectral_power(w, int(spectral_iters)) + _spectral_power(v, int(spectral_iters))
    ord_ = "fro" if norm == "fro" else 2
    return jnp.linalg.norm(w, ord=ord_) + jnp.linalg.norm(v, ord=ord_)


def _metrics(per_example: Array, logits: Array, y: Array) -> dict:
    return {"loss": jnp.mean(per_example),
            "accuracy": jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))}


def norm_regularized_objective(*, norm: str = "fro", weight: float = 0.08,
                               loss: str | Callable = "hinge",
                               prefix: Sequence[str] = (),
                               spectral_iters: int = 0) -> Objective:
    r"""``f_fro`` / ``f_spe`` of appendix 6.8 (``spectral_iters``: see
    :func:`norm_regularizer`):

    .. math:: L = \frac1N\sum_n \ell(f(x_n), y_n) + \lambda(\|W\| + \|V\|)

    (hinge loss; :math:`\lambda = 0.08` Frobenius, :math:`0.09` spectral in the paper).

    Returns an objective with metrics ``{"loss", "accuracy", "task_loss", "regularizer"}``.
    Cost: one forward/backward plus the norms.
    """
    V.check_choice(norm, "norm", NORMS)
    V.check_nonnegative(weight, "weight")
    loss_fn = resolve_loss(loss)

    def objective(params, state, batch, key):
        x, y = batch["image"], batch["label"]
        mp = _model_params(params)
        logits, stats = apply_model(state, mp, x, train=True, key=key)
        per = loss_fn(logits, y)
        reg = norm_regularizer(mp, norm=norm, prefix=prefix, spectral_iters=spectral_iters)
        total = jnp.mean(per) + weight * reg
        m = _metrics(per, logits, y)
        m.update(loss=total, task_loss=jnp.mean(per), regularizer=reg)
        return total, (stats, m)

    return objective


def pair_indices(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered class pairs ``i < j``: two ``int [K(K-1)/2]`` arrays (NumPy, static)."""
    V.check_positive_int(num_classes, "num_classes")
    i, j = np.triu_indices(num_classes, k=1)
    return i.astype(np.int32), j.astype(np.int32)


def _lmax_lanczos(a: Array, c: Array, iters: int) -> Array:
    r""":math:`\lambda_{max}(P - \mathrm{diag}(c))` for the block matrix ``P`` of ``a [h, d]``
    (one pair) by ``k = min(iters, h+d)`` Lanczos steps with full reorthogonalisation,
    matrix-free (never forms the ``(h+d)^2`` matrix), from a fixed pseudo-random start vector.

    The value is the Rayleigh quotient of the top Ritz vector ``u`` (under ``stop_gradient``),
    so the derivative w.r.t. ``a`` and ``c`` is Danskin's :math:`u u^\top` at the estimated top
    eigenvector. A Ritz value is an estimate from below, **not a certificate** (training only;
    every reported bound uses an exact eigensolve or a Cholesky certificate). Why not the
    shifted power iteration used before: its shift (a Gershgorin bound, far larger than the top
    eigengap) made 10 iterations return a negative value for a positive :math:`\lambda_{max}`
    at ``n = 1284``, and then the regulariser had no gradient w.r.t. the weights. Lanczos
    converges at a rate set by the gap relative to the spectral *spread*, not to the shift
    (``tests/spatial/spatial_training_test.py`` checks the configs' own ``n`` and ``k``).

    Cost ``O(k·h·d + k^2·(h+d))`` (``k`` matrix-vector products, reorthogonalisation) plus one
    ``k x k`` ``eigh``.
    """
    h = a.shape[0]
    n = c.shape[0]
    k = int(min(iters, n))
    ag = jax.lax.stop_gradient(a)
    cg = jax.lax.stop_gradient(c)

    def mv(aa, cc, u):
        return jnp.concatenate([aa @ u[h:] - cc[:h] * u[:h], aa.T @ u[:h] - cc[h:] * u[h:]])

    q0 = jax.random.normal(jax.random.key(0), (n,), a.dtype)
    q0 = q0 / jnp.linalg.norm(q0)
    qs = jnp.zeros((k + 1, n), a.dtype).at[0].set(q0)

    def body(j, carry):
        qs, alpha, beta = carry
        q = qs[j]
        w = mv(ag, cg, q)
        al = jnp.vdot(q, w)
        w = w - al * q - jnp.where(j > 0, beta[jnp.maximum(j - 1, 0)], 0.0) * qs[
            jnp.maximum(j - 1, 0)]
        mask = (jnp.arange(k + 1) <= j)[:, None]
        for _ in range(2):  # full reorthogonalisation (twice is enough)
            w = w - ((qs * mask).T @ ((qs * mask) @ w))
        b = jnp.linalg.norm(w)
        ok = b > 1e-6 * jnp.maximum(jnp.abs(al), 1e-30)
        qn = jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0)  # breakdown: invariant subspace
        return qs.at[j + 1].set(qn), alpha.at[j].set(al), beta.at[j].set(jnp.where(ok, b, 0.0))

    qs, alpha, beta = jax.lax.fori_loop(
        0, k, body, (qs, jnp.zeros((k,), a.dtype), jnp.zeros((k,), a.dtype)))
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    _, s = jnp.linalg.eigh(t)
    u = qs[:k].T @ s[:, -1]
    u = jax.lax.stop_gradient(u / jnp.maximum(jnp.linalg.norm(u), 1e-30))
    return jnp.vdot(u, mv(a, c, u))


def pairwise_dual_bounds(w: Array, v: Array, lam: Array, c: Array, *,
                         temperature: float = 0.0, lmax_iters: int = 0) -> Array:
    r"""Dual SDP bounds :math:`q^{ij}` for every class pair, as a symmetric ``[K, K]`` matrix
    (zero diagonal).

    :math:`q^{ij} \ge \mathrm{SDP}(P^{ij})` (:func:`robustjax.certify.sdp_dual_bound`) with
    :math:`P^{ij}` built from :math:`v_i - v_j` (appendix 6.7). Only the ``K(K-1)/2`` pairs
    ``i < j`` are computed: :math:`P^{ji} = -P^{ij}` and for this bipartite block matrix
    :math:`\mathrm{SDP}(-P) = \mathrm{SDP}(P)` (flip the sign of the ``s`` block of ``Z``).

    Args:
      w: ``[h, d]``; v: ``[K, h]``; lam: ``[d]`` AABB radii; c: ``[K(K-1)/2, h+d]`` dual
        variables in :func:`pair_indices` order.

      lmax_iters: 0 (default): exact ``eigvalsh`` (a certificate). ``> 0``: that many
        matrix-free Lanczos steps (:func:`_lmax_lanczos`), an estimate for training at large
        ``h + d`` (e.g. 28x28 with 500 hidden units: ``n = 1284``, where 45 ``eigh`` per step
        are too slow on a CPU); ``temperature`` is then ignored.

    Returns: ``[K, K]``. Cost ``K(K-1)/2`` eigendecompositions of size ``h+d``
    (``lmax_iters > 0``: ``O(K^2·lmax_iters·(h·d + lmax_iters·(h+d)))``).
    """
    V.check_nonnegative(lmax_iters, "lmax_iters")
    k = v.shape[0]
    ii, jj = pair_indices(k)
    if lmax_iters > 0:
        dvs = v[ii] - v[jj]
        a = jax.vmap(lambda dv: dv[:, None] * w * lam[None, :])(dvs)
        top = jax.vmap(lambda aa, cc: _lmax_lanczos(aa, cc, int(lmax_iters)))(a, c)
        q = c.shape[-1] * jnp.maximum(top, 0.0) + jnp.sum(jnp.maximum(c, 0.0), axis=-1)
        out = jnp.zeros((k, k), q.dtype).at[ii, jj].set(q)
        return out + out.T
    p = jax.vmap(lambda dv: certify.sdp_matrix(w, dv, lam))(v[ii] - v[jj])
    q = certify.sdp_dual_bound(p, c, temperature=temperature)
    out = jnp.zeros((k, k), q.dtype).at[ii, jj].set(q)
    return out + out.T


def init_sdp_dual(params: PyTree, lam: Array, *, steps: int = 50,
                  prefix: Sequence[str] = (), method: str = "adam") -> PyTree:
    r"""Add dual variables (one row per class pair) to ``params`` under :data:`DUAL_KEY`, for
    :func:`sdp_dual_objective`: the closed form :func:`robustjax.certify.dual_init` refined by
    ``steps`` steps of :func:`robustjax.certify.optimize_dual` (``steps=0``: closed form only).

    Why refine: at the closed-form points :math:`\lambda_{max}(P - \mathrm{diag}(c)) \le 0`,
    so the bound is :math:`\sum c` and its gradient w.r.t. the weights is zero until ``c`` has
    moved; after optimisation the eigenvalue term is active and the weights get a gradient.

    Returns a new dict ``{**params, "sdp_dual": c [K(K-1)/2, h+d]}``; the optimizer then trains
    ``c`` jointly with the weights (SDP-NN, Raghunathan et al. 2018). The model ignores the
    extra entry (the objectives strip it before ``apply``). Cost ``K(K-1)/2`` eigensolves.

    ``method="bm"``: instead, ``c`` from :func:`robustjax.certify.optimize_dual_bm` (``steps``
    Burer-Monteiro steps, then one ``eigvalsh`` per pair) -- near-optimal multipliers at the
    cost of one eigensolve per pair, the choice for large ``h + d``.
    """
    V.check_nonnegative(steps, "steps")
    V.check_choice(method, "method", ("adam", "bm"))
    w, _, v = mlp_weights(params, prefix=prefix)
    ii, jj = pair_indices(v.shape[0])
    p = jax.vmap(lambda dv: certify.sdp_matrix(w, dv, lam))(v[ii] - v[jj])
    if method == "bm":
        key = jax.random.key(0)
        c = jax.lax.map(lambda pp: certify.optimize_dual_bm(
            pp, key, split=w.shape[0], steps=max(int(steps), 1))[0], p)
        return {**params, DUAL_KEY: c}
    c = certify.dual_init(p)
    if steps > 0:
        c = jax.vmap(lambda pp, cc: certify.optimize_dual(pp, cc, steps=int(steps))[0])(p, c)
    return {**params, DUAL_KEY: c}


def sdp_regularizer(params: PyTree, y: Array, lam: Array, *, eps: float,
                    jacobian_bound: float = 2.0, temperature: float = 0.0,
                    prefix: Sequence[str] = (), lmax_iters: int = 0) -> Array:
    r"""Per-example certified bound :math:`\tfrac{\kappa}{2}\epsilon\max_{i\ne y} q^{iy}`,
    ``[N]`` (appendix 6.7; :math:`\kappa` = ``jacobian_bound``, 2 in the paper; see
    :mod:`robustjax.certify`). ``y``: int labels ``[N]`` in ``[0, K)``. Needs
    ``params[DUAL_KEY]`` (:func:`init_sdp_dual`). Differentiable in the weights and the dual
    variables."""
    w, _, v = mlp_weights(params, prefix=prefix)
    k = v.shape[0]
    V.check_labels(y, "y", num_classes=k)
    V.check_nonnegative_value(eps, "eps")
    q = pairwise_dual_bounds(w, v, lam, params[DUAL_KEY], temperature=temperature,
                             lmax_iters=lmax_iters)
    qy = q[:, y].T  # [N, K]: q^{i y_n}
    qy = jnp.where(jax.nn.one_hot(y, k, dtype=bool), -jnp.inf, qy)
    return 0.5 * jacobian_bound * eps * jnp.max(qy, axis=-1)


def sdp_dual_objective(lam: Array, *, eps: float = 0.05, weight: float = 1.0,
                       loss: str | Callable = "hinge", jacobian_bound: float = 2.0,
                       temperature: float = 0.0, prefix: Sequence[str] = (),
                       lmax_iters: int = 0) -> Objective:
    r"""``f_sdp``: task loss plus the SDP-dual certified bound (Sec. 4.1, 6.7; SDP-NN style):

    .. math:: L = \frac1N\sum_n \Big[\ell(f(x_n), y_n)
        + \lambda\,\tfrac{\kappa}{2}\epsilon \max_{i \ne y_n} q^{i y_n}(W, V, c)\Big]

    with :math:`q^{ij} = n\,\lambda_{max}(P^{ij} - \mathrm{diag}(c^{ij}))^+ + \sum (c^{ij})^+
    \ge \mathrm{SDP}(P^{ij})` for every ``c``; ``c`` lives in ``params[DUAL_KEY]``
    (:func:`init_sdp_dual`) and descends the same loss, tightening the bound while the weights
    shrink it (weak duality makes every iterate a valid bound).

    Args:
      lam: ``[d]`` AABB radii (:func:`robustjax.spatial.aabb_radii` of the image size).
      eps: flow budget :math:`\epsilon` of the regularised bound; weight: :math:`\lambda`.
      loss: task loss (``"hinge"``, ``"ce"`` or callable); jacobian_bound: :math:`\kappa`;
      temperature: smooth :math:`\lambda_{max}` (0: exact); prefix: MLP sub-tree.
      lmax_iters: 0: exact ``eigvalsh``; ``> 0``: matrix-free Lanczos estimate of
        :math:`\lambda_{max}` (see :func:`pairwise_dual_bounds`; for large ``h + d``).

    Returns an objective with metrics ``{"loss", "accuracy", "task_loss", "regularizer"}``
    (``regularizer``: the batch-mean bound before the weight).
    Cost: forward/backward plus ``K(K-1)/2`` ``eigh`` of size ``h+d`` (and their gradients).
    """
    V.check_nonnegative(eps, "eps")
    V.check_nonnegative(weight, "weight")
    loss_fn = resolve_loss(loss)
    lam = jnp.asarray(lam)

    def objective(params, state, batch, key):
        if DUAL_KEY not in params:
            raise ValueError(f"`params` must hold '{DUAL_KEY}' (use init_sdp_dual).")
        x, y = batch["image"], batch["label"]
        mp = _model_params(params)
        logits, stats = apply_model(state, mp, x, train=True, key=key)
        per = loss_fn(logits, y)
        reg = sdp_regularizer(params, y, lam, eps=eps, jacobian_bound=jacobian_bound,
                              temperature=temperature, prefix=prefix, lmax_iters=lmax_iters)
        total = jnp.mean(per) + weight * jnp.mean(reg)
        m = _metrics(per, logits, y)
        m.update(loss=total, task_loss=jnp.mean(per), regularizer=jnp.mean(reg))
        return total, (stats, m)

    return objective


def spatial_adversarial_objective(*, tau: float = 0.05, reg_weight: float = 0.3,
                                  attack_steps: int = 10, attack_learning_rate: float = 0.01,
                                  loss: str | Callable = "ce", kappa: float = 0.0) -> Objective:
    r"""``f_at`` (appendix 6.8): clean loss plus :math:`\lambda_r` times the loss on stAdv
    examples generated on the fly:

    .. math:: L = \frac1N\sum_n \ell(f(x_n), y_n) + \lambda_r\,\ell(f(\mathrm{stAdv}_\tau(x_n)),
        y_n)

    Choice: the paper draws from a pool of L-BFGS stAdv examples regenerated every 3 epochs;
    we attack the current model every step with ``attack_steps`` Adam steps of
    :func:`robustjax.attacks.stadv` (same objective, CW margin + :math:`\tau\,\mathcal L_{flow}`),
    on ``stop_gradient(params)`` in eval mode (Danskin; no gradient through the attack).

    Returns an objective with metrics ``{"loss", "accuracy", "adv_accuracy", "adv_loss"}``.
    Cost: ``attack_steps`` forward/backward passes plus two training passes.
    """
    from robustjax.attacks._stadv import stadv  # lazy: attacks import is heavier

    V.check_nonnegative(tau, "tau")
    V.check_nonnegative(reg_weight, "reg_weight")
    V.check_positive_int(attack_steps, "attack_steps")
    loss_fn = resolve_loss(loss)

    def objective(params, state, batch, key):
        x, y = batch["image"], batch["label"]
        mp = _model_params(params)
        frozen = jax.lax.stop_gradient(mp)

        def logits_fn(z):
            return apply_model(state, frozen, z, train=False)[0]

        x_adv = stadv(logits_fn, key, x, y, tau=tau, steps=attack_steps, optimizer="adam",
                      learning_rate=attack_learning_rate, kappa=kappa)
        logits, stats = apply_model(state, mp, jnp.concatenate([x, x_adv]), train=True, key=key)
        n = x.shape[0]
        per_clean = loss_fn(logits[:n], y)
        per_adv = loss_fn(logits[n:], y)
        total = jnp.mean(per_clean) + reg_weight * jnp.mean(per_adv)
        m = _metrics(per_clean, logits[:n], y)
        m.update(loss=total, adv_loss=jnp.mean(per_adv),
                 adv_accuracy=jnp.mean((jnp.argmax(logits[n:], -1) == y).astype(jnp.float32)))
        return total, (stats, m)

    return objective

