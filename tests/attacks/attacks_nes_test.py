"""NES gradient estimation and the NES attack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks


def smooth(x):
    # Per-example smooth loss [N].
    flat = jnp.reshape(x, (x.shape[0], -1))
    return jnp.sum(jnp.sin(3.0 * flat) + 0.5 * flat**2, axis=-1)


def test_nes_gradient_matches_true_gradient():
    x = jax.random.uniform(jax.random.key(0), (4, 2, 2, 1))
    g_true = jax.grad(lambda z: jnp.sum(smooth(z)))(x)
    g_nes = jax.jit(lambda k, z: attacks.nes_gradient(smooth, k, z, num_samples=2000,
                                                      sigma=0.01))(jax.random.key(1), x)
    a = np.asarray(g_true).reshape(4, -1)
    b = np.asarray(g_nes).reshape(4, -1)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.all(cos >= 0.9), cos


def test_nes_antithetic_exact_on_constant_and_linear():
    x = jax.random.uniform(jax.random.key(0), (3, 5))
    g = attacks.nes_gradient(lambda z: jnp.full((z.shape[0],), 2.0), jax.random.key(1), x,
                             num_samples=10, sigma=0.5)
    np.testing.assert_array_equal(g, 0.0)  # antithetic pairs cancel a constant exactly
    # Linear F(x) = a·x: estimate = (1/n) Σ 2 (a·u) u  — compare with that closed form.
    a = jnp.arange(5.0)
    key = jax.random.key(2)
    g = jax.jit(lambda k, z: attacks.nes_gradient(lambda w: w @ a, k, z, num_samples=6,
                                                  sigma=0.3))(key, x)
    u = jax.random.normal(key, (3,) + x.shape)
    want = jnp.sum(2 * (u @ a)[..., None] * u, axis=0) / 6
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)


def test_nes_attack_black_box(trained_mlp):
    _, f, x, y = trained_mlp
    x, y = x[:16], y[:16]
    run = jax.jit(lambda k, x, y: attacks.nes_attack(f, k, x, y, steps=60, num_samples=50,
                                                     sigma=0.1, learning_rate=0.02, const=10.0))
    xa = run(jax.random.key(0), x, y)
    np.testing.assert_array_equal(xa, run(jax.random.key(0), x, y))  # same key, same result
    pred = np.asarray(jnp.argmax(f(xa), -1))
    changed = np.any(np.asarray(xa != x).reshape(16, -1), axis=1)
    clean_acc = np.mean(np.asarray(jnp.argmax(f(x), -1)) == np.asarray(y))
    assert np.mean(pred == np.asarray(y)) < clean_acc - 0.25
    assert np.all(pred[changed] != np.asarray(y)[changed])
    assert np.all((np.asarray(xa) >= 0) & (np.asarray(xa) <= 1))


def test_nes_validation():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="num_samples"):
        attacks.nes_gradient(lambda z: z[:, 0], jax.random.key(0), x, num_samples=3, sigma=0.1)
    with pytest.raises(ValueError, match="sigma"):
        attacks.nes_gradient(lambda z: z[:, 0], jax.random.key(0), x, num_samples=4, sigma=0.0)
    with pytest.raises(ValueError, match="loss_fn"):
        attacks.nes_gradient(lambda z: z, jax.random.key(0), x, num_samples=4, sigma=0.1)
