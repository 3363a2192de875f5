r"""Training objectives of the LLR paper: LLR (Algorithm 1 / Eqn 8), TRADES and ADV-k (PGD-k).

Each factory returns an *objective*
``objective(params, state, batch, key) -> (loss, (new_batch_stats, metrics))`` (the contract
of ``robustjax.training``): ``state.apply_fn`` is ``model.apply`` of a Flax Linen classifier
taking ``train=...``, ``state.batch_stats`` its running batch-norm statistics (empty for
models without batch norm), ``state.step`` the update count (used by ε schedules) and
``batch = {"image": x [N, H, W, C], "label": y [N]}`` (optionally ``"index"`` ``[N]``, the
global position of each example, which then seeds per-example random starts).

**Batch norm in LLR (appendix F.2).** The paper evaluates every term at the *local batch
statistics of the nominal point*: ``ℓ(x; μ, σ) + μ|δᵀ∇ℓ(x; μ, σ)| + λ g(δ; x, μ, σ)``. We
implement this by running the nominal batch once in train mode while a Flax method interceptor
records, for every ``nn.BatchNorm`` layer, the batch mean and variance of its input (computed by
Flax's own ``_compute_stats``, hence identical to what the layer uses). Those statistics are then
placed where the running averages normally sit, and every LLR forward pass — at ``x`` and at
``x + δ``, inner loop and outer loss — is ``apply_fn({"params", "batch_stats": nominal},
·, train=False)``. Hence (i) at ``δ = 0`` the fixed-statistics network equals the train-mode
network on the nominal batch, (ii) the perturbed examples never influence the statistics
(concatenating nominal and perturbed batches would — that is wrong), (iii) examples do not
interact, so one backward pass of the summed loss gives exact per-example input gradients, and
(iv) gradients with respect to the parameters still flow through the statistics, as in ordinary
batch-norm training. The running averages are updated from the nominal pass only. Limitations:
dropout is off in the LLR passes (``train=False``); a BatchNorm module called more than once per
forward pass, or inside lifted transforms (``nn.scan``), is not supported (a ``ValueError`` says
so when the recorded statistics do not match ``state.batch_stats``).

References:
  Qin et al., *Adversarial Robustness through Local Linearization*, NeurIPS 2019 (Eqn 8,
  Algorithm 1, appendix F.2); Zhang et al., *TRADES*, ICML 2019; Madry et al., ICLR 2018.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from robustjax import losses as _losses
from robustjax._src import validation as V
from robustjax._src.types import Array, PRNGKey, PyTree
from robustjax.attacks import _base as _attack_base
from robustjax.attacks import _pgd as _attack_pgd
from robustjax.linearity._measures import _loss_and_input_grad
from robustjax.linearity._measures import maximize_linearity_gap
from robustjax.linearity._measures import random_delta
from robustjax.linearity._measures import resolve_unroll
from robustjax.projections._lp import NORMS
from robustjax.projections._lp import project

__all__ = [
    "nominal_batch_stats",
    "llr_objective",
    "trades_objective",
    "adv_k_objective",
]

Objective = Callable[[PyTree, Any, dict, PRNGKey], tuple[Array, tuple[PyTree, dict]]]
Schedule = Callable[[Array], Array]


# ----------------------------------------------------------------------------------------------
# helpers


def _eps_at(eps: float | Schedule, step) -> Array | float:
    return eps(step) if callable(eps) else eps


def _check_eps_arg(eps) -> None:
    if not callable(eps):
        V.check_nonnegative_value(eps, "eps")


def _start_keys(key: PRNGKey, batch: dict) -> PRNGKey:
    """One key, or one key per example when the batch carries global ``"index"`` positions."""
    index = batch.get("index")
    if index is None:
        return key
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(index))


def _check_batch(batch: Any, box) -> tuple[Array, Array]:
    """``batch["image"]`` ``[N, H, W, C]`` in ``box`` and ``batch["label"]`` int ``[N]``; the
    label range is checked against the logits by :func:`_check_label_range`."""
    if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
        raise ValueError("`batch` must be a dict with 'image' and 'label'.")
    x, y = batch["image"], batch["label"]
    V.check_images(x, "batch['image']", box=box)
    V.check_labels(y, "batch['label']", batch_size=jnp.shape(x)[0])
    return x, y


def _check_label_range(y: Array, logits: Array) -> None:
    V.check_labels(y, "batch['label']", num_classes=int(logits.shape[-1]))


def _variables(params: PyTree, batch_stats: PyTree) -> dict:
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    return variables


def _set_path(tree: dict, path: tuple[str, ...], value: dict) -> None:
    node = tree
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value


def nominal_batch_stats(
    apply_fn: Callable, params: PyTree, batch_stats: PyTree, x: Array, *, rngs: dict | None = None
) -> tuple[Array, PyTree, PyTree]:
    """Train-mode forward pass that also returns each BatchNorm layer's batch statistics.

    Args:
      apply_fn: ``model.apply`` of a Linen classifier taking ``train=``.
      params: the parameters (may be traced; gradients flow through the statistics).
      batch_stats: the running statistics (``state.batch_stats``; non-empty).
      x: ``[N, H, W, C]`` nominal batch.
      rngs: optional rngs for ``apply_fn`` (e.g. dropout).

    Returns:
      ``(logits [N, K], new_running_stats, nominal_stats)`` where ``nominal_stats`` has the
      structure of ``batch_stats`` and holds the batch mean/variance (``"mean"``, ``"var"``) of
      every BatchNorm layer's input for this batch. Feeding it as ``batch_stats`` with
      ``train=False`` reproduces the train-mode forward on ``x`` exactly.

    Raises:
      ValueError: if the recorded statistics do not cover ``batch_stats`` (unsupported layer
        arrangement, see the module docstring).
    """
    import flax.linen as nn  # training layer only
    from flax.linen import normalization as _norm

    recorded: dict = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
            ura = args[1] if len(args) > 1 else kwargs.get("use_running_average")
            ura = nn.merge_param("use_running_average", module.use_running_average, ura)
            if not ura and not module.is_initializing():
                h = args[0]
                feature_axes = _norm._canonicalize_axes(h.ndim, module.axis)
                reduction_axes = tuple(i for i in range(h.ndim) if i not in feature_axes)
                mean, var = _norm._compute_stats(
                    h,
                    reduction_axes,
                    dtype=module.dtype,
                    axis_name=module.axis_name,
                    axis_index_groups=module.axis_index_groups,
                    use_fast_variance=module.use_fast_variance,
                    mask=kwargs.get("mask"),
                    force_float32_reductions=module.force_float32_reductions,
                )
                path = tuple(module.path)
                if path in recorded:
                    raise ValueError(
                        f"BatchNorm layer {path} is called more than once per forward pass; "
                        "nominal-point statistics are not supported for it."
                    )
                recorded[path] = {"mean": mean, "var": var}
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        logits, updates = apply_fn(
            _variables(params, batch_stats), x, train=True, rngs=rngs, mutable=["batch_stats"]
        )
    nominal: dict = {}
    for path, value in recorded.items():
        _set_path(nominal, path, value)
    if not _same_paths(nominal, batch_stats):
        raise ValueError(
            "Could not record the nominal batch statistics of every BatchNorm layer "
            f"(recorded {sorted(recorded)}); see robustjax.training._llr for the supported "
            "layer arrangements."
        )
    return logits, updates["batch_stats"], nominal


def _project_start(x: Array, x_init: Array, *, eps, norm: str, box) -> tuple[Array, Array]:
    x = jax.lax.stop_gradient(x)
    return x, project(jax.lax.stop_gradient(x_init), x, eps=eps, norm=norm, box=box)


def _adv_example(
    logits_fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    x_init: Array,
    *,
    eps,
    steps: int,
    step_size: float,
    norm: str,
    step_rule: str,
    box,
    unroll: int | bool | None = None,
) -> Array:
    """PGD-k on the cross-entropy from ``x_init``: the attack library's
    :func:`robustjax.attacks.make_pgd` step (step rule, projection onto the ε-ball and
    ``box``) run ``steps`` times by its step runner. Returns the gradient-stopped ``x_adv``."""
    x, x0 = _project_start(x, x_init, eps=eps, norm=norm, box=box)
    attack = _attack_pgd.make_pgd(logits_fn, x, y, eps=eps, norm=norm, step_size=step_size,
                                  step_rule=step_rule, loss="ce", box=box)
    state, _ = _attack_pgd.run_steps(attack.update, attack.init(x0), steps,
                                     resolve_unroll(unroll))
    return jax.lax.stop_gradient(state.x)


def _ascend(
    loss_fn: Callable[[Array], Array],
    x: Array,
    x_init: Array,
    *,
    eps,
    steps: int,
    step_size: float,
    norm: str,
    step_rule: str,
    box,
    unroll: int | bool | None = None,
) -> Array:
    """Projected ascent on a per-example ``loss_fn(x) -> [N]`` that is not a classification
    loss of :func:`robustjax.attacks.make_pgd` (TRADES' KL): the same iteration as
    ``make_pgd`` — the library's step rule, then projection onto the ε-ball and ``box`` — run
    by the library's step runner. Returns the gradient-stopped ``x_adv``."""
    x, x0 = _project_start(x, x_init, eps=eps, norm=norm, box=box)
    tx = _attack_base.step_rule_transform(step_rule, norm)

    def update(carry):
        xa, opt = carry
        value, vjp = jax.vjp(loss_fn, xa)
        (grad,) = vjp(jnp.ones_like(value))
        u, opt = tx.update(grad, opt, xa)
        return (project(xa + step_size * u, x, eps=eps, norm=norm, box=box), opt), None

    (xa, _), _ = _attack_pgd.run_steps(update, (x0, tx.init(x0)), steps,
                                       resolve_unroll(unroll))
    return jax.lax.stop_gradient(xa)


def _same_paths(a: PyTree, b: PyTree) -> bool:
    def paths(t):
        return sorted(
            tuple(str(getattr(k, "key", k)) for k in path)
            for path, _ in jax.tree_util.tree_leaves_with_path(t)
        )

    return paths(a) == paths(b)


def _accuracy(logits: Array, y: Array) -> Array:
    return jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))


