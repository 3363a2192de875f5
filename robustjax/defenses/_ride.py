"""Per-input self-supervised defenders: DIP, DAE (Alg. 1), I-DIP and RIDE (Alg. 2).

Implements seed 002, "Robust Iterative Data Estimation" (RIDE): a defender is a *functional*
that fits a fresh reconstruction network to every single (adversarial) input and returns the
network's estimate of the clean image. Everything is written for ONE image ``[H, W, C]`` and
``jax.vmap``-ped over a batch, so every image gets its own network weights, optimizer state and
keys, and a batch costs about what one image costs on an accelerator.

The network is given as two pure functions (:class:`ReconstructionNet`), so this module does not
depend on Flax; ``robustjax.models._ride.make_reconstruction_net`` builds them from the Flax FCNs
of Table 3.

The defense is **randomized**: weight initialization, the Gaussian input/target noise, the loss
masks and dropout — which, as in the paper, stays on when the estimate is formed — all draw from
the ``key``. Same key, same output; a white-box evaluation therefore needs EOT/BPDA.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from robustjax._src import validation as V
from robustjax._src.types import Array, ArrayLike, PRNGKey, PyTree

__all__ = [
    "RIDE_METHODS",
    "PAPER_SIGMA_NORMALIZED",
    "IMAGENET_STD",
    "MNIST_STD",
    "SIGMA_PIXEL_UNITS",
    "sigma_in_pixel_units",
    "ReconstructionNet",
    "RideConfig",
    "RIDE_CONFIGS",
    "DefenseTrace",
    "ride_label",
    "random_loss_mask",
    "ride_interpolate",
    "self_supervised_single",
    "self_supervised_trace",
    "dip",
    "dae",
    "idip",
    "ride",
]

RIDE_METHODS = ("dip", "dae", "idip", "ride")

#: The paper's σ as printed (Alg. 2, Fig. 5d): 0.5, tuned in the ImageNet ablation, where the
#: images fed to RIDE were normalized by the ImageNet mean/std (supplementary "Image
#: Normalization"); the σ axis of Fig. 5d is therefore in units of the per-channel std.
PAPER_SIGMA_NORMALIZED = 0.5
#: ImageNet per-channel std (0.229, 0.224, 0.225) and the MNIST std (0.3081) of the paper.
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_STD = 0.3081


def sigma_in_pixel_units(sigma_normalized: float, std=IMAGENET_STD) -> float:
    """A noise std given on normalized inputs ``(x - mean) / std``, in ``[0, 1]`` pixel units.

    ``σ_pixels = σ_normalized · mean(std)`` (the mean over channels of a per-channel ``std``).
    ``sigma_in_pixel_units(0.5) = 0.113`` (ImageNet std, the setting σ = 0.5 was tuned in);
    with the MNIST std it would be ``0.154``. Cost O(C).
    """
    stds = tuple(std) if isinstance(std, (tuple, list)) else (float(std),)
    return float(sigma_normalized) * sum(stds) / len(stds)


#: σ = 0.5 read in [0, 1] pixel units: 0.5 × mean(0.229, 0.224, 0.225) = 0.113 (rounded to
#: 3 digits). This is the library default (``RideConfig.sigma``) and what the experiment's
#: tables use unless labelled otherwise. The other reading — σ = 0.5 applied literally to
#: [0, 1] images, as the white-box setting's sigmoid output might suggest — gives noise with
#: more energy than an MNIST digit (a test measured 12.5 % accuracy with it after 200 steps);
#: it is available as ``RideConfig(sigma=PAPER_SIGMA_NORMALIZED)``.
SIGMA_PIXEL_UNITS = round(sigma_in_pixel_units(PAPER_SIGMA_NORMALIZED), 3)


class ReconstructionNet(NamedTuple):
    """A reconstruction network ``h(z; w)`` as two pure functions.

    Attributes:
      init: ``init(key, x) -> params`` for ONE image ``x [H, W, C]`` (used for shapes only).
      apply: ``apply(params, z, key, train) -> out`` mapping a mini-batch ``z [n, H, W, C]`` to
        ``[n, H, W, C]``; ``key`` drives dropout, ``train`` (a Python bool) switches it on.
    """

    init: Callable[[PRNGKey, Array], PyTree]
    apply: Callable[[PyTree, Array, PRNGKey, bool], Array]


class RideConfig(NamedTuple):
    """Hyperparameters of the self-supervised defenders (defaults: the paper's, Alg. 2 and §5).

    Attributes:
      steps: ``K``, optimizer steps per checkpoint (2000).
      num_checkpoints: ``T``, number of checkpoints (5); total steps ``K·T``.
      alpha: ``α``, convex interpolation weight of the old target, Eq. 9 (0.9). Only I-DIP and
        RIDE use it; DIP and DAE keep the target fixed (``α = 1``).
      sigma: ``σ``, std of the Gaussian noise on DAE/RIDE input AND target, Eq. 7, in the
        units of the images given to the defender (``[0, 1]`` pixels here). Default
        :data:`SIGMA_PIXEL_UNITS` = 0.113: the paper's σ = 0.5 was set on ImageNet-normalized
        inputs, ``0.5 × 0.226 ≈ 0.113`` in ``[0, 1]`` units. The literal reading (0.5 on
        ``[0, 1]`` images) is :data:`PAPER_SIGMA_NORMALIZED`.
      batch_size: ``n``, noise samples per step (1); the estimate
        :math:`x_{est} = E_z[h(z)]` is also a mean over ``n`` samples (Alg. 1, last line).
      learning_rate: Adam step size η (1e-4).
      weight_decay: weight decay (1e-4).
      decoupled_weight_decay: ``False`` (default) adds ``wd·w`` to the gradient before Adam
        (``optax.chain(optax.add_decayed_weights(wd), optax.adam(lr))``), which is what the
        paper's "Adam … with weight decay 1e-4" means in PyTorch (``torch.optim.Adam``'s
        ``weight_decay``); ``True`` uses ``optax.adamw`` (decoupled, AdamW).
      mask_ratio: ``p``, the fraction of pixels EXCLUDED from each step's loss (supplementary,
        "Random Loss Masking": "randomly exclude p portion of the pixels", p = 0.9). ``0``
        disables masking. Applied by every method.
      nms: non-maximum suppression at the interpolation step (supplementary; I-DIP and RIDE).
      dropout_at_eval: keep dropout on when forming the estimate (the paper does; ``True``).
      dip_noise_scale: DIP's fixed input is ``U(0, dip_noise_scale)`` noise with the image's
        channel count (Table 3's input planes); 0.1 as in Ulyanov et al.
      chunk_size: execution only, no effect on the result: a batch is fitted as ``lax.map``
        over chunks of ``chunk_size`` images, each chunk one vectorized (vmapped) program of
        all its networks (8; ``None`` vectorizes the whole batch at once). On CPU a chunk's
        working set then stays in cache; measured on 2 cores with the MNIST FCN, chunks of 8
        ran ~2× faster per image than one 64-image program (experiments/benchmarks/ride.py).
      unroll: execution only: unroll factor of the ``K``-step ``lax.scan`` (1).
    """

    steps: int = 2000
    num_checkpoints: int = 5
    alpha: float = 0.9
    sigma: float = SIGMA_PIXEL_UNITS
    batch_size: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    decoupled_weight_decay: bool = False
    mask_ratio: float = 0.9
    nms: bool = True
    dropout_at_eval: bool = True
    dip_noise_scale: float = 0.1
    chunk_size: int | None = 8
    unroll: int | bool = 1


#: Per-dataset configurations. The paper fixes the same hyperparameters for every dataset
#: ("fixed for all the following experiments … without further fine-tuning"); the datasets
#: differ by their network (Table 3, ``robustjax.models._ride.ride_fcn``). All use σ in
#: ``[0, 1]`` pixel units (:data:`SIGMA_PIXEL_UNITS`); ``"literal_sigma"`` is the paper's
#: hyperparameters with σ = 0.5 applied to ``[0, 1]`` images (the other reading). ``"small"`` is
#: a CPU-sized configuration for tests and quick runs: 200 steps, a 100× larger step size, and
#: σ = 0.2, p = 0.5 (with σ = 0.5, p = 0.9 two hundred steps are far too few; measured on MNIST).
#: Any run that deviates from K = 2000, T = 5 is "RIDE-small (K, T, lr, σ)", not "RIDE".
RIDE_CONFIGS = {
    "mnist": RideConfig(),
    "cifar10": RideConfig(),
    "imagenet": RideConfig(),
    "literal_sigma": RideConfig(sigma=PAPER_SIGMA_NORMALIZED),
    "small": RideConfig(
        steps=50, num_checkpoints=4, learning_rate=1e-2, sigma=0.2, mask_ratio=0.5
    ),
}


def ride_label(config: "RideConfig", name: str = "RIDE") -> str:
    """The table label of a RIDE run: ``"RIDE"`` only for the paper's K = 2000, T = 5.

    Any other ``(K, T)`` is ``"RIDE-small (K=…, T=…, lr=…, σ=…)"``; with the paper's ``(K, T)``
    but another step size, σ or mask ratio, the differing values follow in parentheses. A mask
    ratio other than the paper's p = 0.9 is appended as ``p=…``. Cost O(1).
    """
    paper = RideConfig()
    lr, sig = f"lr={config.learning_rate:g}", f"σ={config.sigma:g}"
    extra = [] if config.mask_ratio == paper.mask_ratio else [f"p={config.mask_ratio:g}"]
    if (config.steps, config.num_checkpoints) != (paper.steps, paper.num_checkpoints):
        parts = [f"K={config.steps}", f"T={config.num_checkpoints}", lr, sig] + extra
        return f"{name}-small ({', '.join(parts)})"
    diff = [lr] if config.learning_rate != paper.learning_rate else []
    diff += [sig] if config.sigma != paper.sigma else []
    diff += extra
    return f"{name} ({', '.join(diff)})" if diff else name


class DefenseTrace(NamedTuple):
    """Everything a defender run records (fields gain a leading ``N`` when batched).

    Attributes:
      estimate: final output :math:`x_{est}^{(T)}`, ``[H, W, C]``.
      estimates: :math:`x_{est}^{(t)}` after each checkpoint ``t = 1..T``, ``[T, H, W, C]``
        (reconstructions at iterations ``K, 2K, …, TK``: Fig. 5a / Fig. 6).
      targets: :math:`x^{(t)}` after each checkpoint's update, ``[T, H, W, C]``.
      losses: masked reconstruction loss of every step, ``[T, K]``.
    """

    estimate: Array
    estimates: Array
    targets: Array
    losses: Array


def _check_config(config: RideConfig) -> None:
    if not isinstance(config, RideConfig):
        raise ValueError(f"`config` must be a RideConfig, got {type(config).__name__}.")
    V.check_positive_int(config.steps, "config.steps")
    V.check_positive_int(config.num_checkpoints, "config.num_checkpoints")
    V.check_probability(config.alpha, "config.alpha")
    V.check_nonnegative(config.sigma, "config.sigma")
    V.check_positive_int(config.batch_size, "config.batch_size")
    V.check_positive(config.learning_rate, "config.learning_rate")
    V.check_nonnegative(config.weight_decay, "config.weight_decay")
    V.check_probability(config.mask_ratio, "config.mask_ratio")
    if config.mask_ratio >= 1.0:
        raise ValueError(f"`config.mask_ratio` must be < 1, got {config.mask_ratio}.")
    V.check_nonnegative(config.dip_noise_scale, "config.dip_noise_scale")
    if config.chunk_size is not None:
        V.check_positive_int(config.chunk_size, "config.chunk_size")
    if not isinstance(config.unroll, bool):
        V.check_positive_int(config.unroll, "config.unroll")


def _check_net(net) -> None:
    if not isinstance(net, ReconstructionNet):
        raise ValueError(f"`net` must be a ReconstructionNet, got {type(net).__name__}.")


def random_loss_mask(key: PRNGKey, shape: tuple[int, int], *, ratio: float) -> Array:
    """A random pixel mask that excludes exactly ``round(ratio·H·W)`` of the ``H·W`` pixels.

    Supplementary "Random Loss Masking". The count is exact (a random permutation, not i.i.d.
    Bernoulli draws) and at least one pixel is always kept.

    Args:
      key: PRNG key.
      shape: ``(H, W)``.
      ratio: fraction ``p ∈ [0, 1)`` of pixels to exclude.

    Returns:
      ``bool [H, W]``, ``True`` where the pixel enters the loss. Cost ``O(H·W·log(H·W))``.
    """
    V.check_key(key)
    V.check_probability(ratio, "ratio")
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise ValueError(f"`shape` must be a tuple (H, W), got {shape!r}.")
    V.check_positive_int(shape[0], "shape[0]")
    V.check_positive_int(shape[1], "shape[1]")
    h, w = shape
    total = h * w
    num_excluded = min(int(round(ratio * total)), total - 1)
    rank = jax.random.permutation(key, total)
    return jnp.reshape(rank >= num_excluded, (h, w))


def ride_interpolate(
    x: ArrayLike, estimate: ArrayLike, *, alpha: float, nms: bool = True
) -> Array:
    r"""The RIDE target update (Eq. 9) with optional non-maximum suppression, for ONE image.

    .. math:: x^{(t)}_i = \begin{cases} x_{est,i}^{(t)} & d_i < \tau \\
              \alpha x^{(t-1)}_i + (1-\alpha) x_{est,i}^{(t)} & \text{otherwise}\end{cases},
              \quad d_i = \|x^{(t-1)}_i - x_{est,i}^{(t)}\|_1,\ \tau = \operatorname{median}_i d_i

    where ``i`` runs over pixels and the ℓ1 norm over channels (supplementary, Eq. 14). The
    paper writes the distances between :math:`x^{(t)}` and :math:`x_{est}^{(t)}` "at the convex
    combination step"; we read the target entering that step, :math:`x^{(t-1)}`, since
    :math:`x^{(t)}` is what the step produces. ``median`` of an even count is the mean of the two
    middle values (``jnp.median``), so for distinct distances exactly half the pixels are
    substituted. With ``nms=False`` it is plain Eq. 9.

    Args:
      x: the current target :math:`x^{(t-1)}`, ONE image ``[H, W, C]`` (finite).
      estimate: reconstruction :math:`x_{est}^{(t)}`, ``[H, W, C]`` (finite).
      alpha: interpolation weight α of the old target.
      nms: apply non-maximum suppression.

    Returns:
      New target :math:`x^{(t)}`, ``[H, W, C]``. Cost ``O(H·W·C + H·W log(H·W))``.
    """
    V.check_probability(alpha, "alpha")
    V.check_images(x, "x", rank=3, box=None)
    V.check_images(estimate, "estimate", rank=3, box=None)
    if jnp.shape(x) != jnp.shape(estimate):
        raise ValueError(f"`estimate` must have the shape of `x` {jnp.shape(x)}, got "
                         f"{jnp.shape(estimate)}.")
    target, estimate = jnp.asarray(x), jnp.asarray(estimate)
    mixed = alpha * target + (1.0 - alpha) * estimate
    if not nms:
        return mixed
    d = jnp.sum(jnp.abs(target - estimate), axis=-1)
    tau = jnp.median(d)
    return jnp.where((d < tau)[..., None], estimate, mixed)


def _optimizer(config: RideConfig) -> optax.GradientTransformation:
    if config.decoupled_weight_decay:
        return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay), optax.adam(config.learning_rate)
    )


def self_supervised_single(
    net: ReconstructionNet,
    key: PRNGKey,
    x: ArrayLike,
    *,
    method: str = "ride",
    config: RideConfig = RideConfig(),
) -> DefenseTrace:
    r"""Run one self-supervised defender on ONE image and record its trajectory.

    Methods (seed 002 §4):

    * ``"dip"`` — deep image prior: fixed noise input :math:`z_0`, target :math:`\tilde x`.
    * ``"dae"`` — Alg. 1: input and target are independent draws
      :math:`z, s \sim \mathcal N(\tilde x, \sigma^2 I)`, loss Eq. 7,
      :math:`x_{est} = E_z[h(z)]` (mean of ``n`` draws).
    * ``"idip"`` — DIP with the iterative target update (Eq. 9 + NMS).
    * ``"ride"`` — Alg. 2: DAE on the target :math:`x^{(t-1)}` for ``K`` steps, estimate,
      update :math:`x^{(t)} = \alpha x^{(t-1)} + (1-\alpha)x_{est}^{(t)}` (+ NMS), ``T`` times,
      return :math:`x_{est}^{(T)}`.

    All methods run ``T`` checkpoints of ``K`` steps, continuing the same weights **and Adam
    state** across checkpoints (Alg. 2 passes :math:`w^{(t-1)}` on; we also keep the moment
    estimates, as one PyTorch optimizer would); DIP/DAE only record their estimate at each
    checkpoint, so DIP/DAE with ``(K, T)`` equal one run of ``K·T`` steps, and RIDE with
    ``α = 1``, ``nms=False`` equals DAE. Step ``g`` (global count) draws its noise, mask and
    dropout from ``fold_in(k_train, g)``; the estimate after step ``g`` from ``fold_in(k_eval,
    g)``. The loss is the mean squared error over the un-masked pixels (all channels) of the
    ``n`` samples, each sample with its own mask.

    Args:
      net: the reconstruction network, :class:`ReconstructionNet`.
      key: PRNG key.
      x: ONE input image ``[H, W, C]`` (channels last) in ``[0, 1]``.
      method: one of ``"dip"``, ``"dae"``, ``"idip"``, ``"ride"``.
      config: :class:`RideConfig` (static).

    Returns:
      :class:`DefenseTrace` with ``estimate [H, W, C]``, ``estimates, targets [T, H, W, C]``,
      ``losses [T, K]``.

    Cost: ``K·T`` forward+backward passes of ``h`` on ``n`` images plus ``T`` forward passes,
    i.e. ``O(K·T·n·(fwd+bwd))``.
    """
    V.check_choice(method, "method", RIDE_METHODS)
    _check_config(config)
    V.check_key(key)
    _check_net(net)
    V.check_images(x, "x", rank=3)
    x = jnp.asarray(x, jnp.float32)
    n = config.batch_size
    k_steps = config.steps
    noisy_input = method in ("dae", "ride")
    iterative = method in ("idip", "ride")
    alpha = config.alpha if iterative else 1.0
    h, w, c = x.shape

    k_init, k_noise, k_train, k_eval = jax.random.split(key, 4)
    params = net.init(k_init, x)
    opt = _optimizer(config)
    opt_state = opt.init(params)
    z_fixed = jax.random.uniform(k_noise, x.shape, x.dtype, 0.0, config.dip_noise_scale)
    z_fixed = jnp.broadcast_to(z_fixed, (n,) + x.shape)

    def net_input(target, k):
        if noisy_input:
            return target + config.sigma * jax.random.normal(k, (n,) + x.shape, x.dtype)
        return z_fixed

    def loss_fn(p, target, k):
        k_in, k_tgt, k_mask, k_drop = jax.random.split(k, 4)
        z = net_input(target, k_in)
        if noisy_input:
            s = target + config.sigma * jax.random.normal(k_tgt, (n,) + x.shape, x.dtype)
        else:
            s = jnp.broadcast_to(target, (n,) + x.shape)
        out = net.apply(p, z, k_drop, True)
        sq = (out - s) ** 2
        if config.mask_ratio > 0:
            masks = jax.vmap(lambda kk: random_loss_mask(kk, (h, w), ratio=config.mask_ratio))(
                jax.random.split(k_mask, n)
            ).astype(x.dtype)
            return jnp.sum(sq * masks[..., None]) / (jnp.sum(masks) * c)
        return jnp.mean(sq)

    grad_fn = jax.value_and_grad(loss_fn)

    def estimate(p, target, g):
        k_in, k_drop = jax.random.split(jax.random.fold_in(k_eval, g))
        out = net.apply(p, net_input(target, k_in), k_drop, config.dropout_at_eval)
        return jnp.mean(out, axis=0)

    def checkpoint(carry, t):
        p, s, target = carry

        def step(inner, i):
            p, s = inner
            loss, grads = grad_fn(p, target, jax.random.fold_in(k_train, t * k_steps + i))
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, s), losses = jax.lax.scan(step, (p, s), jnp.arange(k_steps), unroll=config.unroll)
        x_est = estimate(p, target, (t + 1) * k_steps)
        if iterative:
            target = ride_interpolate(target, x_est, alpha=alpha, nms=config.nms)
        return (p, s, target), (x_est, target, losses)

    _, (estimates, targets, losses) = jax.lax.scan(
        checkpoint, (params, opt_state, x), jnp.arange(config.num_checkpoints)
    )
    return DefenseTrace(estimates[-1], estimates, targets, losses)


def self_supervised_trace(
    net: ReconstructionNet,
    key: PRNGKey,
    x: ArrayLike,
    *,
    method: str = "ride",
    config: RideConfig = RideConfig(),
) -> DefenseTrace:
    """:func:`self_supervised_single` vectorized over a batch ``x [N, H, W, C]``.

    Image ``i`` runs with key ``jax.random.split(key, N)[i]`` and its own network weights and
    Adam state, so the result equals per-image runs. The batch is processed as
    ``lax.map(..., batch_size=config.chunk_size)``: chunks of ``chunk_size`` images, each one
    ``jax.vmap``-ped program training all its networks together (with the RIDE FCN's
    ``conv="patches"`` every layer is then one batched matmul). Returns a
    :class:`DefenseTrace` whose fields have a leading ``N``. Cost: that of one image times
    ``N`` in FLOPs.
    """
    V.check_choice(method, "method", RIDE_METHODS)
    _check_config(config)
    V.check_key(key)
    _check_net(net)
    V.check_images(x, "x")
    x = jnp.asarray(x, jnp.float32)
    keys = jax.random.split(key, x.shape[0])

    def one(args):
        return self_supervised_single(net, args[0], args[1], method=method, config=config)

    chunk = x.shape[0] if config.chunk_size is None else min(config.chunk_size, x.shape[0])
    return jax.lax.map(one, (keys, x), batch_size=chunk)


def _defender(method: str, paper: str):
    def defend(
        net: ReconstructionNet, key: PRNGKey, x: ArrayLike, *, config: RideConfig = RideConfig()
    ) -> Array:
        return self_supervised_trace(net, key, x, method=method, config=config).estimate

    defend.__name__ = method
    defend.__qualname__ = method
    defend.__doc__ = f"""{paper}

    Batched and randomized: image ``i`` of ``x [N, H, W, C]`` gets its own network, fitted from
    ``jax.random.split(key, N)[i]``; dropout stays on when the estimate is formed (as in the
    paper), so different keys give different outputs. See :func:`self_supervised_single` for the
    exact algorithm and :class:`RideConfig` for the hyperparameters.

    Args:
      net: :class:`ReconstructionNet`.
      key: PRNG key.
      x: images ``[N, H, W, C]`` (NHWC) in ``[0, 1]``.
      config: :class:`RideConfig` (static); defaults to the paper's.

    Returns:
      Defended images ``[N, H, W, C]`` (the final estimate :math:`x_{{est}}^{{(T)}}`).

    Cost: ``O(N·K·T·n·(fwd+bwd))``.
    """
    return defend


dip = _defender("dip", "Deep-image-prior defense: fit ``h(z0)`` to each input (fixed noise z0).")
dae = _defender("dae", "Single-input denoising-autoencoder defense (seed 002, Alg. 1, Eq. 7).")
idip = _defender("idip", "Iterative DIP (I-DIP): DIP with the RIDE target update (Eq. 9, NMS).")
ride = _defender("ride", "Robust Iterative Data Estimation defense (seed 002, Alg. 2).")
