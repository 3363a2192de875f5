"""FGSM: closed forms on a linear model, ball/box, jit, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks

K, D, N = 4, 12, 6
_W = np.asarray(jax.random.normal(jax.random.key(1), (D, K)), np.float32)
_B = np.asarray(jax.random.normal(jax.random.key(2), (K,)), np.float32)


def linear(x):
    return jnp.reshape(x, (x.shape[0], -1)) @ _W + _B


def _data():
    x = jax.random.uniform(jax.random.key(3), (N, 2, 3, 2), minval=0.1, maxval=0.9)
    y = jnp.arange(N, dtype=jnp.int32) % K
    return x, y


def _ce_grad_closed_form(x, y):
    """∇_x CE(xW + b, y) = W (softmax(z) − onehot(y)), per example (NumPy)."""
    z = np.asarray(x).reshape(N, -1) @ _W + _B
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(K)[np.asarray(y)]
    return ((p - onehot) @ _W.T).reshape(np.shape(x))


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_linf_linear_closed_form(targeted):
    x, y = _data()
    eps = 0.07
    g = _ce_grad_closed_form(x, y)
    want = np.clip(np.asarray(x) + eps * np.sign(-g if targeted else g), 0, 1)
    got = jax.jit(lambda k, x, y: attacks.fgsm(linear, k, x, y, eps=eps, target=y if targeted else None))(
        jax.random.key(0), x, y)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_fgsm_l2_linear_closed_form():
    x, y = _data()
    eps = 0.3
    g = _ce_grad_closed_form(x, y).reshape(N, -1)
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    want = np.clip(np.asarray(x).reshape(N, -1) + eps * u, 0, 1).reshape(x.shape)
    got = attacks.fgsm(linear, jax.random.key(0), x, y, eps=eps, norm="l2")
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Without the box the ℓ2 distance is exactly eps.
    got = attacks.fgsm(linear, jax.random.key(0), x, y, eps=eps, norm="l2", box=None)
    np.testing.assert_allclose(np.linalg.norm((got - x).reshape(N, -1), axis=1), eps, rtol=1e-5)


def test_fgsm_cw_loss_binary_linear_vertex():
    # Two classes, CW loss: the gradient of z_other − z_y is w_other − w_y, a constant.
    w = _W[:, :2]

    def f(x):
        return jnp.reshape(x, (x.shape[0], -1)) @ w

    x, _ = _data()
    y = jnp.zeros(N, jnp.int32)
    got = attacks.fgsm(f, jax.random.key(0), x, y, eps=0.05, loss="cw", box=None)
    want = np.asarray(x) + 0.05 * np.sign(w[:, 1] - w[:, 0]).reshape(1, 2, 3, 2)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_fgsm_vmap_equals_loop_and_stop_gradient():
    xs = jax.random.uniform(jax.random.key(5), (3, N, 2, 3, 2))
    ys = jnp.tile(jnp.arange(N, dtype=jnp.int32) % K, (3, 1))
    fn = lambda x, y: attacks.fgsm(linear, jax.random.key(0), x, y, eps=0.1)
    batched = jax.jit(jax.vmap(fn))(xs, ys)
    jitted = jax.jit(fn)
    for i in range(3):
        np.testing.assert_allclose(batched[i], jitted(xs[i], ys[i]), atol=1e-6)
    np.testing.assert_allclose(fn(xs[0], ys[0]), batched[0], atol=1e-6)  # no jit
    # stop_gradient: no gradient flows back to x through the attack.
    g = jax.grad(lambda x: jnp.sum(fn(x, ys[0])))(xs[0])
    assert np.all(np.asarray(g) == 0)