# ----------------------------------------------------------------------------------------------
# LLR


def llr_objective(
    *,
    eps: float | Schedule,
    lambda_: float = 4.0,
    mu: float = 0.5,
    steps: int,
    step_size: float,
    nominal_weight: float = 1.0,
    norm: str = "linf",
    step_rule: Any = "adam",
    box: tuple[float, float] | None = (0.0, 1.0),
    unroll: int | bool | None = None,
) -> Objective:
    r"""Local Linearity Regularisation training objective (Eqn 8, Algorithm 1, appendix F.2).

    .. math:: L(\theta) = \frac1N\sum_i \Big[w\,\ell(x_i) + \lambda\, g(\delta_i; x_i)
              + \mu\,|\delta_i^\top \nabla_x \ell(x_i)|\Big],
              \quad \delta_i = \delta_{LLR}(x_i)

    with :math:`\ell` the softmax cross-entropy, all terms at the nominal batch statistics (module
    docstring). :math:`\delta_{LLR}` comes from the inner loop of Algorithm 1 (uniform start,
    ``steps`` Adam-driven projected ascent steps of size ``step_size`` on :math:`g`), run
    with gradient-stopped parameters; as in Algorithm 1 the last iterate is used. The outer
    terms are differentiated with :math:`\delta` constant; :math:`\ell(x)` and
    :math:`\delta^\top\nabla_x\ell(x)` come from one forward-mode JVP along :math:`\delta`,
    differentiated in reverse mode with respect to θ (reverse-over-forward). This is exactly the
    gradient of Eqn 8 (the second-order term :math:`\nabla_\theta\,\delta^\top\nabla_x\ell` is
    kept); a test checks it against reverse-over-reverse.

    Paper settings: CIFAR-10 ``eps=8/255, lambda_=4, mu=0.5, nominal_weight=2, steps=10,
    step_size=0.1``, ε ramped over 15 epochs (``eps=optax.linear_schedule(0.0, 8 / 255,
    15 * steps_per_epoch)``), and weight decay 2e-4, which belongs to the optimizer:
    ``training.fit(..., weight_decay=2e-4)`` or ``training.make_optimizer(weight_decay=2e-4)``
    (coupled L2 on the kernels, the gradient of :math:`\frac{w_d}{2}\sum\|W\|^2`; the
    objectives carry no weight decay, so it is never applied twice).

    **Why μ = 0.5 (the default), not the μ = 3 of appendix F.2's text.** The paper is
    inconsistent: F.2's prose says "λ = 4 and μ = 3" for CIFAR-10, but its own sweep (Table F2)
    tries μ ∈ {0.2, 0.3, 0.5} on Wide-ResNet-28-8 and μ ∈ {0.5, 0.75, 0.85, 2.0} on
    Wide-ResNet-40-8, and the LLR row of the ablation (Table F3, 86.83 % nominal) is exactly F2's
    (λ, μ) = (4, 0.5) row, the network "shown in Table 2". We follow the tables. The scale
    matters: ``μ|δᵀ∇ℓ(x)|`` is about ``μ·ε‖∇ℓ(x)‖₁`` at a vertex of the ℓ∞ ball, which on 784
    MNIST pixels at ε = 0.3 can exceed the nominal loss by orders of magnitude, so a large μ
    makes a constant (input-independent) predictor the cheapest solution. The defaults
    ``lambda_ = 4, mu = 0.5`` are F2's (4, 0.5) row; ImageNet used λ = 3 with μ = 6 or 9.

    Args:
      eps: radius, or a schedule ``step -> eps`` evaluated at ``state.step`` (e.g.
        ``optax.linear_schedule(0.0, eps, ramp_steps)``, the paper's ramp-up).
      lambda_: weight λ of γ (default 4, Table F2). mu: weight μ of the linear term (default
        0.5, Tables F2/F3; see above).
      steps: inner steps M. step_size: inner step size s.
      nominal_weight: weight w of the nominal loss (2 or 3 in the paper).
      norm: ``"linf"`` or ``"l2"``. step_rule: a name in ``robustjax.attacks.STEP_RULES``
        (``"adam"``, the paper's, by default), or an optax transform.
      box: ``x + δ`` is kept in this box (images live in ``[0, 1]``); ``None`` for the bare ball.
      unroll: unroll factor of the inner loop (speed only; default: the attack library's rule,
        a rolled loop, see ``robustjax.linearity._measures.resolve_unroll``).

    Returns:
      An objective; metrics ``loss, nominal_loss, accuracy, gamma, linear_term, eps``
      (batch means).

    Cost model (one training step = objective + its parameter gradient), in units of one
    forward pass F, counting per layer a forward, an activation-gradient and a weight-gradient
    product as F each (so fwd + input-grad = 2F, fwd + full backprop = 3F):

    * nominal ``ℓ(x), ∇ₓℓ(x)`` (frozen θ, reused by all M steps): 2F;
    * inner loop: M × (fwd + input-grad at ``x + δ``) = 2MF;
    * outer, at ``x``: the JVP's primal is the nominal forward (XLA merges the two), its tangent
      along δ is 1F, reverse mode through primal and tangent is 4F: 5F;
    * outer, at ``x + δ``: fwd + backprop: 3F.

    Total ``(2M + 10)F`` against ``(2k + 3)F`` for ADV-k (:func:`adv_k_objective`), i.e. LLR-k /
    ADV-k ≈ 2.4, 2.0, 1.64, 1.30 at k = 1, 2, 4, 10. Lower bound for the exact Eqn-8 gradient:
    reverse-over-reverse sharing the nominal input-gradient pass saves the tangent pass,
    ``(2M + 9)F`` (ratio ≥ 2.2, 1.86, 1.55, 1.26), but XLA:CPU runs that second-order
    reverse pass through transposed strided convolutions about 2× slower than
    reverse-over-forward (measured 11F vs 5F), so it is not used. The fixed extra cost (≥ 6F:
    the nominal input-gradient and the parameter gradient of the second-order term) exceeds
    0.3 × ADV-k's ``(2k + 3)F`` for k ≤ 8, so a 1.3× ratio is unreachable there without
    changing Eqn 8 (the implementation's ``(2k + 10)/(2k + 3)`` reaches 1.3 at k ≈ 10). See
    ``experiments/benchmarks/llr.py`` for measurements.
    """
    _check_eps_arg(eps)
    V.check_nonnegative_value(lambda_, "lambda_")
    V.check_nonnegative_value(mu, "mu")
    V.check_positive_int(steps, "steps")
    V.check_positive(step_size, "step_size")
    V.check_nonnegative_value(nominal_weight, "nominal_weight")
    V.check_choice(norm, "norm", NORMS)
    _attack_base.step_rule_transform(step_rule, norm)  # validates `step_rule`
    resolve_unroll(unroll)  # validates `unroll`

    def objective(params, state, batch, key):
        x, y = _check_batch(batch, box)
        eps_t = _eps_at(eps, state.step)
        if state.batch_stats:
            _, new_stats, stats = nominal_batch_stats(
                state.apply_fn, params, state.batch_stats, x, rngs={"dropout": key}
            )
        else:
            new_stats, stats = state.batch_stats, state.batch_stats

        def logits_at(p, s, z):
            return state.apply_fn(_variables(p, s), z, train=False)

        frozen_p = jax.lax.stop_gradient(params)
        frozen_s = jax.lax.stop_gradient(stats)

        def frozen_loss(z):
            return _losses.cross_entropy(logits_at(frozen_p, frozen_s, z), y)

        _check_label_range(y, jax.eval_shape(lambda z: logits_at(frozen_p, frozen_s, z), x))

        loss0, grad0 = _loss_and_input_grad(frozen_loss, x)
        delta, _ = maximize_linearity_gap(
            frozen_loss, _start_keys(key, batch), x, eps=eps_t, steps=steps,
            step_size=step_size, norm=norm, step_rule=step_rule, box=box, keep_best=False,
            loss_x=loss0, grad_x=grad0, unroll=unroll,
        )

        def loss_and_logits(z):
            logits = logits_at(params, stats, z)
            return _losses.cross_entropy(logits, y), logits

        (loss_x, logits_x), (directional, _) = jax.jvp(
            loss_and_logits, (x,), (delta,)
        )
        loss_xd = _losses.cross_entropy(logits_at(params, stats, x + delta), y)
        gap = jnp.abs(loss_xd - loss_x - directional)
        lin = jnp.abs(directional)
        total = jnp.mean(nominal_weight * loss_x + lambda_ * gap + mu * lin)
        metrics = {
            "loss": total,
            "nominal_loss": jnp.mean(loss_x),
            "accuracy": _accuracy(logits_x, y),
            "gamma": jnp.mean(gap),
            "linear_term": jnp.mean(lin),
            "eps": jnp.asarray(eps_t, jnp.float32),
        }
        return total, (new_stats, metrics)

    return objective


