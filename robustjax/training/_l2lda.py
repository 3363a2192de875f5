"""L2L-DA min-max training (Jang et al., ICCV 2019): a recurrent generator of diverse attacks
trained against the classifier.

One iteration, given a batch ``(x, y)``:

1. draw two latent codes per example, ``z₁, z₂ ~ N(0, I_d)``, and run the T-step recurrence
   (:func:`robustjax.attacks.l2l_perturbation`) for both codes in one batched call;
2. **generator step** — ascend ``mean CE(f(x + δ(z₁, z₂))) + λ · mean d(δ₁, δ₂, z₁, z₂)``
   (mode-seeking diversity, :func:`robustjax.losses.mode_seeking_diversity`) in the generator's
   parameters;
3. **classifier step** — descend ``CE(f(x + δ))`` on the ``2N`` generated examples (the
   perturbations of step 1 under ``stop_gradient``), plus ``clean_weight · CE(f(x))``.

Both steps use the same perturbations and (with ``clean_weight = 0``) the same classifier
forward/backward pass, so one iteration costs one recurrence (``T`` generator forward passes
and ``T - 1`` classifier input gradients on ``2N`` rows plus one on ``N``: the first gradient,
at ``δ⁽⁰⁾ = 0``, is the same for both codes), one backward pass through it for the generator,
and one classifier forward+backward on ``2N`` — see the cost model of :func:`make_l2lda_step`.

Batch-norm modes (choices, documented): the generator runs in train mode and keeps its own
running statistics, threaded through the T steps; inside the generator step the classifier runs
in train mode (batch statistics of the adversarial batch, as it will see them in its own update)
but its running statistics are only updated by the classifier step.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from robustjax._src import validation as V
from robustjax.attacks._l2l import l2l_recurrence
from robustjax.losses import cross_entropy
from robustjax.losses._diversity import mode_seeking_diversity

__all__ = [
    "L2LDAState", "create_l2lda_state", "make_l2lda_step", "l2lda_generator_fn",
    "l2lda_generator_loss", "l2lda_cost_model",
]


class L2LDAState(flax.struct.PyTreeNode):
    """Classifier and generator parameters, batch statistics and optimiser states."""

    step: jax.Array
    clf_params: Any
    clf_batch_stats: Any
    clf_opt_state: Any
    gen_params: Any
    gen_batch_stats: Any
    gen_opt_state: Any
    clf_apply: Callable = flax.struct.field(pytree_node=False)
    gen_apply: Callable = flax.struct.field(pytree_node=False)
    clf_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    gen_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def create_l2lda_state(classifier, generator, key, input_shape, *, clf_tx, gen_tx,
                       clf_variables=None) -> L2LDAState:
    """Initialise both networks (``input_shape = (N, H, W, C)``); ``clf_variables`` warm-starts
    the classifier (e.g. from a pretrained model, as the paper fine-tunes)."""
    kc, kg = jax.random.split(key)
    x = jnp.zeros(input_shape, jnp.float32)
    if clf_variables is None:
        clf_variables = classifier.init(kc, x, train=False)
    n = input_shape[0]
    z = jnp.zeros((n, generator.latent_dim), jnp.float32)
    y = jnp.zeros((n,), jnp.int32)
    gvars = generator.init(kg, x, x, x, z, y, train=False)
    cp, cbs = clf_variables["params"], clf_variables.get("batch_stats", {})
    gp, gbs = gvars["params"], gvars.get("batch_stats", {})
    return L2LDAState(
        step=jnp.zeros((), jnp.int32),
        clf_params=cp, clf_batch_stats=cbs, clf_opt_state=clf_tx.init(cp),
        gen_params=gp, gen_batch_stats=gbs, gen_opt_state=gen_tx.init(gp),
        clf_apply=classifier.apply, gen_apply=generator.apply, clf_tx=clf_tx, gen_tx=gen_tx)


def _clf_call(apply, params, stats, x, *, train):
    if not stats:
        return apply({"params": params}, x, train=train), stats
    if train:
        out, upd = apply({"params": params, "batch_stats": stats}, x, train=True,
                         mutable=["batch_stats"])
        return out, upd["batch_stats"]
    return apply({"params": params, "batch_stats": stats}, x, train=False), stats


def l2lda_generator_fn(generator_apply, variables, *, batch_norm: str = "batch") -> Callable:
    """``generator_fn(x, delta, grad, z, y)`` for :func:`robustjax.attacks.l2l_attack`.

    ``batch_norm`` (choice, documented and tested): how the generator's (class-conditional)
    batch norm normalises at attack time.

    * ``"batch"`` (default) — every recurrence step is normalised with the batch statistics of
      the batch being attacked at that step, exactly as in training (the running statistics are
      not updated). The attack is then the very recurrence the generator was trained to run
      (tested: it reproduces the training perturbation), at the price that the examples of one
      batch interact through the statistics (attack batches of ≥ 32 examples; a batch of one is
      normalised to its own mean).
    * ``"running"`` — eval mode: the running statistics, which training accumulates over the
      activations of *all* T steps. Step ``t`` of the recurrence then sees statistics pooled
      over steps whose activations differ in scale (``δ`` grows from 0 to the ε-sphere), so the
      normalised features — and the perturbation — differ from the trained ones.
    """
    if batch_norm not in ("batch", "running"):
        raise ValueError(f"`batch_norm` must be 'batch' or 'running', got {batch_norm!r}.")

    if batch_norm == "running":
        def generator_fn(x, delta, grad, z, y):
            return generator_apply(variables, x, delta, grad, z, y, train=False)
        return generator_fn

    def generator_fn(x, delta, grad, z, y):
        if not variables.get("batch_stats"):
            return generator_apply(variables, x, delta, grad, z, y, train=True)
        out, _ = generator_apply(variables, x, delta, grad, z, y, train=True,
                                 mutable=["batch_stats"])
        return out
    return generator_fn


def _first_grad(clf_logits, x, y):
    """Input gradient of the summed CE at ``x`` (``N`` images), tiled for the ``[x; x]`` batch.

    Exact also with train-mode batch norm: ``[x; x]`` has the batch statistics of ``x``, and each
    copy's gradient of ``Σ CE`` over ``[x; x]`` equals the gradient over ``x``."""
    g = jax.grad(lambda v: jnp.sum(cross_entropy(clf_logits(v), y)))(x)
    return jnp.concatenate([g, g], 0)


