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

__all__ = ["L2LDAState", "create_l2lda_state", "make_l2lda_step", "l2lda_generator_fn"]


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


def make_l2lda_step(*, eps: float, lambda_div: float, num_steps: int = 5,
                    step_fraction: float = 0.5, latent_dim: int = 8, clean_weight: float = 0.0,
                    axis_name: str | None = None) -> Callable:
    """Build the pure ``step(state, batch, key) -> (state, metrics)`` of L2L-DA training.

    Args:
      eps: ℓ∞ radius of the generated attacks.
      lambda_div: λ of the diversity term (paper: 0.02 MNIST, 0.5 CIFAR-10, 0.3 Tiny ImageNet);
        0 gives the recurrent generator without diversity.
      num_steps: recurrence length T; step_fraction: per-step size as a fraction of ε.
      latent_dim: d (8 in the paper).
      clean_weight: weight of the clean-example loss in the classifier step (0: adversarial only).
      axis_name: ``pmap`` axis to average gradients and statistics over, or ``None``.

    Cost: ``T·(fwd+bwd of the classifier + fwd of the generator)`` on ``2N`` examples, the
    generator's backward pass through the recurrence, and one classifier fwd+bwd on ``2N``.
    """
    V.check_nonnegative(eps, "eps")
    V.check_nonnegative(lambda_div, "lambda_div")
    V.check_positive_int(num_steps, "num_steps")
    V.check_positive_int(latent_dim, "latent_dim")
    V.check_nonnegative(clean_weight, "clean_weight")

    def pmean(t):
        return jax.lax.pmean(t, axis_name) if axis_name is not None else t

    def step(state: L2LDAState, batch, key):
        x, y = batch["image"], batch["label"]
        n = x.shape[0]
        z = jax.random.normal(key, (2 * n, latent_dim), jnp.float32)
        x2 = jnp.concatenate([x, x], 0)
        y2 = jnp.concatenate([y, y], 0)

        def clf_logits(v):  # train-mode BN, statistics discarded
            return _clf_call(state.clf_apply, state.clf_params, state.clf_batch_stats, v,
                             train=True)[0]

        def gen_loss(gp):
            def gen_fn(gbs, xx, d, g, zz, yy):
                variables = {"params": gp, "batch_stats": gbs}
                out, upd = state.gen_apply(variables, xx, d, g, zz, yy, train=True,
                                           mutable=["batch_stats"])
                return out, upd["batch_stats"]

            delta, gbs = l2l_perturbation(
                gen_fn, clf_logits, x2, y2, z, eps=eps, num_steps=num_steps,
                step_fraction=step_fraction, generator_state=state.gen_batch_stats)
            ce = cross_entropy(clf_logits(x2 + delta), y2)
            div = mode_seeking_diversity(delta[:n], delta[n:], z[:n], z[n:])
            loss = -(jnp.mean(ce) + lambda_div * jnp.mean(div))
            return loss, (delta, gbs, jnp.mean(ce), jnp.mean(div))

        (gl, (delta, gbs, ce_gen, div)), ggrads = jax.value_and_grad(gen_loss, has_aux=True)(
            state.gen_params)
        ggrads, gbs = pmean(ggrads), pmean(gbs)
        gupd, gopt = state.gen_tx.update(ggrads, state.gen_opt_state, state.gen_params)
        gparams = optax.apply_updates(state.gen_params, gupd)

        x_adv = jax.lax.stop_gradient(x2 + delta)

        def clf_loss(cp):
            logits, cbs = _clf_call(state.clf_apply, cp, state.clf_batch_stats, x_adv,
                                    train=True)
            loss = jnp.mean(cross_entropy(logits, y2))
            if clean_weight:
                clean_logits, _ = _clf_call(state.clf_apply, cp, state.clf_batch_stats, x,
                                            train=True)
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
