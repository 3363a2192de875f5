"""Training of attack generators against a *fixed* classifier (AdvGAN, GAP, L2L-DA / L2L*
generators) and the L2L* min-max baseline — the baselines of L2L-DA (Jang et al., ICCV 2019).

In Table A of L2L-DA the AdvGAN, GAP and L2L-DA columns are generators trained to attack the
classifier of that row; :func:`train_attack_generator` does this with any of the steps below.
Each step is pure, ``step(state, clf_variables, batch, key) -> (state, metrics)``, with the
classifier's variables passed as an argument (one compile serves every classifier of the same
architecture) and the classifier in **eval** mode (running statistics; it is not trained).

* :func:`make_advgan_step` — AdvGAN (Xiao et al., IJCAI 2018, Eq. (1)–(4)): generator loss
  :math:`\\mathcal{L}_{adv} + \\alpha\\mathcal{L}_{GAN} + \\beta\\mathcal{L}_{hinge}` with the
  untargeted C&W loss :math:`\\max(Z_y - \\max_{j\\ne y} Z_j, -\\kappa)`, least-squares GAN losses
  (as in the AdvGAN code) and :math:`\\max(0, \\|\\delta\\|_2 - c)`; alternating with one
  discriminator step on ``x`` (real) vs ``x + δ`` (fake).
* :func:`make_gap_step` — GAP (Poursaeed et al., CVPR 2018): the non-targeted fooling loss
  :math:`-\\log \\mathrm{CE}(f(x+\\delta), y)` (GAP uses the model's clean prediction as the class
  to move away from; on the training set we use the true label — a documented choice).
* :func:`make_l2l_generator_step` — the L2L-DA generator objective against a fixed classifier
  (``steps=1, step_fraction=1, lambda_div=0``: the L2L* generator).
* :func:`make_l2l_star_step` — L2L* min-max training (one-step generator, no recurrence, no
  diversity): :func:`robustjax.objectives.make_l2lda_step` with those settings.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax._src import validation as V
from robustjax.attacks._generators import advgan_perturbation, gap_perturbation
from robustjax.losses import cross_entropy
from robustjax.training._l2lda import l2lda_generator_loss, make_l2lda_step

__all__ = [
    "GeneratorState",
    "create_generator_state",
    "make_advgan_step",
    "make_gap_step",
    "make_l2l_generator_step",
    "make_l2l_star_step",
    "train_attack_generator",
]


class GeneratorState(flax.struct.PyTreeNode):
    """An attack generator (and, for AdvGAN, its discriminator) with optimiser states."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    disc_params: Any = None
    disc_opt_state: Any = None
    apply_fn: Callable = flax.struct.field(pytree_node=False, default=None)
    disc_apply_fn: Callable = flax.struct.field(pytree_node=False, default=None)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)
    disc_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)


def create_generator_state(generator, key, input_shape, *, tx, discriminator=None,
                           disc_tx=None) -> GeneratorState:
    """Initialise a generator (``input_shape = (N, H, W, C)``).

    An image generator (AdvGAN / GAP, called ``apply(v, x)``) or an L2L generator (it has a
    ``latent_dim`` attribute, called ``apply(v, x, delta, grad, z, y)``). With
    ``discriminator`` (AdvGAN) it is initialised too and trained with ``disc_tx``.
    """
    kg, kd = jax.random.split(key)
    x = jnp.zeros(input_shape, jnp.float32)
    if hasattr(generator, "latent_dim"):
        n = input_shape[0]
        variables = generator.init(kg, x, x, x, jnp.zeros((n, generator.latent_dim)),
                                   jnp.zeros((n,), jnp.int32), train=False)
    else:
        variables = generator.init(kg, x)
    params = variables["params"]
    dp = dopt = dapply = None
    if discriminator is not None:
        if disc_tx is None:
            raise ValueError("`disc_tx` is required with `discriminator`.")
        dp = discriminator.init(kd, x)["params"]
        dopt = disc_tx.init(dp)
        dapply = discriminator.apply
    return GeneratorState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
        disc_params=dp, disc_opt_state=dopt, apply_fn=generator.apply, disc_apply_fn=dapply,
        tx=tx, disc_tx=disc_tx)


def _eval_logits(clf_apply, clf_variables):
    return lambda v: clf_apply(clf_variables, v, train=False)


