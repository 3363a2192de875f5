r"""Attacks on generative-model defenses (DefenseGAN, ABS) of Chen, Xie, Zhu (ICML 2020).

The defended model is a ``logits_fn`` built by :mod:`robustjax.defenses`
(``make_defensegan_logits_fn`` / ``make_abs_logits_fn``); its ``mode`` decides what the gradient
through the latent search :math:`z^*(x')` is (``robustjax.implicit.latent_projection``):

* ``"implicit"`` / ``"neumann"`` / ``"backtrack"`` — the paper's attack (implicit function theorem,
  Lemma 1, Lemma 2);
* ``"bpda"`` — Athalye et al.'s BPDA baseline, Eqn (21) of the supplementary: the classifier's
  gradient at :math:`G(z^*)` is used as the gradient with respect to :math:`x'`.

:func:`generative_cw_l2` runs the minimum-distortion CW-style optimisation of supplementary §D with
any of these gradients; :func:`generative_nes_l2` replaces the gradient by NES (Eqn 20);
:func:`abs_latent_attack` is the ABS latent-space attack (Eqn 22); :func:`advt_cw_l2` is plain
Carlini–Wagner against an (adversarially trained) undefended classifier (§E).

**Failure convention (all attacks here):** an example for which no successful point was found is
returned unchanged (``x_adv == x``); otherwise the successful point with the smallest ℓ2 distance
among everything tried is returned.

References:
  Chen, Xie, Zhu, "On Breaking Deep Generative Model-based Defenses and Beyond", ICML 2020,
  supplementary §D (Eqns 20–22) and §E.
  Athalye, Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018.
  Schott et al., "Towards the first adversarially robust neural network model on MNIST", ICLR 2019.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from robustjax import losses as L
from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.attacks import _base as B
from robustjax.attacks._cw import carlini_wagner_l2
from robustjax.attacks._nes import nes_gradient

__all__ = [
    "SCHEDULES",
    "GenerativeAttackResult",
    "abs_latent_attack",
    "abs_latent_attack_with_info",
    "advt_cw_l2",
    "generative_cw_l2",
    "generative_cw_l2_with_info",
    "generative_nes_l2",
    "generative_nes_l2_with_info",
    "make_defensegan_attack",
    "step_size_schedule",
]

SCHEDULES = ("increasing", "decreasing", "constant")
_BIG = 1e10

# Class-gradient oracle: (x' [N, ...], s, t) -> (logits at x' [N, K], ∇_{x'} Σ f(x') [N, ...]),
# s the binary-search step and t the inner step (both int32 scalars).
_GradOracle = Callable[[Array, Array, Array], tuple[Array, Array]]


def step_size_schedule(t: ArrayLike, *, steps: int, max_step: float = 0.04,
                       schedule: str = "increasing") -> Array:
    r"""Step size :math:`\eta_t` of the sign update at iteration ``t`` (``0 <= t < steps``).

    Supplementary §D: ":math:`\eta = 0.04 \cdot t/T` where t is the current iteration and T the
    number of maximum iterations". Choice (the text is ambiguous about the origin of ``t``): the
    literal reading with ``t`` counted from 1, :math:`\eta_t = \eta_{max}(t+1)/T` for the 0-based
    ``t`` here (``"increasing"``, so no step is zero and the last one is ``max_step``).
    ``"decreasing"`` gives :math:`\eta_{max}(T-t)/T` (the usual annealing) and ``"constant"``
    :math:`\eta_{max}`.

    Returns:
      Scalar step size.
    """
    V.check_choice(schedule, "schedule", SCHEDULES)
    t = jnp.asarray(t, jnp.float32)
    if schedule == "increasing":
        return max_step * (t + 1.0) / steps
    if schedule == "decreasing":
        return max_step * (steps - t) / steps
    return jnp.full((), max_step, jnp.float32)


def _sq_l2(a: Array, b: Array) -> Array:
    return jnp.sum(jnp.reshape(a - b, (a.shape[0], -1)) ** 2, axis=-1)


def _check_common(steps, max_step, schedule, binary_search_steps, initial_const, kappa, box):
    V.check_positive_int(steps, "steps")
    V.check_positive(max_step, "max_step")
    V.check_choice(schedule, "schedule", SCHEDULES)
    V.check_positive_int(binary_search_steps, "binary_search_steps")
    V.check_positive(initial_const, "initial_const")
    V.check_nonnegative_value(kappa, "kappa")
    if box is not None and (len(box) != 2 or not float(box[0]) < float(box[1])):
        raise ValueError(f"`box` must be (lo, hi) with lo < hi or None, got {box!r}.")


class GenerativeAttackResult(NamedTuple):
    """``x_adv`` (``stop_gradient``) and a dict of per-example diagnostics (see each attack)."""

    x_adv: Array
    info: dict


def _min_distortion_search(
    oracle: _GradOracle,
    forward: LogitsFn,
    x: Array,
    y: Array,
    *,
    targeted: bool,
    kappa: float,
    steps: int,
    max_step: float,
    schedule: str,
    binary_search_steps: int,
    initial_const: float,
    box: tuple[float, float] | None,
):
    """Sign-step CW optimisation of supplementary §D with a per-example binary search over λ.

    Returns ``(best_x [N, ...], info)`` with ``info = {"const": [S, N], "success": [S, N],
    "l2": [S, N]}`` (per binary-search step: the λ tried, whether any iterate succeeded and the
    smallest successful ℓ2 distance for that λ, ``inf`` if none).
    """
    n = x.shape[0]

    def succeeded(logits):
        return B.attack_score(logits, y, targeted=targeted) < -kappa

    def one_const(carry, s):
        const, lo, hi, best_d2, best_x = carry

        def step(t, c):
            xp, bd2, bx, cd2 = c
            logits, g_f = oracle(xp, s, t)
            d2 = _sq_l2(xp, x)
            ok = succeeded(logits)
            better = ok & (d2 < bd2)
            bd2 = jnp.where(better, d2, bd2)
            bx = jnp.where(B.bcast(better, xp), xp, bx)
            cd2 = jnp.where(ok, jnp.minimum(cd2, d2), cd2)
            g = 2.0 * (xp - x) + B.bcast(const, xp) * g_f
            eta = step_size_schedule(t, steps=steps, max_step=max_step, schedule=schedule)
            xp = xp - eta.astype(xp.dtype) * jnp.sign(g)
            if box is not None:
                xp = jnp.clip(xp, box[0], box[1])
            return xp, bd2, bx, cd2

        init = (x, best_d2, best_x, jnp.full((n,), jnp.inf, x.dtype))
        xp, best_d2, best_x, const_d2 = lax.fori_loop(0, steps, step, init)
        logits = forward(xp)  # the last iterate: one more forward pass
        d2 = _sq_l2(xp, x)
        ok = succeeded(logits)
        better = ok & (d2 < best_d2)
        best_d2 = jnp.where(better, d2, best_d2)
        best_x = jnp.where(B.bcast(better, xp), xp, best_x)
        const_d2 = jnp.where(ok, jnp.minimum(const_d2, d2), const_d2)
        succ = jnp.isfinite(const_d2)
        hi_new = jnp.where(succ, jnp.minimum(hi, const), hi)
        lo_new = jnp.where(succ, lo, jnp.maximum(lo, const))
        const_new = jnp.where(hi_new < _BIG, (lo_new + hi_new) / 2.0, const * 10.0)
        info = (const, succ, jnp.sqrt(const_d2))
        return (const_new, lo_new, hi_new, best_d2, best_x), info

    init = (jnp.full((n,), initial_const, x.dtype), jnp.zeros((n,), x.dtype),
            jnp.full((n,), _BIG, x.dtype), jnp.full((n,), jnp.inf, x.dtype), x)
    (_, _, _, _, best_x), (consts, succ, l2) = lax.scan(
        one_const, init, jnp.arange(binary_search_steps, dtype=jnp.int32))
    return best_x, {"const": consts, "success": succ, "l2": l2}


def _finish(x, y, best_x, info, *, verify_fn, targeted, kappa):
    if verify_fn is not None:
        score = B.attack_score(verify_fn(best_x), y, targeted=targeted)
        ok = score < -kappa
        best_x = jnp.where(B.bcast(ok, x), best_x, x)
        info = dict(info, verified=ok)
    return GenerativeAttackResult(lax.stop_gradient(best_x), jax.tree.map(lax.stop_gradient, info))


def generative_cw_l2_with_info(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    steps: int = 100,
    max_step: float = 0.04,
    schedule: str = "increasing",
    binary_search_steps: int = 5,
    initial_const: float = 1.0,
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
    verify_fn: LogitsFn | None = None,
) -> GenerativeAttackResult:
    r"""Minimum-ℓ2 CW-style attack of supplementary §D, gradient from ``logits_fn`` (any mode).

    For each constant :math:`\lambda` (per example) it runs ``steps`` sign steps from ``x``

    .. math::
       x' \leftarrow \Pi_{box}\Big(x' - \eta_t\, \mathrm{sign}\big(2(x' - x)
       + \lambda\, \nabla_{x'} f(x')\big)\Big), \qquad
       f = \max(z_y - \max_{j\ne y} z_j, -\kappa)

    with :math:`\eta_t` from :func:`step_size_schedule` (default :math:`0.04\,t/T`) and
    :math:`z` = ``logits_fn(x')``. The gradient :math:`\nabla_{x'} f` is whatever autodiff of
    ``logits_fn`` gives: for a DefenseGAN/ABS model built with ``mode="implicit"``,
    ``"neumann"`` or ``"backtrack"`` it is the paper's attack (gradient through :math:`z^*`);
    with ``mode="bpda"`` it is Eqn (21), :math:`\nabla_{x''}F(x'')|_{x''=G(z^*)}` (the BPDA
    baseline). A 5-step per-example binary search over :math:`\lambda` follows Carlini–Wagner:
    after a success ``hi = λ``, ``λ = (lo+hi)/2``; after a failure ``lo = λ`` and ``λ`` is the
    midpoint if an upper bound exists, else ``10 λ``. Every iterate (and the last point) of every
    :math:`\lambda` is checked with the forward pass already computed; the successful point with
    the smallest ℓ2 distance is returned, **and failed examples are returned unchanged**.

    Choice: success is judged on ``logits_fn``'s forward value. In ``"backtrack"`` mode that value
    is :math:`G(Q(x'))` (``T'`` extra descent steps), not exactly the defense; pass the exact
    defense as ``verify_fn`` (e.g. the same model in ``"bpda"`` mode, whose forward value is the
    defense's) to re-check the returned points: those it does not misclassify are reset to ``x``.

    Args:
      logits_fn: defended model ``x [N, H, W, C] -> logits [N, K]``, differentiable.
      key: PRNG key (unused: the attack is deterministic; kept for the common signature).
      x: clean images ``float32 [N, H, W, C]`` in ``box``.
      y: ``int32 [N]`` true labels.
      steps: ``T`` sign steps per constant.
      max_step: :math:`\eta_{max}` (paper: 0.04).
      schedule: ``"increasing"`` (paper, literal), ``"decreasing"`` or ``"constant"``.
      binary_search_steps: constants tried (paper: 5).
      initial_const: first :math:`\lambda`.
      kappa: CW confidence.
      target: ``None`` (untargeted) or ``int32 [N]`` target labels.
      box: image domain or ``None``.
      verify_fn: optional exact model to re-check the result with (one extra forward pass).

    Returns:
      ``x_adv`` like ``x`` (``stop_gradient``). :func:`generative_cw_l2_with_info` returns
      ``GenerativeAttackResult(x_adv, info)`` with ``info = {"const": [S, N], "success": [S, N]
      bool, "l2": [S, N]}`` per binary-search step (smallest successful ℓ2 for that constant,
      ``inf`` if none) and ``"verified": [N]`` with ``verify_fn``.

    Cost: ``S·(T+1)`` forward and ``S·T`` backward passes of ``logits_fn`` (a DefenseGAN forward is
    ``L·R`` generator passes; the backward per mode, see ``robustjax.implicit``).
    """
    _check_common(steps, max_step, schedule, binary_search_steps, initial_const, kappa, box)
    num_classes = B.check_attack_inputs(logits_fn, key, x, y, box=box)
    x = jnp.asarray(x)
    y, targeted = B.resolve_target(y, target, num_classes)

    def f_sum(xp):
        logits = logits_fn(xp)
        return jnp.sum(L.cw_loss(logits, y, kappa=kappa, target=y if targeted else None)), logits

    grad_fn = jax.grad(f_sum, has_aux=True)

    def oracle(xp, s, t):
        del s, t
        g, logits = grad_fn(xp)
        return logits, g

    best_x, info = _min_distortion_search(
        oracle, logits_fn, x, y, targeted=targeted, kappa=kappa, steps=steps, max_step=max_step,
        schedule=schedule, binary_search_steps=binary_search_steps, initial_const=initial_const,
        box=box)
    return _finish(x, y, best_x, info, verify_fn=verify_fn, targeted=targeted, kappa=kappa)


def generative_cw_l2(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    steps: int = 100,
    max_step: float = 0.04,
    schedule: str = "increasing",
    binary_search_steps: int = 5,
    initial_const: float = 1.0,
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
    verify_fn: LogitsFn | None = None,
) -> Array:
    """:func:`generative_cw_l2_with_info` returning only ``x_adv`` (see there for every argument)."""
    return generative_cw_l2_with_info(logits_fn, key, x, y, steps=steps, max_step=max_step,
        schedule=schedule, binary_search_steps=binary_search_steps,
        initial_const=initial_const, kappa=kappa, target=target, box=box,
        verify_fn=verify_fn).x_adv


def generative_nes_l2_with_info(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    num_samples: int = 50,
    sigma: float = 0.5,
    steps: int = 100,
    max_step: float = 0.04,
    schedule: str = "increasing",
    binary_search_steps: int = 5,
    initial_const: float = 1.0,
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> GenerativeAttackResult:
    r"""Black-box NES baseline, supplementary §D Eqn (20).

    .. math::
       \nabla_{x'}\mathcal L(x') \approx \nabla_{x'}\|x' - x\|_2^2
       + \lambda\, \hat\nabla^{NES}_{x'} f(x')

    Same optimiser, schedule, binary search and failure convention as :func:`generative_cw_l2`;
    the CW margin's gradient is estimated by :func:`robustjax.attacks.nes_gradient` from
    ``num_samples`` antithetic queries with standard deviation ``sigma`` (paper: ``n = 50``,
    :math:`\sigma = 0.5` for DefenseGAN, ``0.1`` for ABS), fresh samples at every step
    (``fold_in(fold_in(key, s), t)`` for binary-search step ``s``). ``logits_fn`` is queried for
    values only. Choice (the paper does not say): the same sign update as Eqn (21).

    Args:
      logits_fn: model (values only) ``[N, H, W, C] -> [N, K]``.
      key: PRNG key of the NES samples.
      x, y: clean images and labels as in :func:`generative_cw_l2`.
      num_samples: NES population ``n`` (even).
      sigma: NES standard deviation.
      steps, max_step, schedule, binary_search_steps, initial_const, kappa, target, box: as in
        :func:`generative_cw_l2`.

    Returns:
      ``x_adv`` (``stop_gradient``); :func:`generative_nes_l2_with_info` returns
      ``GenerativeAttackResult(x_adv, info)`` as :func:`generative_cw_l2_with_info`.

    Cost: ``S·(T·(n+1)+1)`` forward passes of ``logits_fn``, no backward pass.
    """
    _check_common(steps, max_step, schedule, binary_search_steps, initial_const, kappa, box)
    V.check_positive_int(num_samples, "num_samples")
    if num_samples % 2:
        raise ValueError(f"`num_samples` must be even (antithetic pairs), got {num_samples}.")
    V.check_positive(sigma, "sigma")
    num_classes = B.check_attack_inputs(logits_fn, key, x, y, box=box)
    x = jnp.asarray(x)
    y, targeted = B.resolve_target(y, target, num_classes)

    def f(xp):
        return L.cw_loss(logits_fn(xp), y, kappa=kappa, target=y if targeted else None)

    def oracle(xp, s, t):
        logits = logits_fn(xp)
        k = jax.random.fold_in(jax.random.fold_in(key, s), t)
        return logits, nes_gradient(f, k, xp, num_samples=num_samples, sigma=sigma)

    best_x, info = _min_distortion_search(
        oracle, logits_fn, x, y, targeted=targeted, kappa=kappa, steps=steps, max_step=max_step,
        schedule=schedule, binary_search_steps=binary_search_steps, initial_const=initial_const,
        box=box)
    return _finish(x, y, best_x, info, verify_fn=None, targeted=targeted, kappa=kappa)


def generative_nes_l2(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    num_samples: int = 50,
    sigma: float = 0.5,
    steps: int = 100,
    max_step: float = 0.04,
    schedule: str = "increasing",
    binary_search_steps: int = 5,
    initial_const: float = 1.0,
    kappa: float = 0.0,
    target: ArrayLike | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Array:
    """:func:`generative_nes_l2_with_info` returning only ``x_adv`` (see there for every argument)."""
    return generative_nes_l2_with_info(logits_fn, key, x, y, num_samples=num_samples,
        sigma=sigma, steps=steps, max_step=max_step, schedule=schedule,
        binary_search_steps=binary_search_steps, initial_const=initial_const, kappa=kappa,
        target=target, box=box).x_adv


def make_defensegan_attack(
    classifier_fn: LogitsFn,
    generator_fn: Callable[[Array], Array],
    defense_key: PRNGKey,
    *,
    method: str = "implicit",
    defense_kwargs: Mapping[str, Any] | None = None,
    attack_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[PRNGKey, Array, Array], Array]:
    r"""Bind one attack of the paper's comparison to a DefenseGAN: ``attack(key, x, y) -> x_adv``.

    ``method`` is ``"implicit"``, ``"neumann"``, ``"backtrack"`` or ``"unrolled"`` (the paper's
    attack with that gradient through :math:`z^*`), ``"bpda"`` (Eqn 21) — all run
    :func:`generative_cw_l2` on ``make_defensegan_logits_fn(..., mode=method)`` — or ``"nes"``
    (Eqn 20, :func:`generative_nes_l2` with :math:`\sigma = 0.5` unless ``attack_kwargs`` says
    otherwise, on the defense in ``"bpda"`` mode, whose gradient is never used). The defense's
    random starts come from ``defense_key`` (the same for every method, so all attack the same
    deterministic model). For ``"backtrack"`` the result is re-checked on the exact defense
    (``verify_fn``, see :func:`generative_cw_l2`). The result fits
    ``robustjax.evaluation.robustness_report``'s ``attacks`` dictionary.

    Args:
      classifier_fn: ``[N, H, W, C] -> [N, K]``.
      generator_fn: ``z [M, d] -> [M, H, W, C]``.
      defense_key: key of DefenseGAN's random starts.
      method: see above.
      defense_kwargs: keyword options of ``robustjax.defenses.defensegan_reconstruct``
        (``latent_dim`` required; ``mode`` is set from ``method``).
      attack_kwargs: keyword options of the attack.

    Returns:
      ``attack(key, x, y) -> x_adv``.
    """
    from robustjax.defenses import make_defensegan_logits_fn  # defenses imports implicit only

    methods = ("implicit", "neumann", "backtrack", "unrolled", "bpda", "nes")
    V.check_choice(method, "method", methods)
    V.check_key(defense_key, "defense_key")
    dkw = dict(defense_kwargs or {})
    dkw.pop("mode", None)
    akw = dict(attack_kwargs or {})
    exact = make_defensegan_logits_fn(classifier_fn, generator_fn, defense_key, mode="bpda",
                                      **dkw)
    if method == "nes":
        akw.setdefault("sigma", 0.5)
        return functools.partial(generative_nes_l2, exact, **akw)
    model = make_defensegan_logits_fn(classifier_fn, generator_fn, defense_key, mode=method,
                                      **dkw)
    if method == "backtrack":
        akw.setdefault("verify_fn", exact)
    return functools.partial(generative_cw_l2, model, **akw)


def abs_latent_attack_with_info(
    decoder_fn: Callable[[Array], Array],
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    num_classes: int,
    latent_dim: int,
    steps: int = 75,
    eta: float = 0.02,
    increase_every: int = 25,
    eta_growth: float = 2.0,
    binary_search_steps: int = 5,
    abs_kwargs: Mapping[str, Any] | None = None,
) -> GenerativeAttackResult:
    r"""ABS latent-space attack, supplementary §D Eqn (22) (Schott et al.'s latent descent).

    With :math:`c` the wrong class with the highest ABS score at the current :math:`x'` and
    :math:`z^*_c = \arg\min_z \ell_c(z; x')` (ABS's own per-class inference):

    .. math:: x' \leftarrow (1 - \eta)\, x' + \eta\, G_c(z^*_c)

    i.e. a step towards the best reconstruction in a wrong class, from :math:`x' = x`, until the
    defense misclassifies :math:`x'` (an example stops moving once adversarial). :math:`\eta`
    starts at ``eta`` (0.02) and is multiplied by ``eta_growth`` every ``increase_every`` (25)
    steps, ``steps`` (75) steps in all. Choices (the paper says only "increase"): growth ×2,
    capped at 1. Then a ``binary_search_steps`` (5) bisection on :math:`\alpha\in[0, 1]` along
    :math:`x + \alpha(x' - x)` keeps the smallest :math:`\alpha` found adversarial. **Examples
    never made adversarial are returned unchanged** (and so are examples the defense already
    misclassifies: :math:`x' = x`).

    The defense under attack is ``robustjax.defenses.make_abs_logits_fn(decoder_fn, key,
    num_classes=..., latent_dim=..., **abs_kwargs)`` (gradients are never used).

    Args:
      decoder_fn: ``z [K, M, d] -> [K, M, H, W, C]`` (class ``c`` decodes ``z[c]``).
      key: the ABS defense's key (its prior samples).
      x: clean images ``[N, H, W, C]`` in ``[0, 1]``.
      y: true labels ``int32 [N]``.
      num_classes: ``K``.
      latent_dim: ``d``.
      steps: update steps (75).
      eta: initial step (0.02).
      increase_every: steps between increases of :math:`\eta` (25).
      eta_growth: multiplier of :math:`\eta` (``>= 1``).
      binary_search_steps: bisection steps (5).
      abs_kwargs: further options of ``robustjax.defenses.abs_logits``.

    Returns:
      ``x_adv`` like ``x`` (``stop_gradient``); :func:`abs_latent_attack_with_info` returns
      ``GenerativeAttackResult(x_adv, {"found": [N] bool, "alpha": [N]})``.

    Cost: ``steps + binary_search_steps + 1`` ABS forward passes (each ``K`` latent inferences).
    """
    from robustjax.defenses import abs_logits_with_latent

    V.check_positive_int(num_classes, "num_classes")
    V.check_positive_int(latent_dim, "latent_dim")
    V.check_positive_int(steps, "steps")
    V.check_positive(eta, "eta")
    V.check_positive_int(increase_every, "increase_every")
    if eta_growth < 1.0:
        raise ValueError(f"`eta_growth` must be >= 1, got {eta_growth}.")
    V.check_positive_int(binary_search_steps, "binary_search_steps")
    V.check_key(key)
    V.check_images(x, "x")
    V.check_labels(y, "y", num_classes=num_classes)
    V.check_batch_match(x, "x", y, "y")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    kw = dict(abs_kwargs or {})
    kw["mode"] = "bpda"

    def infer(xp):
        logits, z = abs_logits_with_latent(decoder_fn, key, xp, num_classes=num_classes,
                                           latent_dim=latent_dim, **kw)
        return lax.stop_gradient(logits), lax.stop_gradient(z)  # z [K, N, d]

    def is_adv(logits):
        return jnp.argmax(logits, -1) != y

    def step(t, carry):
        xp, found = carry
        logits, z = infer(xp)
        adv = is_adv(logits)
        found = found | adv
        masked = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), -jnp.inf, logits)
        c = jnp.argmax(masked, -1)  # [N] best wrong class
        z_c = jnp.take_along_axis(z, c[None, :, None], axis=0)[0]  # [N, d]
        rec_all = decoder_fn(jnp.broadcast_to(z_c[None], (num_classes,) + z_c.shape))
        target = jnp.take_along_axis(
            rec_all, c[None, :, None, None, None], axis=0)[0].reshape(x.shape)
        e = jnp.minimum(eta * eta_growth ** (t // increase_every).astype(jnp.float32), 1.0)
        moved = jnp.clip((1.0 - e) * xp + e * target, 0.0, 1.0)
        xp = jnp.where(B.bcast(found, xp), xp, moved)
        return xp, found

    xp, found = lax.fori_loop(0, steps, step, (x, jnp.zeros(y.shape, bool)))
    found = found | is_adv(infer(xp)[0])

    def bisect(_, carry):
        lo, hi = carry
        mid = (lo + hi) / 2.0
        adv = is_adv(infer(x + B.bcast(mid, x) * (xp - x))[0])
        return jnp.where(adv, lo, mid), jnp.where(adv, mid, hi)

    n = x.shape[0]
    _, alpha = lax.fori_loop(0, binary_search_steps, bisect,
                             (jnp.zeros((n,), x.dtype), jnp.ones((n,), x.dtype)))
    x_adv = jnp.where(B.bcast(found, x), x + B.bcast(alpha, x) * (xp - x), x)
    x_adv = lax.stop_gradient(x_adv)
    return GenerativeAttackResult(x_adv, {"found": found, "alpha": jnp.where(found, alpha, 0.0)})


def abs_latent_attack(
    decoder_fn: Callable[[Array], Array],
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    num_classes: int,
    latent_dim: int,
    steps: int = 75,
    eta: float = 0.02,
    increase_every: int = 25,
    eta_growth: float = 2.0,
    binary_search_steps: int = 5,
    abs_kwargs: Mapping[str, Any] | None = None,
) -> Array:
    """:func:`abs_latent_attack_with_info` returning only ``x_adv`` (see there for every argument)."""
    return abs_latent_attack_with_info(decoder_fn, key, x, y, num_classes=num_classes,
        latent_dim=latent_dim, steps=steps, eta=eta, increase_every=increase_every,
        eta_growth=eta_growth, binary_search_steps=binary_search_steps,
        abs_kwargs=abs_kwargs).x_adv


def advt_cw_l2(
    logits_fn: LogitsFn,
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    steps: int = 100,
    learning_rate: float = 0.01,
    binary_search_steps: int = 5,
    initial_const: float = 1e-2,
    kappa: float = 0.0,
) -> Array:
    """CW ℓ2 against an undefended (e.g. adversarially trained, "ADVT") classifier, §E.

    "When applied to ADVT our attack degenerates to the original CW attack": this is
    :func:`robustjax.attacks.carlini_wagner_l2` with the paper's 5-step binary search, for the
    DefenseGAN / ABS / ADVT comparison of supplementary Figure 1. Failed examples are returned
    unchanged.

    Cost: ``binary_search_steps · steps · (fwd + bwd)``.
    """
    return carlini_wagner_l2(logits_fn, key, x, y, steps=steps, learning_rate=learning_rate,
                             binary_search_steps=binary_search_steps,
                             initial_const=initial_const, kappa=kappa)


generative_cw_l2.__doc__ = generative_cw_l2_with_info.__doc__
generative_nes_l2.__doc__ = generative_nes_l2_with_info.__doc__
abs_latent_attack.__doc__ = abs_latent_attack_with_info.__doc__
