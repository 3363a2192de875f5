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

Both steps use the same perturbations, so one iteration costs one recurrence (``T`` classifier
forward+backward passes and generator forward passes on ``2N`` examples), one backward pass
through it for the generator, and one classifier update.

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
from robustjax.attacks._l2l import l2l_perturbation
from robustjax.losses import cross_entropy
from robustjax.losses._diversity import mode_seeking_diversity

__all__ = [
    "L2LDAState", "create_l2lda_state", "make_l2lda_step", "l2lda_generator_fn",
    "l2lda_generator_loss",
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


def l2lda_generator_fn(generator_apply, variables) -> Callable:
    """Eval-mode ``generator_fn(x, delta, grad, z, y)`` for :func:`robustjax.attacks.l2l_attack`."""
    def generator_fn(x, delta, grad, z, y):
        return generator_apply(variables, x, delta, grad, z, y, train=False)
    return generator_fn


def l2lda_generator_loss(gen_apply, gen_params, gen_batch_stats, clf_logits, x, y, key, *,
                         eps: float, lambda_div, num_steps: int, step_fraction: float,
                         latent_dim: int):
    r"""The generator's objective of L2L-DA (to be *minimised*; the paper maximises its negative).

    Draws two codes per example, runs the recurrence for both in one ``2N`` batch (generator in
    train mode, its batch statistics threaded through the T steps) and returns

    .. math:: -\Big(\tfrac{1}{2N}\sum_{i,k} \mathrm{CE}(f(x_i + \delta^{(T)}(x_i, z_{ik})), y_i)
              + \lambda\,\tfrac{1}{N}\sum_i d(\delta(x_i, z_{i1}), \delta(x_i, z_{i2}),
              z_{i1}, z_{i2})\Big)

    with ``d`` the mode-seeking ratio. Returns ``(loss, (delta [2N,...], new_gen_batch_stats,
    mean_ce, mean_div, z [2N, d]))``. ``lambda_div`` may be a traced scalar.
    """
    n = x.shape[0]
    z = jax.random.normal(key, (2 * n, latent_dim), jnp.float32)
    x2 = jnp.concatenate([x, x], 0)
    y2 = jnp.concatenate([y, y], 0)

    def gen_fn(gbs, xx, d, g, zz, yy):
        variables = {"params": gen_params, "batch_stats": gbs}
        out, upd = gen_apply(variables, xx, d, g, zz, yy, train=True, mutable=["batch_stats"])
        return out, upd["batch_stats"]

    delta, gbs = l2l_perturbation(
        gen_fn, clf_logits, x2, y2, z, eps=eps, num_steps=num_steps,
        step_fraction=step_fraction, generator_state=gen_batch_stats)
    ce = jnp.mean(cross_entropy(clf_logits(x2 + delta), y2))
    div = jnp.mean(mode_seeking_diversity(delta[:n], delta[n:], z[:n], z[n:]))
    loss = -(ce + lambda_div * div)
    return loss, (delta, gbs, ce, div, z)


def make_l2lda_step(*, eps: float, lambda_div: float, num_steps: int = 5,
                    step_fraction: float = 0.5, latent_dim: int = 8, clean_weight: float = 0.0,
                    axis_name: str | None = None) -> Callable:
    """Build the pure ``step(state, batch, key, lambda_div=None) -> (state, metrics)`` of L2L-DA.

    Args:
      eps: ℓ∞ radius of the generated attacks.
      lambda_div: default λ of the diversity term (paper: 0.02 MNIST, 0.5 CIFAR-10, 0.3 Tiny
        ImageNet); 0 gives the recurrent generator without diversity. The step also accepts
        ``lambda_div`` as a 4th (traced) argument, so runs with different λ share one compile.
      num_steps: recurrence length T; step_fraction: per-step size as a fraction of ε.
        ``num_steps=1, step_fraction=1, lambda_div=0`` is the one-step L2L* baseline.
      latent_dim: d (8 in the paper).
      clean_weight: weight of the clean-example loss in the classifier step (0: adversarial only).
      axis_name: ``pmap`` axis to average gradients and statistics over, or ``None``.

    Cost: ``T·(fwd+bwd of the classifier + fwd of the generator)`` on ``2N`` examples, the
    generator's backward pass through the recurrence, and one classifier fwd+bwd on ``2N``.
    """
    V.check_nonnegative(eps, "eps")
    V.check_nonnegative(lambda_div, "lambda_div")
    V.check_positive_int(num_steps, "num_steps")
    V.check_positive(step_fraction, "step_fraction")
    V.check_positive_int(latent_dim, "latent_dim")
    V.check_nonnegative(clean_weight, "clean_weight")
    default_lambda = lambda_div

    def pmean(t):
        return jax.lax.pmean(t, axis_name) if axis_name is not None else t

    def step(state: L2LDAState, batch, key, lambda_div=None):
        lam = default_lambda if lambda_div is None else lambda_div
        x, y = batch["image"], batch["label"]
        y2 = jnp.concatenate([y, y], 0)

        def clf_logits(v):  # train-mode BN, statistics discarded
            return _clf_call(state.clf_apply, state.clf_params, state.clf_batch_stats, v,
                             train=True)[0]

        def gen_loss(gp):
            return l2lda_generator_loss(
                state.gen_apply, gp, state.gen_batch_stats, clf_logits, x, y, key, eps=eps,
                lambda_div=lam, num_steps=num_steps, step_fraction=step_fraction,
                latent_dim=latent_dim)

        (gl, (delta, gbs, ce_gen, div, _)), ggrads = jax.value_and_grad(
            gen_loss, has_aux=True)(state.gen_params)
        ggrads, gbs = pmean(ggrads), pmean(gbs)
        gupd, gopt = state.gen_tx.update(ggrads, state.gen_opt_state, state.gen_params)
        gparams = optax.apply_updates(state.gen_params, gupd)

        x_adv = jax.lax.stop_gradient(jnp.concatenate([x, x], 0) + delta)

        def clf_loss(cp):
            if clean_weight:  # one train-mode pass over [x_adv; x]: shared batch statistics
                logits, cbs = _clf_call(state.clf_apply, cp, state.clf_batch_stats,
                                        jnp.concatenate([x_adv, x], 0), train=True)
                logits, clean_logits = logits[:x_adv.shape[0]], logits[x_adv.shape[0]:]
            else:
                logits, cbs = _clf_call(state.clf_apply, cp, state.clf_batch_stats, x_adv,
                                        train=True)
            loss = jnp.mean(cross_entropy(logits, y2))
            if clean_weight:
                loss = loss + clean_weight * jnp.mean(cross_entropy(clean_logits, y))
            acc = jnp.mean(jnp.argmax(logits, -1) == y2)
            return loss, (cbs, acc)

        (cl, (cbs, adv_acc)), cgrads = jax.value_and_grad(clf_loss, has_aux=True)(
            state.clf_params)
        cgrads, cbs = pmean(cgrads), pmean(cbs)
        cupd, copt = state.clf_tx.update(cgrads, state.clf_opt_state, state.clf_params)
        cparams = optax.apply_updates(state.clf_params, cupd)

        new_state = state.replace(
            step=state.step + 1, clf_params=cparams, clf_batch_stats=cbs, clf_opt_state=copt,
            gen_params=gparams, gen_batch_stats=gbs, gen_opt_state=gopt)
        metrics = pmean({"clf_loss": cl, "gen_ce": ce_gen, "diversity": div,
                         "adv_accuracy": adv_acc, "gen_loss": gl})
        return new_state, metrics

    return step
