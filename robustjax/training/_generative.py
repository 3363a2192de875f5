r"""Training the generative models of the DefenseGAN / ABS defenses: WGAN-GP and VAE objectives.

Chen, Xie, Zhu (ICML 2020, supplementary §C): "All the GANs are realized as Wasserstein GAN trained
with gradient penalty" (Gulrajani et al., 2017, arXiv:1704.00028); ABS uses one VAE per class
(Schott et al., 2019, arXiv:1805.09190).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from robustjax._src import validation
from robustjax._src.types import Array, PRNGKey, PyTree

__all__ = [
    "WGANState",
    "class_conditional_vae_objective",
    "gradient_penalty",
    "make_wgan_gp",
    "wgan_gp_critic_loss",
    "wgan_generator_loss",
]

CriticFn = Callable[[Array], Array]


def gradient_penalty(critic_fn: CriticFn, x_real: Array, x_fake: Array, key: PRNGKey) -> Array:
    r"""WGAN-GP penalty :math:`\mathbb E[(\|\nabla_{\hat x} D(\hat x)\|_2 - 1)^2]`, per example.

    :math:`\hat x = \epsilon x + (1-\epsilon)\tilde x` with :math:`\epsilon \sim U[0, 1]` per
    example.

    Args:
      critic_fn: ``D(x [N, ...]) -> [N]`` (per-example, no batch coupling).
      x_real, x_fake: ``[N, H, W, C]``.
      key: PRNG key for :math:`\epsilon`.

    Returns:
      ``[N]`` penalties.

    Cost: one forward + backward pass of the critic (double backward when differentiated).
    """
    eps = jax.random.uniform(key, (x_real.shape[0],) + (1,) * (x_real.ndim - 1), x_real.dtype)
    x_hat = eps * x_real + (1.0 - eps) * x_fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1) + 1e-12)
    return (norms - 1.0) ** 2


def wgan_gp_critic_loss(
    critic_fn: CriticFn, x_real: Array, x_fake: Array, key: PRNGKey, *, gp_weight: float = 10.0
) -> tuple[Array, dict[str, Array]]:
    r"""Critic loss :math:`\mathbb E[D(\tilde x)] - \mathbb E[D(x)] + \lambda\,\mathrm{GP}`.

    Args:
      critic_fn: ``D(x) -> [N]``.
      x_real, x_fake: ``[N, H, W, C]``.
      key: PRNG key of the interpolation.
      gp_weight: :math:`\lambda` (10 in Gulrajani et al.).

    Returns:
      ``(loss, metrics)`` with metrics ``wasserstein`` (:math:`\mathbb E D(x) - \mathbb E
      D(\tilde x)`) and ``gradient_penalty``.

    Cost: two critic passes + one double-backward pass.
    """
    validation.check_nonnegative(gp_weight, "gp_weight")
    d_real, d_fake = critic_fn(x_real), critic_fn(x_fake)
    gp = jnp.mean(gradient_penalty(critic_fn, x_real, x_fake, key))
    w = jnp.mean(d_real) - jnp.mean(d_fake)
    return -w + gp_weight * gp, {"wasserstein": w, "gradient_penalty": gp}


def wgan_generator_loss(critic_fn: CriticFn, x_fake: Array) -> Array:
    r"""Generator loss :math:`-\mathbb E[D(G(z))]` (scalar)."""
    return -jnp.mean(critic_fn(x_fake))


class WGANState(NamedTuple):
    """State of WGAN-GP training (a pytree)."""

    step: Array
    g_params: PyTree
    g_batch_stats: PyTree
    g_opt_state: PyTree
    d_params: PyTree
    d_opt_state: PyTree


def make_wgan_gp(
    generator: Any,
    critic: Any,
    *,
    latent_dim: int,
    g_tx: optax.GradientTransformation | None = None,
    d_tx: optax.GradientTransformation | None = None,
    n_critic: int = 5,
    gp_weight: float = 10.0,
):
    r"""WGAN-GP training as pure ``(init, step)`` functions for Flax generator / critic modules.

    ``generator.apply(variables, z [N, d], train=...)`` (batch norm with ``batch_stats``) and
    ``critic.apply(variables, x) -> [N]`` (e.g. :class:`DCGANGenerator`, :class:`DCGANCritic`).
    One ``step`` = ``n_critic`` critic updates (each with fresh latents) followed by one generator
    update (Gulrajani et al., Algorithm 1; defaults Adam(1e-4, b1=0.5, b2=0.9), ``n_critic = 5``,
    :math:`\lambda = 10`). Choice (documented): all critic iterations of a step reuse the real
    batch given to ``step``. Fakes for the critic use the generator in train mode without updating
    its statistics; the generator update updates them.

    Args:
      generator, critic: Flax Linen modules.
      latent_dim: ``d``.
      g_tx, d_tx: optax optimizers (default Adam(1e-4, 0.5, 0.9)).
      n_critic: critic iterations per generator iteration.
      gp_weight: :math:`\lambda`.

    Returns:
      ``(init, step)``: ``init(key, image_shape) -> WGANState`` with ``image_shape = (H, W, C)``;
      ``step(state, batch, key) -> (state, metrics)`` with ``batch = {"image": [N, H, W, C]}``.
      Both are pure and jit-able.

    Cost per step: ``n_critic`` × (generator fwd + 2 critic fwd + critic double backward) +
    one generator fwd/bwd through the critic.
    """
    validation.check_positive_int(latent_dim, "latent_dim")
    validation.check_positive_int(n_critic, "n_critic")
    validation.check_nonnegative(gp_weight, "gp_weight")
    g_tx = g_tx or optax.adam(1e-4, b1=0.5, b2=0.9)
    d_tx = d_tx or optax.adam(1e-4, b1=0.5, b2=0.9)

    def init(key, image_shape):
        validation.check_key(key)
        kg, kd = jax.random.split(key)
        gv = generator.init(kg, jnp.zeros((1, latent_dim)), train=False)
        dv = critic.init(kd, jnp.zeros((1,) + tuple(image_shape)))
        return WGANState(jnp.zeros((), jnp.int32), gv["params"], gv.get("batch_stats", {}),
                         g_tx.init(gv["params"]), dv["params"], d_tx.init(dv["params"]))

    def g_vars(params, stats):
        return {"params": params, "batch_stats": stats} if stats else {"params": params}

    def sample(state, params, z):
        out, upd = generator.apply(g_vars(params, state.g_batch_stats), z, train=True,
                                   mutable=["batch_stats"])
        return out, upd.get("batch_stats", state.g_batch_stats)

    def step(state, batch, key):
        x_real = batch["image"]
        n = x_real.shape[0]
        key = jax.random.fold_in(key, state.step)

        def critic_iter(i, carry):
            d_params, d_opt = carry
            kz, kgp = jax.random.split(jax.random.fold_in(key, i))
            x_fake, _ = sample(state, state.g_params, jax.random.normal(kz, (n, latent_dim)))
            x_fake = jax.lax.stop_gradient(x_fake)

            def loss_fn(p):
                return wgan_gp_critic_loss(lambda x: critic.apply({"params": p}, x), x_real,
                                           x_fake, kgp, gp_weight=gp_weight)

            grads, _ = jax.grad(loss_fn, has_aux=True)(d_params)
            upd, d_opt = d_tx.update(grads, d_opt, d_params)
            return optax.apply_updates(d_params, upd), d_opt

        d_params, d_opt = jax.lax.fori_loop(0, n_critic, critic_iter,
                                            (state.d_params, state.d_opt_state))
        kz, kgp = jax.random.split(jax.random.fold_in(key, n_critic))
        z = jax.random.normal(kz, (n, latent_dim))

        def g_loss_fn(p):
            x_fake, stats = sample(state, p, z)
            return wgan_generator_loss(lambda x: critic.apply({"params": d_params}, x),
                                       x_fake), (stats, x_fake)

        (g_loss, (stats, x_fake)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
            state.g_params)
        upd, g_opt = g_tx.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, upd)
        d_loss, metrics = wgan_gp_critic_loss(
            lambda x: critic.apply({"params": d_params}, x), x_real,
            jax.lax.stop_gradient(x_fake), kgp, gp_weight=gp_weight)
        metrics = dict(metrics, critic_loss=d_loss, generator_loss=g_loss)
        new_state = WGANState(state.step + 1, g_params, stats, g_opt, d_params, d_opt)
        return new_state, metrics

    return init, step


def class_conditional_vae_objective(*, beta: float = 1.0):
    r"""Objective for :class:`ClassConditionalVAE`: each example trains the VAE of its own class.

    .. math::
       L = \frac1N \sum_n \|G_{y_n}(z_n) - x_n\|_2^2
           + \beta\, \mathrm{KL}\big(\mathcal N(\mu_{y_n}, \sigma^2_{y_n}) \,\|\, \mathcal N(0, I)\big),
       \quad z_n = \mu_{y_n}(x_n) + \sigma_{y_n}(x_n)\,\epsilon_n

    Choice (documented): the squared-error reconstruction term (a Gaussian likelihood up to scale)
    matches the inner loss ABS uses at inference (:func:`robustjax.defenses` ``abs_logits``).
    Follows the ``robustjax.training`` objective contract; ``state.apply_fn`` must be
    ``ClassConditionalVAE.apply``. All ``K`` class VAEs run on the batch and the example's class is
    selected (cost ``K`` × one VAE pass; the other classes get zero gradient).

    Args:
      beta: KL weight.

    Returns:
      ``objective(params, state, batch, key) -> (loss, (batch_stats, metrics))`` with metrics
      ``loss``, ``reconstruction``, ``kl``.
    """
    validation.check_nonnegative(beta, "beta")

    def objective(params, state, batch, key):
        x, y = batch["image"], batch["label"]
        variables = {"params": params}
        mu, logvar = state.apply_fn(variables, x, method="encode")  # [K, N, d]
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        rec, mu, logvar = state.apply_fn(variables, x, eps)
        n = x.shape[0]
        idx = jnp.arange(n)
        rec_y, mu_y, lv_y = rec[y, idx], mu[y, idx], logvar[y, idx]
        recon = jnp.sum((rec_y - x) ** 2, axis=(1, 2, 3))
        kl = 0.5 * jnp.sum(mu_y ** 2 + jnp.exp(lv_y) - 1.0 - lv_y, axis=-1)
        loss = jnp.mean(recon + beta * kl)
        metrics = {"loss": loss, "reconstruction": jnp.mean(recon), "kl": jnp.mean(kl)}
        return loss, (state.batch_stats, metrics)

    return objective