def _recurrence(gen_apply, gen_params, gen_batch_stats, clf_logits, x, y, z, *, eps,
                steps, step_fraction, backprop_steps):
    """``δ⁽ᵀ⁾`` on the ``[x; x]`` batch with codes ``z [2N, d]`` (generator in train mode)."""
    x2 = jnp.concatenate([x, x], 0)
    y2 = jnp.concatenate([y, y], 0)

    def gen_fn(gbs, xx, d, g, zz, yy):
        variables = {"params": gen_params, "batch_stats": gbs}
        out, upd = gen_apply(variables, xx, d, g, zz, yy, train=True, mutable=["batch_stats"])
        return out, upd["batch_stats"]

    out = l2l_recurrence(
        gen_fn, clf_logits, x2, y2, z, eps=eps, steps=steps,
        step_fraction=step_fraction, generator_state=gen_batch_stats,
        initial_grad=jax.lax.stop_gradient(_first_grad(clf_logits, x, y)),
        backprop_steps=backprop_steps)
    return out.delta, out.generator_state


def l2lda_generator_loss(gen_apply, gen_params, gen_batch_stats, clf_logits, key, x, y, *,
                         eps: float, lambda_div, steps: int, step_fraction: float,
                         latent_dim: int, backprop_steps: int | None = None):
    r"""The generator's objective of L2L-DA (to be *minimised*; the paper maximises its negative).

    Draws two codes per example, runs the recurrence for both in one ``2N`` batch (generator in
    train mode, its batch statistics threaded through the T steps) and returns

    .. math:: -\Big(\tfrac{1}{2N}\sum_{i,k} \mathrm{CE}(f(x_i + \delta^{(T)}(x_i, z_{ik})), y_i)
              + \lambda\,\tfrac{1}{N}\sum_i d(\delta(x_i, z_{i1}), \delta(x_i, z_{i2}),
              z_{i1}, z_{i2})\Big)

    with ``d`` the mode-seeking ratio. The first step's classifier gradient (at ``δ⁽⁰⁾ = 0``,
    identical for both codes) is computed once on ``N`` images. ``backprop_steps`` truncates
    back-propagation through the recurrence (:func:`robustjax.attacks.l2l_perturbation`).
    Returns ``(loss, (delta [2N,...], new_gen_batch_stats, mean_ce, mean_div, z [2N, d]))``.
    ``lambda_div`` may be a traced scalar.
    """
    n = x.shape[0]
    z = jax.random.normal(key, (2 * n, latent_dim), jnp.float32)
    y2 = jnp.concatenate([y, y], 0)
    delta, gbs = _recurrence(gen_apply, gen_params, gen_batch_stats, clf_logits, x, y, z,
                             eps=eps, steps=steps, step_fraction=step_fraction,
                             backprop_steps=backprop_steps)
    ce = jnp.mean(cross_entropy(clf_logits(jnp.concatenate([x, x], 0) + delta), y2))
    div = jnp.mean(mode_seeking_diversity(delta[:n], delta[n:], z[:n], z[n:]))
    loss = -(ce + lambda_div * div)
    return loss, (delta, gbs, ce, div, z)