def _cw_margin(logits, y, kappa):
    k = logits.shape[-1]
    onehot = jax.nn.one_hot(y, k, dtype=logits.dtype)
    zy = jnp.sum(logits * onehot, -1)
    other = jnp.max(jnp.where(onehot > 0, -jnp.inf, logits), -1)
    return jnp.maximum(zy - other, -kappa)


def make_advgan_step(clf_apply: Callable, *, eps: float, alpha: float = 1.0,
                     beta: float = 1.0, hinge_bound: float | None = None,
                     kappa: float = 0.0) -> Callable:
    r"""AdvGAN training step against a fixed classifier.

    Generator: minimise
    :math:`\frac1N\sum_i \max(Z_y - \max_{j\ne y}Z_j, -\kappa) + \alpha (D(x+\delta)-1)^2
    + \beta \max(0, \|\delta\|_2 - c)`, with :math:`\delta` from
    :func:`robustjax.attacks.advgan_perturbation`; then discriminator: minimise
    :math:`(D(x)-1)^2 + D(x+\delta)^2` (least squares GAN).

    Args:
      clf_apply: the classifier's ``apply`` (called ``apply(variables, x, train=False)``).
      eps: ℓ∞ radius; alpha, beta: weights of the GAN and hinge terms; hinge_bound: ``c``
        (default: ``0.5 · ε · sqrt(H·W·C)``, half the ℓ2 norm of a full-ε perturbation);
      kappa: confidence of the C&W loss.

    Cost per step: generator fwd+bwd, classifier fwd+bwd, two discriminator fwd+bwd.
    """
    V.check_nonnegative(eps, "eps")
    V.check_nonnegative(alpha, "alpha")
    V.check_nonnegative(beta, "beta")
    V.check_nonnegative(kappa, "kappa")

    def step(state: GeneratorState, clf_variables, batch, key):
        del key
        x, y = batch["image"], batch["label"]
        logits_fn = _eval_logits(clf_apply, clf_variables)
        c = (0.5 * eps * float(np.sqrt(np.prod(x.shape[1:])))
             if hinge_bound is None else hinge_bound)

        def disc(dp, v):
            return state.disc_apply_fn({"params": dp}, v)

        def g_loss(gp):
            delta = advgan_perturbation(lambda v: state.apply_fn({"params": gp}, v), x, eps=eps)
            adv = jnp.mean(_cw_margin(logits_fn(x + delta), y, kappa))
            gan = jnp.mean((disc(state.disc_params, x + delta) - 1.0) ** 2)
            norm = jnp.sqrt(jnp.sum(delta.reshape(delta.shape[0], -1) ** 2, -1))
            hinge = jnp.mean(jnp.maximum(norm - c, 0.0))
            return adv + alpha * gan + beta * hinge, (delta, adv, gan, hinge)

        (gl, (delta, adv, gan, hinge)), gg = jax.value_and_grad(g_loss, has_aux=True)(
            state.params)
        upd, opt = state.tx.update(gg, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        fake = jax.lax.stop_gradient(x + delta)

        def d_loss(dp):
            return jnp.mean((disc(dp, x) - 1.0) ** 2) + jnp.mean(disc(dp, fake) ** 2)

        dl, dg = jax.value_and_grad(d_loss)(state.disc_params)
        dupd, dopt = state.disc_tx.update(dg, state.disc_opt_state, state.disc_params)
        dparams = optax.apply_updates(state.disc_params, dupd)
        acc = jnp.mean(jnp.argmax(logits_fn(fake), -1) == y)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt,
                            disc_params=dparams, disc_opt_state=dopt)
        return new, {"gen_loss": gl, "adv_loss": adv, "gan_loss": gan, "hinge": hinge,
                     "disc_loss": dl, "adv_accuracy": acc}

    return step


def make_gap_step(clf_apply: Callable, *, eps: float) -> Callable:
    r"""GAP training step (image-dependent, non-targeted) against a fixed classifier.

    Minimises :math:`-\frac1N\sum_i\log \mathrm{CE}(f(x_i+\delta_i), y_i)` with
    :math:`\delta` from :func:`robustjax.attacks.gap_perturbation` (Poursaeed et al. 2018,
    non-targeted fooling loss). Cost per step: generator and classifier fwd+bwd.
    """
    V.check_nonnegative(eps, "eps")

    def step(state: GeneratorState, clf_variables, batch, key):
        del key
        x, y = batch["image"], batch["label"]
        logits_fn = _eval_logits(clf_apply, clf_variables)

        def loss_fn(gp):
            delta = gap_perturbation(lambda v: state.apply_fn({"params": gp}, v), x, eps=eps)
            logits = logits_fn(x + delta)
            ce = cross_entropy(logits, y)
            return -jnp.mean(jnp.log(ce + 1e-12)), (jnp.mean(ce), logits)

        (loss, (ce, logits)), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        upd, opt = state.tx.update(g, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, upd),
                            opt_state=opt)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return new, {"gen_loss": loss, "ce": ce, "adv_accuracy": acc}

    return step


