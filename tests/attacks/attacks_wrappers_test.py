"""BPDA and EOT wrappers, and their composition with PGD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks


def quantize(x):
    return jnp.round(x * 4.0) / 4.0  # zero gradient almost everywhere


def median3x3_quantized(x):
    """Median filter (3×3, edge padding) followed by quantisation: non-differentiable."""
    n, h, w, c = x.shape
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    patches = jnp.stack([p[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], -1)
    return quantize(jnp.median(patches, axis=-1))


def test_bpda_value_and_identity_backward():
    x = jax.random.uniform(jax.random.key(0), (3, 4))
    c = jax.random.normal(jax.random.key(1), (3, 4))
    f = attacks.bpda(quantize)
    np.testing.assert_array_equal(f(x), quantize(x))
    g = jax.grad(lambda z: jnp.sum(c * f(z)))(x)
    np.testing.assert_allclose(g, c)  # cotangent passed through
    assert np.all(np.asarray(jax.grad(lambda z: jnp.sum(c * quantize(z)))(x)) == 0)


def test_bpda_backward_is_the_supplied_approximation():
    x = jax.random.uniform(jax.random.key(0), (3, 4))
    c = jax.random.normal(jax.random.key(1), (3, 4))
    approx = lambda z: jnp.tanh(2.0 * z) + z**2
    f = attacks.bpda(quantize, approx)
    g = jax.jit(jax.grad(lambda z: jnp.sum(c * f(z))))(x)
    want = jax.grad(lambda z: jnp.sum(c * approx(z)))(x)
    np.testing.assert_allclose(g, want, rtol=1e-6)
    np.testing.assert_array_equal(f(x), quantize(x))
    gv = jax.vmap(jax.grad(lambda z: jnp.sum(f(z[None]))))(x)
    np.testing.assert_allclose(gv, jax.vmap(jax.grad(lambda z: jnp.sum(approx(z))))(x),
                               rtol=1e-6)


def test_pgd_through_bpda_of_median_filter(trained_mlp):
    _, f, x, y = trained_mlp
    x, y = x[:32], y[:32]
    defended = lambda z: f(median3x3_quantized(z))
    bpda_def = lambda z: f(attacks.bpda(median3x3_quantized)(z))
    clean = float(jnp.mean(jnp.argmax(defended(x), -1) == y))
    kw = dict(eps=0.2, steps=15, step_size=0.03)
    # The plain gradient is zero: PGD never moves away from its random start.
    xa = attacks.pgd(defended, jax.random.key(0), x, y, random_start=False, **kw)
    np.testing.assert_array_equal(xa, x)
    xb = jax.jit(lambda k, x, y: attacks.pgd(bpda_def, k, x, y, **kw))(jax.random.key(0), x, y)
    acc = float(jnp.mean(jnp.argmax(defended(xb), -1) == y))
    assert clean > 0.5 and acc < clean - 0.3
    assert float(jnp.max(jnp.abs(xb - x))) <= 0.2 + 1e-6


def randomized(key, x):
    # Random additive noise, then a fixed linear map.
    w = jnp.arange(12.0).reshape(4, 3) / 10.0
    return (x + 0.3 * jax.random.normal(key, x.shape)) @ w


def test_eot_mean_and_gradient():
    x = jax.random.uniform(jax.random.key(0), (2, 4))
    key = jax.random.key(3)
    avg = attacks.eot(randomized, num_samples=5)
    want = np.mean([randomized(jax.random.fold_in(key, s), x) for s in range(5)], axis=0)
    np.testing.assert_allclose(jax.jit(avg)(key, x), want, rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda z: jnp.sum(avg(key, z) ** 2))(x)
    g_want = np.mean([jax.grad(lambda z: jnp.sum(randomized(jax.random.fold_in(key, s), z) ** 2)
                               )(x) for s in range(5)], axis=0)
    np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="num_samples"):
        attacks.eot(randomized, num_samples=0)


def test_pgd_through_eot_of_randomized_model(trained_mlp):
    _, f, x, y = trained_mlp
    x, y = x[:32], y[:32]
    noisy = lambda k, z: f(jnp.clip(z + 0.1 * jax.random.normal(k, z.shape), 0, 1))
    model = lambda z: attacks.eot(noisy, num_samples=4)(jax.random.key(5), z)
    xa = jax.jit(lambda k, x, y: attacks.pgd(model, k, x, y, eps=0.15, steps=10,
                                             step_size=0.03))(jax.random.key(0), x, y)
    acc_clean = float(jnp.mean(jnp.argmax(model(x), -1) == y))
    acc_adv = float(jnp.mean(jnp.argmax(model(xa), -1) == y))
    assert acc_adv < acc_clean - 0.3
