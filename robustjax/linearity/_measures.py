r"""Local linearity of a loss surface: the gap :math:`g(\delta; x)`, its maximum
:math:`\gamma(\epsilon, x)` and the LLR penalty.

Everything here takes the loss as a function of the inputs only, ``loss_fn(x [N, ...]) -> [N]``
(for a classifier, ``lambda x: cross_entropy(logits_fn(x), y)``), and works per example.

**Per-example gradients.** :math:`\nabla_x \ell(x)` is obtained from one reverse-mode pass of
:math:`\sum_i \ell_i(x)` (or one forward-mode pass along :math:`\delta`), which equals the stack of
the per-example gradients *only if example ``i``'s loss depends on ``x_i`` alone*. That holds for
any model evaluated example-wise (eval-mode batch norm, layer norm, no batch norm) but **not** for
batch norm in training mode, whose batch statistics couple all examples of the batch. Evaluate
train-mode batch-norm models with batch statistics held fixed (the LLR training objective uses the
statistics of the nominal batch, per appendix F.2 of the paper; see
``robustjax.training._llr.llr_objective``).

References:
  Qin et al., *Adversarial Robustness through Local Linearization*, NeurIPS 2019,
  Eqns (5)-(8), Algorithm 1 (appendix E).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, PRNGKey
from robustjax.attacks import _base as _attack_base
from robustjax.attacks import _pgd as _attack_pgd
from robustjax.projections._lp import NORMS
from robustjax.projections._lp import per_example_norm
from robustjax.projections._lp import project
from robustjax.projections._lp import random_in_ball

__all__ = [
    "STEP_RULES",
    "GapSearch",
    "LinearityTerms",
    "LocalLinearity",
    "linearity_gap",
    "linearity_terms",
    "local_linearity",
    "llr_penalty",
    "maximize_linearity_gap",
]

#: Step rules of the inner maximisation: the attack library's set, the same object as
#: :data:`robustjax.attacks.STEP_RULES` (``"sign"``, ``"normalized"``, ``"adam"``), resolved by
#: the same function (:func:`robustjax.attacks._base.step_rule_transform`), so the LLR inner
#: loop, ADV-k training and the PGD attacks share one implementation. An
#: ``optax.GradientTransformation`` is accepted too. The measures' default is ``"adam"`` (the
#: paper's, Algorithm 1); ``None`` is the attacks' default (``"sign"`` for ℓ∞,
#: ``"normalized"`` for ℓ2).
STEP_RULES = _attack_base.STEP_RULES

LossOfInputs = Callable[[Array], Array]


def resolve_unroll(unroll: int | bool | None) -> int | bool:
    """Unroll factor of an ascent loop: the attack library's rule (one rule for all loops).

    ``None`` (default): a rolled loop (:func:`robustjax.attacks._pgd.resolve_unroll`). An explicit
    ``unroll`` must be ``True``/``False`` or a positive int. Results agree up to float32
    rounding; only speed and compile time differ.
    """
    if unroll is not None and not isinstance(unroll, bool):
        V.check_positive_int(unroll, "unroll")
    return _attack_pgd.resolve_unroll(unroll)


class LinearityTerms(NamedTuple):
    r"""Result of :func:`linearity_terms`: three ``[N]`` arrays.

    Attributes:
      loss_x: :math:`\ell(x)`.
      directional: :math:`\delta^\top \nabla_x \ell(x)`.
      loss_x_delta: :math:`\ell(x + \delta)`.
    """

    loss_x: Array
    directional: Array
    loss_x_delta: Array


class GapSearch(NamedTuple):
    r"""Result of :func:`maximize_linearity_gap`.

    Attributes:
      delta: ``[N, ...]`` the perturbation found (gradient-stopped).
      gap: ``[N]`` its gap :math:`g(\delta; x)`, or ``None`` when ``keep_best=False``.
    """

    delta: Array
    gap: Array | None


class LocalLinearity(NamedTuple):
    """Result of :func:`local_linearity`.

    Attributes:
      gamma: ``[N]``, :math:`\\gamma(\\epsilon, x) = g(\\delta_{LLR}; x)`.
      delta: ``[N, ...]``, the maximiser :math:`\\delta_{LLR}` found (gradient-stopped).
    """

    gamma: Array
    delta: Array


def _bcast(v: Array, like: Array) -> Array:
    return jnp.reshape(v, v.shape + (1,) * (like.ndim - v.ndim))


def _dot(a: Array, b: Array) -> Array:
    """Per-example inner product of two ``[N, ...]`` arrays."""
    return jnp.sum(jnp.reshape(a * b, (a.shape[0], -1)), axis=-1)


def _check_loss_out(value: Array, x: Array) -> None:
    if value.shape != (x.shape[0],):
        raise ValueError(
            f"`loss_fn` must map x {tuple(x.shape)} to per-example losses of shape "
            f"({x.shape[0]},), got {tuple(value.shape)}."
        )


def _check_eps(eps, x: Array) -> None:
    """``eps``: a number or a (traced) scalar / ``[N]`` array, ``>= 0`` and not NaN (traced
    values in the checked mode, see :func:`robustjax.checked`)."""
    if isinstance(eps, (jax.Array, jax.core.Tracer)) or hasattr(eps, "shape"):
        if jnp.ndim(eps) not in (0, 1) or (jnp.ndim(eps) == 1 and jnp.shape(eps)[0] != x.shape[0]):
            raise ValueError(
                f"`eps` must be a scalar or have shape ({x.shape[0]},), got {jnp.shape(eps)}."
            )
        if not isinstance(eps, (jax.Array, jax.core.Tracer)):
            eps = jnp.asarray(eps)
    V.check_nonnegative_value(eps, "eps", scalar=False)


def _check_x(x, box, *, name: str = "x") -> Array:
    """Images or features ``[N, ...]`` (rank 2-4; NHWC for rank 4), finite, inside ``box``."""
    V.check_images(x, name, rank=(2, 3, 4), box=box)
    return jnp.asarray(x)


def _check_box(box) -> None:
    if box is None:
        return
    if not (isinstance(box, (tuple, list)) and len(box) == 2):
        raise ValueError(f"`box` must be a pair (lo, hi) or None, got {box!r}.")
    lo, hi = (V._check_number(b, "box") for b in box)
    if not lo < hi:
        raise ValueError(f"`box` must have lo < hi, got {box!r}.")


def _step_transform(step_rule, norm: str):
    """The attack library's step rule (validated there); ``None`` is its per-norm default."""
    return _attack_base.step_rule_transform(step_rule, norm)