def make_l2lda_step(*, eps: float, lambda_div: float, steps: int = 5,
                    step_fraction: float = 0.5, latent_dim: int = 8, clean_weight: float = 0.0,
                    backprop_steps: int | None = None,
                    eps_schedule: Callable | None = None,
                    axis_name: str | None = None) -> Callable:
    r"""Build the pure ``step(state, batch, key, lambda_div=None) -> (state, metrics)`` of L2L-DA.

    Args:
      eps: ℓ∞ radius of the generated attacks (the final radius when ``eps_schedule`` is given).
      eps_schedule: optional ``step -> ε`` (e.g. ``optax.linear_schedule(0, eps, ramp)``),
        evaluated at ``state.step`` inside the compiled step, so one compile serves a whole
        ε ramp-up (as :func:`robustjax.objectives.adversarial_objective` does for PGD). Without
        a ramp, min-max training from scratch at ε = 0.3 on MNIST stalls at the uniform
        prediction (the quickstart's finding for PGD).
      lambda_div: default λ of the diversity term (paper: 0.02 MNIST, 0.5 CIFAR-10, 0.3 Tiny
        ImageNet), on the ℓ1-norm ratio :func:`robustjax.losses.mode_seeking_diversity`
        (``reduction="sum"``: the scale at which these λ balance the diversity and
        classification terms, as supplement A.2 says; see that function for the measured
        magnitudes); 0 gives the recurrent generator without diversity. The step also accepts
        ``lambda_div`` as a 4th (traced) argument, so runs with different λ share one compile.
      steps: recurrence length T (the supplement does not state T; 5 by default, the
        library's choice: with ``step_fraction = 0.5`` the recurrence can reach the ε-sphere in 2
        steps and has 3 more to refine, like a short PGD); step_fraction: per-step size as a
        fraction of ε. ``steps=1, step_fraction=1, lambda_div=0`` is the one-step L2L*
        baseline.
      latent_dim: d (8 in the paper).
      clean_weight: weight of the clean-example loss in the classifier step (0: adversarial only).
      backprop_steps: truncate the generator's back-propagation through time to the last
        ``backprop_steps`` steps (``None``: all ``T``, the exact gradient).
      axis_name: ``pmap`` axis to average gradients and statistics over, or ``None``.

    Gradient path (choice, documented): the normalised input gradient ``∇̃ℓ`` is an *input* of
    the generator under ``stop_gradient`` (no second-order term), as the supplement describes
    it; the generator's gradient flows through ``δ⁽ᵗ⁾`` and its parameters.

    Implementation: the generator's cross-entropy term and the classifier's loss are the same
    function of the same forward pass when ``clean_weight = 0`` (both are the mean CE of the
    train-mode classifier on ``x + δ⁽ᵀ⁾``), so one classifier forward and **one** backward give
    both the classifier's parameter gradient and the cotangent of ``δ⁽ᵀ⁾``, which is then pulled
    back through the recurrence (``jax.vjp``); the recurrence is traced unrolled (T is small;
    XLA's CPU backend ran it ~3.6x slower as a ``lax.scan`` loop). With ``clean_weight > 0`` the classifier pass
    runs on ``[x_adv; x]`` (shared batch statistics), so the generator's term takes its own
    input-gradient pass.

    Cost model (per image of the batch ``N``; ``F`` = one classifier forward, ``G`` = one
    generator forward; an input-only backward ≈ ``F``, a parameter+input backward ≈ ``2F``, the
    same for ``G``; two codes per image, i.e. ``2N`` rows in the recurrence):

    .. math:: C_{\mathrm{L2L\text{-}DA}} = 2\big[(T-1)\,2F + T\,G\big] + 2F + 2\cdot 2B\,G
              + 2\cdot 3F = (4T + 4)F + (2T + 4B)\,G,

    with ``B`` the back-propagated steps (``B = T`` by default: ``(4T+4)F + 6TG``); the first
    ``2F`` is the shared gradient at ``x`` on ``N`` images, the ``2·3F`` the fused classifier
    forward+backward on ``2N``. (With ``clean_weight > 0`` add ``2·2F`` for the separate input
    gradient and ``3F`` for the clean rows.) A PGD-k adversarial-training step costs
    ``C_{PGD-k} = 2kF + 3F`` (``23F`` for PGD-10), so

    .. math:: \frac{C_{\mathrm{L2L\text{-}DA}}}{C_{\mathrm{PGD\text{-}10}}} =
              \frac{4T + 4 + (2T + 4B)\,G/F}{23}.

    The generator's ratio ``G/F`` decides: ≈133 for the paper generator against LeNet-5 on
    MNIST (ratio ≫ 1.5 for any T), ≈2.1 against ResNet-20 on CIFAR-10 (≈0.90 at T = 1,
    ≈1.62 at T = 2, ≈3.8 at T = 5 with full back-propagation).
    """
    V.check_nonnegative(eps, "eps")
    V.check_nonnegative(lambda_div, "lambda_div")
    V.check_positive_int(steps, "steps")
    V.check_positive(step_fraction, "step_fraction")
    V.check_positive_int(latent_dim, "latent_dim")
    V.check_nonnegative(clean_weight, "clean_weight")
    if backprop_steps is not None:
        V.check_positive_int(backprop_steps, "backprop_steps")
    if eps_schedule is not None and not callable(eps_schedule):
        raise ValueError(f"`eps_schedule` must be a callable step -> eps, got {eps_schedule!r}.")
    default_lambda = lambda_div

    def pmean(t):
        return jax.lax.pmean(t, axis_name) if axis_name is not None else t

    def step(state: L2LDAState, batch, key, lambda_div=None):
        lam = default_lambda if lambda_div is None else lambda_div
        eps_t = eps if eps_schedule is None else jnp.asarray(eps_schedule(state.step),
                                                             jnp.float32)
        x, y = batch["image"], batch["label"]
        n = x.shape[0]
        x2 = jnp.concatenate([x, x], 0)
        y2 = jnp.concatenate([y, y], 0)
        z = jax.random.normal(key, (2 * n, latent_dim), jnp.float32)

        def clf_logits(v):  # train-mode BN, statistics discarded
            return _clf_call(state.clf_apply, state.clf_params, state.clf_batch_stats, v,
                             train=True)[0]

        def rec(gp):
            delta, gbs = _recurrence(
                state.gen_apply, gp, state.gen_batch_stats, clf_logits, x, y, z, eps=eps_t,
                steps=steps, step_fraction=step_fraction,
                backprop_steps=backprop_steps)
            div = jnp.mean(mode_seeking_diversity(delta[:n], delta[n:], z[:n], z[n:]))
            return (delta, div), gbs

        (delta, div), rec_vjp, gbs = jax.vjp(rec, state.gen_params, has_aux=True)

        def clf_loss(cp, x_adv):
            if clean_weight:  # one train-mode pass over [x_adv; x]: shared batch statistics
                logits, cbs = _clf_call(state.clf_apply, cp, state.clf_batch_stats,
                                        jnp.concatenate([x_adv, x], 0), train=True)
                logits, clean_logits = logits[:2 * n], logits[2 * n:]
            else:
                logits, cbs = _clf_call(state.clf_apply, cp, state.clf_batch_stats, x_adv,
                                        train=True)
            loss = jnp.mean(cross_entropy(logits, y2))
            adv_loss = loss
            if clean_weight:
                loss = loss + clean_weight * jnp.mean(cross_entropy(clean_logits, y))
            acc = jnp.mean(jnp.argmax(logits, -1) == y2)
            return loss, (cbs, acc, adv_loss)

        x_adv = x2 + delta
        if clean_weight:
            (cl, (cbs, adv_acc, _)), cgrads = jax.value_and_grad(clf_loss, has_aux=True)(
                state.clf_params, jax.lax.stop_gradient(x_adv))
            ce_gen, g_adv = jax.value_and_grad(
                lambda v: jnp.mean(cross_entropy(clf_logits(v), y2)))(x_adv)
        else:  # fused: one classifier forward + backward for both players
            cl, clf_vjp, (cbs, adv_acc, ce_gen) = jax.vjp(
                clf_loss, state.clf_params, x_adv, has_aux=True)
            cgrads, g_adv = clf_vjp(jnp.ones_like(cl))
        gl = -(ce_gen + lam * div)
        (ggrads,) = rec_vjp((-g_adv, -jnp.asarray(lam, div.dtype) * jnp.ones_like(div)))

        ggrads, gbs = pmean(ggrads), pmean(gbs)
        gupd, gopt = state.gen_tx.update(ggrads, state.gen_opt_state, state.gen_params)
        gparams = optax.apply_updates(state.gen_params, gupd)
        cgrads, cbs = pmean(cgrads), pmean(cbs)
        cupd, copt = state.clf_tx.update(cgrads, state.clf_opt_state, state.clf_params)
        cparams = optax.apply_updates(state.clf_params, cupd)

        new_state = state.replace(
            step=state.step + 1, clf_params=cparams, clf_batch_stats=cbs, clf_opt_state=copt,
            gen_params=gparams, gen_batch_stats=gbs, gen_opt_state=gopt)
        metrics = pmean({"clf_loss": cl, "gen_ce": ce_gen, "diversity": div,
                         "adv_accuracy": adv_acc, "gen_loss": gl,
                         "eps": jnp.asarray(eps_t, jnp.float32)})
        return new_state, metrics

    return step


def l2lda_cost_model(*, steps: int, gen_over_clf: float, backprop_steps: int | None = None,
                     pgd_steps: int = 10) -> dict:
    """The FLOP cost model of :func:`make_l2lda_step` and of a PGD-k training step, in units of
    one classifier forward ``F`` per image (``gen_over_clf = G/F``). Returns
    ``{"l2lda_F": ..., "pgd_F": ..., "ratio": ...}``."""
    b = steps if backprop_steps is None else min(backprop_steps, steps)
    l2l = (4 * steps + 4) + (2 * steps + 4 * b) * gen_over_clf
    pgd = 2 * pgd_steps + 3
    return {"l2lda_F": l2l, "pgd_F": float(pgd), "ratio": l2l / pgd}