# ----------------------------------------------------------------------------------------------
# TRADES


def trades_objective(
    *,
    beta: float,
    eps: float | Schedule,
    steps: int,
    step_size: float,
    norm: str = "linf",
    init_std: float = 0.001,
    box: tuple[float, float] | None = (0.0, 1.0),
    unroll: int | bool | None = None,
) -> Objective:
    r"""TRADES objective (the LLR paper's baseline; Zhang et al. 2019, Eqn 5).

    .. math:: L(\theta) = \frac1N\sum_i \Big[\mathrm{CE}(f(x_i), y_i)
              + \beta\,\mathrm{KL}\big(p(x_i)\,\|\,p(x_i')\big)\Big],\quad
              x' \approx \arg\max_{x' \in B(x, \epsilon)} \mathrm{KL}(p(x)\|p(x'))

    Inner maximisation as in the reference code: start at ``x + init_std·N(0, I)``, ``steps``
    sign steps (ℓ∞; normalised gradient steps for ℓ2) of size ``step_size``, projecting onto the
    ball and ``box``; the model runs in eval mode (running statistics) during the attack. The
    outer loss runs the model in train mode on ``x`` and then on ``x'`` (each with its own batch
    statistics; the running averages are updated by both, in that order).

    Args:
      beta: weight of the KL term (6 in TRADES). eps: radius or schedule ``step -> eps``.
      steps: attack steps. step_size: attack step size.
      norm: ``"linf"`` or ``"l2"``. init_std: std of the Gaussian start. box: image box.
      Weight decay belongs to the optimizer (``fit(weight_decay=...)``).
      unroll: unroll factor of the attack loop (speed only; default: a rolled loop).

    Returns:
      An objective; metrics ``loss, natural_loss, robust_kl, accuracy, adv_accuracy, eps``.

    Cost: ``O((K + 1)·(fwd + bwd))`` plus one more forward/backward at ``x``.
    """
    V.check_nonnegative_value(beta, "beta")
    _check_eps_arg(eps)
    V.check_positive_int(steps, "steps")
    V.check_positive(step_size, "step_size")
    V.check_choice(norm, "norm", NORMS)
    V.check_nonnegative(init_std, "init_std")
    resolve_unroll(unroll)  # validates `unroll`
    step_rule = None  # the attacks' per-norm default: "sign" for linf, "normalized" for l2

    def objective(params, state, batch, key):
        x, y = _check_batch(batch, box)
        eps_t = _eps_at(eps, state.step)
        k_init, k_drop1, k_drop2 = jax.random.split(key, 3)
        frozen = _variables(jax.lax.stop_gradient(params), state.batch_stats)
        logits_nat_eval = jax.lax.stop_gradient(state.apply_fn(frozen, x, train=False))
        _check_label_range(y, logits_nat_eval)

        def kl_fn(z):
            return _losses.trades_kl(state.apply_fn(frozen, z, train=False), logits_nat_eval)

        x0 = x + init_std * jax.random.normal(k_init, x.shape, x.dtype)
        x_adv = _ascend(kl_fn, x, x0, eps=eps_t, steps=steps, step_size=step_size,
                        norm=norm, step_rule=step_rule, box=box, unroll=unroll)

        def run(stats, z, k):
            if stats:
                out, upd = state.apply_fn(_variables(params, stats), z, train=True,
                                          rngs={"dropout": k}, mutable=["batch_stats"])
                return out, upd["batch_stats"]
            return state.apply_fn({"params": params}, z, train=True, rngs={"dropout": k}), stats

        logits_nat, stats1 = run(state.batch_stats, x, k_drop1)
        logits_adv, stats2 = run(stats1, x_adv, k_drop2)
        nat = _losses.cross_entropy(logits_nat, y)
        kl = _losses.trades_kl(logits_adv, logits_nat)
        total = jnp.mean(nat + beta * kl)
        metrics = {
            "loss": total,
            "natural_loss": jnp.mean(nat),
            "robust_kl": jnp.mean(kl),
            "accuracy": _accuracy(logits_nat, y),
            "adv_accuracy": _accuracy(logits_adv, y),
            "eps": jnp.asarray(eps_t, jnp.float32),
        }
        return total, (stats2, metrics)

    return objective