def make_l2l_generator_step(clf_apply: Callable, *, eps: float, lambda_div: float,
                            steps: int = 5, step_fraction: float = 0.5,
                            latent_dim: int = 8) -> Callable:
    """L2L-DA generator objective (:func:`robustjax.objectives.l2lda_generator_loss`) against a
    fixed classifier in eval mode; ``steps=1, step_fraction=1, lambda_div=0`` trains the
    L2L* generator. ``step(state, clf_variables, batch, key, lambda_div=None)``; cost
    ``T·(classifier fwd+bwd + generator fwd)`` on ``2N`` examples plus the generator's backward.
    """
    V.check_nonnegative(eps, "eps")
    V.check_nonnegative(lambda_div, "lambda_div")
    V.check_positive_int(steps, "steps")
    V.check_positive(step_fraction, "step_fraction")
    V.check_positive_int(latent_dim, "latent_dim")
    default_lambda = lambda_div

    def step(state: GeneratorState, clf_variables, batch, key, lambda_div=None):
        lam = default_lambda if lambda_div is None else lambda_div
        x, y = batch["image"], batch["label"]
        logits_fn = _eval_logits(clf_apply, clf_variables)

        def loss_fn(gp):
            return l2lda_generator_loss(
                state.apply_fn, gp, state.batch_stats, logits_fn, key, x, y, eps=eps,
                lambda_div=lam, steps=steps, step_fraction=step_fraction,
                latent_dim=latent_dim)

        (loss, (delta, gbs, ce, div, _)), g = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        upd, opt = state.tx.update(g, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, upd),
                            batch_stats=gbs, opt_state=opt)
        return new, {"gen_loss": loss, "ce": ce, "diversity": div}

    return step


def make_l2l_star_step(*, eps: float, latent_dim: int = 8, clean_weight: float = 0.0,
                       eps_schedule: Callable | None = None,
                       axis_name: str | None = None) -> Callable:
    """L2L* min-max training step (Chen et al. 2018 as the L2L-DA baseline): the L2L-DA step
    with a one-step generator (``T = 1``, full step ``ε``), no recurrence, no diversity.
    ``eps_schedule``: a traced ε ramp-up, see :func:`robustjax.objectives.make_l2lda_step`."""
    return make_l2lda_step(eps=eps, lambda_div=0.0, steps=1, step_fraction=1.0,
                           latent_dim=latent_dim, clean_weight=clean_weight,
                           eps_schedule=eps_schedule, axis_name=axis_name)


def train_attack_generator(step: Callable, state: GeneratorState, clf_variables, x, y, *,
                           key, steps: int, batch_size: int, log_every: int = 0,
                           jit: bool = True):
    """Run ``steps`` generator steps on shuffled mini-batches of ``(x, y)``.

    Batch ``s`` uses the permutation ``permutation(fold_in(key, epoch))`` and the step key
    ``fold_in(key, s)`` (deterministic given ``key``). Returns ``(state, last_metrics)``.
    """
    V.check_positive_int(steps, "steps")
    V.check_positive_int(batch_size, "batch_size")
    x, y = np.asarray(x), np.asarray(y)
    n = len(y)
    if batch_size > n:
        raise ValueError(f"`batch_size` ({batch_size}) exceeds the number of examples ({n}).")
    fn = jax.jit(step) if jit else step
    per_epoch = n // batch_size
    perm, metrics = None, {}
    data_key, step_key = jax.random.split(key)
    for s in range(steps):
        epoch, i = divmod(s, per_epoch)
        if i == 0:
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), n))
        idx = perm[i * batch_size:(i + 1) * batch_size]
        batch = {"image": x[idx], "label": y[idx]}
        state, metrics = fn(state, clf_variables, batch, jax.random.fold_in(step_key, s))
        if log_every and (s + 1) % log_every == 0:
            print(f"  generator step {s + 1}: " + ", ".join(
                f"{k}={float(v):.4f}" for k, v in jax.device_get(metrics).items()))
    return state, jax.device_get(metrics)
