r"""Generative-model defenses DefenseGAN and ABS, with selectable gradients through the latent z.

Both defenses project an input onto the range of a generator by an inner optimisation over the
latent code and are written as pure functions of a ``generator_fn`` / ``decoder_fn`` and a
``classifier_fn`` (Flax closures work). The gradient through the latent search follows ``mode``
(see :func:`robustjax.implicit.latent_projection`): ``"implicit"``, ``"neumann"``,
``"backtrack"``, ``"unrolled"`` or ``"bpda"``; this is what the attacks of Chen, Xie, Zhu
("On Breaking Deep Generative Model-based Defenses and Beyond", ICML 2020) differentiate.

References:
  Samangouei, Kabkab, Chellappa, "Defense-GAN", ICLR 2018 (arXiv:1805.06605).
  Schott, Rauber, Bethge, Brendel, "Towards the first adversarially robust neural network model on
  MNIST" (ABS), ICLR 2019 (arXiv:1805.09190).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from robustjax._src import validation
from robustjax._src.types import Array, ArrayLike, LogitsFn, PRNGKey
from robustjax.implicit import MODES
from robustjax.implicit import latent_projection
from robustjax.implicit import reconstruction_bpda

__all__ = [
    "ABSWithLatent",
    "DefenseGANReconstruction",
    "abs_logits",
    "abs_logits_with_latent",
    "defensegan_logits",
    "defensegan_reconstruct",
    "defensegan_reconstruct_with_latent",
    "make_abs_logits_fn",
    "make_defensegan_logits_fn",
]

GeneratorFn = Callable[[Array], Array]


class DefenseGANReconstruction(NamedTuple):
    """Result of :func:`defensegan_reconstruct_with_latent`.

    Attributes:
      x_rec: ``[N, H, W, C]`` the reconstruction :math:`G(z^*)`.
      z: ``[N, d]`` the latent :math:`z^*` of the selected restart.
      loss: ``[N]`` its reconstruction loss (mean squared error over the pixels).
    """

    x_rec: Array
    z: Array
    loss: Array


class ABSWithLatent(NamedTuple):
    """Result of :func:`abs_logits_with_latent`.

    Attributes:
      logits: ``[N, K]``.
      z: ``[K, N, d]`` the per-class latents :math:`z^*_c`.
    """

    logits: Array
    z: Array


def _check_common(generator_fn, key, x, mode, steps, learning_rate, backward_steps,
                  backward_learning_rate, unroll):
    if not callable(generator_fn):
        raise ValueError(f"`generator_fn` must be callable, got {type(generator_fn).__name__}.")
    validation.check_key(key)
    validation.check_images(x, "x")
    validation.check_choice(mode, "mode", MODES)
    validation.check_positive_int(steps, "steps")
    validation.check_positive(learning_rate, "learning_rate")
    validation.check_positive_int(backward_steps, "backward_steps")
    if backward_learning_rate is not None:
        validation.check_positive(backward_learning_rate, "backward_learning_rate")
    if not isinstance(unroll, bool):
        validation.check_positive_int(unroll, "unroll")


def defensegan_reconstruct(
    generator_fn: GeneratorFn,
    key: PRNGKey,
    x: ArrayLike,
    *,
    latent_dim: int,
    restarts: int = 10,
    steps: int = 200,
    learning_rate: float = 10.0,
    momentum: float = 0.7,
    decay_at: float = 0.8,
    decay_factor: float = 0.1,
    init_std: float | None = None,
    mode: str = "implicit",
    backward_steps: int = 10,
    backward_learning_rate: float | None = None,
    cg_maxiter: int = 100,
    ridge: float = 0.0,
    independent: bool = True,
    unroll: int | bool = 1,
) -> Array:
    r"""DefenseGAN's reconstruction :math:`G(z^*(x))`: :func:`defensegan_reconstruct_with_latent`
    without the latent; ``[N, H, W, C]``. Arguments as there."""
    return defensegan_reconstruct_with_latent(
        generator_fn, key, x, latent_dim=latent_dim, restarts=restarts, steps=steps,
        learning_rate=learning_rate, momentum=momentum, decay_at=decay_at,
        decay_factor=decay_factor, init_std=init_std, mode=mode, backward_steps=backward_steps,
        backward_learning_rate=backward_learning_rate, cg_maxiter=cg_maxiter, ridge=ridge,
        independent=independent, unroll=unroll).x_rec


def defensegan_reconstruct_with_latent(
    generator_fn: GeneratorFn,
    key: PRNGKey,
    x: ArrayLike,
    *,
    latent_dim: int,
    restarts: int = 10,
    steps: int = 200,
    learning_rate: float = 10.0,
    momentum: float = 0.7,
    decay_at: float = 0.8,
    decay_factor: float = 0.1,
    init_std: float | None = None,
    mode: str = "implicit",
    backward_steps: int = 10,
    backward_learning_rate: float | None = None,
    cg_maxiter: int = 100,
    ridge: float = 0.0,
    independent: bool = True,
    unroll: int | bool = 1,
) -> DefenseGANReconstruction:
    r"""DefenseGAN's projection :math:`G(z^*)`, :math:`z^* = \arg\min_z \|G(z) - x\|^2`, R restarts.

    .. math::
       z^*_n = \arg\min_{r \le R}\; \mathrm{GD}_L\big(z \mapsto \tfrac{1}{P}\|G(z) - x_n\|_2^2;
       \ z^{(0)}_{n,r}\big), \qquad z^{(0)}_{n,r} \sim \mathcal N(0, I/d)

    Official defaults (Samangouei et al.): ``L = 200`` steps, ``R = 10`` restarts, momentum SGD with
    ``learning_rate = 10`` and momentum 0.7, step decayed by ×0.1 after 80 % of the steps; the
    restart with
    the lowest reconstruction loss is kept. All ``N × R`` searches run as one batched problem (the
    loss is a sum of independent terms, so each search is unaffected by the others). Choice: the
    per-example loss is the *mean* over the ``P = H·W·C`` pixels (as in the official code, which
    the step size 10 is tuned for).

    Gradient with respect to ``x`` (``mode``): through :math:`z^*` of the selected restart
    (the selection itself is piecewise constant), except ``"bpda"`` where the reconstruction's
    Jacobian is replaced by the identity (Athalye et al.; Eqn 21 of the paper's supplementary).

    Args:
      generator_fn: ``z [M, d] -> images [M, H, W, C]`` (e.g. an eval-mode Flax generator closure).
      key: PRNG key for the random starts.
      x: images ``float32 [N, H, W, C]`` in ``[0, 1]``.
      latent_dim: ``d``.
      restarts: ``R``.
      steps: ``L``.
      learning_rate: initial step size.
      momentum: heavy-ball momentum (``0`` for plain GD).
      decay_at: fraction of ``steps`` after which the step size is multiplied by ``decay_factor``.
      decay_factor: the decay multiplier.
      init_std: standard deviation of the starts (default :math:`\sqrt{1/d}`).
      mode: gradient mode, one of ``robustjax.implicit.MODES``.
      backward_steps: :math:`T'` for ``"neumann"`` / ``"backtrack"``.
      backward_learning_rate: :math:`\eta'` for ``"neumann"`` / ``"backtrack"`` (default
        ``learning_rate``).
      cg_maxiter: CG iterations for ``"implicit"``.
      ridge: Hessian damping for ``"implicit"`` / ``"neumann"``.
      independent: solve the ``N·R`` searches as separate (vmapped) problems (see above).
      unroll: unroll factor of the latent search loop (speed only).

    Returns:
      :class:`DefenseGANReconstruction` ``(x_rec [N, H, W, C], z [N, d], loss [N])``.

    Cost: O(L · N · R · (fwd + bwd of G)); the backward pass as in ``latent_projection``.
    """
    _check_common(generator_fn, key, x, mode, steps, learning_rate, backward_steps,
                  backward_learning_rate, unroll)
    validation.check_positive_int(latent_dim, "latent_dim")
    validation.check_positive_int(restarts, "restarts")
    validation.check_probability(momentum, "momentum", closed=True)
    validation.check_probability(decay_at, "decay_at")
    validation.check_positive(decay_factor, "decay_factor")
    x = jnp.asarray(x)
    n = x.shape[0]
    if init_std is None:
        init_std = (1.0 / latent_dim) ** 0.5
    validation.check_positive(init_std, "init_std")

    z0 = init_std * jax.random.normal(key, (n, restarts, latent_dim), x.dtype)
    schedule = optax.piecewise_constant_schedule(learning_rate,
                                                 {int(decay_at * steps): decay_factor})
    optimizer = optax.sgd(schedule, momentum=momentum if momentum > 0 else None)

    def per_example_loss(z, x):  # z [N, R, d], x [N, H, W, C] -> [N, R]
        g = generator_fn(z.reshape(-1, latent_dim)).reshape(z.shape[:2] + x.shape[1:])
        return jnp.mean((g - x[:, None]) ** 2, axis=(2, 3, 4))

    project = functools.partial(latent_projection, steps=steps, learning_rate=learning_rate,
                                mode=mode, optimizer=optimizer, backward_steps=backward_steps,
                                backward_learning_rate=backward_learning_rate,
                                cg_maxiter=cg_maxiter, ridge=ridge, unroll=unroll)
    if independent:
        def single_loss(z, xi):  # z [d], xi [H, W, C] -> scalar
            return jnp.mean((generator_fn(z[None]).reshape(xi.shape) - xi) ** 2)

        one = lambda z0i, xi: project(single_loss, z0i, xi)  # noqa: E731
        z = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(0, 0))(z0, x)
    else:
        def inner_loss(z, x):
            return jnp.sum(per_example_loss(z, x))

        z = project(inner_loss, z0, x)
    losses = jax.lax.stop_gradient(per_example_loss(z, x))
    best = jnp.argmin(losses, axis=1)
    z_best = jnp.take_along_axis(z, best[:, None, None], axis=1)[:, 0]
    x_rec = generator_fn(z_best).reshape(x.shape)
    if mode == "bpda":
        x_rec = reconstruction_bpda(x, x_rec)
    return DefenseGANReconstruction(
        x_rec, z_best, jnp.take_along_axis(losses, best[:, None], axis=1)[:, 0])


def defensegan_logits(
    classifier_fn: LogitsFn,
    generator_fn: GeneratorFn,
    key: PRNGKey,
    x: ArrayLike,
    **kwargs,
) -> Array:
    """DefenseGAN's prediction ``classifier_fn(G(z*(x)))``: logits ``[N, K]``.

    Args:
      classifier_fn: ``logits_fn(images [N, H, W, C]) -> [N, K]``.
      generator_fn: ``z [M, d] -> images [M, H, W, C]``.
      key: PRNG key of the random starts.
      x: images ``[N, H, W, C]`` in ``[0, 1]``.
      **kwargs: keyword-only options of :func:`defensegan_reconstruct` (``latent_dim`` required).

    Returns:
      ``[N, K]`` logits.

    Cost: :func:`defensegan_reconstruct` plus one classifier pass.
    """
    if not callable(classifier_fn):
        raise ValueError(f"`classifier_fn` must be callable, got {type(classifier_fn).__name__}.")
    return classifier_fn(defensegan_reconstruct(generator_fn, key, x, **kwargs))


def make_defensegan_logits_fn(
    classifier_fn: LogitsFn, generator_fn: GeneratorFn, key: PRNGKey, **kwargs
) -> LogitsFn:
    """A ``logits_fn(x)`` for attacks: DefenseGAN with fixed random starts drawn from ``key``.

    Same key, same starts: the defended model is a deterministic function that the attacks of
    ``robustjax.attacks`` can differentiate (gradient per ``mode``).
    """
    validation.check_key(key)
    if not callable(classifier_fn):
        raise ValueError(f"`classifier_fn` must be callable, got {type(classifier_fn).__name__}.")

    def logits_fn(x):
        return defensegan_logits(classifier_fn, generator_fn, key, x, **kwargs)

    return logits_fn


def abs_logits(
    decoder_fn: GeneratorFn,
    key: PRNGKey,
    x: ArrayLike,
    *,
    num_classes: int,
    latent_dim: int,
    num_samples: int = 8000,
    steps: int = 50,
    learning_rate: float = 0.05,
    beta: float = 1.0,
    scale: float = 1.0,
    mode: str = "implicit",
    backward_steps: int = 10,
    backward_learning_rate: float | None = None,
    cg_maxiter: int = 100,
    ridge: float = 0.0,
    unroll: int | bool = 1,
) -> Array:
    r"""ABS class scores ``[N, K]``: :func:`abs_logits_with_latent` without the latents.
    Arguments as there."""
    return abs_logits_with_latent(
        decoder_fn, key, x, num_classes=num_classes, latent_dim=latent_dim,
        num_samples=num_samples, steps=steps, learning_rate=learning_rate, beta=beta,
        scale=scale, mode=mode, backward_steps=backward_steps,
        backward_learning_rate=backward_learning_rate, cg_maxiter=cg_maxiter, ridge=ridge,
        unroll=unroll).logits


def abs_logits_with_latent(
    decoder_fn: GeneratorFn,
    key: PRNGKey,
    x: ArrayLike,
    *,
    num_classes: int,
    latent_dim: int,
    num_samples: int = 8000,
    steps: int = 50,
    learning_rate: float = 0.05,
    beta: float = 1.0,
    scale: float = 1.0,
    mode: str = "implicit",
    backward_steps: int = 10,
    backward_learning_rate: float | None = None,
    cg_maxiter: int = 100,
    ridge: float = 0.0,
    unroll: int | bool = 1,
) -> ABSWithLatent:
    r"""ABS class scores by per-class latent inference (analysis by synthesis).

    For every class ``c`` with decoder :math:`G_c`:

    .. math::
       \ell_c(z; x) = \|G_c(z) - x\|_2^2 + \beta \|z\|_2^2, \qquad
       \mathrm{logit}_c(x) = -\,s\, \ell_c(z^*_c(x); x)

    :math:`z^*_c` starts from the best of ``num_samples`` prior samples
    :math:`z \sim \mathcal N(0, I)` (shared by all inputs and decoded once) and is refined by
    ``steps`` Adam steps with step ``learning_rate`` (ABS: 8000 samples, 50 steps, 0.05). The
    squared
    error plus :math:`\beta\|z\|^2` is the Gaussian-likelihood ELBO proxy the ABS paper uses
    (up to constants; choice: sums over pixels, :math:`\beta = 1`, score scale ``s = 1``).
    Gradients with respect to ``x`` follow ``mode`` through :math:`z^*`. **ABS does not exercise
    implicit differentiation:** its logit *is* the inner objective at its minimiser, so by the
    envelope theorem :math:`\frac{d}{dx}\ell_c(z^*_c(x); x) = \partial_x \ell_c(z^*_c; x)
    + \underbrace{\nabla_z \ell_c(z^*_c; x)}_{=0}\,\partial_x z^*_c = \partial_x \ell_c`,
    and every mode (``"implicit"`` included) equals the stop-gradient (``"bpda"``-latent)
    gradient up to the inner solver's residual :math:`\nabla_z \ell_c \ne 0`. An ABS curve
    under the ``"implicit"`` attack is therefore evidence about the CW-style optimiser, not about
    implicit differentiation; DefenseGAN (whose logits are a *different* function,
    :math:`F(G(z^*))`, of the minimiser) is the defense that tests it.

    Args:
      decoder_fn: ``z [K, M, d] -> images [K, M, H, W, C]``; class ``c`` decodes ``z[c]`` (e.g.
        ``ClassConditionalVAE.decode``).
      key: PRNG key for the prior samples.
      x: images ``[N, H, W, C]`` in ``[0, 1]``.
      num_classes: ``K``.
      latent_dim: ``d`` (8 in ABS).
      num_samples: prior samples per class for the initialisation.
      steps: Adam refinement steps.
      learning_rate: Adam step size.
      beta: weight of :math:`\|z\|^2`.
      scale: score scale ``s``.
      mode: gradient mode (``robustjax.implicit.MODES``).
      backward_steps, backward_learning_rate, cg_maxiter, ridge, unroll: see
        :func:`robustjax.implicit.latent_projection`.

    Returns:
      :class:`ABSWithLatent` ``(logits [N, K], z [K, N, d])``.

    Cost: ``num_samples · K`` decoder passes (once per call) + O(N·K·num_samples·P) distances +
    O(steps · N · K · (fwd + bwd of a decoder)).
    """
    _check_common(decoder_fn, key, x, mode, steps, learning_rate, backward_steps,
                  backward_learning_rate, unroll)
    validation.check_positive_int(num_classes, "num_classes")
    validation.check_positive_int(latent_dim, "latent_dim")
    validation.check_positive_int(num_samples, "num_samples")
    validation.check_nonnegative(beta, "beta")
    validation.check_positive(scale, "scale")
    x = jnp.asarray(x)
    k = num_classes

    samples = jax.random.normal(key, (k, num_samples, latent_dim), x.dtype)
    decoded = jax.lax.stop_gradient(decoder_fn(samples))  # [K, S, H, W, C]
    flat_dec = decoded.reshape(k, num_samples, -1)
    flat_x = jax.lax.stop_gradient(x).reshape(x.shape[0], -1)
    dist = (jnp.sum(flat_dec ** 2, -1)[:, None, :] - 2 * jnp.einsum("ksp,np->kns", flat_dec, flat_x)
            + jnp.sum(flat_x ** 2, -1)[None, :, None])  # [K, N, S]
    dist = dist + beta * jnp.sum(samples ** 2, -1)[:, None, :]
    best = jnp.argmin(dist, axis=-1)  # [K, N]
    z0 = jnp.take_along_axis(samples, best[..., None], axis=1)  # [K, N, d]

    def per_class_loss(z, x):  # z [K, N, d] -> [K, N]
        rec = decoder_fn(z)
        return jnp.sum((rec - x[None]) ** 2, axis=(2, 3, 4)) + beta * jnp.sum(z ** 2, -1)

    def inner_loss(z, x):
        return jnp.sum(per_class_loss(z, x))

    z = latent_projection(inner_loss, z0, x, steps=steps, learning_rate=learning_rate, mode=mode,
                          optimizer=optax.adam(learning_rate), backward_steps=backward_steps,
                          backward_learning_rate=backward_learning_rate, cg_maxiter=cg_maxiter,
                          ridge=ridge, unroll=unroll)
    logits = -scale * per_class_loss(z, x).T
    return ABSWithLatent(logits, z)


def make_abs_logits_fn(decoder_fn: GeneratorFn, key: PRNGKey, **kwargs) -> LogitsFn:
    """A ``logits_fn(x)`` for attacks: :func:`abs_logits` with prior samples fixed by ``key``."""
    validation.check_key(key)

    def logits_fn(x):
        return abs_logits(decoder_fn, key, x, **kwargs)

    return logits_fn