# ----------------------------------------------------------------------------------------------
# ADV-k


def adv_k_objective(
    *,
    steps: int,
    eps: float | Schedule,
    step_size: float,
    norm: str = "linf",
    step_rule: Any = "sign",
    random_start: bool = True,
    box: tuple[float, float] | None = (0.0, 1.0),
    unroll: int | bool | None = None,
) -> Objective:
    r"""PGD-k adversarial training (ADV-k of the LLR paper; Madry et al. 2018).

    .. math:: L(\theta) = \frac1N\sum_i \mathrm{CE}(f(x_i'), y_i),\quad
              x_i' = \mathrm{PGD}_k(x_i)

    The attack: uniform random start in the ball (``random_start``), ``steps`` (k) projected
    ascent
    steps on the cross-entropy of size ``step_size`` with ``step_rule`` (``"sign"``: Madry's
    FGSM steps; ``"adam"``: the LLR paper's Adam-driven steps), projected onto the ball and
    ``box``; the model runs in eval mode (running statistics) during the attack, as in the
    common reference implementations. The outer loss runs the model in train mode on ``x'``.
    The attack is the attack library's PGD step (:func:`robustjax.attacks.make_pgd`: same step
    rules, projection and step runner as :func:`robustjax.attacks.pgd`), so ADV-k trains against
    exactly the PGD that the evaluation runs.

    Args:
      steps: attack steps k. eps: radius or schedule ``step -> eps``. step_size: attack step
        size.
      norm, step_rule, random_start, box: see above. Weight decay belongs to the optimizer
        (``fit(weight_decay=...)``).
      unroll: unroll factor of the attack loop (speed only; default: a rolled loop).

    Returns:
      An objective; metrics ``loss, adv_accuracy, eps``.

    Cost: ``(2k + 3)F`` in units of a forward pass F: k × (fwd + input-gradient) for the attack
    and fwd + backprop (3F) for the outer loss (cf. :func:`llr_objective`).
    """
    V.check_positive_int(steps, "steps")
    _check_eps_arg(eps)
    V.check_positive(step_size, "step_size")
    V.check_choice(norm, "norm", NORMS)
    _attack_base.step_rule_transform(step_rule, norm)  # validates `step_rule`
    resolve_unroll(unroll)  # validates `unroll`

    def objective(params, state, batch, key):
        x, y = _check_batch(batch, box)
        eps_t = _eps_at(eps, state.step)
        k_start, k_drop = jax.random.split(key)
        frozen = _variables(jax.lax.stop_gradient(params), state.batch_stats)

        def logits_fn(z):
            return state.apply_fn(frozen, z, train=False)

        _check_label_range(y, jax.eval_shape(logits_fn, x))
        x0 = x
        if random_start:
            x0 = x + random_delta(_start_keys(k_start, batch), x, eps=eps_t, norm=norm)
        x_adv = _adv_example(logits_fn, x, y, x0, eps=eps_t, steps=steps, step_size=step_size,
                             norm=norm, step_rule=step_rule, box=box, unroll=unroll)
        if state.batch_stats:
            logits, upd = state.apply_fn(_variables(params, state.batch_stats), x_adv,
                                         train=True, rngs={"dropout": k_drop},
                                         mutable=["batch_stats"])
            new_stats = upd["batch_stats"]
        else:
            logits = state.apply_fn({"params": params}, x_adv, train=True,
                                    rngs={"dropout": k_drop})
            new_stats = state.batch_stats
        _check_label_range(y, logits)
        ce = _losses.cross_entropy(logits, y)
        total = jnp.mean(ce)
        metrics = {
            "loss": total,
            "adv_accuracy": _accuracy(logits, y),
            "eps": jnp.asarray(eps_t, jnp.float32),
        }
        return total, (new_stats, metrics)

    return objective
