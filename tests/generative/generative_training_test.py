"""WGAN-GP and class-conditional VAE objectives (robustjax.training._generative)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax.models import _generative as gm
from robustjax.training import _generative as gt
from robustjax.training._steps import make_train_step
from robustjax.training._train_state import TrainState


def _np_variables(module, *args, seed=0, std=0.2):
    """Random variables without compiling Flax's initialisers (slow on a loaded CPU)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = str(path[-1])
        if "var" in name or "scale" in name:
            return jnp.ones(s.shape, s.dtype)
        if "mean" in name:
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(std * rng.normal(size=s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _mnist(n=64):
    d = np.load("robustjax/data/_embedded/mnist_12k.npz")
    x = d["train_images"][:n].astype(np.float32)[..., None] / 255.0
    return gm.pad_to_32(jnp.asarray(x)), jnp.asarray(d["train_labels"][:n].astype(np.int32))


def test_gradient_penalty_linear_critic_closed_form():
    w = jax.random.normal(jax.random.key(0), (4, 4, 1)) * 0.4
    critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3))  # noqa: E731  gradient norm = ||w||
    xr = jax.random.uniform(jax.random.key(1), (5, 4, 4, 1))
    xf = jax.random.uniform(jax.random.key(2), (5, 4, 4, 1))
    gp = jax.jit(gt.gradient_penalty, static_argnums=0)(critic, xr, xf, jax.random.key(3))
    np.testing.assert_allclose(gp, (np.linalg.norm(w) - 1.0) ** 2 * np.ones(5), rtol=1e-5)
    loss, m = gt.wgan_gp_critic_loss(critic, xr, xf, jax.random.key(3), gp_weight=10.0)
    w_ref = np.mean(critic(xr)) - np.mean(critic(xf))
    np.testing.assert_allclose(m["wasserstein"], w_ref, rtol=1e-5)
    np.testing.assert_allclose(loss, -w_ref + 10.0 * (np.linalg.norm(w) - 1.0) ** 2, rtol=1e-5)
    np.testing.assert_allclose(gt.wgan_generator_loss(critic, xf), -np.mean(critic(xf)),
                               rtol=1e-5)


def test_vae_objective_tiny_real_run_decreases_loss():
    x, y = _mnist(100)
    keep = np.flatnonzero(np.asarray(y) < 2)[:24]  # digits 0 and 1: two class VAEs (speed)
    x, y = x[keep], y[keep]
    model = gm.ClassConditionalVAETiny(num_classes=2, latent_dim=8)
    v = _np_variables(model, x[:1], std=0.1)
    state = TrainState.create(apply_fn=model.apply, params=v["params"], tx=optax.adam(3e-3),
                              batch_stats={})
    step = jax.jit(make_train_step(gt.class_conditional_vae_objective(beta=1.0)))
    batch = {"image": x, "label": y}
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0], losses
    assert np.sum(np.diff(losses) < 0) >= 12  # the loss moves down steadily


def test_wgan_gp_tiny_real_run_losses_move():
    x, _ = _mnist(32)
    gen = gm.DCGANGeneratorTiny(widths=(8, 4, 4))
    critic = gm.DCGANCriticTiny(widths=(4, 4, 8, 4))
    g_tx = optax.adam(1e-3, b1=0.5, b2=0.9)
    d_tx = optax.adam(1e-3, b1=0.5, b2=0.9)
    _, step = gt.make_wgan_gp(gen, critic, latent_dim=4, g_tx=g_tx, d_tx=d_tx, n_critic=2)
    gv = _np_variables(gen, jnp.zeros((1, 4)))
    dv = _np_variables(critic, x[:1], std=0.05)
    state = gt.WGANState(jnp.zeros((), jnp.int32), gv["params"], gv["batch_stats"],
                         g_tx.init(gv["params"]), dv["params"], d_tx.init(dv["params"]))
    step = jax.jit(step)
    ws = []
    for _ in range(5):
        state, m = step(state, {"image": x}, jax.random.key(1))
        ws.append(float(m["wasserstein"]))
        assert all(np.isfinite(float(v)) for v in m.values())
    assert int(state.step) == 5
    assert ws[-1] > ws[0]  # the critic learns to separate real from generated digits
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.g_params, gv["params"])
    assert max(jax.tree.leaves(moved)) > 0