def linearity_terms(
    loss_fn: LossOfInputs,
    x: ArrayLike,
    delta: ArrayLike,
    *,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> LinearityTerms:
    r"""The pieces of :math:`g(\delta; x)`: ``(loss_x, directional, loss_x_delta)``.

    .. math:: \ell(x),\quad \delta^\top \nabla_x \ell(x),\quad \ell(x + \delta)

    The directional derivative comes from one forward-mode pass (``jax.jvp``), which is exact per
    example when examples do not interact (see the module note on batch norm). All three are
    differentiable with respect to whatever ``loss_fn`` closes over (e.g. model parameters).

    Args:
      loss_fn: ``x [N, ...] -> [N]`` per-example loss.
      x: ``[N, ...]`` nominal inputs (``[N, H, W, C]`` images, or ``[N, D]`` features), inside
        ``box``.
      delta: ``[N, ...]`` perturbations.
      box: the domain of ``x`` (checked, not enforced); ``None`` means unbounded.

    Returns:
      :class:`LinearityTerms` of three ``[N]`` arrays. Cost: one JVP (about 2-3 forward
      passes) plus one forward pass.
    """
    _check_box(box)
    x = _check_x(x, box)
    delta = jnp.asarray(delta, x.dtype)
    if delta.shape != x.shape:
        raise ValueError(
            f"`delta` must have the shape of `x` {tuple(x.shape)}, got {tuple(delta.shape)}."
        )
    V.check_finite(delta, "delta")
    loss_x, directional = jax.jvp(loss_fn, (x,), (delta,))
    _check_loss_out(loss_x, x)
    loss_xd = loss_fn(x + delta)
    return LinearityTerms(loss_x, directional, loss_xd)


def linearity_gap(
    loss_fn: LossOfInputs,
    x: ArrayLike,
    delta: ArrayLike,
    *,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    r"""Gap between the loss and its first-order Taylor model, per example (Eqn 5).

    .. math:: g(\delta; x) = \left|\ell(x + \delta) - \ell(x) - \delta^\top \nabla_x \ell(x)\right|

    Args:
      loss_fn: ``x [N, ...] -> [N]`` per-example loss, e.g.
        ``lambda x: cross_entropy(logits_fn(x), y)``. Examples must not interact (module note).
      x: ``[N, ...]`` nominal inputs, inside ``box``.
      delta: ``[N, ...]`` perturbations (not projected or clipped here).
      box: the domain of ``x`` (checked); ``None`` means unbounded.

    Returns:
      ``[N]``, non-negative; zero at ``delta = 0``. Differentiable with respect to anything
      ``loss_fn`` closes over. Cost: one JVP and one forward pass.

    References:
      Qin et al. 2019, Eqn (5).
    """
    loss_x, directional, loss_xd = linearity_terms(loss_fn, x, delta, box=box)
    return jnp.abs(loss_xd - loss_x - directional)


def _loss_and_input_grad(loss_fn: LossOfInputs, x: Array):
    loss_x, vjp = jax.vjp(loss_fn, x)
    _check_loss_out(loss_x, x)
    (grad_x,) = vjp(jnp.ones_like(loss_x))
    return loss_x, grad_x


def _is_key_batch(key) -> bool:
    return (isinstance(key, (jax.Array, jax.core.Tracer)) and jnp.ndim(key) == 1
            and jnp.issubdtype(key.dtype, jax.dtypes.prng_key))


def random_delta(key: PRNGKey, x: Array, *, eps, norm: str) -> Array:
    """Uniform random point of the ε-ball per example (Algorithm 1 line 5).

    ``key`` is one PRNG key, or one key per example (shape ``[N]``), which makes each example's
    start independent of how the batch is split across devices.
    """
    if _is_key_batch(key):
        if key.shape[0] != x.shape[0]:
            raise ValueError(f"`key` must be one key or {x.shape[0]} keys, got {key.shape[0]}.")
        unit = jax.vmap(
            lambda k: random_in_ball(k, (1,) + x.shape[1:], eps=1.0, norm=norm, dtype=x.dtype)[0]
        )(key)
        e = jnp.asarray(eps, x.dtype)
        return unit * (_bcast(e, unit) if e.ndim else e)
    V.check_key(key)
    return random_in_ball(key, x.shape, eps=eps, norm=norm, dtype=x.dtype)


def _check_search_args(key, x, *, eps, steps, step_size, norm, step_rule, box, unroll):
    """Validate the arguments shared by the γ estimators; returns ``(x, tx, unroll)``."""
    V.check_positive_int(steps, "steps")
    V.check_positive(step_size, "step_size")
    V.check_choice(norm, "norm", NORMS)
    tx = _step_transform(step_rule, norm)
    unroll = resolve_unroll(unroll)
    _check_box(box)
    if not _is_key_batch(key):
        V.check_key(key)
    x = _check_x(x, box)
    _check_eps(eps, x)
    return x, tx, unroll


def maximize_linearity_gap(
    loss_fn: LossOfInputs,
    key: PRNGKey,
    x: ArrayLike,
    *,
    eps: float | ArrayLike,
    steps: int,
    step_size: float,
    norm: str = "linf",
    step_rule: str | optax.GradientTransformation | None = "adam",
    box: tuple[float, float] | None = (0.0, 1.0),
    keep_best: bool = True,
    loss_x: ArrayLike | None = None,
    grad_x: ArrayLike | None = None,
    unroll: int | bool | None = None,
) -> GapSearch:
    r"""The inner loop of Algorithm 1: projected ascent on :math:`g(\delta; x)`.

    Starts uniformly in the ball, then ``steps`` times
    :math:`\delta \leftarrow \Pi(\delta + s \cdot \mathrm{Rule}(\nabla_\delta g))`, where
    :math:`\nabla_\delta g = \mathrm{sign}(r)\,(\nabla\ell(x+\delta) - \nabla\ell(x))` and
    :math:`r = \ell(x+\delta) - \ell(x) - \delta^\top\nabla\ell(x)`. :math:`\ell(x)` and
    :math:`\nabla\ell(x)` are computed once and reused by every step.

    Algorithm 1 writes the step as ``δ ← Proj(δ − s·Optimizer(g))``; since γ is a maximum we
    *ascend* (``Optimizer`` applied to ``−∇g``). The algorithm averages ``∇g`` over the batch;
    we differentiate the sum, which gives each example its own gradient (Adam is element-wise,
    so this changes nothing but the relative size of Adam's ``1e-8`` denominator guard).

    Args:
      loss_fn: ``x [N, ...] -> [N]``; examples must not interact.
      key: PRNG key for the uniform start, or one key per example (``[N]``).
      x: ``[N, ...]`` nominal inputs (``[N, H, W, C]`` images or ``[N, D]``), inside ``box``.
      eps: ball radius ``>= 0``, a number or a (traced) scalar / ``[N]`` array.
      steps: ``M >= 1`` ascent steps.
      step_size: ``s > 0``.
      norm: ``"linf"`` or ``"l2"``.
      step_rule: a name in :data:`STEP_RULES` (default ``"adam"``, the paper's), ``None``
        (the attacks' per-norm default) or an ``optax.GradientTransformation``.
      box: ``x`` must lie in it and ``x + δ`` is kept inside it; default ``(0, 1)`` (images);
        ``None`` means unbounded (the paper's bare :math:`B(\epsilon)`).
      keep_best: if ``True`` return the iterate with the largest gap among ``δ_0 … δ_M``
        (one extra forward pass at ``δ_M``) and that gap; else return ``δ_M`` and ``None``.
      loss_x, grad_x: optionally precomputed ``ℓ(x) [N]`` and ``∇ℓ(x) [N, ...]``.
      unroll: unroll factor of the step loop (speed only; see :func:`resolve_unroll`).

    Returns:
      :class:`GapSearch` ``(delta [N, ...], gap [N] or None)``, both gradient-stopped.
      Cost: ``O((M + 1)·(fwd + bwd))`` (+ one fwd when ``keep_best``).
    """
    x, tx, unroll = _check_search_args(key, x, eps=eps, steps=steps, step_size=step_size,
                                       norm=norm, step_rule=step_rule, box=box, unroll=unroll)
    x = jax.lax.stop_gradient(x)
    if loss_x is None or grad_x is None:
        loss_x, grad_x = _loss_and_input_grad(loss_fn, x)
    loss_x = jax.lax.stop_gradient(jnp.asarray(loss_x))
    grad_x = jax.lax.stop_gradient(jnp.asarray(grad_x))

    def proj(x_new):
        return project(x_new, x, eps=eps, norm=norm, box=box)

    def gap_and_grad(delta):
        loss_xd, vjp = jax.vjp(loss_fn, x + delta)
        r = loss_xd - loss_x - _dot(delta, grad_x)
        sgn = jnp.where(r >= 0, 1.0, -1.0).astype(loss_xd.dtype)
        (g_pert,) = vjp(sgn)
        return jnp.abs(r), g_pert - _bcast(sgn, grad_x) * grad_x

    def gap_only(delta):
        return jnp.abs(loss_fn(x + delta) - loss_x - _dot(delta, grad_x))

    # The loop is the attack library's: its step rules (one optax transform per rule) and its
    # step runner (Python loop when fully unrolled, else lax.fori_loop).
    delta0 = proj(x + random_delta(key, x, eps=eps, norm=norm)) - x
    neg = jnp.full((x.shape[0],), -jnp.inf, x.dtype)

    def update(carry):
        delta, opt_state, best_g, best_d = carry
        gap, grad = gap_and_grad(delta)
        if keep_best:
            better = gap > best_g
            best_d = jnp.where(_bcast(better, delta), delta, best_d)
            best_g = jnp.where(better, gap, best_g)
        direction, opt_state = tx.update(grad, opt_state, delta)
        delta = proj(x + delta + step_size * direction) - x
        return (delta, opt_state, best_g, best_d), None

    (delta, _, best_g, best_d), _ = _attack_pgd.run_steps(
        update, (delta0, tx.init(delta0), neg, delta0), steps, unroll)
    if not keep_best:
        return GapSearch(jax.lax.stop_gradient(delta), None)
    gap = gap_only(delta)
    better = gap > best_g
    best_d = jnp.where(_bcast(better, delta), delta, best_d)
    best_g = jnp.where(better, gap, best_g)
    return GapSearch(jax.lax.stop_gradient(best_d), jax.lax.stop_gradient(best_g))


def _search_with_restarts(loss_fn, key, x, *, restarts, **kw) -> Array:
    """Best ``δ`` per example over ``restarts`` runs of :func:`maximize_linearity_gap`."""
    V.check_positive_int(restarts, "restarts")
    x, _, _ = _check_search_args(key, x, **kw)
    if restarts == 1:
        return maximize_linearity_gap(loss_fn, key, x, keep_best=True, **kw)[0]
    loss_x, grad_x = _loss_and_input_grad(loss_fn, jax.lax.stop_gradient(x))
    if _is_key_batch(key):
        keys = jax.vmap(lambda r: jax.vmap(lambda k: jax.random.fold_in(k, r))(key))(
            jnp.arange(restarts))
    else:
        keys = jax.random.split(key, restarts)

    def one(k):
        return maximize_linearity_gap(loss_fn, k, x, keep_best=True, loss_x=loss_x,
                                      grad_x=grad_x, **kw)

    deltas, gaps = jax.vmap(one)(keys)  # [R, N, ...], [R, N]
    best = jnp.argmax(gaps, axis=0)
    return jax.lax.stop_gradient(jnp.take_along_axis(
        deltas, jnp.reshape(best, (1,) + best.shape + (1,) * (x.ndim - 1)), axis=0)[0])


def local_linearity(
    loss_fn: LossOfInputs,
    key: PRNGKey,
    x: ArrayLike,
    *,
    eps: float | ArrayLike,
    steps: int,
    step_size: float,
    norm: str = "linf",
    step_rule: str | optax.GradientTransformation | None = "adam",
    box: tuple[float, float] | None = (0.0, 1.0),
    restarts: int = 1,
    unroll: int | bool | None = None,
) -> LocalLinearity:
    r"""Local linearity measure :math:`\gamma(\epsilon, x)` and its maximiser (Eqn 6).

    .. math:: \gamma(\epsilon, x) = \max_{\delta \in B(\epsilon)} g(\delta; x),\qquad
              \delta_{LLR} = \arg\max_{\delta \in B(\epsilon)} g(\delta; x)

    The maximum is estimated by the paper's inner loop (uniform start, ``steps`` Adam-driven
    projected ascent steps of size ``step_size``; see :func:`maximize_linearity_gap`). Choice:
    we keep the best iterate per example (the estimate is then never below the gap at the
    random start). The returned ``gamma`` is recomputed at the gradient-stopped ``delta``, so it
    is differentiable with respect to what ``loss_fn`` closes over (the maximiser is treated as
    a constant — Danskin's theorem).

    Args:
      loss_fn: ``x [N, ...] -> [N]`` per-example loss; examples must not interact (no train-mode
        batch norm).
      key: PRNG key (uniform start), or one key per example (``[N]``).
      x: ``[N, ...]`` nominal inputs (``[N, H, W, C]`` images or ``[N, D]``), inside ``box``.
      eps: radius ``>= 0`` of :math:`B(\epsilon)`; number, or (traced) scalar / ``[N]``.
      steps: ``M``. step_size: ``s``.
      norm: ``"linf"`` (the paper's) or ``"l2"`` (use ``step_rule="normalized"`` there: Adam's
        per-coordinate normalisation is a poor ascent direction on an ℓ2 sphere).
      step_rule: a name in :data:`STEP_RULES` (default ``"adam"``, the paper's), ``None`` or an
        optax transform.
      box: ``x`` must lie in it and ``x + δ`` is kept inside it; default ``(0, 1)`` (images);
        ``None`` is the paper's :math:`B(\epsilon)` alone.
      restarts: independent uniform starts (vmapped); the best per example is kept. The
        gap is not concave in δ (its sign picks one of two basins at the start), so one start
        can stop at a local maximum; a few restarts make the estimate reliable for evaluation.
      unroll: unroll factor of the step loop (speed only; see :func:`resolve_unroll`).

    Returns:
      :class:`LocalLinearity` ``(gamma [N], delta [N, ...])``.
      Cost: ``O(R·(M + 1)·(fwd + bwd))`` plus one JVP, ``R = restarts``.

    References:
      Qin et al. 2019, Eqns (5)-(6), Algorithm 1 lines 5-9.
    """
    delta = _search_with_restarts(
        loss_fn, key, x, restarts=restarts, eps=eps, steps=steps,
        step_size=step_size, norm=norm, step_rule=step_rule, box=box, unroll=unroll,
    )
    # x + delta may leave the box when box=None; the nominal x was checked above.
    loss_x, directional, loss_xd = linearity_terms(loss_fn, x, delta, box=None)
    return LocalLinearity(gamma=jnp.abs(loss_xd - loss_x - directional), delta=delta)


def llr_penalty(
    loss_fn: LossOfInputs,
    key: PRNGKey,
    x: ArrayLike,
    *,
    eps: float | ArrayLike,
    lambda_: float | ArrayLike = 4.0,
    mu: float | ArrayLike = 0.5,
    steps: int,
    step_size: float,
    norm: str = "linf",
    step_rule: str | optax.GradientTransformation | None = "adam",
    box: tuple[float, float] | None = (0.0, 1.0),
    restarts: int = 1,
    unroll: int | bool | None = None,
) -> Array:
    r"""The LLR regulariser of Eqn (8), per example.

    .. math:: \lambda\,\gamma(\epsilon, x) + \mu\,\left|\delta_{LLR}^\top \nabla_x \ell(x)\right|

    Differentiable with respect to what ``loss_fn`` closes over, with :math:`\delta_{LLR}` held
    constant. Arguments as in :func:`local_linearity`; ``lambda_, mu >= 0`` (numbers or
    traced scalars), by default the (λ, μ) = (4, 0.5) of Tables F2/F3 (appendix F.2's text
    says μ = 3, which contradicts the tables; see ``robustjax.objectives.llr_objective``).

    Returns:
      ``[N]``. Cost: that of :func:`local_linearity`.

    References:
      Qin et al. 2019, Eqn (8) and Algorithm 1 line 10.
    """
    V.check_nonnegative_value(lambda_, "lambda_")
    V.check_nonnegative_value(mu, "mu")
    delta = _search_with_restarts(
        loss_fn, key, x, restarts=restarts, eps=eps, steps=steps,
        step_size=step_size, norm=norm, step_rule=step_rule, box=box, unroll=unroll,
    )
    loss_x, directional, loss_xd = linearity_terms(loss_fn, x, delta, box=None)
    gamma = jnp.abs(loss_xd - loss_x - directional)
    return lambda_ * gamma + mu * jnp.abs(directional)
